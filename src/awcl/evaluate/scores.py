"""Every downstream metric formula, once, batched over confusion matrices.

The split is MONAI's (formula / reduction): :func:`confusion` is the one bincount that builds
confusion matrices ``cm: [..., K, K]`` (rows true, columns predicted; any leading batch
shape), and a *formula* maps them to one score per matrix, NaN where it is undefined. Which
matrices are summed before a formula runs (the *reduction*) is the caller's choice:

- a validation epoch, a test fold (``awcl.evaluate.fit``, ``awcl.evaluate.metrics``);
- all test frames of all folds pooled, and each patient-bootstrap resample as a weighted sum
  of per-patient matrices (``awcl.evaluate.summary``, the study report's intervals);
- one image (:func:`image_dice`, the per-image Dice a segmentation run is summed up by).

``CLASSIFICATION`` and ``SEGMENTATION`` are the formula tables (metric key -> formula of
:class:`Counts`); :func:`scores` evaluates a task kind's table. A metric computed from a
confusion matrix is one function and one entry there.

Classification follows scikit-learn (``labels=range(K)``, ``zero_division=0``): macro
precision / recall / F1 over all K classes, a class without true or predicted samples scoring
0; balanced accuracy averages recall over the classes present in the truth. Segmentation:
GAA (pixel accuracy), MA (mean per-class accuracy over classes present in the truth), mIoU
over the classes with a non-empty union, pooled Dice over the foreground classes (1..C-1)
present in truth or prediction, and the foreground IoU. The same per-class quantity serves
both kinds: a class's F1 is its Dice, 2TP / (2TP + FP + FN), and MA is balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


# ------------------------------------------------------------------------------ counting
def confusion(true: Any, pred: Any, num_classes: int, groups: Any = None, n_groups: int | None = None) -> Any:
    """Confusion counts of class indices ``true``, ``pred`` (any equal shape: labels ``[N]``,
    masks ``[N, H, W]``), rows true: ``[K, K]``, or with ``groups`` (``[N]``, one index per
    item of the leading axis, ``< n_groups``) one matrix per group, ``[n_groups, K, K]``
    (``groups = arange(N)``: one per image). numpy arrays give int64 numpy counts; torch
    tensors stay on their device (the validation loop's masks)."""
    k = int(num_classes)
    if hasattr(true, "bincount"):  # a torch tensor: no copy to the host
        flat = true.long() * k + pred.long()
    else:
        flat = np.asarray(true, dtype=np.int64) * k
        p = np.asarray(pred, dtype=np.int64)
        if flat.shape != p.shape:
            raise ValueError(f"confusion: true {flat.shape} and pred {p.shape} differ in shape")
        if flat.size and (flat.min() < 0 or flat.max() >= k * k or p.min() < 0 or p.max() >= k):
            raise ValueError(f"confusion: class index outside 0..{k - 1}")
        flat += p
    if groups is None:
        return _bincount(flat.reshape(-1), k * k).reshape(k, k)
    g = int(n_groups if n_groups is not None else int(groups.max()) + 1)
    flat += groups.reshape(-1, *([1] * (flat.ndim - 1))) * (k * k)
    return _bincount(flat.reshape(-1), g * k * k).reshape(g, k, k)


def _bincount(flat: Any, size: int) -> Any:
    if hasattr(flat, "bincount"):
        return flat.bincount(minlength=size)
    return np.bincount(flat, minlength=size)


@dataclass(frozen=True)
class Counts:
    """Per-class counts of confusion matrices ``cm: [..., K, K]`` (rows true): ``tp``,
    ``true`` (row sums), ``pred`` (column sums), each ``[..., K]``, and ``total`` ``[...]``."""

    tp: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    total: np.ndarray

    @classmethod
    def of(cls, cm: Any) -> Counts:
        cm = np.asarray(cm, dtype=np.float64)
        return cls(np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), cm.sum(-2), cm.sum((-2, -1)))


def ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """``num / den`` elementwise, ``empty`` where ``den`` is 0 (no warning)."""
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), empty)


