"""Downstream metrics of one fold (or one validation epoch): the formulas of
:mod:`awcl.evaluate.scores` reduced to plain numbers (classification, segmentation from a
confusion matrix), surface distances (HD95, mean surface distance) and the head-circumference
errors of a fold (HC18; the ellipse geometry is :mod:`awcl.geometry`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from awcl.evaluate import scores as S
from awcl.geometry import (  # noqa: F401  (re-exported: they were defined here)
    fit_head_ellipse,
    head_circumference_mm,
    outline_points,
    ramanujan_circumference,
)


def _number(v: np.ndarray) -> float | None:
    return float(v) if np.isfinite(v) else None


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, prob: np.ndarray | None = None
) -> dict:
    """Accuracy, macro precision/recall/F1 over all ``num_classes`` (absent ones score 0),
    balanced accuracy (mean recall over the classes present; None without any) and, given
    ``prob: [N, K]``, one-vs-rest macro AUROC (``auroc_ovr``)."""
    out = class_metrics(S.confusion(y_true, y_pred, num_classes))
    if prob is not None:
        out["auroc"] = auroc_ovr(y_true, prob)
    return out


def class_metrics(cm: np.ndarray) -> dict:
    """:func:`classification_metrics` of a class confusion ``cm: [K, K]`` (rows true)."""
    s = S.classification_scores(cm)
    out = {k: float(v) for k, v in s.items()}
    out["balanced_accuracy"] = _number(s["balanced_accuracy"])
    return out


def balanced_accuracy(cm: np.ndarray) -> float | None:
    """Mean per-class recall over classes present in the truth. ``cm: [K, K]``, rows true."""
    return _number(S.balanced_accuracy(S.Counts.of(cm)))


def auroc_ovr(y_true: np.ndarray, prob: np.ndarray) -> float | None:
    """One-vs-rest AUROC averaged over the classes with both positives and negatives.

    y_true: [N] class index; prob: [N, K] scores. None when no class qualifies.
    """
    return _number(S.auroc(prob, y_true)[0])


def sensitivity_specificity(cm: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per class (one vs rest): sensitivity TP/(TP+FN), specificity TN/(TN+FP); None where
    undefined. ``cm: [K, K]`` rows true."""
    c = S.Counts.of(cm)
    sens, spec = S.class_recall(c), S.class_specificity(c)
    return {name: {"sensitivity": _number(sens[k]), "specificity": _number(spec[k])}
            for k, name in enumerate(names)}  # fmt: skip


def class_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = true class, columns = predicted."""
    return S.confusion(y_true, y_pred, num_classes)


def pixel_confusion(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` pixel counts (rows true) from integer masks of any equal shape."""
    return S.confusion(true, pred, num_classes)


def segmentation_metrics(cm: np.ndarray) -> dict:
    """GAA, MA, mIoU, pooled foreground Dice and foreground IoU of a pixel confusion matrix
    ``cm: [C, C]`` (rows true; the formulas of :mod:`awcl.evaluate.scores`), 0 where one is
    undefined, and ``iou_per_class`` (0 for a class with an empty union).

    fg_iou is the IoU of the foreground classes only (mIoU counts the background, which reads
    ~0.4 even when no foreground pixel is found).
    """
    s = S.segmentation_scores(cm)
    out = {k: float(np.nan_to_num(v)) for k, v in s.items()}
    out["iou_per_class"] = [float(v) for v in S.class_iou(S.Counts.of(cm), 0.0)]
    return out


def metrics_of(kind: str, cm: np.ndarray) -> dict:
    """The metrics of one confusion matrix of task kind ``kind`` (a test fold, a validation
    epoch): :func:`class_metrics`, :func:`segmentation_metrics`, or for another kind its
    formulas' values (None where undefined)."""
    if kind == "classify":
        return class_metrics(cm)
    if kind == "segment":
        return segmentation_metrics(cm)
    return {k: _number(v) for k, v in S.scores(kind, cm).items()}


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
