"""Headline numbers of a downstream run from its predictions table, with patient-level
bootstrap 95% intervals, video-level votes, and paired comparisons of two runs.

Everything here reads the ``predictions.csv`` a run writes (one row per test frame, all folds
pooled): classification ``fold, frame_id, video_id, patient_id, true, pred, prob_<class>...``;
segmentation ``fold, frame_id, ..., cm_<t>_<p>`` (the frame's pixel confusion counts),
``hd95_<unit>``, ``msd_<unit>`` and, on HC18, ``hc_pred_mm``/``hc_table_mm``.

Bootstrap: the unit is the group the run was split by (patient by default), so frames of
one patient stay together. A resample draws G groups with replacement (G = the number of
groups); instead of copying rows, every metric is computed with each group weighted by how
often it was drawn: confusion matrices are weighted sums of per-group matrices, frame means
weighted means, and AUROC a weighted Mann-Whitney statistic over the sorted scores. All
resamples are evaluated at once with numpy (a few seconds for 1000 resamples of thousands of
frames). Intervals are the 2.5th and 97.5th percentiles. The formulas are those of
:mod:`awcl.evaluate.scores`, batched over the resamples' matrices.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from awcl.errors import AwclError
from awcl.evaluate.metrics import sensitivity_specificity
from awcl.evaluate.records import (  # noqa: F401  (re-exported: they were defined here)
    class_fold_record,
    class_predictions,
    fold_rows,
    frame_means,
    segmentation_frame_columns,
)
from awcl.evaluate.scores import auroc, classification_scores, confusion, segmentation_scores
from awcl.evaluate.tasks import CLASSIFY

CLASS_METRICS = CLASSIFY.metrics
SEG_CM_METRICS = ("gaa", "ma", "miou", "fg_iou", "dice")  # the pooled dict's order
_CHUNK = 200  # resamples evaluated together (bounds memory to ~_CHUNK x frames floats)


# ----------------------------------------------------------------------------- weights
def _group_index(df: pd.DataFrame, group_col: str) -> tuple[np.ndarray, int]:
    """[N] group index per row, and the number of groups."""
    if group_col not in df.columns:
        raise AwclError(f"predictions table has no grouping column {group_col!r}")
    codes, uniques = pd.factorize(df[group_col].astype(str), sort=True)
    return codes.astype(np.int64), len(uniques)


def bootstrap_weights(n_groups: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of ``[b, G]`` draw counts: resample i drew group g ``W[i, g]`` times (sum G)."""
    rng = np.random.default_rng(seed)
    p = np.full(n_groups, 1.0 / n_groups)
    for s in range(0, n, _CHUNK):
        yield rng.multinomial(n_groups, p, size=min(_CHUNK, n - s)).astype(np.float64)


