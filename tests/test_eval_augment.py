"""Downstream augmentations: geometry in pixel space (a rotation of a non-square frame is a
rotation, not a stretch), masks follow images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from awcl.evaluate.augment import BatchAugmentConfig, augment

H, W = 48, 96  # non-square, as ultrasound frames are


def _moments(img: torch.Tensor) -> tuple[float, float, float]:
    """(area, major, minor) std. deviations of a bright blob's pixel cloud."""
    w = img.double()
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    s = w.sum()
    mx, my = (w * xx).sum() / s, (w * yy).sum() / s
    cxx = (w * (xx - mx) ** 2).sum() / s
    cyy = (w * (yy - my) ** 2).sum() / s
    cxy = (w * (xx - mx) * (yy - my)).sum() / s
    ev = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return float(s), math.sqrt(ev[1]), math.sqrt(ev[0])


def _disc_and_bar() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    disc = (((xx - W / 2 + 0.5) ** 2 + (yy - H / 2 + 0.5) ** 2) <= 12**2).float()
    bar = ((abs(xx - W / 2 + 0.5) <= 14) & (abs(yy - H / 2 + 0.5) <= 1.5)).float()
    return torch.stack([disc, bar])[:, None]  # [2, 1, H, W]


def test_rotation_keeps_shapes_on_non_square_frames():
    x = _disc_and_bar().repeat(16, 1, 1, 1)  # 16 x (disc, bar)
    ref = [_moments(x[i, 0]) for i in range(2)]
    out, _ = augment(x, BatchAugmentConfig(rotate_deg=30), torch.Generator().manual_seed(0))
    turned = 0
    for i in range(len(x)):
        area, major, minor = _moments(out[i, 0])
        a0, M0, m0 = ref[i % 2]
        assert area == pytest.approx(a0, rel=0.03)
        assert major == pytest.approx(M0, rel=0.04) and minor == pytest.approx(m0, rel=0.08)
        if i % 2:  # the bar: check it really turned
            c = out[i, 0].nonzero().double()
            cov = np.cov((c - c.mean(0)).T.numpy())
            ang = 0.5 * math.degrees(math.atan2(2 * cov[0, 1], cov[1, 1] - cov[0, 0]))
            turned += abs(ang) > 3
    assert turned >= 5


def test_scale_in_pixel_units_and_masks_follow():
    x = _disc_and_bar()[:1].repeat(8, 1, 1, 1)
    mask = (x[:, 0] > 0.5).long()
    cfg = BatchAugmentConfig(scale=(0.8, 0.8), hflip=True, vflip=True)
    out, m = augment(x, cfg, torch.Generator().manual_seed(1), mask)
    for i in range(len(x)):
        _, major, minor = _moments(out[i, 0])
        # content scaled by 0.8 in both axes: still a disc, 0.8x as wide
        assert major == pytest.approx(minor, rel=0.03)
        assert major == pytest.approx(_moments(x[0, 0])[1] * 0.8, rel=0.04)
        agree = ((out[i, 0] > 0.5).long() == m[i]).float().mean()
        assert agree > 0.99




def test_shear_is_in_pixel_units():
    # a vertical bar sheared by s <= 0.2 tilts by atan(s) <= 11.3 degrees; built in normalised
    # coordinates on a 2:1 frame it tilted by up to atan(0.4) = 21.8 degrees
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    bar = ((abs(xx - W / 2 + 0.5) <= 1.5) & (abs(yy - H / 2 + 0.5) <= 18)).float()
    x = bar[None, None].repeat(32, 1, 1, 1)
    out, _ = augment(x, BatchAugmentConfig(shear=0.2), torch.Generator().manual_seed(2))
    tilts = []
    for i in range(len(x)):
        c = (out[i, 0] > 0.5).nonzero().double()  # (y, x)
        cov = np.cov((c - c.mean(0)).T.numpy())
        tilts.append(abs(math.degrees(math.atan(cov[0, 1] / cov[0, 0]))))  # dx/dy slope
    assert max(tilts) < 12.5 and max(tilts) > 7
