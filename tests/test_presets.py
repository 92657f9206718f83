"""The downstream presets in PyTorch's semantics (awcl.evaluate.optim): TF-style RMSprop
against a per-weight reference, first-step update sizes, schedules over the real run length,
no decay on norm/bias, the "did not learn" flag, and validation parts that keep classes."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from _synth import make_seg_dataset
from awcl.evaluate import FinetuneConfig, finetune
from awcl.evaluate.config import PRESETS
from awcl.evaluate.heads import Classifier, UNet, make_head
from awcl.evaluate.optim import (
    Optim,
    RMSpropTF,
    build_optimizer,
    build_schedule,
    lr_factor,
    param_groups,
    warmup_steps,
)
from awcl.evaluate.sanity import classification_check, segmentation_check
from awcl.evaluate.splits import carve_validation
from awcl.models import Encoder


def test_rmsprop_tf_matches_per_weight_reference():
    torch.manual_seed(0)
    w0 = torch.randn(7)
    grads = [torch.randn(7) * s for s in (0.01, 0.5, 3.0, 0.1)]
    p = torch.nn.Parameter(w0.clone())
    opt = RMSpropTF([p], lr=1e-2, rho=0.9, momentum=0.9, eps=1e-10, weight_decay=1e-3)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    # plain loop, weight by weight, TensorFlow's RMSProp formulas
    ref = []
    for i in range(7):
        w, ms, mom = float(w0[i]), 1.0, 0.0
        for g in grads:
            gi = float(g[i]) + 1e-3 * w
            ms = 0.9 * ms + 0.1 * gi * gi
            mom = 0.9 * mom + 1e-2 * gi / math.sqrt(ms + 1e-10)
            w -= mom
        ref.append(w)
    assert p.detach().numpy() == pytest.approx(np.array(ref), rel=1e-5, abs=1e-7)


def _unet_grad(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = UNet(Encoder(), 2)
    x = torch.rand(4, 1, 32, 40)
    y = (torch.rand(4, 32, 40) > 0.6).long()
    return model, x, y


def _first_update(name: str, lr: float) -> torch.Tensor:
    """|Δw| / lr of every weight after one optimiser step (no warmup), on a U-Net's real grads."""
    model, x, y = _unet_grad()
    before = [q.detach().clone() for q in model.parameters()]
    opt = build_optimizer(model, Optim(name, lr, 0.9, 0.0, warmup=0))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return torch.cat([(q.detach() - b).abs().flatten() for q, b in zip(model.parameters(), before)]) / lr


def test_task3_first_update_is_about_lr_not_ten_times():
    lr = PRESETS["task3"].lr
    first = _first_update(PRESETS["task3"].optimizer, lr)  # Adam: lr per weight, bias-corrected
    assert float(first.max()) <= 1.01
    tf = _first_update("rmsprop_tf", lr)
    torch_rms = _first_update("rmsprop_torch", lr)
    # TF semantics: |Δ| = lr·|g|/sqrt(0.9 + 0.1 g²) <= lr for the gradients of a network
    assert float(tf.max()) <= 1.0
    # PyTorch's (square average from zero): ~10 lr for every weight with a gradient
    moved = torch_rms[torch_rms > 0]
    assert float(moved.median()) > 9.0


def _relative_change(preset: str, name: str | None = None, warmup: float | None = None,
                     steps: int = 5, total: int = 150) -> float:
    """Largest ||Δw|| / ||w|| over the encoder's conv weights after the preset's first steps."""
    p = PRESETS[preset]
    torch.manual_seed(0)
    enc = Encoder()
    if preset == "task3":
        model = UNet(enc, 2)
        x, y = torch.rand(8, 1, 32, 40), (torch.rand(8, 32, 40) > 0.6).long()
    else:
        model = Classifier(enc, make_head(p.head, 3))
        x, y = torch.rand(8, 1, 32, 40), torch.randint(0, 3, (8,))
    o = p.optim()
    if name:
        o.name = name
    if warmup is not None:
        o.warmup = warmup
    before = copy.deepcopy(enc.state_dict())
    opt = build_optimizer(model, o, encoder=enc)
    sched = build_schedule(opt, o, total)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    worst = 0.0
    for k, w in enc.state_dict().items():
        if w.ndim == 4:
            worst = max(worst, float((w - before[k]).norm() / before[k].norm()))
    return worst


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_no_preset_wipes_an_encoder_in_its_first_steps(preset):
    # a pretrained encoder moves by a few percent, not by its own size (old Task III: 164 %)
    assert _relative_change(preset) < 0.1