def _per_group_sum(values: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    """values: [N, ...] -> [G, ...] sums per group."""
    out = np.zeros((n_groups, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, gidx, values)
    return out


def paired_accuracy_change(right_before: np.ndarray, right_after: np.ndarray, queries: np.ndarray,
                           n: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """Accuracy after minus before on the same queries, with a 95% bootstrap interval over
    their groups (patients): each resample weights both sides by the same draw.

    right_before, right_after, queries: [G] per group, its queries right before / after and
    its number of queries. Returns (difference, lo, hi, G); NaN bounds with fewer than two
    groups.
    """
    rb, ra, q = (np.asarray(v, dtype=np.float64) for v in (right_before, right_after, queries))
    if not (rb.shape == ra.shape == q.shape) or rb.ndim != 1 or not len(q) or q.sum() <= 0 \
            or (rb > q).any() or (ra > q).any() or (np.minimum(rb, ra) < 0).any():
        raise AwclError("paired_accuracy_change: per-group counts do not fit together")
    diff = float((ra.sum() - rb.sum()) / q.sum())
    if len(q) < 2:
        return diff, float("nan"), float("nan"), len(q)
    draws = np.concatenate([(w @ (ra - rb)) / (w @ q) for w in bootstrap_weights(len(q), n, seed)])
    lo, hi = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return diff, float(lo), float(hi), len(q)



def monitor_change(hits: dict[str, Any] | None) -> tuple[float, float, float, int] | None:
    """A pretraining run's kNN-monitor change, final - step 0, with its paired interval over the
    held-out patients, from summary.json's ``knn_hits`` ({queries, init, final}: per patient).
    None when the run kept no votes or the record does not fit together (no interval rather
    than a wrong one)."""
    if not hits or not all(k in hits for k in ("queries", "init", "final")):
        return None
    try:
        return paired_accuracy_change(np.asarray(hits["init"]), np.asarray(hits["final"]),
                                      np.asarray(hits["queries"]))
    except (AwclError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ classification engine
def _parse_classification(df: pd.DataFrame, classes: list[str]):
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        y = df["true"].astype(str).map(lookup).to_numpy()
        pred = df["pred"].astype(str).map(lookup).to_numpy()
    except KeyError as err:
        raise AwclError(f"predictions table has no column {err}") from None
    if pd.isna(y).any() or pd.isna(pred).any():
        raise AwclError(f"predictions table holds classes outside {classes}")
    cols = [f"prob_{c}" for c in classes]
    prob = df[cols].to_numpy(np.float64) if all(c in df.columns for c in cols) else None
    return y.astype(np.int64), pred.astype(np.int64), prob


def _classification_engine(df: pd.DataFrame, classes: list[str], group_col: str):
    """-> (G, f(W: [b, G]) -> {metric: [b]}) for one predictions table."""
    y, pred, prob = _parse_classification(df, classes)
    gidx, g = _group_index(df, group_col)
    cm_g = confusion(y, pred, len(classes), groups=gidx, n_groups=g).astype(np.float64)  # [G, K, K]

    def evaluate(w: np.ndarray) -> dict[str, np.ndarray]:
        out = classification_scores(np.einsum("bg,gkl->bkl", w, cm_g))
        if prob is not None:
            out["auroc"] = auroc(prob, y, w[:, gidx])
        return out

    return g, evaluate


# -------------------------------------------------------------------- segmentation engine
def _cm_columns(df: pd.DataFrame) -> tuple[list[str], int]:
    cols = [c for c in df.columns if c.startswith("cm_")]
    c = math.isqrt(len(cols))
    if not cols or c * c != len(cols):
        raise AwclError("predictions table has no per-frame pixel confusion columns cm_<t>_<p>")
    return [f"cm_{t}_{p}" for t in range(c) for p in range(c)], c


def pooled_pixel_confusion(df: pd.DataFrame) -> np.ndarray:
    """``[C, C]`` pixel counts (rows true) summed over the frames of a predictions table."""
    cols, c = _cm_columns(df)
    return df[cols].to_numpy(np.float64).sum(0).reshape(c, c)


def _seg_frame_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-frame values averaged into headline numbers (NaN = undefined for that frame)."""
    out = {}
    for col in df.columns:
        if col.startswith(("hd95_", "msd_")):
            out[col] = df[col].to_numpy(np.float64)
    if "dice" in df.columns:  # per-image foreground Dice: its mean is the HC18 convention
        out["dice_per_image"] = df["dice"].to_numpy(np.float64)
    if "hc_pred_mm" in df.columns and "hc_table_mm" in df.columns:
        out["hc_mae_mm"] = (df["hc_pred_mm"] - df["hc_table_mm"]).abs().to_numpy(np.float64)
    if "hc_pred_mm" in df.columns:
        # frames where no ellipse fits the prediction (left out of hc_mae_mm, so counted): needs
        # only the predicted HC, as the per-fold value (awcl.evaluate.segment) does
        out["hc_fail_rate"] = df["hc_pred_mm"].isna().to_numpy(np.float64)
    return out


def _segmentation_engine(df: pd.DataFrame, group_col: str):
    cols, c = _cm_columns(df)
    gidx, g = _group_index(df, group_col)
    cm_g = _per_group_sum(df[cols].to_numpy(np.float64).reshape(-1, c, c), gidx, g)
    frame = _seg_frame_columns(df)
    sums = {k: _per_group_sum(np.nan_to_num(v), gidx, g) for k, v in frame.items()}
    counts = {k: _per_group_sum((~np.isnan(v)).astype(np.float64), gidx, g) for k, v in frame.items()}

    def evaluate(w: np.ndarray) -> dict[str, np.ndarray]:
        s = segmentation_scores(np.einsum("bg,gkl->bkl", w, cm_g))
        out = {k: s[k] for k in SEG_CM_METRICS} | {k: v for k, v in s.items() if k not in SEG_CM_METRICS}
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in frame:
                n = w @ counts[k]
                out[k] = np.where(n > 0, (w @ sums[k]) / n, np.nan)
        return out

    return g, evaluate


# ----------------------------------------------------------------------------- drivers
def _clean(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _point_and_intervals(g: int, evaluate, n_boot: int, seed: int) -> tuple[dict, dict]:
    point = {k: _clean(v[0]) for k, v in evaluate(np.ones((1, g))).items()}
    if n_boot <= 0:
        return point, {}
    draws: dict[str, list[np.ndarray]] = {}
    for w in bootstrap_weights(g, n_boot, seed):
        for k, v in evaluate(w).items():
            draws.setdefault(k, []).append(v)
    intervals = {}
    for k, parts in draws.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        intervals[k] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None
    return point, intervals


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Resamples without a class or a defined frame give NaN; numpy need not warn about it."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        yield


def video_table(df: pd.DataFrame, classes: list[str], vote: str) -> pd.DataFrame:
    """One row per (fold, video): ``vote`` 'majority' (prob_ = share of frames voting for each
    class; ties go to the highest mean probability) or 'mean_prob' (prob_ = mean frame
    probability). ``true`` is the video's most frequent frame label."""
    if vote not in ("majority", "mean_prob"):
        raise AwclError(f"vote must be 'majority' or 'mean_prob', not {vote!r}")
    y, pred, prob = _parse_classification(df, classes)
    k = len(classes)
    keys = df["fold"].astype(str) + "\x00" + df["video_id"].astype(str)
    vidx, _ = pd.factorize(keys)
    nv = int(vidx.max()) + 1
    n = np.bincount(vidx, minlength=nv).astype(np.float64)
    votes = _per_group_sum(np.eye(k)[pred], vidx, nv) / n[:, None]
    true_votes = _per_group_sum(np.eye(k)[y], vidx, nv)
    mean_prob = _per_group_sum(prob, vidx, nv) / n[:, None] if prob is not None else votes
    if vote == "majority":
        score = votes
        top = votes == votes.max(1, keepdims=True)
        vpred = np.where(top, mean_prob, -np.inf).argmax(1)
    else:
        score = mean_prob
        vpred = mean_prob.argmax(1)
    first = pd.DataFrame({"v": vidx}).drop_duplicates("v").sort_values("v").index.to_numpy()
    out = df.iloc[first].drop(columns=[c for c in df.columns if c.startswith("prob_")])
    out = out.drop(columns=["frame_id"], errors="ignore").reset_index(drop=True)
    out["true"] = [classes[i] for i in true_votes.argmax(1)]
    out["pred"] = [classes[i] for i in vpred]
    out["frames"] = n.astype(int)
    for i, c in enumerate(classes):
        out[f"prob_{c}"] = score[:, i]
    return out


def classification_summary(
    df: pd.DataFrame, classes: list[str], group_col: str = "patient_id", n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """``{"pooled", "intervals", "per_class", "video_level"?}`` of a classification run.

    pooled: every metric of CLASS_METRICS on all test frames of all folds together;
    intervals: patient-level (``group_col``) bootstrap 95% intervals of those;
    per_class: one-vs-rest sensitivity/specificity on the pooled frames;
    video_level (when some video has more than one frame): the same for each vote.
    """
    with _quiet():
        g, evaluate = _classification_engine(df, classes, group_col)
        pooled, intervals = _point_and_intervals(g, evaluate, n_boot, seed)
        y, pred, _ = _parse_classification(df, classes)
        out = {"pooled": pooled, "intervals": intervals,
               "per_class": sensitivity_specificity(confusion(y, pred, len(classes)), classes)}
        if "video_id" in df.columns and df.groupby(["fold", "video_id"]).size().max() > 1:
            out["video_level"] = {}
            for vote in ("majority", "mean_prob"):
                vt = video_table(df, classes, vote)
                gv, ev = _classification_engine(vt, classes, group_col)
                p, i = _point_and_intervals(gv, ev, n_boot, seed)
                out["video_level"][vote] = {**p, "n_videos": len(vt), "intervals": i}
    return out


def segmentation_summary(
    df: pd.DataFrame, group_col: str = "patient_id", n_boot: int = 1000, seed: int = 0
) -> dict:
    """``{"pooled", "intervals"}``: GAA/MA/mIoU/Dice of the pooled pixel confusion, frame
    means of HD95 / mean surface distance / HC error, and their patient-level bootstrap
    95% intervals."""
    with _quiet():
        g, evaluate = _segmentation_engine(df, group_col)
        pooled, intervals = _point_and_intervals(g, evaluate, n_boot, seed)
    return {"pooled": pooled, "intervals": intervals}


def fold_classification_metrics(df: pd.DataFrame, classes: list[str]) -> dict[int, dict]:
    """Per fold: the CLASS_METRICS of its test frames (the per-fold keys of metrics.json)."""
    out = {}
    for fold, part in df.groupby("fold"):
        g, evaluate = _classification_engine(part.assign(_all=0), classes, "_all")
        with _quiet():
            out[int(fold)] = {k: _clean(v[0]) for k, v in evaluate(np.ones((1, g))).items()}
    return out


# -------------------------------------------------------------------------- comparisons
def _task_of(df: pd.DataFrame) -> str:
    if {"true", "pred"} <= set(df.columns):
        return "classify"
    if any(c.startswith("cm_") for c in df.columns):
        return "segment"
    raise AwclError("not a predictions table (neither true/pred nor cm_<t>_<p> columns)")


def _classes_of(df: pd.DataFrame) -> list[str]:
    cols = [c[5:] for c in df.columns if c.startswith("prob_")]
    if cols:
        return cols
    return sorted(set(df["true"].astype(str)) | set(df["pred"].astype(str)))


def paired_bootstrap_diff(
    a_pred_df: pd.DataFrame, b_pred_df: pd.DataFrame, metric: str, group_col: str = "patient_id",
    n: int = 1000, seed: int = 0,
) -> tuple[float, float, float]:
    """Difference ``metric(a) - metric(b)`` of two runs evaluated on the same test frames,
    with a paired patient-level bootstrap 95% interval: each resample draws patients once
    and weights both runs' frames by it, so what the two runs share cancels.

    ``metric``: a classification metric (CLASS_METRICS) or a segmentation one (gaa, ma,
    miou, dice, hd95_mm, msd_mm, hc_mae_mm, ...). Returns (diff, lo, hi); NaN where undefined.
    """
    task = _task_of(a_pred_df)
    if _task_of(b_pred_df) != task:
        raise AwclError("paired_bootstrap_diff: the two tables are of different tasks")
    for name, d in (("a", a_pred_df), ("b", b_pred_df)):
        missing = {"frame_id", group_col} - set(d.columns)
        if missing:
            raise AwclError(f"paired_bootstrap_diff: table {name} has no column(s) {sorted(missing)}")
        if d["frame_id"].duplicated().any():
            raise AwclError(f"paired_bootstrap_diff: table {name} lists a frame twice")
    fa, fb = set(a_pred_df["frame_id"].astype(str)), set(b_pred_df["frame_id"].astype(str))
    if fa != fb:
        raise AwclError(
            f"paired_bootstrap_diff: the runs were tested on different frames "
            f"({len(fa - fb)} only in a, {len(fb - fa)} only in b)"
        )
    a = a_pred_df.assign(_key=a_pred_df["frame_id"].astype(str)).sort_values("_key")
    b = b_pred_df.assign(_key=b_pred_df["frame_id"].astype(str)).sort_values("_key")
    a = a.reset_index(drop=True)
    b = b.reset_index(drop=True)
    # both runs see the same patients under one index
    b[group_col] = a[group_col].to_numpy()
    if task == "classify":
        classes = _classes_of(a)
        if _classes_of(b) != classes:
            raise AwclError("paired_bootstrap_diff: the runs have different classes")
        g, ea = _classification_engine(a, classes, group_col)
        _, eb = _classification_engine(b, classes, group_col)
    else:
        g, ea = _segmentation_engine(a, group_col)
        _, eb = _segmentation_engine(b, group_col)
    with _quiet():
        ones = np.ones((1, g))
        va, vb = ea(ones), eb(ones)
        if metric not in va or metric not in vb:
            raise AwclError(f"paired_bootstrap_diff: unknown metric {metric!r} (have {sorted(va)})")
        diff = float(va[metric][0] - vb[metric][0])
        parts = [ea(w)[metric] - eb(w)[metric] for w in bootstrap_weights(g, n, seed)]
    d = np.concatenate(parts) if parts else np.array([])
    d = d[np.isfinite(d)]
    if not len(d):
        return diff, float("nan"), float("nan")
    return diff, float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))
