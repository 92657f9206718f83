"""Studies beyond one process: ``--jobs N`` (a local pool) and the submitit launcher (its local
executor) give the same runs, cache keys and results as the serial runner."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from awcl.errors import AwclError
from awcl.study.config import parse_config
from awcl.study.launch import Cluster, LocalPool, Serial, _cpu_slots, make_launcher, schedule
from awcl.study.runner import Executors, run_study
from test_study import base_raw
from test_study_e2e import TINY

# ------------------------------------------------------------------ picklable stand-ins
# Module-level functions: a pool pickles them by name, submitit (cloudpickle) by value.


def _stamp(run, pause: float = 0.0) -> None:
    run.output.mkdir(parents=True)
    t0 = time.time()
    time.sleep(pause)
    (run.output / "times.json").write_text(json.dumps([t0, time.time()]))
    # where it ran: the process and the cores it was pinned to (checked instead of timings)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    (run.output / "where.json").write_text(json.dumps({"pid": os.getpid(), "cores": cores}))


def _data(run, inputs):
    _stamp(run)
    (run.output / "dataset.json").write_text("{}")
    return {"frames": 10}


def _pretrain(run, inputs):
    assert (Path(inputs["data"]) / "dataset.json").is_file()
    _stamp(run, 0.3)
    loss = np.linspace(2, 1, run.config["epochs"])
    (run.output / "history.csv").write_text(
        "epoch,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(loss))
    )
    return {"final_loss": float(loss[-1])}


def _finetune(run, inputs):
    _stamp(run, 0.3)
    rng = np.random.default_rng(int(run.key, 16))  # results depend on the run only
    return {"folds": [{"accuracy": float(rng.uniform())} for _ in range(run.config["folds"])]}


def _embed(run, inputs):
    _stamp(run)
    if run.labels.method == "explode":
        raise RuntimeError("boom")
    return {"plots": []}


STAND_INS = Executors(_data, _pretrain, _finetune, _embed)


def _records(out: Path) -> dict[str, dict]:
    """dirname -> DONE record minus timing."""
    recs = {}
    for done in (out / "runs").glob("*/DONE"):
        rec = json.loads(done.read_text())
        rec.pop("seconds")
        rec.pop("finished")
        if rec["kind"] == "pretrain":
            rec["result"].pop("img_per_s", None)  # a timing, not a result
        recs[done.parent.name] = rec
    return recs


def _times(out: Path) -> dict[str, tuple[float, float]]:
    return {p.parent.parent.name: tuple(json.loads(p.read_text())) for p in (out / "runs").glob("*/run/times.json")}


def _check_order(out: Path, plan) -> None:
    """No run started before every run it depends on had ended."""
    t = _times(out)
    for run in plan.runs:
        for dep in run.deps.values():
            assert t[run.dirname][0] >= t[dep.dirname][1] - 1e-3, (run.dirname, dep.dirname)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("serial")
    res = run_study(parse_config(base_raw()), out, STAND_INS, progress=False, echo=lambda s: None)
    return out, res


def test_local_pool_matches_serial_and_pins_workers(serial, tmp_path):
    ref, ref_res = serial
    out = tmp_path / "pool"
    lines: list[str] = []
    res = run_study(parse_config(base_raw()), out, STAND_INS, progress=False, echo=lines.append,
                    launcher=LocalPool(jobs=2))  # fmt: skip
    assert sorted(res.computed) == sorted(ref_res.computed)  # same runs, same cache keys
    assert _records(out) == _records(ref)  # same results
    assert sum(line.startswith("done ") for line in lines) == len(res.plan.runs)
    _check_order(out, res.plan)
    # every run executed exactly once (its output folder is created with mkdir, no exist_ok)
    where = [json.loads(p.read_text()) for p in (out / "runs").glob("*/run/where.json")]
    assert len(where) == len(res.plan.runs)
    # in worker processes, each pinned to its own share of the cores
    pids = {w["pid"] for w in where}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    shares = _cpu_slots(2)
    if shares:  # a platform with CPU affinity
        cores_of = {w["pid"]: w["cores"] for w in where}
        assert all(cores in shares for cores in cores_of.values()), cores_of
        if len(set(map(tuple, shares))) == 2 and len(pids) == 2:
            assert len({tuple(c) for c in cores_of.values()}) == 2  # two workers, two shares
    again = run_study(parse_config(base_raw()), out, STAND_INS, progress=False, echo=lambda s: None,
                      launcher=LocalPool(jobs=2))  # fmt: skip
    assert again.computed == []  # cached like any other study


def _small_raw() -> dict:
    """data -> 2 pretrainings -> 3 fine-tunings: every job is a new Python process (seconds
    each to import torch), so the submitit test keeps the grid small."""
    raw = base_raw()
    raw.update(methods=["random", "simclr", "awcl-coarse"], anatomy_ratios=[0.5], embed={"enabled": False})
    raw["tasks"] = raw["tasks"][:1]
    raw["tasks"][0]["protocols"] = ["full"]
    return raw


def test_submitit_local_executor_matches_serial(tmp_path):
    pytest.importorskip("submitit")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process imports no tests
    ref = tmp_path / "serial"
    ref_res = run_study(parse_config(_small_raw()), ref, STAND_INS, progress=False, echo=lambda s: None)
    out = tmp_path / "slurm-like"
    res = run_study(parse_config(_small_raw()), out, STAND_INS, progress=False, echo=lambda s: None,
                    launcher=Cluster(folder=tmp_path / "jobs", cluster="local", jobs=3))  # fmt: skip
    assert len(res.plan.runs) == 6
    assert sorted(res.computed) == sorted(ref_res.computed)
    assert _records(out) == _records(ref)
    _check_order(out, res.plan)
    assert list((tmp_path / "jobs").glob("*/*_submitted.pkl"))  # really went through submitit


def test_a_failure_stops_new_runs_and_is_raised(tmp_path):
    ex = Executors(_data, _pretrain, _finetune, lambda r, i: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        run_study(parse_config(base_raw()), tmp_path, ex, progress=False, echo=lambda s: None,
                  launcher=Serial())  # fmt: skip
    # the scheduler: a failed handle stops further starts; the error is raised at the end

    class H:
        def __init__(self, ok):
            self.ok = ok

        def done(self):
            return True

        def result(self):
            if not self.ok:
                raise ValueError("job failed")
            return {"seconds": 0.0}

    from awcl.study.config import parse_config as pc
    from awcl.study.runner import plan_study

    plan = plan_study(pc(base_raw()), tmp_path / "p")
    started: list[str] = []
    with pytest.raises(ValueError, match="job failed"):
        schedule(plan.runs, lambda r: H(ok=False), lambda hs: None, 2, lambda r: started.append(r.dirname),
                 lambda r, rec: None)  # fmt: skip
    assert len(started) == 1  # only the data run (no DONE appears, so nothing else is ready)


def test_launcher_choice_and_core_shares():
    assert isinstance(make_launcher("local", None), Serial)
    assert isinstance(make_launcher("local", 1), Serial)
    assert isinstance(make_launcher("local", 3), LocalPool)
    c = make_launcher("submitit-local", 2, folder="/tmp/x", partition="gpu")
    assert isinstance(c, Cluster) and c.cluster == "local" and c.jobs == 2
    with pytest.raises(AwclError, match="--launcher"):
        make_launcher("ray")
    shares = _cpu_slots(2)
    if shares:
        flat = [c for s in shares for c in s]
        assert len(shares) == 2 and len(flat) == len(set(flat))  # disjoint core sets


def test_cli_jobs_and_bad_options(tmp_path, capsys):
    from awcl.cli import main

    assert main(["study", "demo", "--out", str(tmp_path / "o"), "--launcher", "slurm",
                 "--slurm-option", "oops"]) == 2  # fmt: skip
    assert "--slurm-option 'oops'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "demo", "--out", str(tmp_path / "o"), "--jobs", "0"])


# ------------------------------------------------------------------ a real tiny study
def _real_config() -> dict:
    """One thread per run: with two runs at once on two cores, more threads only fight (and a
    fixed count keeps float sums, hence results, identical to the serial run)."""
    tiny = {**TINY, "scans": 6, "frames_per_scan": 8}
    return {
        "name": "tiny-launch",
        "pretrain_data": {"recipe": "phantom", "params": {**tiny, "labelled_fraction": 0.3}},
        "methods": ["random", "awcl-coarse"],
        "anatomy_ratios": [0.5],
        "pretrain": {"epochs": 1, "batch_size": 16,
                     "extra": {"num_workers": 0, "monitor_fraction": 0.0, "threads": 1}},
        "tasks": [
            {"name": "anatomy", "task": "classify", "protocols": ["full"], "epochs": 1, "folds": 2,
             "classes": ["brain", "other=heart+spine+abdomen+femur"],
             "dataset": {"recipe": "phantom", "params": {**TINY, "seed": 1, "labelled_fraction": 1.0}},
             "extra": {"threads": 1}},
        ],
        "embed": {"enabled": False},
    }  # fmt: skip


@pytest.mark.slow
def test_real_study_same_results_serial_jobs2_and_submitit(tmp_path, capsys):
    """The "done when" of issue 11, through the command line: ``awcl study`` serial, with
    ``--jobs 2`` and with ``--launcher submitit-local`` gives the same runs (cache keys),
    metrics, encoder weights and report numbers."""
    import pandas as pd
    import torch
    import yaml

    from awcl.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_real_config()))
    variants = {"serial": [], "jobs2": ["--jobs", "2"]}
    if _has("submitit"):
        variants["submitit"] = ["--launcher", "submitit-local", "--jobs", "2"]
    for name, flags in variants.items():
        assert main(["study", str(cfg), "--out", str(tmp_path / name), "--no-progress", *flags]) == 0
    capsys.readouterr()
    ref = _records(tmp_path / "serial")
    assert {r["kind"] for r in ref.values()} == {"data", "pretrain", "finetune"}

    def numbers(out: Path) -> pd.DataFrame:  # results.csv minus timings
        df = pd.read_csv(out / "results.csv")
        return df[~df.metric.isin(["img_per_s", "seconds"])].reset_index(drop=True)

    for name in variants:
        out = tmp_path / name
        assert _records(out) == ref, name  # same cache keys (dir names) and same metrics
        pd.testing.assert_frame_equal(numbers(out), numbers(tmp_path / "serial"))
        for pre in (out / "runs").glob("pretrain-*"):
            a = torch.load(pre / "run" / "encoder.pt", weights_only=True)
            b = torch.load(tmp_path / "serial" / "runs" / pre.name / "run" / "encoder.pt", weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a), (name, pre.name)
    if "submitit" in variants:
        assert list((tmp_path / "submitit" / "jobs").glob("*/*_submitted.pkl"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
