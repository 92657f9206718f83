"""``awcl study CONFIG --plan``: the runs a study would make (cached ones marked) with their
estimated times from the precision probe's measured throughput, and the total."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import yaml

from awcl.cli import main
from awcl.data.store import open_dataset
from awcl.runtime import precision
from awcl.study.config import parse_config
from awcl.study.plan import FACTOR, FORWARD, START_S, Rates, estimate_run, estimate_study, plan_text
from awcl.study.runner import plan_study, run_study
from test_launch import STAND_INS
from test_per_fold import per_fold_config
from test_study import base_raw


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty precision cache of its own."""
    monkeypatch.setenv("AWCL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _time(size: tuple[int, int], rate: float, threads: int) -> None:
    """A precision-probe entry for this CPU, as if the probe had timed ``size``."""
    entry = {"precision": "32-true", "channels_last": True, "rates": {"32-true+channels_last": rate,
             "32-true": rate / 2}, "cpu": precision.describe_cpu(), "size": list(size), "threads": threads}  # fmt: skip
    precision._write_cache(precision._cache_key(size, threads), entry)


def test_plan_lists_the_runs_run_study_makes_and_marks_cached(tmp_path, cache):
    raw = base_raw()
    raw["methods"] = ["random", "simclr", "awcl-coarse", "uscl"]
    raw["tasks"][0]["pretrain_per_fold"] = "labels"
    cfg = parse_config(raw)
    out = tmp_path / "study"
    before = estimate_study(cfg, out)
    names = [e.run.dirname for e in before.estimates]
    assert names == [r.dirname for r in plan_study(cfg, out).runs]
    assert not (out / "runs").exists()  # planning runs nothing
    assert len(before.todo) == len(names) and not any(e.run.done for e in before.estimates)
    text = plan_text(before)
    assert f"{len(names)} runs, 0 cached, {len(names)} to run" in text
    assert all(e.run.name in text for e in before.estimates) and "[cached]" not in text
    res = run_study(cfg, out, STAND_INS, progress=False, echo=lambda s: None)
    assert sorted(res.computed) == sorted(names)  # the plan's runs, no more, no fewer
    after = estimate_study(cfg, out)
    assert [e.run.dirname for e in after.estimates] == names
    assert all(e.run.done and e.took is not None for e in after.estimates) and not after.todo
    text = plan_text(after)
    assert text.count("[cached]") == len(names) and f"{len(names)} cached, 0 to run" in text


def test_estimates_count_steps_frames_and_folds(tmp_path, cache):
    """Against a real prepared phantom: a pretraining's estimate is its sampler's steps x
    batch x views over the timed img/s; a fine-tuning's, epochs x fitting frames per fold."""
    cfg = parse_config(per_fold_config())
    out = tmp_path / "study"
    run_study(cfg, out, progress=False, echo=lambda s: None, kinds=("data",))  # data runs only
    assert {p.name.split("-")[0] for p in (out / "runs").iterdir() if p.is_dir()} == {"data"}
    threads = int(per_fold_config()["tasks"][0]["extra"]["threads"])
    est = estimate_study(cfg, out)  # nothing timed yet
    pre = {e.run.name: e for e in est.estimates if e.run.kind == "pretrain"}
    assert pre["simclr"].seconds is None and "not timed yet at 32x40" in pre["simclr"].why
    _time((32, 40), 100.0, threads)
    est = estimate_study(cfg, out)
    by = {e.run.name: e for e in est.estimates}
    data = str(next(e.run for e in est.estimates if e.run.config.get("recipe") == "phantom").output)
    n = len(open_dataset(data))
    simclr = by["simclr"]
    steps = n // 16  # one epoch of the instance sampler, batch 16, drop-last
    assert simclr.work.startswith(f"{steps} steps x 16 x 2 view")
    assert simclr.seconds == pytest.approx(START_S["pretrain"] + FACTOR["pretrain"] * steps * 32 / 100.0)
    # a fold's pretraining counts its own (smaller) subset
    f0 = by["awcl-coarse-r0.5-anatomy-f0"]
    assert f0.seconds is not None and f0.seconds < simclr.seconds
    full = by["random-anatomy-full"]
    fits = [int(x) for x in full.work.split(" x ")[1].split()[0].split("+")]
    assert len(fits) == 2 and full.work.startswith("1 epochs x ")
    assert full.seconds > START_S["finetune"] + FACTOR["classify"] * sum(math.ceil(f / 16) * 16 for f in fits) / 100.0
    knn = by["random-anatomy-knn"]
    assert "one forward pass each" in knn.work and knn.seconds < full.seconds
    assert est.total_s == pytest.approx(sum(e.seconds for e in est.todo if e.seconds is not None))
    assert "32x40, 2 thread(s): 100.0 img/s (timed at 32x40)" in plan_text(est)


def test_untimed_size_is_scaled_from_a_timed_one(cache):
    threads = torch.get_num_threads()
    assert Rates().get((64, 80), threads) is None
    _time((32, 40), 400.0, threads)
    rate, how = Rates().get((64, 80), threads)
    assert rate == pytest.approx(100.0) and how == "scaled from 32x40"
    rate, how = Rates().get((32, 40), threads, "32-true")
    assert rate == pytest.approx(400.0) and how == "timed at 32x40"


def test_cli_plan_runs_nothing(tmp_path, cache, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(per_fold_config()))
    out = tmp_path / "study"
    assert main(["study", str(cfg), "--out", str(out), "--plan", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "15 runs, 0 cached, 15 to run" in text and "data not prepared yet" in text
    assert "--plan --prepare" in text and not (out / "runs").exists()
    assert main(["study", str(cfg), "--out", str(out), "--time"]) == 2  # --time goes with --plan
    assert main(["study", str(cfg), "--out", str(out), "--plan", "--prepare", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "3 cached, 12 to run" in text and "not timed yet" in text
    kinds = {json.loads(p.read_text())["kind"] for p in (out / "runs").glob("*/DONE")}
    assert kinds == {"data"}
    assert os.environ["AWCL_CACHE_DIR"] == str(cache)


def test_estimate_run_names_what_it_cannot_plan(tmp_path, cache):
    cfg = parse_config(base_raw())
    plan = plan_study(cfg, tmp_path)
    pre = next(r for r in plan.runs if r.kind == "pretrain")
    e = estimate_run(pre, Rates())
    assert e.seconds is None and e.why == "data not prepared yet"
    assert 0 < FORWARD < 1  # a forward pass is cheaper than a training step


def test_demo_plan_lists_its_runs_and_runs_nothing(tmp_path, cache, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--plan", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("study demo-fast:") and "pretrain simclr" in text and "estimated total" in text
    assert not (out / "runs").exists()
    assert main(["demo", "--fast", "--out", str(out), "--time"]) == 2  # --time goes with --plan
