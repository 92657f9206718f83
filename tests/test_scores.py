"""The one implementation of every metric formula (``awcl.evaluate.scores``), batched over
confusion matrices, against scikit-learn and plain per-image loops, edge cases included (a
class absent from the truth, empty masks, a constant predictor); and every reduction (a
fold, a validation epoch, the pooled frames, bootstrap resamples, the report's checks) goes
through it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from awcl.evaluate import scores as S
from awcl.evaluate.metrics import (
    auroc_ovr,
    balanced_accuracy,
    class_metrics,
    classification_metrics,
    segmentation_metrics,
)
from awcl.evaluate.tasks import (
    HEADLINE,
    KINDS,
    METRICS,
    TABLE_METRICS,
    TASKS,
    headline_metric,
    task_kind,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "awcl"


def label_cases(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(y_true, y_pred, K): random, a class absent from the truth, a constant predictor,
    a class only predicted, a single sample, many classes."""
    rng = np.random.default_rng(seed)
    cases = []
    for k, n in ((2, 40), (3, 7), (5, 200), (9, 300)):
        y = rng.integers(0, k, n)
        cases.append((y, np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n)), k))
    y = rng.integers(0, 2, 30)  # class 2 never true
    cases.append((y, rng.integers(0, 3, 30), 3))
    cases.append((y, np.zeros(30, np.int64), 3))  # constant predictor, class 2 absent
    cases.append((np.zeros(5, np.int64), np.array([0, 1, 2, 2, 0]), 3))  # one class in the truth
    cases.append((np.array([1]), np.array([1]), 4))
    return cases


def sk_scores(y: np.ndarray, p: np.ndarray, k: int) -> dict[str, float]:
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return {
            "accuracy": accuracy_score(y, p),
            "precision": precision_score(y, p, labels=labels, average="macro", zero_division=0),
            "recall": recall_score(y, p, labels=labels, average="macro", zero_division=0),
            "f1": f1_score(y, p, labels=labels, average="macro", zero_division=0),
            "balanced_accuracy": balanced_accuracy_score(y, p),
        }


# ---------------------------------------------------------------------------- confusion
def test_confusion_equals_sklearn_numpy_and_torch():
    for y, p, k in label_cases():
        ref = confusion_matrix(y, p, labels=list(range(k)))
        got = S.confusion(y, p, k)
        assert got.dtype == np.int64 and np.array_equal(got, ref)
        t = S.confusion(torch.from_numpy(y), torch.from_numpy(p), k)
        assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), ref)
    assert S.confusion(np.zeros(0, np.int64), np.zeros(0, np.int64), 3).tolist() == [[0] * 3] * 3


def test_confusion_per_group_and_per_image():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    groups = rng.integers(0, 7, 100)
    per = S.confusion(y, p, 3, groups=groups, n_groups=9)  # groups 7, 8 empty
    assert per.shape == (9, 3, 3) and not per[7:].any()
    for g in range(7):
        assert np.array_equal(per[g], confusion_matrix(y[groups == g], p[groups == g], labels=[0, 1, 2]))
    masks_t, masks_p = rng.integers(0, 3, (4, 6, 5)), rng.integers(0, 3, (4, 6, 5))
    frame = S.confusion(masks_t, masks_p, 3, groups=np.arange(4), n_groups=4)
    for i in range(4):
        assert np.array_equal(frame[i], confusion_matrix(masks_t[i].ravel(), masks_p[i].ravel(), labels=[0, 1, 2]))
    on_device = S.confusion(torch.from_numpy(masks_t), torch.from_numpy(masks_p), 3,
                            groups=torch.arange(4), n_groups=4)  # fmt: skip
    assert np.array_equal(on_device.numpy(), frame)


