"""Head circumference without bias: the HC18 masks are drawn from the annotated ellipse, and
``head_circumference_mm`` on them gives the table's HC (before: -0.83 mm mean at 112x144,
from pixel-centre contours 0.5 px inside the edge and filled masks 1.4 px outside it)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from awcl.data.recipes import hc18
from awcl.data.store import open_dataset
from awcl.evaluate.metrics import fit_head_ellipse, head_circumference_mm, ramanujan_circumference

ELLIPSE = ((401.3, 268.7), (300.0, 410.0), 23.0)  # cv2 RotatedRect: centre, full axes, angle


def _outline(thickness: int = 2) -> np.ndarray:
    m = np.zeros((540, 800), np.uint8)
    cv2.ellipse(m, ELLIPSE, 255, thickness)
    return m


def test_annotated_ellipse_from_outline_and_filled_copy():
    want = (ELLIPSE[1][0] / 2, ELLIPSE[1][1] / 2)
    ring = _outline()
    (cx, cy), (a, b), _ = hc18.annotated_ellipse(ring)  # the ring's centre line
    assert (cx, cy) == pytest.approx(ELLIPSE[0], abs=0.1)
    assert (a, b) == pytest.approx(want, abs=0.15)
    filled = hc18.fill_annotation(ring) * 255  # a filled copy: the ring filled to its outer edge
    _, (a, b), _ = hc18.annotated_ellipse(filled)
    assert (a, b) == pytest.approx(want, abs=0.15)
    # the mask drawn from it at an anisotropic working size measures the annotated ellipse
    mask = hc18.rasterize_ellipse(hc18.annotated_ellipse(filled), (540, 800), (112, 144))
    px = 0.1
    hc = head_circumference_mm(mask, px * 540 / 112, px * 800 / 144)
    assert hc == pytest.approx(ramanujan_circumference(*want) * px, rel=0.004)


def test_rasterize_ellipse_edge_is_the_ellipse():
    ell = ((20.3, 15.1), (9.0, 13.0), 30.0)
    m = hc18.rasterize_ellipse(ell, (32, 40), (32, 40))
    assert m.dtype == np.uint8 and m.sum() == pytest.approx(math.pi * 9 * 13, rel=0.02)
    assert sorted(fit_head_ellipse(m)) == pytest.approx([9.0, 13.0], abs=0.15)


@pytest.fixture(scope="module")
def hc18_112(shared_data, tmp_path_factory):
    """The first 300 HC18 images at 112x144 (the study's working size)."""
    out = tmp_path_factory.mktemp("hc18") / "ds"
    hc18.prepare_hc18(shared_data / "hc18", out, hc18.HC18Config(size=(112, 144), limit=300))
    return open_dataset(out)


def test_hc_of_real_ground_truth_masks_matches_table(hc18_112):
    ds, m = hc18_112, hc18_112.manifest
    err = np.array([
        head_circumference_mm(ds.mask(i), m["pixel_size_y_mm"].iat[i], m["pixel_size_x_mm"].iat[i])
        - m["hc_mm"].iat[i]
        for i in range(len(ds))
    ])
    assert len(err) == 300
    assert abs(err.mean()) <= 0.3, f"mean signed HC error {err.mean():+.3f} mm"
    assert np.abs(err).mean() < 0.5
