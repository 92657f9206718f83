"""Reading a study back from its directory: ``study.json`` and every run's ``DONE`` record
(typed: :class:`~awcl.study.records.RunRecord`) and files, as one
:class:`~awcl.study.report.results.Results` (:func:`load_results`): every number
(:func:`results_table`), every test prediction (:func:`load_predictions`), every downstream
run (:func:`downstream_runs`), the kNN monitor (:func:`knn_histories`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl.errors import AwclError
from awcl.evaluate.tasks import TABLE_METRICS
from awcl.study.names import with_backbone
from awcl.study.records import FinetuneLabels, FinetuneResult, PlannedRun, RunRecord
from awcl.study.report.results import (
    GROUP_BY,
    KNN_COLUMNS,
    LABEL_COLS,
    RESULT_COLUMNS,
    RUN_COLUMNS,
    UNIT,
    Results,
)

MAX_TABLE_METRICS = 5


@dataclass
class StudyData:
    out: Path
    index: dict[str, Any]  # study.json as written (names, notes, overlap; its runs typed in ``planned``)
    records: list[RunRecord]  # the finished runs' DONE records, each with its ``dir``
    pending: list[str]  # runs of the plan without DONE
    config_text: str
    planned: list[PlannedRun]  # every run of the plan, finished or not

    def of_kind(self, kind: str) -> list[RunRecord]:
        return [r for r in self.records if r.kind == kind]


def load_study(out: str | os.PathLike) -> StudyData:
    out = Path(out)
    idx_path = out / "study.json"
    if not idx_path.is_file():
        raise AwclError(f"{out}: not a study directory (no study.json); run `awcl study` first")
    index = json.loads(idx_path.read_text())
    planned = [PlannedRun.from_json(r) for r in index.get("runs", [])]
    records, pending = [], []
    for run in planned:
        d = out / "runs" / run.dir
        done = d / "DONE"
        if done.is_file():
            records.append(RunRecord.read(done))
        else:
            pending.append(run.dir)
    cfg = out / "config.yaml"
    return StudyData(out, index, records, pending, cfg.read_text() if cfg.is_file() else "", planned)


def _labels(lab: FinetuneLabels) -> dict[str, Any]:
    return {col: getattr(lab, col) for col in LABEL_COLS}


def results_table(data: StudyData) -> pd.DataFrame:
    """Every number of the study, one row each (finetune folds and pretraining epochs)."""
    rows: list[dict[str, Any]] = []
    for rec in data.of_kind("finetune"):
        assert isinstance(rec.result, FinetuneResult)
        for i, f in enumerate(rec.result.fold_metrics()):
            for metric, value in f.items():
                rows.append({"kind": "finetune", **_labels(rec.labels), "fold": i, "epoch": None, "step": None,
                             "metric": metric, "value": value, "run": rec.dir.name})  # fmt: skip
    for rec in data.of_kind("pretrain"):
        lab = rec.labels
        hist = pretrain_history(rec)
        if hist is None:
            continue
        for _, h in hist.iterrows():
            for metric in hist.columns:
                if metric in ("epoch", "step") or not np.issubdtype(hist[metric].dtype, np.number):
                    continue
                if not np.isfinite(h[metric]):  # e.g. the loss of the step-0 (pre-training) row
                    continue
                rows.append({
                    "kind": "pretrain", "method": lab.method, "ratio": lab.ratio,
                    "seed": lab.seed, "ft_seed": None, "train_patients": None, "task": None,
                    "task_kind": None, "protocol": None, "main": None, "fold": None,
                    "epoch": int(h.get("epoch", _)), "step": h.get("step"),
                    "metric": metric, "value": float(h[metric]), "run": rec.dir.name,
                })  # fmt: skip
    # a `backbone` column only in a study with the backbone axis or inits (defaults unchanged)
    return with_backbone(pd.DataFrame(rows, columns=RESULT_COLUMNS), data.index)


def pretrain_history(rec: RunRecord) -> pd.DataFrame | None:
    for cand in (rec.dir / "run" / "history.csv", *sorted(rec.dir.glob("**/history.csv"))):
        if cand.is_file():
            try:
                return pd.read_csv(cand)
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                return None
    return None


def find_image(run_dir: Path, *words: str) -> Path | None:
    """First PNG under ``run_dir`` whose name contains one of ``words``."""
    for p in sorted(run_dir.glob("**/*.png")):
        if any(w in p.name.lower() for w in words):
            return p
    return None


def table_metrics(df: pd.DataFrame, task: str) -> list[str]:
    """The metrics of ``task`` a table shows: ``TABLE_METRICS`` order, at most ``MAX_TABLE_METRICS``."""
    sub = df[df.task == task]
    present = list(dict.fromkeys(sub.metric))
    kind = sub.task_kind.iloc[0] if len(sub) else "classify"
    pref = TABLE_METRICS.get(kind, TABLE_METRICS["segment"])  # a run without its kind: as before
    chosen = [m for m in pref if m in present]
    if not chosen:
        chosen = [m for m in present if m not in ("loss", "epoch", "seconds")]
    return chosen[:MAX_TABLE_METRICS]


def load_predictions(data: StudyData) -> pd.DataFrame:
    """Every finished downstream run's ``predictions.csv``, stacked, with the run's labels
    (:data:`LABEL_COLS`), ``run`` and its bootstrap unit added. Runs without the file
    (stand-ins, old runs) are left out."""
    parts = []
    for rec in data.of_kind("finetune"):
        path = rec.dir / "run" / "predictions.csv"
        if not path.is_file():
            continue
        try:
            p = pd.read_csv(path, dtype={"true": str, "pred": str, "patient_id": str, "frame_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        for col, value in _labels(rec.labels).items():
            p[col] = value
        p["run"] = rec.dir.name
        # the run's bootstrap unit: the column it split and bootstrapped by (its record's group)
        group = rec.result.group
        if group not in p.columns:  # an older table: patient_id was the only unit
            group = "patient_id"
        p[GROUP_BY], p[UNIT] = group, p[group].astype(str)
        parts.append(p)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*LABEL_COLS, "run", GROUP_BY, UNIT])


def downstream_runs(data: StudyData) -> pd.DataFrame:
    """Every finished downstream run: its labels, ``run`` (directory name) and ``dir``."""
    rows = [{**_labels(rec.labels), "run": rec.dir.name, "dir": rec.dir} for rec in data.of_kind("finetune")]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def knn_histories(data: StudyData) -> pd.DataFrame:
    """kNN-monitor accuracy per pretraining run and step: method, ratio, seed, epoch, step, knn_acc."""
    rows = []
    for rec in data.of_kind("pretrain"):
        hist = pretrain_history(rec)
        if hist is None or "knn_acc" not in hist.columns:
            continue
        lab = rec.labels
        c = rec.config  # the run's own settings: which labels its monitor scored
        labels = c.get("monitor_granularity") or c.get("granularity") or "coarse"
        for _, h in hist.iterrows():
            if pd.notna(h["knn_acc"]):
                rows.append({"method": lab.method, "ratio": lab.ratio, "seed": lab.seed,
                             "labels": labels,
                             "epoch": int(h["epoch"]), "step": int(h["step"]) if "step" in hist and pd.notna(h["step"]) else None,
                             "knn_acc": float(h["knn_acc"]), "run": rec.dir.name})  # fmt: skip
    return pd.DataFrame(rows, columns=KNN_COLUMNS)


def load_results(data: StudyData) -> Results:
    """The study's :class:`Results`, built once: every reader of the report selects from it."""
    return Results(results_table(data), load_predictions(data), downstream_runs(data), knn_histories(data))
