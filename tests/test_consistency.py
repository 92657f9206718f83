"""The study's readers agree with the run (issue 26, bugs 1-5): each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from awcl.evaluate.metrics import segmentation_metrics
from awcl.evaluate.sanity import check_metrics, segmentation_check


# ------------------------------------------------------------------ bug 1: a run's own classes
def test_not_learned_uses_the_runs_own_classes():
    """Two classification tasks with different class sets, stacked: a classifier at chance on
    its own two classes is flagged, as its metrics.json's check flags it."""
    from awcl.study.report import not_learned_runs

    def run(name, task, classes, true, pred):
        p = pd.DataFrame({"run": name, "method": "simclr", "task": task, "task_kind": "classify",
                          "protocol": "full", "train_patients": None, "main": True,
                          "true": list(true), "pred": list(pred)})  # fmt: skip
        for c in classes:
            p[f"prob_{c}"] = (p.pred == c).astype(float)
        return p

    chance = run("chance", "t1", "ab", "ab" * 20, "aabb" * 10)  # right on half of each class
    good = run("good", "t2", "cdefg", "cdefg" * 8, "cdefg" * 8)
    flags = not_learned_runs(pd.concat([chance, good], ignore_index=True))
    assert [f["run"] for f in flags] == ["chance"]
    # the same verdict as the run's own metrics.json check
    cm = [[10, 10], [10, 10]]
    assert not check_metrics({"task": "classify", "classes": ["a", "b"], "confusion_matrix": cm,
                              "pooled": {"balanced_accuracy": 0.5}})["learned"]  # fmt: skip


# ------------------------------------------------------------------ bug 2: the run's group
def _study_grouped_by_video(out: Path) -> Path:
    """A study directory by hand: two finetune runs whose task split and bootstrapped by
    ``video_id`` (3 patients x 4 videos x 3 frames; correctness varies by video)."""
    rng = np.random.default_rng(0)
    runs = []
    for method, p_right in (("simclr", 0.5), ("awcl-coarse", 0.8)):
        rows = []
        for p in range(3):
            for v in range(4):
                right = rng.uniform() < p_right
                true = "ab"[(p + v) % 2]
                pred = true if right else "ab"[1 - (p + v) % 2]
                rows += [{"fold": 0, "frame_id": f"p{p}v{v}:{i}", "video_id": f"p{p}v{v}",
                          "patient_id": f"p{p}", "true": true, "pred": pred,
                          "prob_a": 0.9 if pred == "a" else 0.1, "prob_b": 0.1 if pred == "a" else 0.9}
                         for i in range(3)]  # fmt: skip
        d = out / "runs" / f"finetune-{method}"
        (d / "run").mkdir(parents=True)
        pd.DataFrame(rows).to_csv(d / "run" / "predictions.csv", index=False)
        labels = {"method": method, "seed": 0, "task": "cls", "task_kind": "classify", "protocol": "full",
                  "main": True, "ratio": None}  # fmt: skip
        rec = {"kind": "finetune", "name": method, "labels": labels,
               "result": {"task": "classify", "group": "video_id", "folds": []}}  # fmt: skip
        (d / "DONE").write_text(json.dumps(rec))
        runs.append({"dir": d.name, "kind": "finetune"})
    (out / "study.json").write_text(json.dumps({"runs": runs}))
    return out


