"""The typed run records (awcl.study.records) and the report's one Results object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from awcl.errors import AwclError
from awcl.study.records import (
    RECORD_VERSION,
    DataResult,
    FinetuneLabels,
    FinetuneResult,
    PretrainLabels,
    RunRecord,
    labels_for,
)
from awcl.study.runs import Executors, Run, execute

SRC = Path(__file__).resolve().parents[1] / "src" / "awcl"


def test_record_round_trips_through_its_json():
    rec = RunRecord("finetune", "simclr-cls-full", "abc123", FinetuneLabels(method="simclr", seed=1, ft_seed=2,
                    task="cls", task_kind="classify", protocol="full"),
                    {"task": "classify"}, FinetuneResult(task="classify", folds=[{"f1": 0.5}], group="video_id",
                    learned={"learned": True, "reason": ""}), 1.5, "2024-01-01T00:00:00")  # fmt: skip
    raw = json.loads(json.dumps(rec.to_json()))
    assert raw["version"] == RECORD_VERSION
    assert RunRecord.from_json(raw, "DONE") == rec


def test_a_version_1_record_reads_through_the_upgrade():
    """The dicts written before the types: no version, keep-list results (no group), labels
    without ft_seed, keys no reader knows."""
    v1 = {"kind": "finetune", "name": "x", "key": "k", "config": {}, "seconds": 2.0, "finished": "t",
          "labels": {"method": "simclr", "seed": 3, "task": "cls", "task_kind": "classify", "protocol": "full",
                     "main": True, "train_patients": None, "retired_label": 1},
          "result": {"task": "classify", "folds": [{"accuracy": 0.7, "fold": 0, "cm": [[1]]}], "tsne": "x.png"}}  # fmt: skip
    rec = RunRecord.from_json(v1, "DONE")
    assert rec.version == RECORD_VERSION
    assert rec.labels == FinetuneLabels(method="simclr", seed=3, ft_seed=3, task="cls", task_kind="classify",
                                        protocol="full")  # fmt: skip
    assert rec.result.group == "patient_id" and rec.result.learned is None
    assert rec.result.fold_metrics() == [{"accuracy": 0.7, "fold": 0.0}]
    # a minimal hand-written record (tests, tools) reads too
    assert RunRecord.from_json({"kind": "data", "labels": {}, "result": {"frames": 4}}, "DONE").result == DataResult(4)


def test_unknown_versions_and_keys_are_errors():
    with pytest.raises(AwclError, match=r"DONE: run record version 99"):
        RunRecord.from_json({"version": 99, "kind": "data"}, "DONE")
    raw = {"version": RECORD_VERSION, "kind": "pretrain", "name": "p", "key": "k", "config": {}, "seconds": 0,
           "finished": "", "labels": {"method": "simclr"}, "result": {"final_los": 1.0}}  # fmt: skip
    with pytest.raises(AwclError, match="'final_los' is not a field of PretrainResult"):
        RunRecord.from_json(raw, "DONE")
    with pytest.raises(AwclError, match="'task' is not a field of PretrainLabels"):
        labels_for("pretrain", {"method": "simclr", "task": "cls"})


def test_execute_writes_the_typed_result_and_refuses_unknown_keys(tmp_path):
    def data(run, inputs):
        run.output.mkdir(parents=True)
        return {"frames": 3}

    run = Run("data", "d", {"recipe": "x"}, {"recipe": "x"})
    run.dir = tmp_path / run.dirname
    rec = execute(run, Executors(data, None, None, None))  # type: ignore[arg-type]
    assert rec.result == DataResult(frames=3) and rec == run.record()
    assert json.loads((run.dir / "DONE").read_text())["result"]["frames"] == 3

    bad = Run("pretrain", "p", {"method": "simclr"}, PretrainLabels(method="simclr"))
    bad.dir = tmp_path / bad.dirname

    def pretrain(run, inputs):
        run.output.mkdir(parents=True)
        return {"final_loss": 1.0, "tsne": "x.png"}

    with pytest.raises(AwclError, match=r"pretrain p: its result: 'tsne' is not a field of PretrainResult"):
        execute(bad, Executors(None, pretrain, None, None))  # type: ignore[arg-type]
    assert not bad.done


def test_results_selectors():
    from awcl.study.report import Results

    rows = [  # method, protocol, main, train_patients
        ("simclr", "full", True, None), ("simclr", "partial", True, None), ("simclr", "full", True, 2),
        ("awcl-fine", "full", False, None), ("awcl-fine", "full", True, None),
    ]  # fmt: skip
    df = pd.DataFrame([{"kind": "finetune", "method": m, "ratio": 0.2 if not main else 0.5, "task": "cls",
                        "task_kind": "classify", "protocol": p, "main": main, "train_patients": n, "metric": "f1",
                        "value": 0.5} for m, p, main, n in rows])  # fmt: skip
    r = Results(df)
    assert r.tasks == ["cls"]
    assert list(r.main().index) == [0, 1, 4] and list(r.main("full").index) == [0, 4]
    assert list(r.label_efficiency().index) == [0, 1, 2, 4]
    assert list(r.ratio_sweep().index) == [3, 4]


def test_the_main_run_filter_is_written_once():
    """"Main encoders, whole training part" lives in Results (report/results.py) only."""
    hits = [str(p.relative_to(SRC)) for p in (SRC / "study").rglob("*.py")
            if re.search(r"main[\"'\]]*\s*==\s*True", p.read_text())]  # fmt: skip
    assert hits == ["study/report/results.py"]


def test_broken_records_are_one_line_errors_naming_the_file():
    """Missing keys and bad labels were a bare KeyError, or an error without the DONE path."""
    good = RunRecord("data", "d", "k", labels_for("data"), {}, DataResult(4)).to_json()
    for drop in ("name", "key", "seconds"):
        raw = {k: v for k, v in good.items() if k != drop}
        with pytest.raises(AwclError, match=rf"^runs/d/DONE: run record lacks '{drop}'$"):
            RunRecord.from_json(raw, "runs/d/DONE")
    with pytest.raises(AwclError, match=r"^runs/d/DONE: not a run record"):
        RunRecord.from_json({"version": RECORD_VERSION}, "runs/d/DONE")
    with pytest.raises(AwclError, match=r"^runs/d/DONE: run record 'seconds' is 'soon'"):
        RunRecord.from_json({**good, "seconds": "soon"}, "runs/d/DONE")
    with pytest.raises(AwclError, match=r"^runs/d/DONE: data run labels: 'method' is not a field"):
        RunRecord.from_json({**good, "labels": {"method": "x"}}, "runs/d/DONE")
    v1 = {k: v for k, v in good.items() if k != "version"}
    for k, bad in (("labels", "x"), ("result", [1]), ("config", 5)):
        with pytest.raises(AwclError, match=rf"^runs/d/DONE: run record '{k}' is a"):
            RunRecord.from_json({**v1, k: bad}, "runs/d/DONE")
    with pytest.raises(AwclError, match=r"^runs/d/DONE: run labels: unknown run kind 'nope'"):
        RunRecord.from_json({**v1, "kind": "nope"}, "runs/d/DONE")
    with pytest.raises(AwclError, match=r"not a run record"):
        RunRecord.from_json({**good, "kind": ["data"]}, "runs/d/DONE")


def test_an_unreadable_done_file_is_one_line(tmp_path):
    done = tmp_path / "DONE"
    done.write_text('{"kind": "data", ')  # cut short
    with pytest.raises(AwclError, match=rf"^{re.escape(str(done))}: unreadable run record"):
        RunRecord.read(done)


def test_version_1_nulls_take_the_field_defaults():
    """A v1 writer's null for a field whose default is not null (folds, mean, group) read as
    None, and fold_metrics() then failed with a TypeError."""
    v1 = {"kind": "finetune", "name": "x", "key": "k", "config": None, "seconds": 1, "finished": "",
          "labels": {"method": "simclr", "seed": 0, "main": None},
          "result": {"task": "classify", "folds": None, "mean": None, "group": None, "learned": None}}  # fmt: skip
    rec = RunRecord.from_json(v1, "DONE")
    assert rec.result.folds == [] and rec.result.mean == {} and rec.result.group == "patient_id"
    assert rec.result.fold_metrics() == [] and rec.labels.main is True and rec.config == {}
