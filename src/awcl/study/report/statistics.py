"""The report's intervals: the group-level bootstrap of :mod:`awcl.evaluate.summary`, with how
the study pools runs (folds, seeds) before calling it: a metric on pooled predictions with its
95% interval (:func:`pooled_summary`), the paired difference of two methods on the same test
frames (:func:`paired_difference`), a table's cells (:func:`table_intervals`) and the
label-efficiency points (:func:`efficiency_points`), each over the runs a
:class:`~awcl.study.report.results.Results` selector names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from awcl.errors import AwclError
from awcl.evaluate.tasks import TASKS, headline_metric
from awcl.study.report.document import is_none
from awcl.study.report.load import table_metrics
from awcl.study.report.results import GROUP_BY, UNIT, Results

N_BOOT = 1000
Interval = tuple[float, float, float]  # (value, lo, hi)


def unit_column(preds: pd.DataFrame) -> str:
    """The column to bootstrap over: each run's own group (:data:`UNIT`, set by
    :func:`load_predictions`), ``patient_id`` in a table without it."""
    return UNIT if UNIT in preds.columns else "patient_id"


def unit_title(preds: pd.DataFrame) -> str:
    """"test patients", or "test <group>s" for runs grouped by another column."""
    names = set(preds[GROUP_BY].dropna()) if GROUP_BY in preds.columns else set()
    return "test patients" if names <= {"patient_id"} else f"test groups ({', '.join(sorted(names))})"


def pooled_summary(preds: pd.DataFrame, kind: str, auroc: bool = True) -> dict[str, Interval]:
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
            s = classification_summary(p, classes, unit_column(p), N_BOOT, seed=0)
        else:
            s = segmentation_summary(p, unit_column(p), N_BOOT, seed=0)
    except AwclError:  # e.g. stand-in or old predictions without the needed columns
        return {}
    out = {}
    for k, v in s["pooled"].items():
        ci = s["intervals"].get(k)
        if v is not None and ci:
            out[k] = (float(v), float(ci[0]), float(ci[1]))
    return out


def cell_interval(preds: pd.DataFrame, metric: str, kind: str) -> Interval | None:
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
    over the runs' test groups (:func:`unit_column`, patients by default; folds and seeds
    pooled): (diff, lo, hi, frames); None when the two methods share no test frame or the
    metric cannot be computed from their predictions."""
    from awcl.evaluate.summary import paired_bootstrap_diff

    pa, pb = aligned(preds, a, b)
    if pa.empty:
        return None
    if kind == "classify":  # the same class columns in both (drop those of other tasks)
        for p in (pa, pb):
            p.drop(columns=[c for c in p.columns if c.startswith("prob_") and p[c].isna().any()], inplace=True)
    unit = unit_column(pa)
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


def table_intervals(results: Results, protocol: str) -> dict[tuple[str, str, str], Interval]:
    """(method, task, metric) -> (pooled value, lo, hi) for the cells of one protocol's table."""
    out: dict[tuple[str, str, str], Interval] = {}
    if results.predictions.empty:
        return out
    sub = results.main(protocol)
    p_main = results.main_predictions(protocol)
    for task in [t for t in results.tasks if t in set(sub.task)]:
        kind = str(sub[sub.task == task].task_kind.iloc[0])
        for m in set(sub[sub.task == task].method):
            p = p_main[(p_main.task == task) & (p_main.method == m)]
            for met, ci in pooled_summary(p.dropna(axis=1, how="all"), kind).items():
                out[(m, task, met)] = ci
    return out


EFFICIENCY_COLUMNS = ["task", "protocol", "method", "n", "metric", "mean", "std", "lo", "hi"]


def efficiency_points(results: Results) -> pd.DataFrame:
    """Label-efficiency points: per (task, protocol, method, n) the headline metric with its
    interval; n = labelled training patients per fold (None = all)."""
    rows = []
    fin = results.label_efficiency()
    if fin.empty or fin.train_patients.notna().sum() == 0:
        return pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    for (task, protocol), g in fin.groupby(["task", "protocol"], sort=False):
        if g.train_patients.notna().sum() == 0:
            continue
        kind = str(g.task_kind.iloc[0])
        head = headline_metric(kind) if kind in TASKS else None
        metric = head if head in set(g.metric) else table_metrics(g, task)[0]
        for method, gm in g.groupby("method", sort=False):
            for n, gn in gm.groupby(gm.train_patients.map(lambda v: -1 if is_none(v) else int(v)), sort=True):
                vals = gn[gn.metric == metric].value
                lo = hi = np.nan
                value = float(vals.mean())
                if not results.predictions.empty:
                    p = results.efficiency_predictions(task, protocol, method, None if n < 0 else n)
                    ci = cell_interval(p.dropna(axis=1, how="all"), metric, kind)
                    if ci is not None:
                        value, lo, hi = ci
                rows.append({"task": task, "protocol": protocol, "method": method, "n": None if n < 0 else n,
                             "metric": metric, "mean": value, "std": float(vals.std(ddof=0)),
                             "lo": lo, "hi": hi})  # fmt: skip
    return pd.DataFrame(rows)