def test_report_bootstraps_over_the_runs_group(tmp_path):
    from awcl.evaluate.summary import classification_summary, paired_bootstrap_diff
    from awcl.study.report import (
        N_BOOT,
        aligned,
        load_predictions,
        load_study,
        paired_difference,
        pooled_summary,
    )

    preds = load_predictions(load_study(_study_grouped_by_video(tmp_path)))
    one = preds[preds.method == "simclr"]
    raw = pd.read_csv(tmp_path / "runs" / "finetune-simclr" / "run" / "predictions.csv")
    by = {g: classification_summary(raw.drop(columns="video_id" if g != "video_id" else []), ["a", "b"], g,
                                    N_BOOT, seed=0)["intervals"]["accuracy"] for g in ("video_id", "patient_id")}  # fmt: skip
    assert by["video_id"] != by["patient_id"]  # the two units give different intervals here
    _, lo, hi = pooled_summary(one, "classify")["accuracy"]
    assert [lo, hi] == pytest.approx(by["video_id"])
    # the paired difference: over videos too
    pa, pb = aligned(preds, "awcl-coarse", "simclr")
    pa, pb = (p.drop(columns=["prob_a", "prob_b"]) for p in (pa, pb))
    want = {g: paired_bootstrap_diff(pa, pb, "accuracy", g, n=N_BOOT, seed=0) for g in ("video_id", "patient_id")}
    assert want["video_id"][1:] != want["patient_id"][1:]
    d, lo, hi, _ = paired_difference(preds, "awcl-coarse", "simclr", "accuracy", "classify")
    assert (d, lo, hi) == pytest.approx(want["video_id"])


def test_finetune_record_keeps_group_and_learned(tmp_path, monkeypatch):
    import importlib

    from awcl.study.backends import finetune_run
    from awcl.study.runs import Run

    metrics = {"task": "classify", "protocol": "full", "classes": ["a", "b"], "folds": [], "group": "video_id",
               "learned": {"learned": False, "reason": "at chance"}}  # fmt: skip
    ft = importlib.import_module("awcl.evaluate.finetune")  # the package exports a same-named function
    monkeypatch.setattr(ft, "finetune", lambda cfg: metrics)
    run = Run("finetune", "x", {"task": "classify", "protocol": "full", "data": str(tmp_path)})
    run.dir = tmp_path / "r"
    res = finetune_run(run, {})
    assert res.group == "video_id" and res.learned["learned"] is False


# ------------------------------------------------------------------ bug 3: the trivial baselines
def test_classification_chance_counts_the_classes_in_the_test_truth():
    """K=3, class 'c' absent from the test truth: predicting 'a' everywhere scores balanced
    accuracy 0.5 (recall 1 and 0 over the two present classes): that is chance here."""
    cm = [[50, 0, 0], [50, 0, 0], [0, 0, 0]]
    chk = check_metrics({"task": "classify", "classes": ["a", "b", "c"], "confusion_matrix": cm,
                         "pooled": {"balanced_accuracy": 0.5}})  # fmt: skip
    assert not chk["learned"] and chk["baseline"] == pytest.approx(0.5)


def test_classification_check_with_a_missing_pooled_value_is_not_learned():
    chk = check_metrics({"task": "classify", "classes": ["a", "b", "c"], "pooled": {"balanced_accuracy": None},
                         "mean": {"balanced_accuracy": 0.34}})  # fmt: skip
    assert not chk["learned"] and chk["score"] == pytest.approx(0.34)
    # nothing to score at all: not reported as learned either
    chk = check_metrics({"task": "classify", "classes": ["a", "b"], "pooled": {"balanced_accuracy": None}})
    assert chk["learned"] is False and chk["score"] is None


def test_multiclass_segmentation_baseline_is_a_constant_predictors_score():
    """3 classes (background, 1, 2): the baseline is the best score any constant mask gets."""
    true_n = np.array([500.0, 300.0, 200.0])
    constant = []
    for c in range(3):
        cm = np.zeros((3, 3))
        cm[:, c] = true_n  # every pixel predicted as class c
        constant.append(segmentation_metrics(cm)["dice"] if c else 0.0)
    cm = np.array([[450, 30, 20], [90, 210, 0], [60, 0, 140]], dtype=float)  # true counts as above
    chk = segmentation_check(cm)
    assert chk["baseline"] == pytest.approx(max(constant))
    assert chk["learned"]  # Dice ~0.70 is far above every constant mask


