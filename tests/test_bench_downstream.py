"""The plain reference of benchmarks/bench_downstream.py on tiny synthetic data: its metrics
agree with scikit-learn and hand computation, it sees exactly awcl's frames, folds and
validation parts, follows the preset's schedule and augmentation settings, and selects its
epoch on validation only. A few seconds in all."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

import awcl  # noqa: F401  (torchvision shim)
from _synth import H, W, make_class_dataset, make_seg_dataset
from awcl.data.store import DatasetWriter, open_dataset
from awcl.evaluate.config import PRESETS, FinetuneConfig
from awcl.evaluate.folds import task_folds
from awcl.evaluate.optim import lr_factor

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_downstream.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_downstream", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_downstream"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_per_image_dice_matches_hand_and_sklearn(bench):
    pred = np.zeros((4, 6, 5), np.uint8)
    true = np.zeros((4, 6, 5), np.uint8)
    pred[0, 0, :4] = 1  # 4 predicted pixels
    true[0, 0, 1:5] = 1
    true[0, 1, :2] = 2  # 6 true foreground pixels (two classes), 3 shared
    pred[1, 2, 2] = 1  # prediction without truth: 0
    # image 2: both empty -> 1 (the HC18 convention); image 3: random
    rng = np.random.default_rng(0)
    pred[3], true[3] = rng.integers(0, 3, (6, 5)), rng.integers(0, 3, (6, 5))
    d = bench.per_image_dice(pred, true)
    assert d[0] == pytest.approx(2 * 3 / 10)
    assert d[1] == 0.0 and d[2] == 1.0
    ref = [f1_score(t.ravel() > 0, p.ravel() > 0, zero_division=1.0) for p, t in zip(pred, true)]
    np.testing.assert_allclose(d, ref)


def test_macro_f1_matches_sklearn(bench):
    rng = np.random.default_rng(1)
    for k in (2, 3, 4):
        t, p = rng.integers(0, k, 50), rng.integers(0, k, 50)
        p[p == k - 1] = 0  # a class never predicted
        got = float(bench.macro_f1(bench.confusion(t, p, k)))
        want = f1_score(t, p, labels=list(range(k)), average="macro", zero_division=0)
        assert got == pytest.approx(want)
    t = np.array([0, 0, 1, 1])  # class 2 neither true nor predicted: counts as 0, as sklearn
    assert float(bench.macro_f1(bench.confusion(t, t, 3))) == pytest.approx(
        f1_score(t, t, labels=[0, 1, 2], average="macro", zero_division=0))


def test_dice_from_awcls_pixel_counts(bench):
    rng = np.random.default_rng(2)
    pred, true = rng.integers(0, 3, (5, 8, 8)), rng.integers(0, 3, (5, 8, 8))
    pred[4], true[4] = 0, 0
    cols = {f"cm_{t}_{p}": [int(((true[i] == t) & (pred[i] == p)).sum()) for i in range(5)]
            for t in range(3) for p in range(3)}  # fmt: skip
    np.testing.assert_allclose(bench.dice_from_confusion_columns(pd.DataFrame(cols)),
                               bench.per_image_dice(pred, true))


def test_bootstrap_interval_brackets_the_headline(bench):
    rng = np.random.default_rng(3)
    seg = pd.DataFrame({"fold": 0, "group": rng.integers(0, 12, 60).astype(str), "dice": rng.random(60)})
    lo, hi = bench.bootstrap_interval("segment", seg, 2, 300, 0)
    assert lo <= bench.headline_of("segment", seg, 2) <= hi
    assert (lo, hi) == bench.bootstrap_interval("segment", seg, 2, 300, 0)  # seeded
    cls = pd.DataFrame({"fold": 0, "group": rng.integers(0, 12, 60).astype(str),
                        "true": rng.integers(0, 3, 60), "pred": rng.integers(0, 3, 60)})
    lo, hi = bench.bootstrap_interval("classify", cls, 3, 300, 0)
    assert lo <= bench.headline_of("classify", cls, 3) <= hi


def _same_folds(a, b) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(a, b, strict=True):
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(fa, part), getattr(fb, part))


def test_classification_frames_and_folds_are_awcls(bench, tmp_path):
    ds = open_dataset(make_class_dataset(tmp_path / "c", patients_per_class=5, frames=4))
    cfg = FinetuneConfig(data=str(ds.root), out="", task="classify", folds=3, max_per_video=2,
                         group="video_id")
    data = bench.select_data(cfg, ds)
    assert len(data.x) == 3 * 5 * 2  # the per-video cap applied
    assert pd.Series(data.groups).value_counts().max() == 2
    folds, groups = task_folds(cfg, ds)
    _same_folds(data.folds, folds)
    np.testing.assert_array_equal(data.groups, groups)
    for f in data.folds:  # no group on two sides
        parts = [set(data.groups[p]) for p in (f.train, f.val, f.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_segmentation_with_three_mask_classes_loads(bench, tmp_path):
    rng = np.random.default_rng(4)
    with DatasetWriter(tmp_path / "s3", size=(H, W), source="synth-3") as w:
        for i in range(12):
            m = np.zeros((H, W), np.uint8)
            m[4:14, 5:20] = 1
            m[18:26, 10:30] = 2
            w.add((rng.random((H, W)) * 50).astype(np.uint8) + m * 80, video_id=f"v{i}",
                  patient_id=f"p{i // 2}", mask=m)
        w.meta["mask_classes"] = {"0": "background", "1": "a", "2": "b"}
    ds = open_dataset(tmp_path / "s3")
    cfg = FinetuneConfig(data=str(ds.root), out="", task="segment", folds=3)
    data = bench.select_data(cfg, ds)
    assert data.num_classes == 3 and int(data.y.max()) == 2
    _same_folds(data.folds, task_folds(cfg, ds)[0])


@pytest.mark.parametrize("preset", ["task1", "task2", "task3"])
def test_reference_schedule_is_the_presets(bench, preset):
    p = PRESETS[preset]
    s = bench.reference_settings(p, 1e-3, 0.0, False, False, "headline")
    assert (s.batch, s.cosine, s.milestones, s.warmup) == (p.batch_size, p.cosine, p.milestones, p.warmup)
    for total in (7, 120, 3000, 20_000):
        ours, awcls = bench.lr_lambda(s, total), lr_factor(p.optim(), total)
        steps = sorted({*range(0, min(total, 600)), *range(0, total, max(1, total // 97)), total - 1})
        np.testing.assert_allclose([ours(i) for i in steps], [awcls(i) for i in steps], rtol=1e-12)


def test_reference_augmentation_moves_frame_and_mask_together(bench):
    s = bench.reference_settings(PRESETS["task3"], 1e-3, 0.0, False, False, "headline")
    aug = bench.ReferenceAugment(s)
    mask = torch.zeros(8, H, W, dtype=torch.uint8)
    mask[:, 6:20, 4:22] = 1
    x = mask[:, None].float()  # the frame is the mask itself
    torch.manual_seed(0)
    xa, ma = aug(x, mask)
    assert xa.shape == x.shape and ma.shape == mask.shape and ma.dtype == mask.dtype
    assert not torch.equal(ma, mask)  # something moved
    agree = ((xa[:, 0] > 0.5) == (ma > 0)).float().mean()
    assert agree > 0.97  # bilinear edges aside, frame and mask moved together
    c = bench.reference_settings(PRESETS["task1"], 1e-3, 0.0, False, False, "headline")
    xc, mc = bench.ReferenceAugment(c)(torch.rand(4, 1, H, W), None)
    assert mc is None and xc.min() >= 0 and xc.max() <= 1


def test_candidate_specs(bench):
    assert bench.parse_candidate("preset") == ({}, {})
    assert bench.parse_candidate("optimizer=rmsprop_tf,lr=1e-4,cosine=false") == (
        {"optimizer": "rmsprop_tf", "lr": 1e-4}, {"cosine": False})
    assert bench.parse_candidate("head=linear,weight_decay=0") == ({"head": "linear"}, {"weight_decay": 0.0})
    with pytest.raises(SystemExit, match="sononett"):  # a typo stops before anything trains
        bench.parse_candidate("head=sononett")
    with pytest.raises(SystemExit):
        bench.parse_candidate("epochs=3")
    before = PRESETS["task3"]
    with bench.preset_overrides("task3", {"cosine": False}):
        assert PRESETS["task3"].cosine is False
    assert PRESETS["task3"] is before


def test_reference_models_shapes(bench):
    x = torch.zeros(2, 1, H, W)
    assert bench.PlainUNet(3).eval()(x).shape == (2, 3, H, W)
    assert bench.plain_classifier(4).eval()(x).shape == (2, 4)


def test_reference_selects_on_validation_and_predicts_test_once(bench, tmp_path, monkeypatch):
    def tiny(task, classes):  # the loop is under test here, not ResNet-18 (kept fast)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1))

    monkeypatch.setattr(bench, "reference_model", tiny)
    ds = open_dataset(make_seg_dataset(tmp_path / "seg", n=16))
    cfg = FinetuneConfig(data=str(ds.root), out="", task="segment", folds=2, epochs=2)
    data = bench.select_data(cfg, ds)
    s = bench.reference_settings(cfg.resolved_preset(), 1e-3, 0.0, False, False, "headline")
    s.batch, s.epochs = 4, 3
    side = bench.run_reference(data, s, seed=0)
    for f in data.folds:
        assert sorted(side.val[side.val.fold == f.index].row) == sorted(f.val)
        assert sorted(side.test[side.test.fold == f.index].row) == sorted(f.test)
    assert all(1 <= e <= 3 for e in side.best_epochs)
    assert 0 <= bench.headline_of("segment", side.test, 2) <= 1


def test_main_reference_only(bench, tmp_path, capsys, monkeypatch):
    def tiny(task, classes):  # the driver is under test here, not ResNet-18 (kept fast)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(8, classes))

    monkeypatch.setattr(bench, "reference_model", tiny)
    ds = make_class_dataset(tmp_path / "c", patients_per_class=4, frames=3)
    res = bench.main(["classify", "--data", str(ds), "--skip-awcl", "--ref-precision", "32",
                      "--no-estimate", "--epochs", "1", "--folds", "2", "--bootstrap", "50",
                      "--max-per-video", "2", "--json", str(tmp_path / "r.json"),
                      "--tables", str(tmp_path / "tables")])
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "reference-info.json", "reference-test.csv", "reference-val.csv"]
    assert "validation (selection)" in out and "test (reported)" in out
    assert res["frames"] == 3 * 4 * 2 and 0 <= res["reference"]["test"] <= 1
    assert res["reference"]["val_ci"] is not None and (tmp_path / "r.json").is_file()


def test_paired_difference_interval_against_a_resampling_loop(bench):
    """The vectorised paired bootstrap equals a plain loop that resamples the groups once per
    draw and scores both sides on the same draw; identical sides give exactly zero."""
    rng = np.random.default_rng(5)
    n, k = 48, 3
    base = pd.DataFrame({"fold": np.repeat([0, 1], n // 2), "row": np.arange(n),
                         "group": rng.integers(0, 10, n).astype(str), "true": rng.integers(0, k, n)})
    a = base.assign(pred=rng.integers(0, k, n))
    b = base.assign(pred=np.where(rng.random(n) < 0.6, base["true"], rng.integers(0, k, n)))
    lo, hi = bench.paired_difference_interval("classify", a, b, k, 200, 0)
    groups = sorted(set(base["group"]))
    w = np.random.default_rng(0).multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=200)
    vals = []
    for draw in w:  # per draw: each group's rows repeated as often as it was drawn
        idx = np.concatenate([np.repeat(np.flatnonzero(base["group"] == g), c) for g, c in zip(groups, draw)])
        vals.append(f1_score(a["true"][idx], a["pred"][idx], labels=range(k), average="macro", zero_division=0)
                    - f1_score(b["true"][idx], b["pred"][idx], labels=range(k), average="macro", zero_division=0))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(vals, [2.5, 97.5])), abs=1e-9)
    assert bench.paired_difference_interval("classify", a, a, k, 100, 0) == (0.0, 0.0)
    seg = base[["fold", "row", "group"]].assign(dice=rng.random(n))
    assert bench.paired_difference_interval("segment", seg, seg.assign(dice=seg.dice - 0.1), 2, 100, 0
                                            ) == pytest.approx((0.1, 0.1))
    with pytest.raises(SystemExit, match="test frames differ"):
        bench.paired_difference_interval("segment", seg, seg.iloc[1:], 2, 100, 0)


def test_reference_tables_round_trip_and_refuse_other_folds(bench, tmp_path):
    ds = make_class_dataset(tmp_path / "c", patients_per_class=4, frames=3)
    cfg = FinetuneConfig(data=str(ds), out="", task="classify", init="random", folds=2, epochs=1,
                         seed=0, bootstrap=0, max_per_video=2)
    data = bench.select_data(cfg, open_dataset(ds))

    def table(rows, fold):
        return pd.DataFrame({"fold": fold, "row": rows, "group": data.groups[rows].astype(str),
                             "true": 0, "pred": 0})

    val = pd.concat([table(f.val, f.index) for f in data.folds])
    test = pd.concat([table(f.test, f.index) for f in data.folds])
    bench.save_tables(str(tmp_path / "t"), "reference", bench.Side("reference", val, test, [1, 1], 2.5))
    side = bench.load_reference_tables(str(tmp_path / "t"), data)
    assert side.best_epochs == [1, 1] and len(side.test) == len(test)
    pd.testing.assert_frame_equal(side.test.reset_index(drop=True), test.reset_index(drop=True), check_dtype=False)
    test.iloc[:1].to_csv(tmp_path / "t" / "reference-test.csv", index=False)  # another run's frames
    with pytest.raises(SystemExit, match="frames differ"):
        bench.load_reference_tables(str(tmp_path / "t"), data)


def test_awcl_test_frames_pair_with_the_references(bench, tmp_path):
    """awcl's predictions.csv names frames by frame_id; its test table must carry the shared
    selection's row of each, or the paired interval cannot match the two sides (it failed on
    POCUS with every awcl row at -1)."""
    ds = open_dataset(make_class_dataset(tmp_path / "c", patients_per_class=4, frames=3))
    cfg = FinetuneConfig(data=str(ds.root), out="", task="classify", folds=2, max_per_video=2, group="video_id")
    data = bench.select_data(cfg, ds)
    rng = np.random.default_rng(0)
    preds, ref = [], []
    for f in data.folds:
        true = data.y[f.test].numpy()
        pred = rng.integers(0, data.num_classes, len(f.test))
        preds.append(pd.DataFrame({"fold": f.index, "frame_id": data.frame_ids[f.test],
                                   "video_id": data.groups[f.test],
                                   "true": [data.names[i] for i in true], "pred": [data.names[i] for i in pred]}))
        ref.append(bench.frame_table("classify", f.index, np.asarray(f.test), data.groups, true, true))
    table, _ = bench.awcl_test_table(cfg, data, pd.concat(preds[::-1], ignore_index=True))  # any row order
    ref = pd.concat(ref, ignore_index=True)
    assert sorted(table["row"]) == sorted(ref["row"]) and (table["row"] >= 0).all()
    lo, hi = bench.paired_difference_interval("classify", table, ref, data.num_classes, 200, 0)
    assert lo <= hi < 0  # random predictions against a perfect reference
    bad = preds[0].assign(frame_id="not-a-frame")
    with pytest.raises(SystemExit, match="outside the shared selection"):
        bench.awcl_test_table(cfg, data, bad)
