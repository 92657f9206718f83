"""Downstream training on the Lightning engine: the best validation epoch is what is tested,
logs are written, the precision choice is recorded, Task presets select their heads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from _synth import make_class_dataset, make_seg_dataset
from awcl.data.store import open_dataset
from awcl.errors import AwclError
from awcl.evaluate import FinetuneConfig, finetune
from awcl.evaluate.finetune import PRESETS, load_frames
from awcl.evaluate.heads import Classifier, SonoNetHead, UNet, make_head
from awcl.models import Encoder
from awcl.train.engine import to_input


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    return make_class_dataset(tmp_path_factory.mktemp("d") / "cls")


def test_best_checkpoint_is_what_the_test_fold_sees(cls_data, tmp_path):
    out = tmp_path / "run"
    m = finetune(FinetuneConfig(data=str(cls_data), out=str(out), head="linear", epochs=3,
                                batch_size=8, folds=2, keep_checkpoints=True, precision="32-true"))
    hist = pd.read_csv(out / "history.csv")
    pred = pd.read_csv(out / "predictions.csv")
    ds = open_dataset(cls_data)
    for f in m["folds"]:
        h = hist[hist.fold == f["fold"]]
        assert list(h.epoch) == [1, 2, 3]
        assert f["best_epoch"] == int(h.epoch.iloc[int(np.argmax(h.val_f1.to_numpy()))])
        assert f["val_f1"] == pytest.approx(h.val_f1.max())
        ckpt = out / "checkpoints" / f"fold{f['fold']}" / "best.ckpt"
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        model = Classifier(Encoder(), make_head("linear", 3))
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        fp = pred[pred.fold == f["fold"]]
        rows = ds.manifest.index[ds.manifest.frame_id.isin(fp.frame_id)].to_numpy()
        with torch.no_grad():
            prob = model.eval()(to_input(load_frames(ds, rows, None))).softmax(1).numpy()
        by_id = dict(zip(ds.manifest.frame_id.iloc[rows], prob[:, 0]))
        # the test predictions come from the best validation epoch's weights
        assert np.allclose(fp.prob_covid.to_numpy(), [by_id[i] for i in fp.frame_id], atol=1e-4)
    assert (out / "logs" / "tb" / "fold0").is_dir()
    assert (out / "logs" / "csv" / "fold1" / "metrics.csv").is_file()
    env = m["environment"]
    assert env["precision"] == "32-true" and env["accelerator"] == "cpu" and env["reason"]


def test_checkpoints_dropped_by_default_and_auto_precision_recorded(cls_data, tmp_path):
    out = tmp_path / "run"
    m = finetune(FinetuneConfig(data=str(cls_data), out=str(out), protocol="partial", epochs=2,
                                folds=2))
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").rglob("*.ckpt"))
    assert m["environment"]["precision"] in ("32-true", "bf16-mixed")
    assert json.loads((out / "metrics.json").read_text())["head"] == "sononet"  # task1's head


def test_presets_tie_heads_and_iterations():
    assert PRESETS["task1"].head == "sononet" and PRESETS["task2"].head == "fc2"
    assert not PRESETS["task1"].augment.vflip and not PRESETS["task3"].augment.vflip
    assert FinetuneConfig(data="", out="").resolved_head == "sononet"
    assert FinetuneConfig(data="", out="", preset="task2").resolved_head == "fc2"
    assert FinetuneConfig(data="", out="", head="linear").resolved_head == "linear"
    seg = FinetuneConfig(data="", out="", task="segment")
    assert seg.resolved_preset().iterations == 50_000  # the paper's Task III schedule
    assert FinetuneConfig(data="", out="", task="segment", epochs=3).resolved_preset().iterations is None


def test_iterations_schedule_stops_at_step_count(tmp_path, monkeypatch):
    import dataclasses
    import importlib

    ft = importlib.import_module("awcl.evaluate.finetune")  # the package exports a same-named function
    d = make_seg_dataset(tmp_path / "seg", n=24)
    monkeypatch.setitem(ft.PRESETS, "task3", dataclasses.replace(PRESETS["task3"], iterations=3))
    m = finetune(FinetuneConfig(data=str(d), out=str(tmp_path / "o"), task="segment",
                                batch_size=8, folds=2, protocol="partial"))
    steps = pd.read_csv(tmp_path / "o" / "logs" / "csv" / "fold0" / "metrics.csv")["step"].max()
    assert steps <= 3 and m["mean"]["miou"] >= 0


def test_partial_segmentation_keeps_encoder_frozen(tmp_path):
    from awcl.evaluate.fit import DownstreamModule, Optim

    model = UNet(Encoder(), 2)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    mod = DownstreamModule(model, "segment", 2, Optim("sgd", 0.1, 0.9, 0.0), (torch.zeros(4, 32, 40,
                           dtype=torch.uint8), torch.zeros(4, 32, 40, dtype=torch.uint8)),
                           fold=None, batch_size=2, augment_cfg=None, channels_last=False, seed=0,
                           frozen=model.encoder)
    mod.train()
    assert not model.encoder.training and model.up1.training
    x = torch.rand(2, 1, 32, 40)
    mod.model(x).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert isinstance(make_head("sononet", 3), SonoNetHead)


def test_gpu_asked_without_one_is_one_line(cls_data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AwclError, match="no CUDA device"):
        finetune(FinetuneConfig(data=str(cls_data), out=str(tmp_path / "o"), accelerator="gpu"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_process_ddp_finetune_writes_one_complete_run(cls_data, tmp_path):
    """--devices 2 --strategy ddp on CPU (gloo): Lightning launches a second process; the run
    directory is written once, every frame is tested exactly once, selection is per epoch."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "awcl", "finetune", "--data", str(cls_data), "--out", str(out),
           "--epochs", "2", "--folds", "2", "--batch-size", "8", "--head", "linear",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("accuracy") == 1  # only rank zero reports
    m = json.loads((out / "metrics.json").read_text())
    assert m["environment"]["devices"] == "2"
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 60 and pred.frame_id.is_unique
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 4 and all(1 <= f["best_epoch"] <= 2 for f in m["folds"])
    assert not list(tmp_path.glob(".ddp.tmp-*"))  # the other rank left nothing behind
