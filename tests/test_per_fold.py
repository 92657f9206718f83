"""Per-fold pretraining (a task's ``pretrain_per_fold``): a label-using method is pretrained
once per outer fold of the task, on that fold's training groups only, and fold k is
fine-tuned from fold k's encoder. The real executors run a tiny study; the test then reads
what each fold's pretraining was given and what the fine-tuning run tested on, and checks
that no test-fold frame, video, patient or label reached the fold's pretraining."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from awcl.data.store import open_dataset
from awcl.errors import AwclError
from awcl.evaluate.finetune import FinetuneConfig
from awcl.study.backends import TRAINED_ON, _check_fold_inits, prepare_data
from awcl.study.config import parse_config
from awcl.study.runner import Executors, execute, plan_study, run_study
from test_study import base_raw
from test_study_e2e import TINY

pytestmark = pytest.mark.slow

FAST = {"precision": "32-true", "threads": 2}


def per_fold_config() -> dict:
    return {
        "name": "perfold",
        "pretrain_data": {"recipe": "phantom", "params": {**TINY, "scans": 10, "labelled_fraction": 0.6}},
        "methods": ["random", "simclr", "awcl-coarse"],
        "anatomy_ratios": [0.5],
        "pretrain": {"epochs": 1, "batch_size": 16,
                     "extra": {"num_workers": 0, "monitor_fraction": 0.0, **FAST}},
        "tasks": [
            {"name": "anatomy", "dataset": "pretrain", "task": "classify",
             "protocols": ["full", "partial", "knn"], "epochs": 1, "folds": 2,
             "classes": ["brain", "other=heart+spine+abdomen+femur"], "pretrain_per_fold": "labels",
             "extra": {"group": "patient_id", **FAST}},
        ],
        "embed": {"enabled": False},
    }  # fmt: skip


def _frame_hashes(ds, rows) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(ds.frames[i]).tobytes()).hexdigest() for i in rows}


def test_planning_per_fold_only_for_label_methods(tmp_path):
    raw = base_raw()
    raw["methods"] = ["random", "simclr", "awcl-coarse", "uscl", "supervised-coarse"]
    raw["tasks"][0]["pretrain_per_fold"] = "labels"
    plan = plan_study(parse_config(raw), tmp_path)
    cls = {r.labels.method: r for r in plan.runs if r.kind == "finetune" and r.labels.task == "cls"
           and r.labels.protocol == "full" and r.labels.ratio in (None, 0.5)}  # fmt: skip
    for m in ("awcl-coarse", "uscl", "supervised-coarse"):
        assert sorted(cls[m].deps) == ["data", "init0", "init1"] and cls[m].config["fold_inits"] == 2
        for k in (0, 1):
            pre = cls[m].deps[f"init{k}"]
            assert pre.kind == "pretrain" and pre.labels.fold == k
            sub = pre.deps["data"]
            assert sub.config["recipe"] == "fold-train" and sub.config["fold"] == k
            # the split is cut with the task's own split settings and downstream seed
            assert sub.config["split"] == {"task": "classify", "folds": 2, "classes": None,
                                           "granularity": "coarse", "seed": 0}  # fmt: skip
    assert "init" in cls["simclr"].deps  # label-free: one pretraining on all the data
    # the segmentation task (not per fold) reads the labels of its own data: a note says so
    assert any("awcl-coarse" in n and "seg" in n for n in plan.notes)
    # "all": every pretrained method per fold; off: no fold runs at all
    raw["tasks"][0]["pretrain_per_fold"] = "all"
    plan = plan_study(parse_config(raw), tmp_path)
    simclr = next(r for r in plan.runs if r.kind == "finetune" and r.name == "simclr-cls-full")
    assert "init0" in simclr.deps
    raw["tasks"][0]["pretrain_per_fold"] = False
    plan = plan_study(parse_config(raw), tmp_path)
    assert not any(r.config.get("recipe") == "fold-train" for r in plan.runs)
    raw["tasks"][0]["dataset"] = "/elsewhere"
    raw["tasks"][0]["pretrain_per_fold"] = "labels"
    with pytest.raises(AwclError, match=r"tasks\[0\]\.pretrain_per_fold"):
        parse_config(raw)


def test_no_test_fold_frame_or_label_reaches_fold_pretraining(tmp_path):
    cfg = parse_config(per_fold_config(), source="perfold.yaml")
    res = run_study(cfg, tmp_path, progress=False, echo=lambda s: None)
    runs = {r.dirname: r for r in res.plan.runs}
    assert all(r.done for r in runs.values())
    full = next(r for r in runs.values() if r.kind == "finetune" and r.name == "awcl-coarse-r0.5-anatomy-full")
    src = open_dataset(full.deps["data"].output)  # the task's (= the pretraining's) data
    groups = src.manifest["patient_id"].astype(str)
    checked = 0
    for proto in ("full", "partial", "knn"):
        ft = next(r for r in runs.values() if r.kind == "finetune" and r.labels.method == "awcl-coarse"
                  and r.labels.protocol == proto)  # fmt: skip
        preds = pd.read_csv(ft.output / "predictions.csv", dtype=str)
        result = ft.record().result
        assert [f["shared_groups"] for f in result.fold_pretraining] == [0, 0]
        for k in (0, 1):
            test = preds[preds.fold == str(k)]  # the test part of fold k, as the run split it
            test_groups = set(test.patient_id)
            assert test_groups
            pre = ft.deps[f"init{k}"]
            # what the fold-k pretraining was given (its own record) is the fold's subset...
            rec = json.loads((pre.output / TRAINED_ON).read_text())
            sub_dir = pre.deps["data"].output
            assert Path(rec["data"]) == sub_dir.resolve()
            sub = open_dataset(sub_dir)
            assert rec["frames"] == len(sub) > 0
            # ... which holds no patient, video, frame id or pixel of fold k's test part
            assert not set(rec["patient_ids"]) & test_groups
            assert not set(rec["video_ids"]) & set(test.video_id)
            assert not set(sub.manifest.frame_id) & set(test.frame_id)
            test_rows = np.flatnonzero(groups.isin(test_groups).to_numpy())  # labelled or not
            assert not _frame_hashes(sub, range(len(sub))) & _frame_hashes(src, test_rows)
            # and every frame of the other groups (labels kept as they were)
            rest = src.manifest[~groups.isin(test_groups)]
            assert sorted(sub.manifest.frame_id) == sorted(rest.frame_id)
            labels = dict(zip(rest.frame_id, rest.coarse_label.fillna("")))
            assert all(labels[f] == (lab if isinstance(lab, str) else "")
                       for f, lab in zip(sub.manifest.frame_id, sub.manifest.coarse_label.fillna("")))  # fmt: skip
            checked += 1
    assert checked == 6
    # label-free simclr: one pretraining on all the data, fine-tuned with `init`
    simclr = next(r for r in runs.values() if r.kind == "finetune" and r.labels.method == "simclr"
                  and r.labels.protocol == "full")  # fmt: skip
    assert "init" in simclr.deps and simclr.record().result.fold_pretraining is None
    again = run_study(cfg, tmp_path, progress=False, echo=lambda s: None)
    assert again.computed == []


def test_guard_refuses_an_encoder_that_saw_the_test_fold(tmp_path):
    """The fine-tuning executor's own check: a fold encoder whose pretraining data holds a
    test group of that fold (here: every group) stops the run with one line."""
    cfg = parse_config(per_fold_config(), source="perfold.yaml")
    plan = plan_study(cfg, tmp_path)
    data = next(r for r in plan.runs if r.kind == "data" and r.config["recipe"] == "phantom")
    execute(data, Executors(prepare_data, None, None, None))  # type: ignore[arg-type]
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / TRAINED_ON).write_text(json.dumps({"data": str(data.output), "frames": 1}))
    ft = FinetuneConfig(data=str(data.output), out=str(tmp_path / "ft"), folds=2, group="patient_id",
                        classes=["brain", "other=heart+spine+abdomen+femur"],
                        fold_inits=[str(enc), str(enc)])  # fmt: skip
    with pytest.raises(AwclError, match=r"fold 0: \d+ test group\(s\) of patient_id"):
        _check_fold_inits(ft, {"init0": enc, "init1": enc})
