"""Downstream metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import f1_score

from awcl.evaluate.metrics import (
    classification_metrics,
    fit_head_ellipse,
    head_circumference_mm,
    outline_points,
    pixel_confusion,
    ramanujan_circumference,
    segmentation_metrics,
)


def test_segmentation_metrics_hand_computed():
    cm = np.array([[3, 1], [2, 4]])  # rows = true
    m = segmentation_metrics(cm)
    assert m["gaa"] == pytest.approx(7 / 10)
    assert m["ma"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["miou"] == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert m["dice"] == pytest.approx(8 / 11)


def test_segmentation_metrics_three_classes_absent_class():
    # class 2 never occurs and is never predicted: it is left out of MA and mIoU
    cm = np.array([[5, 0, 0], [1, 2, 0], [0, 0, 0]])
    m = segmentation_metrics(cm)
    assert m["gaa"] == pytest.approx(7 / 8)
    assert m["ma"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["miou"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert m["dice"] == pytest.approx(4 / 5)


def test_pixel_confusion_from_masks():
    t = np.array([[0, 0, 1], [1, 1, 0]])
    p = np.array([[0, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(pixel_confusion(t, p, 2), [[2, 1], [1, 2]])


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 50)
    p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 3, 50))
    m = classification_metrics(y, p, 3)
    assert m["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["accuracy"] == pytest.approx((y == p).mean())
    # hand-computed: 2 classes, y=[0,0,1,1], p=[0,1,1,1] -> P=(1, 2/3), R=(1/2, 1)
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert m["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_ramanujan_circle_and_ellipse():
    assert ramanujan_circumference(10, 10) == pytest.approx(2 * math.pi * 10)
    # a=2, b=1: exact perimeter 9.688448...
    assert ramanujan_circumference(2, 1) == pytest.approx(9.688448, rel=1e-4)


def test_head_circumference_from_mask_anisotropic():
    mask = np.zeros((200, 300), np.uint8)
    cv2.ellipse(mask, (150, 100), (80, 50), 0, 0, 360, 1, -1)  # semi-axes x=80, y=50 px
    mask[5:8, 5:8] = 1  # a small second component is ignored
    hc = head_circumference_mm(mask, pixel_size_y_mm=0.5, pixel_size_x_mm=0.25)
    assert hc == pytest.approx(ramanujan_circumference(20, 25), rel=0.02)
    assert head_circumference_mm(np.zeros((10, 10), np.uint8), 1.0) is None


def _raster_ellipse(shape, cx, cy, a, b, theta):
    """Exact rasterisation: a pixel is inside when its centre is inside the ellipse."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8)


def test_ellipse_fit_is_unbiased_on_small_synthetic_heads():
    # Pixel-centre contours sit 0.5 px inside the edge: semi-axes of 10-15 px lost ~4-5% of
    # the circumference. The sub-pixel outline must be unbiased to well under 1%.
    rng = np.random.default_rng(0)
    rel = []
    for _ in range(40):
        a = rng.uniform(10, 15)
        b = a * rng.uniform(0.6, 0.95)
        m = _raster_ellipse((56, 72), 36 + rng.uniform(-2, 2), 28 + rng.uniform(-2, 2), a, b,
                            rng.uniform(0, math.pi))
        got = fit_head_ellipse(m)
        assert got is not None
        rel.append(ramanujan_circumference(*got) / ramanujan_circumference(a, b) - 1)
    assert abs(np.mean(rel)) < 0.003 and np.max(np.abs(rel)) < 0.015


def test_outline_points_lie_on_pixel_edges_and_fill_holes():
    m = np.zeros((6, 7), np.uint8)
    m[1:4, 2:5] = 1
    m[2, 3] = 0  # a hole: the outline is the outer edge only
    pts = outline_points(m)
    assert pts is not None and len(pts) == 12  # 3 edges on each side of a 3x3 square
    assert pts[:, 0].min() == 1.5 and pts[:, 0].max() == 4.5  # x edges of columns 2..4
    assert pts[:, 1].min() == 0.5 and pts[:, 1].max() == 3.5
    edge = np.zeros((4, 4), np.uint8)
    edge[:, :2] = 1  # touching the image border still closes
    assert outline_points(edge)[:, 0].min() == -0.5
    assert outline_points(np.zeros((3, 3), np.uint8)) is None