def test_old_task3_preset_did_wipe_it():
    # the guard above can fail: PyTorch's RMSprop at the paper's setting, no warmup
    assert _relative_change("task3", name="rmsprop_torch", warmup=0.0) > 0.5
    assert _relative_change("task3", name="rmsprop_tf") < 0.1


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("epochs", [2, "paper"])
def test_schedule_spans_the_real_run(preset, epochs):
    p = PRESETS[preset]
    steps_per_epoch = 50
    total = steps_per_epoch * (p.epochs if epochs == "paper" else epochs)
    o = p.optim()
    f = lr_factor(o, total)
    w = warmup_steps(o, total)
    assert 1 <= w <= max(1, math.ceil(0.05 * total))
    assert f(0) < 0.5 and f(w) == pytest.approx(1.0)  # linear ramp, then the base lr
    end = p.lr_gamma ** len(p.milestones)
    if p.cosine:  # Task III: half cosine from the base lr to zero over the remaining steps
        assert f(total - 1) < 0.01 and f((w + total) // 2) == pytest.approx(0.5, abs=0.05)
    else:  # every milestone is reached, however short the run
        assert f(total - 1) == pytest.approx(end)
    for m in p.milestones:  # and not before its share of the run
        step = round(m * total)
        assert f(step - 1) > f(step)
        assert abs(step / total - m) < 0.02


def test_no_weight_decay_on_norm_and_bias():
    model = UNet(Encoder(), 2)
    groups = param_groups(model, 1e-3)
    decay = {id(q) for g in groups if g["weight_decay"] for q in g["params"]}
    for name, q in model.named_parameters():
        if q.ndim <= 1:  # BatchNorm weights/biases, conv/linear biases
            assert id(q) not in decay, name
        else:
            assert id(q) in decay, name
    assert {g["weight_decay"] for g in groups} == {1e-3, 0.0}
    # Task II: the encoder at a tenth of the FC layers' lr
    scaled = param_groups(model, 0.0, lr=0.1, encoder_lr_scale=0.1, encoder=model.encoder)
    enc = {id(q) for q in model.encoder.parameters()}
    for g in scaled:
        assert g["lr"] == pytest.approx(0.01 if id(g["params"][0]) in enc else 0.1)
        assert len({id(q) in enc for q in g["params"]}) == 1


# ------------------------------------------------------------------ did the run learn?
def test_segmentation_check_flags_trivial_predictors():
    true_fg, total = 300, 1000
    background = np.array([[700, 0], [300, 0]])  # predicts background everywhere
    everything = np.array([[0, 700], [0, 300]])  # predicts the head everywhere
    good = np.array([[680, 20], [30, 270]])
    assert not segmentation_check(background)["learned"]
    chk = segmentation_check(everything)
    assert not chk["learned"] and chk["baseline"] == pytest.approx(2 * true_fg / (true_fg + total))
    assert segmentation_check(good)["learned"]


def test_classification_check_flags_chance():
    assert not classification_check(0.36, 3)["learned"]
    assert classification_check(0.6, 3)["learned"]


def test_planted_failure_is_flagged(tmp_path, caplog):
    d = make_seg_dataset(tmp_path / "seg")
    out = tmp_path / "run"
    # lr so small the decoder cannot leave its initial state: a segmenter that did not learn
    with caplog.at_level("WARNING"):
        m = finetune(FinetuneConfig(data=str(d), out=str(out), task="segment", epochs=1, folds=2,
                                    batch_size=8, lr=1e-12, bootstrap=0))
    assert m["learned"]["learned"] is False
    written = json.loads((out / "metrics.json").read_text())
    assert written["learned"]["learned"] is False
    assert any("did not learn" in w for w in written["warnings"])
    assert any("did not learn" in r.getMessage() for r in caplog.records)


def test_report_marks_runs_that_did_not_learn():
    from awcl.study.report import not_learned_runs

    base = {"method": "simclr", "task": "hc18-head", "protocol": "full", "train_patients": None,
            "main": True, "task_kind": "segment"}
    rows = [dict(base, run="bad", cm_0_0=700, cm_0_1=0, cm_1_0=300, cm_1_1=0),
            dict(base, run="good", method="random", cm_0_0=680, cm_0_1=20, cm_1_0=30, cm_1_1=270)]
    flags = not_learned_runs(pd.DataFrame(rows))
    assert [f["run"] for f in flags] == ["bad"] and flags[0]["kind"] == "not_learned"


# ------------------------------------------------------------- stratified group carve
def test_validation_keeps_every_class_with_a_group_to_spare():
    # 12 classes of 2-3 patients beside one big class: a plain grouped carve misses some
    y, groups = [], []
    for c in range(12):
        for p in range(2 + c % 2):
            for _ in range(3):
                y.append(c)
                groups.append(f"c{c}p{p}")
    for p in range(30):
        for _ in range(3):
            y.append(12)
            groups.append(f"big{p}")
    y, groups = np.array(y), np.array(groups)
    train = np.arange(len(y))
    for seed in range(5):
        fit, val = carve_validation(train, y, groups, 0.2, seed)
        assert not set(groups[fit]) & set(groups[val])
        assert set(y[val]) == set(range(13)), seed  # every class has a patient to spare
        assert set(y[fit]) == set(range(13))
        assert len(set(groups[val])) <= len(set(groups)) // 2
