"""The pretraining lr schedule (linear warmup, then a half cosine per step) and the kNN
monitor's curve and crossover."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from awcl.runtime.schedule import warmup_cosine, warmup_steps
from awcl.train.pretrain import crossover_step, pretrain
from test_pretrain import cfg_for, make_tiny


def test_warmup_cosine_against_the_formula() -> None:
    total, w = 100, warmup_steps(0.1, 100)
    assert w == 10
    f = warmup_cosine(total, w)
    for step in range(total + 1):
        if step < w:
            want = (step + 1) / (w + 1)
        else:
            want = 0.5 * (1 + math.cos(math.pi * (step - w) / (total - w)))
        assert f(step) == pytest.approx(want)
    assert f(w) == pytest.approx(1.0) and f(total) == pytest.approx(0.0, abs=1e-12)
    assert warmup_steps(0.0, 100) == 0 and warmup_steps(0.001, 100) == 1
    assert warmup_steps(0.5, 10_000, cap=500) == 500
    assert warmup_cosine(10, 0, cosine=False)(7) == 1.0


def test_crossover_is_where_the_monitor_stays_above_its_step_zero_value() -> None:
    assert crossover_step([(0, 0.4), (60, 0.2), (120, 0.45), (180, 0.3), (240, 0.5), (300, 0.6)]) == 240
    assert crossover_step([(0, 0.4), (60, 0.2), (120, 0.3)]) is None  # still below when it stopped
    assert crossover_step([(0, 0.4), (60, 0.4)]) == 60  # at the step-0 value counts
    assert crossover_step([(60, 0.5)]) is None  # no step-0 point: unknown


def test_pretraining_follows_the_schedule_and_records_the_curve(tmp_path: Path) -> None:
    data = make_tiny(tmp_path / "tiny", patients=6)
    seen: list[float] = []
    from lightning.pytorch.callbacks import Callback

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    run = pretrain(cfg_for(data, tmp_path / "run", method="simclr", epochs=100, max_steps=10,
                           warmup=0.2, lr=1e-3, monitor_fraction=0.34, monitor_every_n_steps=3,
                           logger=["csv"]), callbacks=[Spy()])
    f = warmup_cosine(10, 2)
    assert seen == pytest.approx([1e-3 * f(s) for s in range(10)])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lr_schedule"] == "warmup-cosine" and summary["steps"] == 10
    assert summary["views_seen"] == 10 * 8 * 2
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "monitor.csv"))]
    assert steps[0] == 0 and {3, 6, 9, 10} <= set(steps)
    assert [s for s, _ in summary["knn_curve"]] == steps


def test_constant_schedule_keeps_the_peak(tmp_path: Path) -> None:
    data = make_tiny(tmp_path / "tiny")
    seen: list[float] = []
    from lightning.pytorch.callbacks import Callback

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    pretrain(cfg_for(data, tmp_path / "run", method="simclr", max_steps=3, lr_schedule="constant",
                     monitor_fraction=0, logger=["csv"]), callbacks=[Spy()])
    assert seen == [1e-3] * 3
