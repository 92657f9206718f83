"""Runs the report warns about: classifiers collapsed onto one class (:func:`degenerate_runs`),
runs at their trivial baseline (:func:`not_learned_runs`), methods a table cannot tell apart
(:func:`identical_methods`, :func:`identical_predictions`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from awcl.errors import AwclError
from awcl.evaluate.sanity import confusion_check, segmentation_check
from awcl.evaluate.scores import confusion
from awcl.evaluate.summary import pooled_pixel_confusion
from awcl.study.report.document import Table
from awcl.study.report.results import Results

DEGENERATE_SHARE = 0.9  # one predicted class for at least this share of test frames ...
DEGENERATE_MARGIN = 0.1  # ... and at least this much above that class's true share


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
            cm = confusion(p["true"].astype(str).map(idx).to_numpy(),
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


def degenerate_notes(flags: list[dict[str, Any]], runs: Collection[str]) -> dict[str, str]:
    """method -> warning text for the flagged runs among ``runs`` (a table's: the ``run``
    names of :meth:`~awcl.study.report.results.Results.main_runs`)."""
    notes: dict[str, list[str]] = {}
    for f in flags:
        if f["run"] not in runs:
            continue
        if f.get("kind") == "not_learned":
            text = f"⚠ did not learn ({f['task']}): {f['reason']}"
        else:
            text = (f"⚠ degenerate ({f['task']}): predicts '{f['class']}' for {f['share']:.0%} of test "
                    f"frames (true share {f['true_share']:.0%})")
        notes.setdefault(f["method"], []).append(text)
    return {m: "; ".join(v) for m, v in notes.items()}


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


def identical_predictions(results: Results, task: str, protocol: str) -> list[list[str]]:
    """Groups of methods with the very same prediction for every test frame (main runs)."""
    sub = results.main_predictions(protocol, task)
    if sub.empty or "pred" not in sub.columns:
        return []
    sub = sub[(sub.task_kind == "classify") & sub["pred"].notna()]
    if sub.empty:
        return []
    keyed = {}
    for m, g in sub.groupby("method", sort=False):
        g = g.sort_values(["ft_seed", "seed", "fold", "frame_id"])
        keyed.setdefault(tuple(g["pred"].astype(str)), []).append(str(m))
    return [ms for ms in keyed.values() if len(ms) > 1]
