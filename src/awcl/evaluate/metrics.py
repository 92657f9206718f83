"""Downstream metrics: classification (scikit-learn; AUROC, balanced accuracy, per-class
sensitivity/specificity), segmentation from a confusion matrix, surface distances (HD95, mean
surface distance) and the head circumference of a fitted ellipse (HC18)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, prob: np.ndarray | None = None
) -> dict:
    """Accuracy, macro precision/recall/F1 over all ``num_classes`` (absent ones score 0),
    balanced accuracy (mean recall over the classes present) and, given ``prob: [N, K]``,
    one-vs-rest macro AUROC (``auroc_ovr``)."""
    labels = list(range(num_classes))
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "balanced_accuracy": balanced_accuracy(class_confusion(y_true, y_pred, num_classes)),
    }
    if prob is not None:
        out["auroc"] = auroc_ovr(y_true, prob)
    return out


def balanced_accuracy(cm: np.ndarray) -> float | None:
    """Mean per-class recall over classes present in the truth. ``cm: [K, K]``, rows true."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum(axis=1)
    present = n > 0
    return float((np.diag(cm)[present] / n[present]).mean()) if present.any() else None


def auroc_ovr(y_true: np.ndarray, prob: np.ndarray) -> float | None:
    """One-vs-rest AUROC averaged over the classes with both positives and negatives.

    y_true: [N] class index; prob: [N, K] scores. None when no class qualifies.
    """
    y = np.asarray(y_true)
    prob = np.asarray(prob, dtype=np.float64)
    aucs = [
        roc_auc_score(y == k, prob[:, k])
        for k in range(prob.shape[1])
        if 0 < int((y == k).sum()) < len(y)
    ]
    return float(np.mean(aucs)) if aucs else None


def sensitivity_specificity(cm: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per class (one vs rest): sensitivity TP/(TP+FN), specificity TN/(TN+FP); None where
    undefined. ``cm: [K, K]`` rows true."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    pos = cm.sum(axis=1)
    fp = cm.sum(axis=0) - tp
    neg = cm.sum() - pos
    out = {}
    for k, name in enumerate(names):
        out[name] = {
            "sensitivity": float(tp[k] / pos[k]) if pos[k] > 0 else None,
            "specificity": float((neg[k] - fp[k]) / neg[k]) if neg[k] > 0 else None,
        }
    return out


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
    TP / (TP + FP + FN); Dice = mean over foreground classes (1..C-1) of 2TP / (2TP + FP + FN);
    fg_iou = the IoU of the foreground classes only (mIoU counts the background, which reads
    ~0.4 even when no foreground pixel is found).
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
    fg_union = fg & (union > 0)
    total = cm.sum()
    return {
        "gaa": float(tp.sum() / total) if total else 0.0,
        "ma": float(acc_c[present].mean()) if present.any() else 0.0,
        "miou": float(iou_c[union > 0].mean()) if (union > 0).any() else 0.0,
        "dice": float(dice_c[fg_valid].mean()) if fg_valid.any() else 0.0,
        "fg_iou": float(iou_c[fg_union].mean()) if fg_union.any() else 0.0,
        "iou_per_class": [float(v) for v in iou_c],
    }


def _boundary(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside it (the image edge counts as outside)."""
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1))


def surface_distances(
    pred: np.ndarray, true: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> tuple[float, float] | None:
    """(HD95, mean surface distance) between two binary masks ``[H, W]``, in the units of
    ``spacing`` = (pixel size y, pixel size x).

    The distances from every boundary pixel of each mask to the nearest boundary pixel of the
    other are pooled (both directions): HD95 is their 95th percentile, the mean surface
    distance their mean (the average symmetric surface distance). Both empty: (0, 0); only
    one empty: None (undefined).
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(true).astype(bool)
    if not p.any() and not t.any():
        return 0.0, 0.0
    if not p.any() or not t.any():
        return None
    bp, bt = _boundary(p), _boundary(t)
    to_t = ndimage.distance_transform_edt(~bt, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    d = np.concatenate([to_t[bp], to_p[bt]])
    return float(np.percentile(d, 95)), float(d.mean())


def frame_surface_metrics(
    pred: np.ndarray, true: np.ndarray, num_classes: int, spacing: tuple[float, float] = (1.0, 1.0)
) -> tuple[float, float] | None:
    """HD95 and mean surface distance of one frame, averaged over the foreground classes
    present in the prediction or the truth; None when one of them is undefined (a class
    predicted but absent, or missed). ``pred, true: [H, W]`` class indices."""
    vals = []
    for c in range(1, num_classes):
        pc, tc = pred == c, true == c
        if not pc.any() and not tc.any():
            continue
        sd = surface_distances(pc, tc, spacing)
        if sd is None:
            return None
        vals.append(sd)
    if not vals:
        return 0.0, 0.0
    v = np.asarray(vals)
    return float(v[:, 0].mean()), float(v[:, 1].mean())


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


def head_circumference_errors(
    pred: np.ndarray, true: np.ndarray, py: np.ndarray, px: np.ndarray, hc_table: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, float | int | None]]:
    """HC18 scores of one test fold: per-frame columns and fold metrics.

    ``pred, true: [n, H, W]`` class masks; ``py, px: [n]`` pixel size in mm at the masks'
    scale; ``hc_table: [n]`` the dataset's reference HC in mm, if it has one. Columns:
    ``hc_pred_mm``, ``hc_gt_ellipse_mm`` (NaN where no ellipse fits) and ``hc_table_mm``;
    metrics: ``hc_failed`` (predictions without an ellipse), the MAE against the ellipse of
    the true mask and, with a table, against the table and the true mask's own error to it.
    Means skip NaN (pandas), as the per-frame table does.
    """
    n = len(pred)
    hc_pred = [head_circumference_mm(pred[i], py[i], px[i]) for i in range(n)]
    hc_gt = [head_circumference_mm(true[i], py[i], px[i]) for i in range(n)]
    f = pd.DataFrame({"hc_pred_mm": [np.nan if v is None else v for v in hc_pred],
                      "hc_gt_ellipse_mm": [np.nan if v is None else v for v in hc_gt]})  # fmt: skip
    ok = f["hc_pred_mm"].notna()
    met: dict[str, float | int | None] = {"hc_failed": int((~ok).sum())}
    met["hc_mae_vs_gt_ellipse_mm"] = float(
        (f["hc_pred_mm"] - f["hc_gt_ellipse_mm"]).abs()[ok].mean()
    ) if ok.any() else None
    if hc_table is not None:
        f["hc_table_mm"] = hc_table
        met["hc_mae_mm"] = float((f["hc_pred_mm"] - f["hc_table_mm"]).abs()[ok].mean()) if ok.any() else None
        met["hc_gt_ellipse_vs_table_mm"] = float((f["hc_gt_ellipse_mm"] - f["hc_table_mm"]).abs().mean())
    return {c: f[c].to_numpy() for c in f.columns}, met
