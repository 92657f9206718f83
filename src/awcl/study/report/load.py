"""Reading a study back from its directory: ``study.json``, every run's ``DONE`` record and
files, as tables: every number (:func:`results_table`), every test prediction
(:func:`load_predictions`), the kNN monitor (:func:`knn_histories`)."""

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

MAX_TABLE_METRICS = 5
LABEL_COLS = ("method", "ratio", "seed", "ft_seed", "task", "task_kind", "protocol", "main", "train_patients")
GROUP_BY, UNIT = "group_by", "unit"  # the run's bootstrap column (cfg.group) and its value per frame
RESULT_COLUMNS = ["kind", "method", "ratio", "seed", "ft_seed", "train_patients", "task", "task_kind",
                  "protocol", "main", "fold", "epoch", "step", "metric", "value", "run"]  # fmt: skip


@dataclass
class StudyData:
    out: Path
    index: dict[str, Any]
    records: list[dict[str, Any]]  # DONE records, each with "dir" added
    pending: list[str]  # runs of the plan without DONE
    config_text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]


def load_study(out: str | os.PathLike) -> StudyData:
    out = Path(out)
    idx_path = out / "study.json"
    if not idx_path.is_file():
        raise AwclError(f"{out}: not a study directory (no study.json); run `awcl study` first")
    index = json.loads(idx_path.read_text())
    records, pending = [], []
    for run in index.get("runs", []):
        d = out / "runs" / run["dir"]
        done = d / "DONE"
        if done.is_file():
            rec = json.loads(done.read_text())
            rec["dir"] = d
            records.append(rec)
        else:
            pending.append(run["dir"])
    cfg = out / "config.yaml"
    return StudyData(out, index, records, pending, cfg.read_text() if cfg.is_file() else "")


def fold_metrics(result: dict[str, Any]) -> list[dict[str, float]]:
    """Per-fold numeric metrics from a finetune result."""
    folds = result.get("folds") or []
    out = []
    for f in folds:
        out.append({k: float(v) for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def results_table(data: StudyData) -> pd.DataFrame:
    """Every number of the study, one row each (finetune folds and pretraining epochs)."""
    rows: list[dict[str, Any]] = []
    for rec in data.of_kind("finetune"):
        lab = rec["labels"]
        for i, f in enumerate(fold_metrics(rec["result"])):
            for metric, value in f.items():
                rows.append({
                    "kind": "finetune", "method": lab.get("method"), "ratio": lab.get("ratio"),
                    "seed": lab.get("seed"), "ft_seed": lab.get("ft_seed", lab.get("seed")),
                    "train_patients": lab.get("train_patients"), "task": lab.get("task"),
                    "task_kind": lab.get("task_kind"), "protocol": lab.get("protocol"),
                    "main": bool(lab.get("main", True)), "fold": i, "epoch": None, "step": None,
                    "metric": metric, "value": value, "run": rec["dir"].name,
                })  # fmt: skip
    for rec in data.of_kind("pretrain"):
        lab = rec["labels"]
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
                    "kind": "pretrain", "method": lab.get("method"), "ratio": lab.get("ratio"),
                    "seed": lab.get("seed"), "ft_seed": None, "train_patients": None, "task": None,
                    "task_kind": None, "protocol": None, "main": None, "fold": None,
                    "epoch": int(h.get("epoch", _)), "step": h.get("step"),
                    "metric": metric, "value": float(h[metric]), "run": rec["dir"].name,
                })  # fmt: skip
    # a `backbone` column only in a study with the backbone axis or inits (defaults unchanged)
    return with_backbone(pd.DataFrame(rows, columns=RESULT_COLUMNS), data.index)


def pretrain_history(rec: dict[str, Any]) -> pd.DataFrame | None:
    for cand in (rec["dir"] / "run" / "history.csv", *sorted(rec["dir"].glob("**/history.csv"))):
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


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Downstream rows of the main tables: main encoders, the whole training part."""
    tp = df["train_patients"] if "train_patients" in df.columns else pd.Series(np.nan, index=df.index)
    return df[(df.kind == "finetune") & (df.main == True) & tp.isna()]  # noqa: E712


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
    (``method``, ``seed``, ``ft_seed``, ``task``, ``protocol``, ``train_patients``, ...) and
    ``run`` added. Runs without the file (stand-ins, old runs) are left out."""
    parts = []
    for rec in data.of_kind("finetune"):
        path = rec["dir"] / "run" / "predictions.csv"
        if not path.is_file():
            continue
        try:
            p = pd.read_csv(path, dtype={"true": str, "pred": str, "patient_id": str, "frame_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        lab = rec["labels"]
        for col in LABEL_COLS:
            p[col] = lab.get(col, lab.get("seed") if col == "ft_seed" else None)
        p["run"] = rec["dir"].name
        # the run's bootstrap unit: its own split/bootstrap column (the DONE record's group)
        group = str(rec.get("result", {}).get("group") or "patient_id")
        if group not in p.columns:  # an older table: patient_id was the only unit
            group = "patient_id"
        p[GROUP_BY], p[UNIT] = group, p[group].astype(str)
        parts.append(p)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*LABEL_COLS, "run", GROUP_BY, UNIT])


def knn_histories(data: StudyData) -> pd.DataFrame:
    """kNN-monitor accuracy per pretraining run and step: method, ratio, seed, epoch, step, knn_acc."""
    rows = []
    for rec in data.of_kind("pretrain"):
        hist = pretrain_history(rec)
        if hist is None or "knn_acc" not in hist.columns:
            continue
        lab = rec["labels"]
        c = rec.get("config", {})
        labels = c.get("monitor_granularity") or c.get("granularity") or "coarse"
        for _, h in hist.iterrows():
            if pd.notna(h["knn_acc"]):
                rows.append({"method": lab.get("method"), "ratio": lab.get("ratio"), "seed": lab.get("seed"),
                             "labels": labels,
                             "epoch": int(h["epoch"]), "step": int(h["step"]) if "step" in hist and pd.notna(h["step"]) else None,
                             "knn_acc": float(h["knn_acc"]), "run": rec["dir"].name})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "ratio", "seed", "labels", "epoch", "step", "knn_acc", "run"])