def test_confusion_refuses_indices_outside_the_classes():
    # a value >= K would otherwise be counted in the next row (or the next image's matrix)
    with pytest.raises(ValueError, match="outside"):
        S.confusion(np.array([0, 1]), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="outside"):
        S.confusion(np.array([-1, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="shape"):
        S.confusion(np.zeros((2, 3)), np.zeros((3, 2)), 2)


# ------------------------------------------------------------------------ classification
def test_classification_scores_equal_sklearn_batched():
    """One batched call over every case's matrix equals scikit-learn on each case's labels,
    to the last bit: the same formula, 2TP / (2TP + FP + FN) per class."""
    cases = label_cases()
    kmax = max(k for _, _, k in cases)
    for k in {k for _, _, k in cases}:
        group = [(y, p) for y, p, kk in cases if kk == k]
        cms = np.stack([S.confusion(y, p, k) for y, p in group])
        got = S.classification_scores(cms)
        assert set(got) == set(S.CLASSIFICATION) and all(v.shape == (len(group),) for v in got.values())
        for i, (y, p) in enumerate(group):
            ref = sk_scores(y, p, k)
            for name, v in ref.items():
                if k < 8:  # a subset's mean: bit-equal below numpy's 8-way pairwise summation
                    assert got[name][i] == v, (k, i, name)
                assert got[name][i] == pytest.approx(v, abs=1e-15), (k, i, name)
            assert class_metrics(cms[i]) == pytest.approx(ref, abs=1e-15)
            assert classification_metrics(y, p, k) == pytest.approx(ref, abs=1e-15)
    assert kmax >= 8


def test_classification_edge_cases():
    # a class absent from the truth and never predicted: 0 in macro-F1 (all K classes), not in
    # balanced accuracy (classes present in the truth)
    cm = S.confusion(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 3)
    s = S.classification_scores(cm)
    assert s["f1"] == pytest.approx(2 / 3) and s["balanced_accuracy"] == 1.0 and s["accuracy"] == 1.0
    # a constant predictor scores 1 / (classes present) balanced accuracy, whatever K is
    y = np.array([0, 0, 0, 1, 1, 2])
    s = S.classification_scores(S.confusion(y, np.zeros_like(y), 5))
    assert s["balanced_accuracy"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 5)
    # nothing to score: undefined (NaN), and None in a fold's record
    empty = np.zeros((3, 3))
    s = S.classification_scores(empty)
    assert np.isnan(s["accuracy"]) and np.isnan(s["balanced_accuracy"]) and s["f1"] == 0.0
    assert balanced_accuracy(empty) is None and class_metrics(empty)["balanced_accuracy"] is None


def test_auroc_equals_sklearn_and_weights_repeat_rows():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 80)
    prob = np.round(rng.dirichlet(np.ones(3), 80), 1)  # ties
    ref = np.mean([roc_auc_score(y == k, prob[:, k]) for k in range(3)])
    assert S.auroc(prob, y)[0] == pytest.approx(ref, abs=1e-12) and auroc_ovr(y, prob) == pytest.approx(ref)
    w = rng.integers(0, 3, 80)
    rows = np.repeat(np.arange(80), w)
    again = np.mean([roc_auc_score(y[rows] == k, prob[rows, k]) for k in range(3)])
    assert S.auroc(prob, y, w[None].astype(float))[0] == pytest.approx(again, abs=1e-12)
    # one class in the truth: undefined
    assert np.isnan(S.auroc(prob, np.zeros(80, int))[0]) and auroc_ovr(np.zeros(80, int), prob) is None


# -------------------------------------------------------------------------- segmentation
def loop_segmentation(true: np.ndarray, pred: np.ndarray, c: int) -> dict[str, float]:
    """GAA, MA, mIoU, foreground Dice and IoU by a plain loop over classes (NaN: undefined)."""
    acc, iou, dice = [], [], []
    for k in range(c):
        t, p = true == k, pred == k
        if t.any():
            acc.append((t & p).sum() / t.sum())
        if (t | p).any():
            iou.append((t & p).sum() / (t | p).sum())
            if k:
                dice.append(2 * (t & p).sum() / (t.sum() + p.sum()))
    fg_iou = [(true == k)[pred == k].sum() / ((true == k) | (pred == k)).sum()
              for k in range(1, c) if ((true == k) | (pred == k)).any()]  # fmt: skip
    nan = float("nan")
    return {"gaa": (true == pred).mean() if true.size else nan, "ma": np.mean(acc) if acc else nan,
            "miou": np.mean(iou) if iou else nan, "dice": np.mean(dice) if dice else nan,
            "fg_iou": np.mean(fg_iou) if fg_iou else nan}  # fmt: skip


def loop_image_dice(true: np.ndarray, pred: np.ndarray) -> list[float]:
    """Per-image foreground Dice (any class > 0), 1 for an image with no foreground at all."""
    out = []
    for t, p in zip(true > 0, pred > 0):
        den = t.sum() + p.sum()
        out.append(1.0 if den == 0 else 2 * (t & p).sum() / den)
    return out


def mask_cases(c: int, n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = np.zeros((n, 12, 16), np.int64)
    pred = np.zeros_like(true)
    for i in range(n):
        true[i, 2 : 6 + i % 3, 3:12] = 1 + i % (c - 1)
        pred[i, 3 : 7 + rng.integers(0, 3), 4:12] = 1 + (i + (i % 3 == 0)) % (c - 1)
    pred[1] = 0  # a missed object
    true[2] = 0  # foreground predicted where there is none
    true[3] = pred[3] = 0  # both empty
    return true, pred


@pytest.mark.parametrize("c", [2, 3, 4])
def test_segmentation_scores_equal_a_plain_loop(c):
    true, pred = mask_cases(c)
    frame = S.confusion(true, pred, c, groups=np.arange(len(true)), n_groups=len(true))
    per_image = S.segmentation_scores(frame)  # one batched call: every image's scores
    pooled = S.segmentation_scores(frame.sum(0))
    for i in range(len(true)):
        ref = loop_segmentation(true[i], pred[i], c)
        for k, v in ref.items():
            assert per_image[k][i] == pytest.approx(v, abs=1e-15, nan_ok=True), (i, k)
    for k, v in loop_segmentation(true, pred, c).items():
        assert pooled[k] == pytest.approx(v, abs=1e-15), k
        assert segmentation_metrics(frame.sum(0))[k] == pytest.approx(v, abs=1e-15), k
    assert S.image_dice(frame).tolist() == pytest.approx(loop_image_dice(true, pred), abs=1e-15)
    assert S.image_dice(frame)[3] == 1.0 and S.image_dice(frame)[1] == 0.0


def test_segmentation_edge_cases():
    empty = np.zeros((4, 4), np.int64)  # neither mask has foreground
    cm = S.confusion(empty, empty, 2)
    s = S.segmentation_scores(cm)
    assert s["gaa"] == 1.0 and np.isnan(s["dice"]) and np.isnan(s["fg_iou"])  # undefined when pooled
    assert S.image_dice(cm) == 1.0  # the per-image convention: an empty pair scores 1
    assert segmentation_metrics(cm)["dice"] == 0.0  # a fold's record: 0 where undefined
    everything = S.confusion(empty, np.ones_like(empty), 2)  # constant "all foreground"
    assert S.segmentation_scores(everything)["dice"] == 0.0 and S.image_dice(everything) == 0.0
    nothing = np.zeros((0, 2, 2))
    assert S.segmentation_scores(nothing)["dice"].shape == (0,) and S.image_dice(nothing).shape == (0,)


def test_specificity_and_sensitivity_per_class():
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    c = S.Counts.of(cm)
    assert S.class_recall(c)[:2].tolist() == pytest.approx([5 / 6, 3 / 6]) and np.isnan(S.class_recall(c)[2])
    # class 0: negatives are rows 1, 2 (6 frames), 2 of them predicted 0
    assert S.class_specificity(c).tolist() == pytest.approx([4 / 6, 5 / 6, 11 / 12])


# ------------------------------------------------------------------------- task kinds
def test_task_kinds_declare_headline_selection_and_table_once():
    assert TASKS == tuple(KINDS) == ("classify", "segment")
    for name, kind in KINDS.items():
        assert METRICS[name] == kind.metrics and TABLE_METRICS[name] == kind.table
        assert HEADLINE[name] == headline_metric(name) == kind.headline
        assert task_kind(name) is kind and kind.selection in kind.monitor
        assert set(S.FORMULAS[name]) <= set(kind.metrics), name  # every formula's value is written
    assert [task_kind(k).selection_key for k in TASKS] == ["val_f1", "val_dice_per_image"]
    with pytest.raises(ValueError, match="unknown task kind"):
        headline_metric("detect")


# ------------------------------------------------------------------- one implementation
def test_metric_formulas_live_only_in_scores():
    """No other module builds a confusion matrix (a ``k * k`` bincount), writes a Dice/F1
    formula, or asks scikit-learn for a metric: they all call awcl.evaluate.scores. (The
    smoothed soft Dice *loss* of fit.py, ``(2 * inter + 1) / (den + 1)`` on probabilities,
    is a training objective, not a metric.)"""
    confusion_count = re.compile(r"bincount\([^)]*minlength\s*=\s*\w+\s*\*\s*\w+")
    dice_formula = re.compile(r"2 \* (tp|inter)\b(?! \+ 1\))")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "scores.py":
            continue
        text = path.read_text()
        rel = path.relative_to(SRC.parent)
        if confusion_count.search(text) or dice_formula.search(text):
            found.append(f"{rel}: a metric formula")
        if re.search(r"^\s*from sklearn\.metrics import|^\s*import sklearn\.metrics", text, re.M):
            found.append(f"{rel}: sklearn.metrics")
    assert not found, found


def test_every_reduction_gives_the_formulas_value():
    """The same predictions scored by a fold record, the pooled summary (with bootstrap), the
    report's check and the sanity check: one number each."""
    import pandas as pd

    from awcl.evaluate.records import class_fold_record
    from awcl.evaluate.sanity import confusion_check
    from awcl.evaluate.summary import classification_summary, fold_classification_metrics

    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 90)
    p = np.where(rng.random(90) < 0.5, y, rng.integers(0, 3, 90))
    names = ["a", "b", "c"]
    df = pd.DataFrame({"fold": 0, "frame_id": [str(i) for i in range(90)], "patient_id": [str(i // 3) for i in range(90)],
                       "true": [names[i] for i in y], "pred": [names[i] for i in p]})  # fmt: skip
    formula = S.classification_scores(S.confusion(y, p, 3))
    fold = type("Fold", (), {"index": 0, "train": [], "val": [], "test": range(90)})()
    record, cm = class_fold_record(fold, y, p, 3)
    pooled = classification_summary(df, names, n_boot=50)["pooled"]
    per_fold = fold_classification_metrics(df, names)[0]
    for k, v in formula.items():
        assert record[k] == v and pooled[k] == v and per_fold[k] == v, k
    assert confusion_check(cm)["score"] == formula["balanced_accuracy"]
