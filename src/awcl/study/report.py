"""The study report: ``results.csv``, ``report.md`` and a self-contained ``report.html``.

Everything is read back from the study directory (``study.json`` + every run's ``DONE``
record and files), so ``awcl report DIR`` can be re-run at any time, also on a partly
finished study. Sections without data say so instead of staying silently empty.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl.atomic import write_atomic
from awcl.errors import AwclError
from awcl.evaluate.metrics import class_confusion
from awcl.evaluate.sanity import confusion_check, segmentation_check
from awcl.evaluate.summary import pooled_pixel_confusion
from awcl.evaluate.tasks import PROTOCOLS, TABLE_METRICS, TASKS, headline_metric
from awcl.methods import METHODS, STUDY_METHODS
from awcl.study.answer import (
    FOREST_CAPTION,
    FOREST_FILE,
    Comparison,
    Compute,
    answer_paragraphs,
    below_init_note,
    compute_rows,
    forest_plot,
    run_compute,
)

PROTOCOL_TITLES = {
    "full": "Transfer table (full fine-tuning)",
    "partial": "Partial fine-tuning (encoder frozen)",
    "knn": "kNN probe (frozen features)",
    "linear-probe": "Linear probe (frozen features)",
}
DEGENERATE_SHARE = 0.9  # one predicted class for at least this share of test frames ...
DEGENERATE_MARGIN = 0.1  # ... and at least this much above that class's true share
LOWER_IS_BETTER = ("error", "loss", "mae", "rmse", "hd95", "msd", "fail")
METHOD_ORDER = STUDY_METHODS  # table rows in the order of awcl.methods.STUDY_METHODS
MAX_TABLE_METRICS = 5
# Column titles for metric keys whose meaning is not obvious from the key alone.
DISPLAY = {"f1": "macro-F1", "precision": "macro-precision", "recall": "macro-recall",
           "hc_mae_mm": "HC error (mm)", "miou": "mIoU", "gaa": "GAA", "ma": "MA", "auroc": "AUROC",
           "balanced_accuracy": "balanced acc.", "hd95_mm": "HD95 (mm)", "dice": "Dice (pooled)",
           "dice_per_image": "Dice (per image)", "fg_iou": "IoU (foreground)",
           "hc_fail_rate": "HC no fit"}  # fmt: skip


def lower_is_better(metric: str) -> bool:
    return any(s in metric.lower() for s in LOWER_IS_BETTER)


# --------------------------------------------------------------------------- loading
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
    cols = ["kind", "method", "ratio", "seed", "ft_seed", "train_patients", "task", "task_kind",
            "protocol", "main", "fold", "epoch", "step", "metric", "value", "run"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


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


# --------------------------------------------------------------------------- predictions
LABEL_COLS = ("method", "ratio", "seed", "ft_seed", "task", "task_kind", "protocol", "main", "train_patients")
GROUP_BY, UNIT = "group_by", "unit"  # the run's bootstrap column (cfg.group) and its value per frame


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


def _is_none(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def degenerate_runs(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """Classification runs that predict one class for (nearly) every test frame.

    A run is flagged when one predicted class covers at least ``DEGENERATE_SHARE`` of its test
    frames (all folds and seeds of the run) and exceeds that class's true share by at least
    ``DEGENERATE_MARGIN``: a classifier that has collapsed onto one answer, whatever its
    accuracy. Returns one dict per flagged run (labels, class, shares)."""
    out = []
    if preds.empty or "pred" not in preds.columns:
        return out
    for run, p in preds[preds.task_kind == "classify"].groupby("run", sort=False):
        pred_share = p["pred"].value_counts(normalize=True)
        top, share = str(pred_share.index[0]), float(pred_share.iloc[0])
        true_share = float((p["true"] == top).mean())
        if share >= DEGENERATE_SHARE and share - true_share >= DEGENERATE_MARGIN:
            first = p.iloc[0]
            out.append({
                "run": run, "method": first["method"], "task": first["task"], "protocol": first["protocol"],
                "train_patients": first["train_patients"], "main": bool(first["main"]), "class": top,
                "share": share, "true_share": true_share,
            })  # fmt: skip
    return out


def not_learned_runs(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """Runs at their trivial baseline (awcl.evaluate.sanity): a segmenter not above
    predict-all-foreground/background, a classifier at chance balanced accuracy."""
    out = []
    if preds.empty or "run" not in preds.columns:
        return out
    for run, p in preds.groupby("run", sort=False):
        first = p.iloc[0]
        if first["task_kind"] == "segment":
            try:
                chk = segmentation_check(pooled_pixel_confusion(p.dropna(axis=1, how="all")))
            except AwclError:  # no per-frame confusion columns: nothing to check
                continue
        elif first["task_kind"] == "classify":
            # this run's own classes (its non-empty prob_ columns; the stacked table holds
            # every task's), and chance over those present in its test truth, as metrics.json
            own = [c[5:] for c in p.columns if c.startswith("prob_") and p[c].notna().any()]
            names = sorted(set(own) | set(p["true"].astype(str)) | set(p["pred"].astype(str)))
            idx = {n: i for i, n in enumerate(names)}
            cm = class_confusion(p["true"].astype(str).map(idx).to_numpy(),
                                 p["pred"].astype(str).map(idx).to_numpy(), len(names))
            chk = confusion_check(cm)
        else:
            continue
        if not chk["learned"]:
            out.append({
                "run": run, "method": first["method"], "task": first["task"], "protocol": first["protocol"],
                "train_patients": first["train_patients"], "main": bool(first["main"]),
                "kind": "not_learned", "reason": chk["reason"],
            })  # fmt: skip
    return out


def identical_methods(table: Table) -> list[list[str]]:
    """Groups of methods whose rows in ``table`` are identical in every number column."""
    seen: dict[tuple[str, ...], list[str]] = {}
    cols = [j for j, h in enumerate(table.header) if j > 0 and h != "notes"]
    for row in table.rows:
        cells = tuple(row[j] for j in cols)
        if all(c == "—" for c in cells):
            continue
        seen.setdefault(cells, []).append(row[0])
    return [ms for ms in seen.values() if len(ms) > 1]


def identical_predictions(preds: pd.DataFrame, task: str, protocol: str) -> list[list[str]]:
    """Groups of methods with the very same prediction for every test frame (main runs)."""
    if preds.empty:
        return []
    if "pred" not in preds.columns:
        return []
    sub = preds[(preds.task == task) & (preds.protocol == protocol) & (preds.main == True)  # noqa: E712
                & preds.train_patients.map(_is_none) & (preds.task_kind == "classify")
                & preds["pred"].notna()]  # fmt: skip
    if sub.empty:
        return []
    keyed = {}
    for m, g in sub.groupby("method", sort=False):
        g = g.sort_values(["ft_seed", "seed", "fold", "frame_id"])
        keyed.setdefault(tuple(g["pred"].astype(str)), []).append(str(m))
    return [ms for ms in keyed.values() if len(ms) > 1]


# --------------------------------------------------------------------------- pretraining
def pretrain_setup(data: StudyData) -> list[str]:
    """Sentences on how pretraining was run: batch composition (summary.json's
    ``batch_composition``, else derived from ``class_group``) and augmentations."""
    recs = data.of_kind("pretrain")
    if not recs:
        return []
    comps: dict[str, list[str]] = {}
    for rec in recs:
        m = str(rec["labels"].get("method", rec["name"]))
        res = rec.get("result", {})
        comp = res.get("batch_composition")
        if comp is None:
            g = res.get("class_group")
            if g is None or not m.startswith(("awcl", "clpi")):
                comp = "not recorded" if g is None and m.startswith(("awcl", "clpi")) else "random"
            else:
                comp = "random" if int(g) <= 1 else f"labelled frames of one class (awcl) or scan (clpi) in groups of {g}"
        comps.setdefault(str(comp), [])
        if m not in comps[str(comp)]:
            comps[str(comp)].append(m)
    parts = [f"{comp} ({', '.join(_methods_in_order(ms))})" for comp, ms in comps.items()]
    out = ["Pretraining batch composition: " + "; ".join(parts) + " (the paper's batches are random)."]
    augs = {(tuple(r["result"].get("crop_scale", ())), r["result"].get("blur")) for r in recs
            if "crop_scale" in r.get("result", {})}  # fmt: skip
    for crop, blur in sorted(augs, key=str):
        out.append(f"Pretraining augmentations: random resized crop of {crop[0]:g}–{crop[1]:g} of the frame "
                   f"area, blur probability {blur:g}.")  # fmt: skip
    return out


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


def knn_curves(knn: pd.DataFrame) -> bytes | None:
    """kNN accuracy vs pretraining step, one line per run (the first point: before training)."""
    if knn.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    cmap = plt.get_cmap("tab10")
    methods = _methods_in_order(list(dict.fromkeys(knn.method)))
    for i, m in enumerate(methods):
        for j, (_, g) in enumerate(knn[knn.method == m].groupby("run", sort=False)):
            g = g.sort_values("epoch")
            x = g["step"] if g["step"].notna().all() else g["epoch"]
            r = g["ratio"].iloc[0]
            name = m + (f" r={r:g}" if not _is_none(r) else "") + (f" seed {g['seed'].iloc[0]}" if knn.seed.nunique() > 1 else "")
            ax.plot(x, g["knn_acc"], marker="o", ms=3, color=cmap(i % 10), alpha=1.0 if j == 0 else 0.6,
                    label=name)  # fmt: skip
            if int(g["epoch"].iloc[0]) == 0:
                ax.plot(x.iloc[:1], g["knn_acc"].iloc[:1], marker="s", ms=7, color=cmap(i % 10), mfc="none")
    ax.set_xlabel("pretraining step" if knn["step"].notna().all() else "epoch")
    ax.set_ylabel("kNN accuracy (held-out patients)")
    ax.set_title("kNN monitor during pretraining (square: before training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def knn_table(knn: pd.DataFrame) -> Table | None:
    """Per method: kNN accuracy before training, at the end, and the change (mean over runs)."""
    if knn.empty:
        return None
    rows = []
    for m in _methods_in_order(list(dict.fromkeys(knn.method))):
        starts, ends, steps = [], [], []
        for _, g in knn[knn.method == m].groupby("run", sort=False):
            g = g.sort_values("epoch")
            ends.append(float(g["knn_acc"].iloc[-1]))
            steps.append(g["step"].iloc[-1])
            if int(g["epoch"].iloc[0]) == 0:
                starts.append(float(g["knn_acc"].iloc[0]))
        s0 = f"{np.mean(starts):.3f}" if starts else "—"
        change = f"{np.mean(ends) - np.mean(starts):+.3f}" if starts else "—"
        rows.append([m, s0, f"{np.mean(ends):.3f}", change, str(steps[-1]) if steps else "—", str(len(ends))])
    return Table(["method", "kNN before training", "kNN at the end", "change", "steps", "runs"], rows)


# --------------------------------------------------------------------------- intervals
# Patient-level bootstrap from awcl.evaluate.summary; these adapters fix how the study pools
# runs (folds, seeds) before calling it.
N_BOOT = 1000


def _unit(preds: pd.DataFrame) -> str:
    """The column to bootstrap over: each run's own group (:data:`UNIT`, set by
    :func:`load_predictions`), ``patient_id`` in a table without it."""
    return UNIT if UNIT in preds.columns else "patient_id"


def _unit_title(preds: pd.DataFrame) -> str:
    """"test patients", or "test <group>s" for runs grouped by another column."""
    names = set(preds[GROUP_BY].dropna()) if GROUP_BY in preds.columns else set()
    return "test patients" if names <= {"patient_id"} else f"test groups ({', '.join(sorted(names))})"


def pooled_summary(preds: pd.DataFrame, kind: str, auroc: bool = True) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, lo, hi) on the pooled predictions of one method/task/protocol (all
    folds and seeds): the metric on every test frame, its 95% interval by bootstrap over the
    runs' own group (``cfg.group``, patients by default; a group's frames of every seed stay
    together). Empty when not computable.
    ``auroc=False`` leaves AUROC out (most of the cost of a resample)."""
    from awcl.evaluate.summary import classification_summary, segmentation_summary

    if preds.empty:
        return {}
    p = preds.drop(columns=["video_id"], errors="ignore")  # no video-level votes needed here
    try:
        if kind == "classify":
            if "pred" not in p.columns or p["pred"].isna().any():
                return {}
            classes = [c[5:] for c in p.columns if c.startswith("prob_") and p[c].notna().all()]
            if not classes:
                classes = sorted(set(p["true"].astype(str)) | set(p["pred"].astype(str)))
            if not auroc:
                p = p.drop(columns=[c for c in p.columns if c.startswith("prob_")])
            s = classification_summary(p, classes, _unit(p), N_BOOT, seed=0)
        else:
            s = segmentation_summary(p, _unit(p), N_BOOT, seed=0)
    except AwclError:  # e.g. stand-in or old predictions without the needed columns
        return {}
    out = {}
    for k, v in s["pooled"].items():
        ci = s["intervals"].get(k)
        if v is not None and ci:
            out[k] = (float(v), float(ci[0]), float(ci[1]))
    return out