# ------------------------------------------------------------------ bug 4: one headline metric
def test_runner_and_report_use_the_same_headline(tmp_path):
    from awcl.evaluate.tasks import TASKS, headline_metric
    from awcl.study.records import FinetuneResult
    from awcl.study.report import Results, pairwise_tables
    from awcl.study.runner import headline
    from awcl.study.runs import Run

    for kind in TASKS:
        from awcl.evaluate.tasks import METRICS

        folds = [{m: 0.5 for m in METRICS[kind]}]
        line = headline(Run("finetune", "x", {}, {"task_kind": kind}), FinetuneResult(folds=folds))
        assert line.startswith(headline_metric(kind) + " ")
    preds = load_two_methods(tmp_path)
    tables, _, _ = pairwise_tables(Results(predictions=preds))
    assert tables and tables[0].header[1] == "macro-F1" and headline_metric("classify") == "f1"


def load_two_methods(tmp_path: Path) -> pd.DataFrame:
    from awcl.study.report import load_predictions, load_study

    return load_predictions(load_study(_study_grouped_by_video(tmp_path)))


# ------------------------------------------------------------------ bug 5: encoder, lr, HC
class _Tiny(nn.Module):
    """A small classifier: encoder (named ``name``) + linear head."""

    def __init__(self, name: str = "encoder"):
        super().__init__()
        self.name = name
        setattr(self, name, nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(getattr(self, self.name)(x))


def test_param_groups_take_the_encoder_explicitly():
    from awcl.evaluate.optim import param_groups

    model = _Tiny("backbone")  # not called ``encoder``: found only when passed
    enc = {id(q) for q in model.backbone.parameters()}
    groups = param_groups(model, 0.0, lr=0.1, encoder_lr_scale=0.1, encoder=model.backbone)
    for g in groups:
        assert g["lr"] == pytest.approx(0.01 if id(g["params"][0]) in enc else 0.1)


def test_fit_logs_the_heads_lr(tmp_path):
    """Task II: encoder at 0.01, head at 0.1; the history's lr is the head's."""
    from awcl.evaluate.fit import DownstreamModule, RuntimeOptions, fit_fold
    from awcl.evaluate.optim import Optim
    from awcl.runtime.precision import Choice

    torch.manual_seed(0)
    n = 12
    x = torch.randint(0, 256, (n, 16, 16), dtype=torch.uint8)
    y = torch.arange(n) % 2
    fold = SimpleNamespace(index=0, train=np.arange(8), val=np.arange(8, 10), test=np.arange(10, 12))
    model = _Tiny()
    optim = Optim("sgd", 0.1, 0.9, 0.0, warmup=0.0, encoder_lr_scale=0.1)
    module = DownstreamModule(model, "classify", 2, optim, (x, y), fold, batch_size=4, augment_cfg=None,
                              channels_last=False, seed=0, encoder=model.encoder)  # fmt: skip
    fit_fold(module, tmp_path, RuntimeOptions(Choice("32-true", False, "test", "cpu")), max_epochs=1)
    assert module.history[-1]["lr"] == pytest.approx(0.1)


def test_pooled_hc_fail_rate_needs_no_table_column():
    """The per-fold hc_fail_rate needs only the predicted HC; so does the pooled one."""
    from awcl.evaluate.summary import segmentation_summary

    df = pd.DataFrame({"fold": 0, "patient_id": ["p0", "p0", "p1", "p1"],
                       "cm_0_0": 90, "cm_0_1": 0, "cm_1_0": 0, "cm_1_1": 10,
                       "hc_pred_mm": [150.0, np.nan, 160.0, 170.0],
                       "hc_gt_ellipse_mm": [151.0, 140.0, 161.0, 171.0]})  # fmt: skip
    s = segmentation_summary(df, "patient_id", n_boot=0)
    assert s["pooled"]["hc_fail_rate"] == pytest.approx(0.25)