def mean_defined(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the values that are not NaN; NaN where none is."""
    n = (~np.isnan(x)).sum(-1)
    return ratio(np.nansum(x, axis=-1), n, np.nan)


# ------------------------------------------------------------------ per-class quantities
def class_recall(c: Counts, empty: float = np.nan) -> np.ndarray:
    """TP / (TP + FN) per class (sensitivity; a segmentation class's pixel accuracy)."""
    return ratio(c.tp, c.true, empty)


def class_precision(c: Counts, empty: float = np.nan) -> np.ndarray:
    """TP / (TP + FP) per class."""
    return ratio(c.tp, c.pred, empty)


def class_dice(c: Counts, empty: float = np.nan) -> np.ndarray:
    """2TP / (2TP + FP + FN) per class: a segmentation class's Dice, a classifier's F1."""
    return ratio(2 * c.tp, c.true + c.pred, empty)


def class_iou(c: Counts, empty: float = np.nan) -> np.ndarray:
    """TP / (TP + FP + FN) per class (Jaccard)."""
    return ratio(c.tp, c.true + c.pred - c.tp, empty)


def class_specificity(c: Counts, empty: float = np.nan) -> np.ndarray:
    """TN / (TN + FP) per class, one vs rest."""
    neg = c.total[..., None] - c.true
    return ratio(neg - (c.pred - c.tp), neg, empty)


# ------------------------------------------------------------------------------ formulas
Formula = Callable[[Counts], np.ndarray]


def accuracy(c: Counts) -> np.ndarray:
    """Correct / all (classification accuracy; segmentation's GAA, pixel accuracy)."""
    return ratio(c.tp.sum(-1), c.total, np.nan)


def balanced_accuracy(c: Counts) -> np.ndarray:
    """Mean recall over the classes present in the truth (segmentation's MA)."""
    return mean_defined(class_recall(c))


def macro_precision(c: Counts) -> np.ndarray:
    return class_precision(c, 0.0).mean(-1)


def macro_recall(c: Counts) -> np.ndarray:
    return class_recall(c, 0.0).mean(-1)


def macro_f1(c: Counts) -> np.ndarray:
    """F1 averaged over all K classes, 0 for a class with neither true nor predicted samples."""
    return class_dice(c, 0.0).mean(-1)


def mean_iou(c: Counts) -> np.ndarray:
    """IoU averaged over the classes with a non-empty union (background included)."""
    return mean_defined(class_iou(c))


def foreground_dice(c: Counts) -> np.ndarray:
    """Dice averaged over the foreground classes (1..C-1) present in truth or prediction."""
    return mean_defined(class_dice(c)[..., 1:])


def foreground_iou(c: Counts) -> np.ndarray:
    """IoU averaged over the foreground classes with a non-empty union."""
    return mean_defined(class_iou(c)[..., 1:])


CLASSIFICATION: dict[str, Formula] = {
    "accuracy": accuracy,
    "precision": macro_precision,
    "recall": macro_recall,
    "f1": macro_f1,
    "balanced_accuracy": balanced_accuracy,
}
SEGMENTATION: dict[str, Formula] = {
    "gaa": accuracy,
    "ma": balanced_accuracy,
    "miou": mean_iou,
    "dice": foreground_dice,
    "fg_iou": foreground_iou,
}
FORMULAS: dict[str, dict[str, Formula]] = {"classify": CLASSIFICATION, "segment": SEGMENTATION}


def scores(kind: str, cm: Any) -> dict[str, np.ndarray]:
    """Every formula of task kind ``kind`` on ``cm: [..., K, K]``: metric -> ``[...]``."""
    c = Counts.of(cm)
    return {name: f(c) for name, f in FORMULAS[kind].items()}


def classification_scores(cm: Any) -> dict[str, np.ndarray]:
    """Accuracy, macro precision/recall/F1, balanced accuracy of ``cm: [..., K, K]``."""
    return scores("classify", cm)


def segmentation_scores(cm: Any) -> dict[str, np.ndarray]:
    """GAA, MA, mIoU, pooled foreground Dice and foreground IoU of ``cm: [..., C, C]``."""
    return scores("segment", cm)


def image_dice(cm: Any) -> np.ndarray:
    """Per-image foreground Dice of per-image pixel confusions ``cm: [..., C, C]``: every
    class above 0 is foreground (the HC18 convention), 1 where neither mask has any."""
    cm = np.asarray(cm)
    inter = cm[..., 1:, 1:].sum((-2, -1))
    true_fg, pred_fg = cm[..., 1:, :].sum((-2, -1)), cm[..., :, 1:].sum((-2, -1))
    return ratio(2 * inter, true_fg + pred_fg, 1.0)


# --------------------------------------------------------------------------------- AUROC
def auroc(prob: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """One-vs-rest macro AUROC, ``[B]``, under frame weights ``weights: [B, N]`` (None: one
    row of ones): the weighted Mann-Whitney statistic (ties count one half) per class with
    both positives and negatives, averaged; NaN where no class has both. ``prob: [N, K]``
    scores, ``y: [N]`` true class."""
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y)
    wf = np.ones((1, len(y))) if weights is None else weights
    b = wf.shape[0]
    aucs = np.full((b, prob.shape[1]), np.nan)
    for k in range(prob.shape[1]):
        order = np.argsort(prob[:, k], kind="stable")
        s = prob[order, k]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # runs of tied scores
        pos = (y[order] == k).astype(np.float64)
        w = wf[:, order]
        wp = np.add.reduceat(w * pos, starts, axis=1)  # [B, U] positive weight per score
        wn = np.add.reduceat(w * (1 - pos), starts, axis=1)
        below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each score
        aucs[:, k] = ratio((wp * (below + 0.5 * wn)).sum(1), wp.sum(1) * wn.sum(1), np.nan)
    return mean_defined(aucs)