def cell_interval(preds: pd.DataFrame, metric: str, kind: str) -> tuple[float, float, float] | None:
    """(value, lo, hi) of one metric on pooled predictions (see :func:`pooled_summary`)."""
    return pooled_summary(preds, kind, auroc=metric == "auroc").get(metric)


def aligned(preds: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of methods ``a`` and ``b`` for the same test frames, in the same order, each row's
    ``frame_id`` made unique per replicate.

    A replicate is a (pretraining seed, downstream seed) pair; a method evaluated for one
    pretraining seed only (random init under ``finetune_seeds``) is reused for every
    pretraining seed of the other method. Frames are matched on (replicate, fold, frame_id)."""
    pa, pb = preds[preds.method == a], preds[preds.method == b]
    if pa.empty or pb.empty:
        return pa.iloc[:0], pb.iloc[:0]
    seeds = sorted({str(v) for v in pa.seed} | {str(v) for v in pb.seed})

    def expand(p: pd.DataFrame) -> pd.DataFrame:
        p = p.assign(seed=p.seed.astype(str), ft_seed=p.ft_seed.astype(str))
        if p.seed.nunique() == 1 and len(seeds) > 1:  # one encoder for all pretraining seeds
            return pd.concat([p.assign(seed=s) for s in seeds], ignore_index=True)
        return p

    key = ["seed", "ft_seed", "fold", "frame_id"]
    pa, pb = expand(pa), expand(pb)
    both = pa[key].merge(pb[key], on=key)
    out = []
    for p in (pa, pb):
        p = p.merge(both, on=key).sort_values(key).reset_index(drop=True)
        p["frame_id"] = p.seed + "|" + p.ft_seed + "|" + p.fold.astype(str) + "|" + p.frame_id.astype(str)
        out.append(p)
    return out[0], out[1]


def paired_difference(preds: pd.DataFrame, a: str, b: str, metric: str, kind: str,
                      ) -> tuple[float, float, float, int] | None:
    """metric(a) − metric(b) on the same test frames with a 95% paired-bootstrap interval
    over the runs' test groups (:func:`_unit`, patients by default; folds and seeds pooled):
    (diff, lo, hi, frames); None when the two methods share no test frame or the metric
    cannot be computed from their predictions."""
    from awcl.evaluate.summary import paired_bootstrap_diff

    pa, pb = aligned(preds, a, b)
    if pa.empty:
        return None
    if kind == "classify":  # the same class columns in both (drop those of other tasks)
        for p in (pa, pb):
            p.drop(columns=[c for c in p.columns if c.startswith("prob_") and p[c].isna().any()], inplace=True)
    unit = _unit(pa)
    try:
        if kind == "classify" and metric != "auroc":
            # without probabilities a resample skips AUROC (~40x faster); classes then come
            # from true/pred, equal for both runs whenever every class is in the test truth
            try:
                diff, lo, hi = paired_bootstrap_diff(*(p.drop(columns=[c for c in p.columns if c.startswith("prob_")])
                                                       for p in (pa, pb)), metric, unit, n=N_BOOT, seed=0)  # fmt: skip
            except AwclError:
                diff, lo, hi = paired_bootstrap_diff(pa, pb, metric, unit, n=N_BOOT, seed=0)
        else:
            diff, lo, hi = paired_bootstrap_diff(pa, pb, metric, unit, n=N_BOOT, seed=0)
    except AwclError:
        return None
    if not all(np.isfinite(v) for v in (diff, lo, hi)):
        return None
    return float(diff), float(lo), float(hi), len(pa)


def efficiency_table(points: pd.DataFrame) -> Table:
    """Rows: (task, protocol, method); columns: n labelled patients; cells mean [lo, hi]."""
    ns = sorted({int(n) for n in points.n.dropna()})
    cols = [*ns, None]
    rows = []
    for (task, protocol), pp in points.groupby(["task", "protocol"], sort=False):
        for m in _methods_in_order(list(dict.fromkeys(pp.method))):
            row = [f"{task} ({protocol})", m]
            for n in cols:
                pt = pp[(pp.method == m) & pp.n.map(lambda v, n=n: (None if _is_none(v) else int(v)) == n)]
                if pt.empty:
                    row.append("—")
                    continue
                r = pt.iloc[0]
                row.append(f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" if pd.notna(r["lo"])
                           else _fmt(r["mean"], r["std"]))  # fmt: skip
            rows.append(row)
    metric = DISPLAY.get(points.metric.iloc[0], points.metric.iloc[0])
    return Table(["task", "method"] + [f"{metric}, n={n}" if n is not None else f"{metric}, all" for n in cols], rows)


def pairwise_tables(preds: pd.DataFrame, df: pd.DataFrame, tasks: list[str],
                    found: list[Comparison] | None = None) -> tuple[list[Table], list[str], int]:
    """Per task and protocol (main runs, whole training part): every pair of methods, the
    difference of the headline metric with its 95% paired-bootstrap interval.

    Returns (tables, sentences naming the significant differences, number of comparisons);
    ``found`` (when given) receives every row as a :class:`awcl.study.answer.Comparison`."""
    tables, significant, n_tests = [], [], 0
    if preds.empty:
        return tables, significant, n_tests
    main = preds[(preds.main == True) & preds.train_patients.map(_is_none)]  # noqa: E712
    for task in tasks:
        for protocol in PROTOCOLS:
            sub = main[(main.task == task) & (main.protocol == protocol)]
            if sub.empty:
                continue
            sub = sub.dropna(axis=1, how="all")  # columns of other tasks' predictions
            kind = str(sub.task_kind.iloc[0])
            if kind not in TASKS:
                continue
            metric = headline_metric(kind)
            methods = _methods_in_order(list(dict.fromkeys(sub.method)))
            rows: list[list[str]] = []
            bold: set[tuple[int, int]] = set()
            for i, a in enumerate(methods):
                for b in methods[i + 1 :]:
                    res = paired_difference(sub, b, a, metric, kind)  # later listed minus earlier
                    if res is None:
                        continue
                    d, lo, hi, frames = res
                    n_tests += 1
                    sig = lo > 0 or hi < 0
                    better = (d < 0) if lower_is_better(metric) else (d > 0)
                    verdict = ("yes: " + (b if better else a) + " better") if sig else "no"
                    rows.append([f"{b} − {a}", f"{d:+.3f}", f"[{lo:+.3f}, {hi:+.3f}]", verdict,
                                 str(sub[sub.method == b][_unit(sub)].nunique()), str(frames)])  # fmt: skip
                    if found is not None:
                        found.append(Comparison(task, protocol, metric, DISPLAY.get(metric, metric),
                                                lower_is_better(metric), b, a, d, lo, hi))  # fmt: skip
                    if sig:
                        bold.add((len(rows) - 1, 3))
                        significant.append(
                            f"{task} ({protocol}): {b if better else a} over {a if better else b}, "
                            f"{DISPLAY.get(metric, metric)} {b} − {a} = {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                        )
            if rows:
                t = Table(["difference", f"{DISPLAY.get(metric, metric)}", "95% CI", "significant",
                           _unit_title(sub), "paired frames"], rows, bold)  # fmt: skip
                t.caption = f"{task}, {protocol}"
                tables.append(t)
    return tables, significant, n_tests


def efficiency_points(preds: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Label-efficiency points: per (task, protocol, method, n) the headline metric with its
    interval; n = labelled training patients per fold (None = all)."""
    rows = []
    fin = df[(df.kind == "finetune") & (df.main == True)]  # noqa: E712
    if fin.empty or fin.train_patients.notna().sum() == 0:
        return pd.DataFrame(columns=["task", "protocol", "method", "n", "metric", "mean", "std", "lo", "hi"])
    for (task, protocol), g in fin.groupby(["task", "protocol"], sort=False):
        if g.train_patients.notna().sum() == 0:
            continue
        kind = str(g.task_kind.iloc[0])
        head = headline_metric(kind) if kind in TASKS else None
        metric = head if head in set(g.metric) else table_metrics(g, task)[0]
        for method, gm in g.groupby("method", sort=False):
            for n, gn in gm.groupby(gm.train_patients.map(lambda v: -1 if _is_none(v) else int(v)), sort=True):
                vals = gn[gn.metric == metric].value
                lo = hi = np.nan
                value = float(vals.mean())
                if not preds.empty:
                    p = preds[(preds.task == task) & (preds.protocol == protocol) & (preds.method == method)
                              & (preds.main == True)]  # noqa: E712  # fmt: skip
                    p = p[p.train_patients.map(lambda v, n=n: (-1 if _is_none(v) else int(v)) == n)]
                    ci = cell_interval(p.dropna(axis=1, how="all"), metric, kind)
                    if ci is not None:
                        value, lo, hi = ci
                rows.append({"task": task, "protocol": protocol, "method": method, "n": None if n < 0 else n,
                             "metric": metric, "mean": value, "std": float(vals.std(ddof=0)),
                             "lo": lo, "hi": hi})  # fmt: skip
    return pd.DataFrame(rows)


def efficiency_curve(points: pd.DataFrame) -> bytes | None:
    """Metric vs number of labelled training patients, one panel per (task, protocol)."""
    if points.empty:
        return None
    plt = _plt()
    panels = list(dict.fromkeys(zip(points.task, points.protocol)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, (task, protocol) in zip(axes[0], panels):
        pp = points[(points.task == task) & (points.protocol == protocol)]
        ns = sorted({int(n) for n in pp.n.dropna()})
        ticks = [*ns, None]  # "all" at the right end
        pos = {n: i for i, n in enumerate(ticks)}
        methods = _methods_in_order(list(dict.fromkeys(pp.method)))
        for k, m in enumerate(methods):
            pm = pp[pp.method == m]
            x = np.array([pos[None if _is_none(n) else int(n)] for n in pm.n], dtype=float)
            x += (k - (len(methods) - 1) / 2) * 0.06  # small dodge so intervals do not overlap
            y = pm["mean"].to_numpy()
            have = pm.lo.notna().to_numpy()
            yerr = np.vstack([np.where(have, y - pm.lo, pm["std"]), np.where(have, pm.hi - y, pm["std"])])
            order = np.argsort(x)
            ax.errorbar(x[order], y[order], yerr=yerr[:, order], marker="o", ms=4, capsize=3, label=m)
        ax.set_xticks(range(len(ticks)), [str(n) if n is not None else "all" for n in ticks])
        ax.set_xlabel("labelled training patients per fold")
        ax.set_ylabel(DISPLAY.get(pp.metric.iloc[0], pp.metric.iloc[0]))
        ax.set_title(f"{task} ({protocol})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- document
@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, col)
    caption: str = ""  # a line above the table


@dataclass
class Image:
    png: bytes
    name: str
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (paragraph) | Table | Image | ("pre", str)


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _methods_in_order(methods: list[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def table_metrics(df: pd.DataFrame, task: str) -> list[str]:
    sub = df[df.task == task]
    present = list(dict.fromkeys(sub.metric))
    kind = sub.task_kind.iloc[0] if len(sub) else "classify"
    pref = TABLE_METRICS["classify" if kind == "classify" else "segment"]
    chosen = [m for m in pref if m in present]
    if not chosen:
        chosen = [m for m in present if m not in ("loss", "epoch", "seconds")]
    return chosen[:MAX_TABLE_METRICS]


def transfer_table(
    df: pd.DataFrame,
    protocol: str,
    tasks: list[str],
    intervals: dict[tuple[str, str, str], tuple[float, float, float]] | None = None,
    notes: dict[str, str] | None = None,
) -> Table | None:
    """Methods x (task, metric) of the main runs (whole training part). Where the predictions
    allow it (``intervals``), a cell is the metric on all test frames of all folds and seeds
    pooled with its 95% patient-bootstrap interval (``value [lo, hi]``); otherwise the mean ±
    std of the per-fold values (folds and seeds). Best per column in bold.
    ``notes`` (method -> text) adds a last column, e.g. a degenerate-classifier warning."""
    sub = main_rows(df)
    sub = sub[sub.protocol == protocol]
    if sub.empty:
        return None
    tasks = [t for t in tasks if t in set(sub.task)]
    cols = [(t, m) for t in tasks for m in table_metrics(sub, t)]
    methods = _methods_in_order(list(dict.fromkeys(sub.method)))
    stats = sub.groupby(["method", "task", "metric"]).value.agg(["mean", "std", "count"])
    header = ["method"] + [f"{t}: {DISPLAY.get(m, m)}" for t, m in cols]
    rows, means = [], []
    for m in methods:
        row, mrow = [m], []
        for t, met in cols:
            if (m, t, met) in stats.index:
                s = stats.loc[(m, t, met)]
                ci = (intervals or {}).get((m, t, met))
                if ci is not None and all(np.isfinite(v) for v in ci):
                    row.append(f"{ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}]")
                    mrow.append(float(ci[0]))
                else:
                    std = float(np.nan_to_num(s["std"])) if s["count"] > 1 else 0.0
                    row.append(_fmt(float(s["mean"]), std))
                    mrow.append(float(s["mean"]))
            else:
                row.append("—")
                mrow.append(np.nan)
        rows.append(row)
        means.append(mrow)
    bold: set[tuple[int, int]] = set()
    arr = np.array(means, dtype=float)
    for j, (_, met) in enumerate(cols):
        col = arr[:, j]
        if np.all(np.isnan(col)):
            continue
        best = np.nanmin(col) if lower_is_better(met) else np.nanmax(col)
        for i in np.where(np.isclose(col, best))[0]:
            bold.add((int(i), j + 1))
    if notes and any(notes.get(m) for m in methods):
        header.append("notes")
        for row, m in zip(rows, methods):
            row.append(notes.get(m, ""))
    return Table(header, rows, bold)


def coarse_fine_table(df: pd.DataFrame, tasks: list[str]) -> Table | None:
    sub = main_rows(df)
    sub = sub[sub.protocol == "full"]
    pairs = [(f"{b}-coarse", f"{b}-fine") for b, cls in METHODS.items() if cls.granular]
    pairs = [p for p in pairs if p[0] in set(sub.method) and p[1] in set(sub.method)]
    if not pairs:
        return None
    header = ["method", "task: metric", "coarse", "fine", "fine − coarse"]
    rows: list[list[str]] = []
    bold: set[tuple[int, int]] = set()
    for c, f in pairs:
        for t in [t for t in tasks if t in set(sub.task)]:
            for met in table_metrics(sub, t):
                vc = sub[(sub.method == c) & (sub.task == t) & (sub.metric == met)].value
                vf = sub[(sub.method == f) & (sub.task == t) & (sub.metric == met)].value
                if vc.empty or vf.empty:
                    continue
                rows.append([c.split("-")[0], f"{t}: {DISPLAY.get(met, met)}", _fmt(vc.mean(), float(np.nan_to_num(vc.std()))),
                             _fmt(vf.mean(), float(np.nan_to_num(vf.std()))), f"{vf.mean() - vc.mean():+.3f}"])  # fmt: skip
                better_fine = (vf.mean() < vc.mean()) if lower_is_better(met) else (vf.mean() > vc.mean())
                bold.add((len(rows) - 1, 3 if better_fine else 2))
    return Table(header, rows, bold) if rows else None


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ratio_curve(df: pd.DataFrame, tasks: list[str]) -> bytes | None:
    sub = df[(df.kind == "finetune") & df.method.astype(str).str.startswith("awcl") & df.ratio.notna()]
    if "train_patients" in sub.columns:
        sub = sub[sub.train_patients.isna()]
    if sub.empty or sub.ratio.nunique() < 2:
        return None
    tasks = [t for t in tasks if sub[sub.task == t].ratio.nunique() >= 2]  # swept tasks only
    if not tasks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        st = sub[sub.task == t]
        met = table_metrics(st, t)[0]
        proto = "full" if "full" in set(st.protocol) else st.protocol.iloc[0]
        st = st[(st.metric == met) & (st.protocol == proto)]
        for m in sorted(set(st.method)):
            g = st[st.method == m].groupby("ratio").value.agg(["mean", "std"]).sort_index()
            ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=m)
        ax.set_xlabel("anatomy ratio r")
        ax.set_ylabel(met)
        ax.set_title(f"{t} ({proto})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def pretrain_curves(data: StudyData) -> bytes | None:
    series = []
    for rec in data.of_kind("pretrain"):
        hist = pretrain_history(rec)
        if hist is None or hist.empty:
            continue
        col = "loss" if "loss" in hist.columns else next((c for c in hist.columns if "loss" in c), None)
        if col is None:
            continue
        x = hist["epoch"] if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
        lab = rec["labels"]
        name = lab.get("method", rec["name"])
        if lab.get("ratio") is not None:
            name += f" r={lab['ratio']:g}"
        if len(data.index.get("runs", [])) and lab.get("seed", 0) != 0:
            name += f" seed {lab['seed']}"
        if lab.get("fold") is not None:  # per-fold pretraining
            name += f" {lab.get('fold_of')} f{lab['fold']}"
        series.append((name, np.asarray(x), hist[col].to_numpy(dtype=float), col))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, x, y, _ in sorted(series, key=lambda s: s[0]):
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(series[0][3])
    ax.set_title("pretraining loss (each method's own objective)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def image_grid(items: list[tuple[str, Path]], ncols: int = 4) -> bytes | None:
    """Compose PNG files into one captioned grid."""
    if not items:
        return None
    plt = _plt()
    n = len(items)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, path) in zip(axes.flat, items):
        ax.imshow(plt.imread(path))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def versions_and_hardware() -> list[list[str]]:
    import awcl

    rows = [["awcl", awcl.__version__], ["python", sys.version.split()[0]], ["platform", platform.platform()]]
    for mod in ("torch", "torchvision", "lightning", "numpy", "sklearn"):
        try:
            m = __import__(mod)
            rows.append([mod, str(getattr(m, "__version__", "?"))])
        except Exception:  # an optional library missing is not an error for the report
            rows.append([mod, "not installed"])
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rows.append(["CPU", cpu])
    rows.append(["cores", str(os.cpu_count())])
    try:
        import torch

        rows.append(["torch threads", str(torch.get_num_threads())])
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:
        gpu = "unknown"
    rows.append(["GPU", gpu])
    try:
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        rows.append(["memory", f"{kb / 1024**2:.1f} GiB"])
    except (OSError, ValueError, IndexError):
        pass
    return rows


def table_intervals(preds: pd.DataFrame, df: pd.DataFrame, protocol: str, tasks: list[str],
                    ) -> dict[tuple[str, str, str], tuple[float, float, float]]:
    """(method, task, metric) -> (pooled value, lo, hi) for the cells of one protocol's table."""
    out: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    if preds.empty:
        return out
    sub = main_rows(df)
    sub = sub[sub.protocol == protocol]
    p_main = preds[(preds.protocol == protocol) & (preds.main == True) & preds.train_patients.map(_is_none)]  # noqa: E712
    for task in [t for t in tasks if t in set(sub.task)]:
        kind = str(sub[sub.task == task].task_kind.iloc[0])
        for m in set(sub[sub.task == task].method):
            p = p_main[(p_main.task == task) & (p_main.method == m)]
            for met, ci in pooled_summary(p.dropna(axis=1, how="all"), kind).items():
                out[(m, task, met)] = ci
    return out


def degenerate_notes(flags: list[dict[str, Any]], protocol: str) -> dict[str, str]:
    """method -> warning text for the main-table runs of ``protocol`` that collapsed."""
    notes: dict[str, list[str]] = {}
    for f in flags:
        if f["protocol"] != protocol or not f["main"] or not _is_none(f["train_patients"]):
            continue
        if f.get("kind") == "not_learned":
            text = f"⚠ did not learn ({f['task']}): {f['reason']}"
        else:
            text = (f"⚠ degenerate ({f['task']}): predicts '{f['class']}' for {f['share']:.0%} of test "
                    f"frames (true share {f['true_share']:.0%})")
        notes.setdefault(f["method"], []).append(text)
    return {m: "; ".join(v) for m, v in notes.items()}


ANSWER_TITLE = "Answer on this data"


def pretrain_compute(data: StudyData) -> list[Compute]:
    """Each pretraining run's steps, views seen, lr schedule and kNN monitor (its DONE result;
    the kNN history fills what an older result lacks), in the report's method order."""
    knn = knn_histories(data)
    out = []
    for rec in sorted(data.of_kind("pretrain"), key=lambda r: (_order_key(str(r["labels"].get("method"))),
                                                               str(r["labels"].get("ratio")), str(r["labels"].get("seed")))):  # fmt: skip
        h = knn[knn.run == rec["dir"].name].sort_values("epoch")
        curve = [(int(st), float(a)) for st, a in zip(h.step, h.knn_acc)] if len(h) and h.step.notna().all() else None
        out.append(run_compute(rec["labels"], rec.get("result", {}), curve))
    return out


def answer_section(data: StudyData, df: pd.DataFrame, found: list[Comparison]) -> Section:
    """The answer up front: the three questions from the pairwise differences, a note on runs
    stopped below their step-0 kNN value, the forest plot, and each method's compute."""
    s = Section(ANSWER_TITLE)
    paras = answer_paragraphs(found)
    if paras:
        s.blocks.append("The paper's questions on this data, read from the pairwise differences (headline "
                        "metric, all folds and seeds pooled): difference [95% paired-bootstrap interval over "
                        "test patients], significant when the interval excludes 0 (not corrected for "
                        "multiplicity).")  # fmt: skip
        s.blocks.extend(paras)
    else:
        s.blocks.append("No answer yet: it needs two or more methods with predictions on the same test frames.")
    runs = pretrain_compute(data)
    note = below_init_note(runs)
    if note:
        s.blocks.append(note)
    png = forest_plot(found)
    if png:
        s.blocks.append(Image(png, FOREST_FILE, FOREST_CAPTION))
    header, rows = compute_rows(runs)
    if "random" in set(df.method.dropna()):
        rows.insert(0, ["random (no pretraining)", "0", "0", "—", "—", "—"])
    if rows:
        t = Table(header, rows)
        t.caption = ("Equal compute, stated: each pretraining run's optimiser steps and views seen (steps × "
                     "batch × views per sample, all processes; supervised methods draw labelled frames only)")  # fmt: skip
        s.blocks.append(t)
    return s


def build_sections(data: StudyData, df: pd.DataFrame, preds: pd.DataFrame | None = None) -> list[Section]:
    """The report's sections, in order: the answer, overview, one table per protocol, then the
    analyses."""
    if preds is None:
        preds = load_predictions(data)
    tasks = list(dict.fromkeys(df[df.kind == "finetune"].task.dropna()))
    flags = degenerate_runs(preds) + not_learned_runs(preds)
    found: list[Comparison] = []
    pairwise = pairwise_section(preds, df, tasks, found)  # first: the answer reads its differences
    secs = [answer_section(data, df, found), overview_section(data)]
    for protocol in PROTOCOLS:
        s = transfer_section(df, preds, protocol, tasks, flags)
        if s is not None:
            secs.append(s)
    secs += [
        pairwise,
        efficiency_section(preds, df),
        knn_section(data),
        tsne_section(data),
        ratio_section(df, tasks),
        coarse_fine_section(df, tasks),
        confusion_section(data, tasks),
        pretrain_curves_section(data),
        run_times_section(data),
        configuration_section(data),
        versions_section(),
    ]
    return secs


def per_fold_line(data: StudyData) -> str | None:
    """Which methods were pretrained per fold (a task's ``pretrain_per_fold``), or None."""
    by: dict[str, dict[str, set]] = {}
    for run in data.index.get("runs", []):
        lab = run.get("labels", {})
        if run.get("kind") == "pretrain" and lab.get("fold") is not None:
            by.setdefault(str(lab.get("fold_of")), {}).setdefault(str(lab.get("method")), set()).add(run["dir"])
    if not by:
        return None
    parts = [f"{', '.join(_methods_in_order(list(ms)))} on {task} ({sum(map(len, ms.values()))} runs)"
             for task, ms in by.items()]  # fmt: skip
    return ("Per-fold pretraining: " + "; ".join(parts) + " — pretrained once per outer fold of "
            "the task on that fold's training groups only (no frame or label of its test part), "
            "each fold fine-tuned from its own encoder; any other pretrained method once on all "
            "the pretraining data.")


def overview_section(data: StudyData) -> Section:
    over = Section("Overview")
    n_runs = len(data.index.get("runs", []))
    over.blocks.append(
        f"Study **{data.index.get('name', '?')}**: {len(data.records)} of {n_runs} runs finished"
        + (f", {len(data.pending)} not finished (re-run `awcl study` to complete them)." if data.pending else ".")
        + f" Main-table anatomy ratio r = {data.index.get('anatomy_ratio')}."
        + " Table cells: the metric on the test frames of all folds (and seeds) pooled, with its 95%"
        " interval by bootstrap over test patients (`value [lo, hi]`); where a run has no"
        " predictions, mean ± std over folds. Best per column in bold; every per-fold value is"
        " in results.csv."
    )
    for line in pretrain_setup(data):
        over.blocks.append(line)
    per_fold = per_fold_line(data)
    if per_fold:
        over.blocks.append(per_fold)
    for note in data.index.get("notes", []):
        over.blocks.append(f"Note: {note}.")
    return over


def transfer_section(df: pd.DataFrame, preds: pd.DataFrame, protocol: str, tasks: list[str],
                     flags: list[dict[str, Any]]) -> Section | None:
    """One protocol's transfer table with its warnings; None for a probe the study does not run."""
    title = PROTOCOL_TITLES[protocol]
    present = not main_rows(df)[main_rows(df).protocol == protocol].empty
    if not present and protocol not in ("full", "partial"):
        return None  # probe sections only when the study has probes
    s = Section(title)
    t = transfer_table(df, protocol, tasks, table_intervals(preds, df, protocol, tasks),
                       degenerate_notes(flags, protocol)) if present else None  # fmt: skip
    if t is None:
        s.blocks.append("No full fine-tuning runs have finished." if protocol == "full"
                        else "No partial fine-tuning runs in this study.")  # fmt: skip
        return s
    s.blocks.append(t)
    for group in identical_methods(t):
        msg = (f"⚠ {', '.join(group)}: identical numbers in every column of this table — the table "
               "cannot tell these methods apart (look for a degenerate classifier).")  # fmt: skip
        s.blocks.append(msg)
    for task in tasks:
        for group in identical_predictions(preds, task, protocol):
            s.blocks.append(f"⚠ {', '.join(group)} made the very same prediction for every test frame of {task}.")
    for m, text in degenerate_notes(flags, protocol).items():
        s.blocks.append(f"{m}: {text}.")
    return s


def pairwise_section(preds: pd.DataFrame, df: pd.DataFrame, tasks: list[str],
                     found: list[Comparison] | None = None) -> Section:
    """The pairwise tables; ``found`` receives every comparison (the answer and forest plot)."""
    s = Section("Pairwise differences (paired bootstrap over test patients)")
    tables, significant, n_tests = pairwise_tables(preds, df, tasks, found)
    if not tables:
        s.blocks.append("No paired comparison: it needs two or more methods with predictions on the same test frames.")
        return s
    s.blocks.append(
        "Each row: the difference of the headline metric (macro-F1 for classification, Dice for "
        "segmentation) between two methods on the same test frames — all folds pooled, and all "
        "seeds — with a 95% interval from resampling test patients (1000 resamples; the same "
        "patients for both methods). A difference is significant when its interval excludes 0. "
        f"{n_tests} comparisons, not corrected for multiplicity: about {0.05 * n_tests:.1f} could "
        "exclude 0 by chance."
    )
    s.blocks.append(f"{len(significant)} of {n_tests} differences are significant; the forest plot under "
                    "the answer at the top draws every one of them.")  # fmt: skip
    s.blocks.extend(tables)
    return s


def efficiency_section(preds: pd.DataFrame, df: pd.DataFrame) -> Section:
    s = Section("Label efficiency")
    points = efficiency_points(preds, df)
    png = efficiency_curve(points)
    if png:
        s.blocks.append(Image(png, "label_efficiency.png",
                              "headline metric vs labelled training patients per fold (all folds and seeds "
                              "pooled; bars: 95% patient-bootstrap interval, or ± std over folds where predictions are missing)"))  # fmt: skip
        s.blocks.append(efficiency_table(points))
    else:
        s.blocks.append("No label-efficiency runs: give a task `train_patients: [n, ..., all]`.")
    return s


def knn_section(data: StudyData) -> Section:
    s = Section("kNN monitor during pretraining")
    knn = knn_histories(data)
    png = knn_curves(knn)
    if not png:
        s.blocks.append("No kNN monitor values (monitor off: `monitor_fraction: 0`; too few labelled patients or "
                        "classes to hold some out; or no pretrained method finished).")  # fmt: skip
        return s
    s.blocks.append(Image(png, "knn_curves.png", "kNN accuracy of held-out patients' frames vs pretraining step "
                          "(first point: the initial encoder, before any step)"))  # fmt: skip
    t = knn_table(knn)
    if t is not None:
        s.blocks.append(t)
    by = knn.groupby("labels").method.unique()
    if len(by) == 1:
        s.blocks.append(f"Monitor labels: {by.index[0]} for every run (20-NN vote on held-out patients).")
    else:
        s.blocks.append("⚠ The monitor scored different labels: " + "; ".join(
            f"{g} ({', '.join(_methods_in_order(list(ms)))})" for g, ms in by.items())
            + " — curves of different label sets do not compare; set `monitor_granularity`.")  # fmt: skip
    return s


def tsne_section(data: StudyData) -> Section:
    s = Section("t-SNE of penultimate features")
    items = []
    for rec in data.of_kind("embed"):
        p = find_image(rec["dir"], "tsne", "t-sne")
        if p is not None:
            items.append((rec["labels"].get("method", rec["name"]), p))
    grid = image_grid(sorted(items, key=lambda x: _order_key(x[0])))
    if grid:
        task = data.of_kind("embed")[0]["labels"].get("task")
        s.blocks.append(Image(grid, "tsne_grid.png", f"t-SNE per method ({task} data, coloured by class)"))
    else:
        s.blocks.append("No t-SNE embeddings in this study (embed disabled or not finished).")
    return s


def ratio_section(df: pd.DataFrame, tasks: list[str]) -> Section:
    s = Section("Anatomy-ratio sweep")
    png = ratio_curve(df, tasks)
    if png:
        s.blocks.append(Image(png, "ratio_curve.png", "downstream metric vs anatomy ratio (mean ± std over folds)"))
    else:
        s.blocks.append("No anatomy-ratio sweep: the study has no AWCL method with two or more ratios.")
    return s


def coarse_fine_section(df: pd.DataFrame, tasks: list[str]) -> Section:
    s = Section("Coarse vs fine anatomy labels")
    t = coarse_fine_table(df, tasks)
    s.blocks.append(
        t if t is not None else "No coarse/fine pair (supervised or awcl, both granularities) in this study."
    )
    return s


def confusion_section(data: StudyData, tasks: list[str]) -> Section:
    """A grid of confusion matrices per classification task: main full fine-tuning runs, first seed."""
    s = Section("Confusion matrices")
    found = False
    for task in tasks:
        items = []
        for rec in data.of_kind("finetune"):
            lab = rec["labels"]
            if lab.get("task") != task or lab.get("task_kind") != "classify":
                continue
            if lab.get("protocol") != "full" or not lab.get("main", True) or lab.get("train_patients") is not None:
                continue
            if lab.get("seed") != min(r["labels"].get("seed", 0) for r in data.of_kind("finetune")):
                continue
            p = find_image(rec["dir"], "confusion")
            if p is not None:
                items.append((lab.get("method", rec["name"]), p))
        grid = image_grid(sorted(items, key=lambda x: _order_key(x[0])))
        if grid:
            found = True
            s.blocks.append(Image(grid, f"confusion_{_safe(task)}.png", f"{task}, full fine-tuning"))
    if not found:
        s.blocks.append("No confusion matrices (no finished classification runs).")
    return s


def pretrain_curves_section(data: StudyData) -> Section:
    s = Section("Pretraining curves")
    png = pretrain_curves(data)
    s.blocks.append(
        Image(png, "pretrain_curves.png", "pretraining loss per epoch")
        if png
        else "No pretraining histories (no pretrained methods finished)."
    )
    return s


def run_times_section(data: StudyData) -> Section:
    s = Section("Run times")
    rows = [[r["kind"], r["name"], f"{r.get('seconds', 0):.1f}"] for r in data.records]
    if rows:
        total = sum(r.get("seconds", 0) for r in data.records)
        rows.append(["total", "", f"{total:.1f}"])
        s.blocks.append(Table(["kind", "run", "seconds"], rows))
    else:
        s.blocks.append("No finished runs.")
    return s


def configuration_section(data: StudyData) -> Section:
    s = Section("Configuration")
    s.blocks.append(("pre", data.config_text or "(config.yaml missing)"))
    return s


def versions_section() -> Section:
    s = Section("Versions and hardware")
    s.blocks.append(Table(["item", "value"], versions_and_hardware()))
    s.blocks.append(f"Report written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    return s


def _order_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


# --------------------------------------------------------------------------- rendering
def render_markdown(sections: list[Section], files_dir: str) -> str:
    out = ["# awcl study report", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(b.header) + " |")
                out.append("|" + "|".join("---" for _ in b.header) + "|")
                for i, row in enumerate(b.rows):
                    cells = [f"**{c}**" if (i, j) in b.bold else c for j, c in enumerate(row)]
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.caption}]({files_dir}/{b.name})", "", f"*{b.caption}*", ""]
            elif isinstance(b, tuple) and b[0] == "pre":
                out += ["```yaml", b[1].rstrip(), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-style:italic;color:#555}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:0.85em}
"""


def render_html(sections: list[Section]) -> str:
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>awcl study report</title>",
        f"<style>{_CSS}</style></head><body><h1>awcl study report</h1>",
    ]
    for s in sections:
        out.append(f"<section><h2>{html.escape(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, str):
                text = html.escape(b)
                # the only markdown used in paragraphs: **bold** and `code`
                parts = text.split("**")
                text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
                parts = text.split("`")
                text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
                out.append(f"<p>{text}</p>")
            elif isinstance(b, Table):
                cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
                out.append(f"<table>{cap}<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.header) + "</tr>")
                for i, row in enumerate(b.rows):
                    cells = [
                        f"<td><b>{html.escape(c)}</b></td>" if (i, j) in b.bold else f"<td>{html.escape(c)}</td>"
                        for j, c in enumerate(row)
                    ]
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</table>")
            elif isinstance(b, Image):
                enc = base64.b64encode(b.png).decode()
                out.append(
                    f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{enc}'>"
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
            elif isinstance(b, tuple) and b[0] == "pre":
                out.append(f"<pre>{html.escape(b[1])}</pre>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)



@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    csv: Path


def write_report(out: str | os.PathLike) -> ReportFiles:
    """Write ``results.csv``, ``report.md`` (+ ``report_files/``) and ``report.html`` in ``out``."""
    data = load_study(out)
    df = results_table(data)
    sections = build_sections(data, df)
    out = Path(out)
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    # the console summary: the transfer tables as rendered here, and it ends with the answer
    keep = [s for s in sections if s.title in PROTOCOL_TITLES.values()]
    answer = next((s for s in sections if s.title == ANSWER_TITLE), None)
    if answer is not None:
        keep.append(Section(answer.title, [b for b in answer.blocks if isinstance(b, str)]))
    write_atomic(files / SUMMARY_FILE, render_markdown(keep, files.name).split("\n", 2)[2])
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Image):
                write_atomic(files / b.name, b.png)
                if b.name == FOREST_FILE:  # the one picture of the answer, also beside report.html
                    write_atomic(out / b.name, b.png)
    write_atomic(out / "results.csv", df.to_csv(index=False))
    write_atomic(out / "report.md", render_markdown(sections, files.name))
    write_atomic(out / "report.html", render_html(sections))
    return ReportFiles(out / "report.html", out / "report.md", out / "results.csv")


SUMMARY_FILE = "summary.md"


def summary_text(out: str | os.PathLike) -> str:
    """The transfer tables as plain Markdown (for the console / notes): the summary that
    :func:`write_report` wrote (with intervals and verdicts), else plain mean ± std tables."""
    cached = Path(out) / "report_files" / SUMMARY_FILE
    if cached.is_file():
        return cached.read_text(encoding="utf-8").strip()
    data = load_study(out)
    df = results_table(data)
    tasks = list(dict.fromkeys(df[df.kind == "finetune"].task.dropna()))
    parts = []
    for proto in PROTOCOLS:
        t = transfer_table(df, proto, tasks)
        if t is not None:
            body = render_markdown([Section("", [t])], "report_files").split("\n")[4:]
            parts.append(f"{proto} fine-tuning (mean ± std over folds; best in bold)\n" + "\n".join(body))
    return "\n".join(parts) if parts else "(no finished downstream runs)"
