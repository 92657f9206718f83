"""Downstream metrics: classification (scikit-learn), segmentation from a confusion matrix,
and the head circumference of a fitted ellipse (HC18)."""

from __future__ import annotations

import math

import cv2
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro precision/recall/F1 over all ``num_classes`` (absent ones score 0)."""
    labels = list(range(num_classes))
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
    }


def class_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = true class, columns = predicted."""
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def pixel_confusion(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` pixel counts (rows true) from integer masks of any equal shape."""
    t = np.asarray(true, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def segmentation_metrics(cm: np.ndarray) -> dict:
    """GAA, MA, mIoU and foreground Dice from a pixel confusion matrix ``cm: [C, C]`` (rows true).

    GAA = correct pixels / all pixels; MA = mean over classes present in the truth of the
    per-class pixel accuracy; mIoU = mean over classes with a non-empty union of
    TP / (TP + FP + FN); Dice = mean over foreground classes (1..C-1) of 2TP / (2TP + FP + FN).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    true_n = cm.sum(axis=1)
    pred_n = cm.sum(axis=0)
    union = true_n + pred_n - tp
    present = true_n > 0
    acc_c = np.divide(tp, true_n, out=np.zeros_like(tp), where=present)
    iou_c = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    dice_den = true_n + pred_n
    dice_c = np.divide(2 * tp, dice_den, out=np.zeros_like(tp), where=dice_den > 0)
    fg = np.arange(len(cm)) >= 1
    fg_valid = fg & (dice_den > 0)
    total = cm.sum()
    return {
        "gaa": float(tp.sum() / total) if total else 0.0,
        "ma": float(acc_c[present].mean()) if present.any() else 0.0,
        "miou": float(iou_c[union > 0].mean()) if (union > 0).any() else 0.0,
        "dice": float(dice_c[fg_valid].mean()) if fg_valid.any() else 0.0,
        "iou_per_class": [float(v) for v in iou_c],
    }


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
