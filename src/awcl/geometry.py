"""Ellipse geometry of a head mask: the sub-pixel outline of its largest component, the
ellipse fitted to it (in physical units per axis) and its circumference (HC18's head
circumference). A leaf: the HC18 recipe draws its reference masks with it and the
segmentation task scores predictions with it, so both agree by construction.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def ramanujan_circumference(a: float, b: float) -> float:
    """Perimeter of an ellipse with semi-axes ``a``, ``b`` (Ramanujan's first approximation)."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def outline_points(mask: np.ndarray) -> np.ndarray | None:
    """Sub-pixel outline of the largest foreground component (holes filled), ``[P, 2]`` (x, y).

    A pixel is foreground when its centre lies inside the object, so the true edge crosses
    the segment between every inside/outside pair of 4-neighbours; its midpoint (the 0.5
    iso-line of marching squares) is an unbiased estimate of where. Pixel-centre contours
    (``cv2.findContours``) sit 0.5 px inside the edge instead and shrink every fitted ellipse
    (-0.83 mm mean HC on HC18 at 112x144). None when there is no foreground.
    """
    fg = (np.asarray(mask) > 0).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(
        (lab == biggest).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    comp = np.zeros((fg.shape[0] + 2, fg.shape[1] + 2), np.uint8)  # zero border: edges close
    cv2.drawContours(comp, contours, -1, 1, thickness=cv2.FILLED, offset=(1, 1))
    ys, xs = np.nonzero(comp[:, :-1] != comp[:, 1:])  # horizontal inside/outside pairs
    yv, xv = np.nonzero(comp[:-1, :] != comp[1:, :])  # vertical pairs
    x = np.concatenate([xs + 0.5, xv.astype(np.float64)]) - 1.0
    y = np.concatenate([ys.astype(np.float64), yv + 0.5]) - 1.0
    return np.column_stack([x, y])


def fit_head_ellipse(
    mask: np.ndarray, pixel_size_y: float = 1.0, pixel_size_x: float = 1.0
) -> tuple[float, float] | None:
    """Semi-axes of the ellipse fitted to the sub-pixel outline of the largest component.

    ``mask: [H, W]`` (non-zero = head). Outline points (``outline_points``) are scaled to
    physical units per axis before fitting, so an anisotropically resized mask gives the true
    ellipse. Returns None when there is no component with at least 5 outline points.
    """
    pts = outline_points(mask)
    if pts is None or len(pts) < 5:
        return None
    pts = (pts * np.array([pixel_size_x, pixel_size_y])).astype(np.float32)
    _, (d1, d2), _ = cv2.fitEllipse(pts)
    return d1 / 2.0, d2 / 2.0


def head_circumference_mm(
    mask: np.ndarray, pixel_size_y_mm: float, pixel_size_x_mm: float | None = None
) -> float | None:
    """HC in mm (Ramanujan) of the ellipse fitted to ``mask`` at the given pixel size(s)."""
    axes = fit_head_ellipse(mask, pixel_size_y_mm, pixel_size_x_mm or pixel_size_y_mm)
    if axes is None:
        return None
    return ramanujan_circumference(*axes)
