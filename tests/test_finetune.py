"""Tiny end-to-end downstream runs on synthetic prepared datasets (32x40 frames)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from _synth import make_class_dataset, make_seg_dataset
from awcl.cli import main
from awcl.errors import AwclError, DataError
from awcl.evaluate import FinetuneConfig, finetune
from awcl.evaluate.finetune import PRESETS


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    return make_class_dataset(tmp_path_factory.mktemp("d") / "cls")


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return make_seg_dataset(tmp_path_factory.mktemp("d") / "seg")


def _files(run):
    return {p.name for p in run.iterdir()}


def test_full_finetune_writes_run(cls_data, tmp_path):
    out = tmp_path / "full"
    m = finetune(FinetuneConfig(data=str(cls_data), out=str(out), protocol="full", head="sononet",
                                epochs=2, batch_size=8, folds=2))
    assert {"metrics.json", "config.yaml", "predictions.csv", "history.csv",
            "confusion_matrix.png", "curves.png"} <= _files(out)
    assert json.loads((out / "metrics.json").read_text())["mean"] == m["mean"]
    assert m["classes"] == ["covid", "pneumonia", "regular"] and len(m["folds"]) == 2
    for k in ("accuracy", "precision", "recall", "f1"):
        assert 0 <= m["mean"][k] <= 1 and k in m["std"]
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 60 and pred["frame_id"].is_unique  # every frame tested exactly once
    assert np.array(m["confusion_matrix"]).sum() == 60
    for f in m["folds"]:  # model selection on val: the chosen epoch exists
        assert 1 <= f["best_epoch"] <= 2
        fold_pred = pred[pred["fold"] == f["fold"]]
        assert f["accuracy"] == pytest.approx((fold_pred["true"] == fold_pred["pred"]).mean())
    # clinical measures: per fold and mean, pooled, patient-level intervals, per class, by video
    for k in ("balanced_accuracy", "auroc"):
        assert k in m["mean"] and all(k in f for f in m["folds"])
    for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auroc"):
        lo, hi = m["intervals"][k]
        assert lo <= m["pooled"][k] <= hi
    assert m["pooled"]["accuracy"] == pytest.approx((pred["true"] == pred["pred"]).mean())
    assert set(m["per_class"]) == set(m["classes"])
    assert m["video_level"]["majority"]["n_videos"] == 15  # 15 videos of 4 frames
    assert "intervals" in m["video_level"]["mean_prob"]
    from awcl.evaluate.summary import classification_summary

    again = classification_summary(pred, m["classes"], "patient_id", 1000, 0)  # from the CSV alone
    assert again["pooled"] == pytest.approx(m["pooled"]) and again["intervals"] == m["intervals"]
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 2 * 2
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seed"] == 0 and cfg["resolved_preset"]["optimizer"] == "sgd"


def test_partial_learns_and_is_reproducible(cls_data, tmp_path):
    kw = dict(data=str(cls_data), protocol="partial", head="linear", epochs=30, batch_size=8,
              folds=3, seed=1)
    a = finetune(FinetuneConfig(out=str(tmp_path / "a"), **kw))
    b = finetune(FinetuneConfig(out=str(tmp_path / "b"), **kw))
    assert a["mean"] == b["mean"]  # seeded
    # three visually distinct synthetic classes: far above chance (1/3) even from random init
    assert a["mean"]["accuracy"] > 0.55


def test_classes_selection_and_errors(cls_data, tmp_path):
    m = finetune(FinetuneConfig(data=str(cls_data), out=str(tmp_path / "m"), protocol="partial",
                                head="fc2", epochs=1, folds=2,
                                classes=["COVID", "other=pneumonia+regular"]))
    assert m["classes"] == ["COVID", "other"]
    assert sum(map(sum, m["confusion_matrix"])) == 60
    with pytest.raises(AwclError, match=r"unknown class name.*viral.*available: covid"):
        finetune(FinetuneConfig(data=str(cls_data), out=str(tmp_path / "x"), classes=["covid", "viral"]))
    with pytest.raises(AwclError, match=r"no label column 'nope'"):
        finetune(FinetuneConfig(data=str(cls_data), out=str(tmp_path / "x"), label="nope"))
    with pytest.raises(AwclError, match=r"fewer than the 6 needed"):
        finetune(FinetuneConfig(data=str(cls_data), out=str(tmp_path / "x"), folds=6,
                                classes=["covid", "regular"]))
    assert not (tmp_path / "x").exists()


def test_preset_schedule_follows_the_run():
    # milestones are fractions of the run: --epochs changes the length, not where lr decays
    p = FinetuneConfig(data="", out="", epochs=7).resolved_preset()
    assert p.milestones == PRESETS["task1"].milestones and p.lr == PRESETS["task1"].lr
    assert p.milestones == (30 / 70, 55 / 70)
    p = FinetuneConfig(data="", out="", preset="task2", epochs=20, batch_size=4, lr=0.5).resolved_preset()
    assert p.milestones == (0.75,) and p.batch_size == 4 and p.lr == 0.5
    assert FinetuneConfig(data="", out="", task="segment").resolved_preset().optimizer == "adam"
    p = FinetuneConfig(data="", out="", task="segment", optimizer="rmsprop_torch").resolved_preset()
    assert p.optimizer == "rmsprop_torch"


def test_segmentation_run_with_hc(seg_data, tmp_path):
    out = tmp_path / "seg"
    rc = main(["finetune", "--data", str(seg_data), "--out", str(out), "--task", "segment",
               "--epochs", "2", "--batch-size", "8", "--folds", "2", "--dice-loss"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["background", "head"]
    for k in ("gaa", "ma", "miou", "fg_iou", "dice", "dice_per_image", "hc_mae_mm",
              "hc_fail_rate", "hc_mae_vs_gt_ellipse_mm"):
        assert k in m["mean"]
    assert "learned" in m["learned"]
    for f in m["folds"]:
        # the ground-truth ellipse reproduces the table's HC: the mm conversion is right
        assert f["hc_gt_ellipse_vs_table_mm"] < 1.0
        assert 0 <= f["gaa"] <= 1
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 24 and {"hc_pred_mm", "hc_table_mm", "dice"} <= set(pred.columns)
    # surface distances in mm per frame and fold; pooled numbers with patient-level intervals
    assert {"cm_0_0", "cm_0_1", "cm_1_0", "cm_1_1", "hd95_mm", "msd_mm"} <= set(pred.columns)
    assert pred[["cm_0_0", "cm_0_1", "cm_1_0", "cm_1_1"]].to_numpy().sum() == np.array(
        m["confusion_matrix"]).sum()
    for k in ("gaa", "ma", "miou", "fg_iou", "dice", "dice_per_image", "hc_mae_mm", "hc_fail_rate"):
        assert k in m["pooled"] and k in m["intervals"]
    # per-image Dice is the mean of the predictions table's per-frame column
    assert m["pooled"]["dice_per_image"] == pytest.approx(pred["dice"].mean())
    assert {"hd95_mm", "msd_mm"} <= set(m["pooled"]) | set(m["mean"])


def test_segmentation_bad_mask_values(tmp_path):
    d = make_seg_dataset(tmp_path / "bad", n=12, bad_value=True)
    with pytest.raises(DataError, match=r"masks.npy: mask values \[7\] outside the classes 0..1"):
        finetune(FinetuneConfig(data=str(d), out=str(tmp_path / "o"), task="segment", epochs=1))


def test_cli_bad_input_one_line(cls_data, tmp_path, capsys):
    rc = main(["finetune", "--data", str(cls_data), "--out", str(tmp_path / "o"),
               "--classes", "covid,bogus"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("awcl: error:")


def test_segmentation_epoch_is_kept_on_validation_per_image_dice(seg_data, tmp_path):
    """The epoch a segmentation fold keeps is the best on the headline metric (per-image Dice)
    of its validation part, not pooled mIoU; the history's per-image Dice is the plain mean
    over validation images of 2|A∩B| / (|A| + |B|) (1 where both are empty)."""
    import numpy as np
    import pandas as pd
    import torch

    from awcl.evaluate.fit import DownstreamModule, Optim
    from awcl.evaluate.heads import UNet
    from awcl.models import Encoder

    out = tmp_path / "seg"
    rc = main(["finetune", "--data", str(seg_data), "--out", str(out), "--task", "segment",
               "--epochs", "3", "--batch-size", "8", "--folds", "2", "--precision", "32-true"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    hist = pd.read_csv(out / "history.csv")
    for f in m["folds"]:
        h = hist[hist.fold == f["fold"]]
        assert f["best_epoch"] == int(h.epoch.iloc[int(np.argmax(h.val_dice_per_image.to_numpy()))])

    # the validation reduction against a per-image loop
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(5, 8, 8, generator=g) > 0.6).long()
    y[0] = 0  # an image with no foreground in the truth
    logits = torch.randn(5, 2, 8, 8, generator=g)
    logits[0, 1] = -10.0  # ... nor in the prediction: Dice 1
    mod = DownstreamModule(UNet(Encoder(), 2), "segment", 2, Optim("sgd", 0.1, 0.9, 0.0),
                           (torch.zeros(5, 8, 8, dtype=torch.uint8), y.to(torch.uint8)), fold=None,
                           batch_size=5, augment_cfg=None, channels_last=False, seed=0)  # fmt: skip
    mod._val = []
    mod.forward = lambda x: logits  # type: ignore[method-assign]
    mod.validation_step((torch.zeros(5, 1, 8, 8), y), 0)
    cms = torch.cat([v[0] for v in mod._val]).numpy()
    from awcl.evaluate.scores import image_dice

    pred = logits.argmax(1)
    plain = []
    for i in range(5):
        a, b = y[i].bool(), pred[i].bool()
        s = int(a.sum() + b.sum())
        plain.append(1.0 if s == 0 else 2 * int((a & b).sum()) / s)
    assert image_dice(cms).tolist() == pytest.approx(plain)
