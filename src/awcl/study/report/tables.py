"""The report's tables, plain :class:`~awcl.study.report.document.Table` values: the transfer
table of one protocol (methods x task metrics), the pairwise differences, label efficiency,
coarse vs fine labels and the kNN monitor.

A table is built row by row from cells (text, the number behind it); :func:`best_in_bold`
marks each column's best and :func:`add_column` appends a column (notes, markers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from awcl.evaluate.tasks import PROTOCOLS, TASKS, headline_metric
from awcl.methods import METHODS
from awcl.study.answer import Comparison
from awcl.study.report.document import (
    Table,
    display,
    fmt,
    is_none,
    lower_is_better,
    methods_in_order,
)
from awcl.study.report.load import table_metrics
from awcl.study.report.results import Results
from awcl.study.report.statistics import Interval, paired_difference, unit_column, unit_title

MISSING = "—"  # a cell without a value


def best_in_bold(values: list[list[float]], metrics: list[str], first_col: int = 1) -> set[tuple[int, int]]:
    """(row, column) of each column's best value (ties included); ``values[i][j]`` is the
    number behind row i's cell of ``metrics[j]``, in table column ``j + first_col``."""
    bold: set[tuple[int, int]] = set()
    arr = np.array(values, dtype=float)
    for j, met in enumerate(metrics):
        col = arr[:, j]
        if np.all(np.isnan(col)):
            continue
        best = np.nanmin(col) if lower_is_better(met) else np.nanmax(col)
        for i in np.where(np.isclose(col, best))[0]:
            bold.add((int(i), j + first_col))
    return bold


def add_column(table: Table, title: str, cells: list[str]) -> Table:
    """Append a column (one cell per row, in row order) to ``table``."""
    table.header.append(title)
    for row, cell in zip(table.rows, cells):
        row.append(cell)
    return table


def _transfer_cell(stats: pd.DataFrame, key: tuple[str, str, str], ci: Interval | None) -> tuple[str, float]:
    """One cell of a transfer table: the pooled value with its interval where there is one,
    else mean ± std over folds (and seeds); with the number that decides the bold."""
    if key not in stats.index:
        return MISSING, np.nan
    s = stats.loc[key]
    if ci is not None and all(np.isfinite(v) for v in ci):
        return f"{ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}]", float(ci[0])
    std = float(np.nan_to_num(s["std"])) if s["count"] > 1 else 0.0
    return fmt(float(s["mean"]), std), float(s["mean"])


def transfer_table(
    results: Results,
    protocol: str,
    intervals: dict[tuple[str, str, str], Interval] | None = None,
    notes: dict[str, str] | None = None,
) -> Table | None:
    """Methods x (task, metric) of the main runs (whole training part). Where the predictions
    allow it (``intervals``), a cell is the metric on all test frames of all folds and seeds
    pooled with its 95% patient-bootstrap interval (``value [lo, hi]``); otherwise the mean ±
    std of the per-fold values (folds and seeds). Best per column in bold.
    ``notes`` (method -> text) adds a last column, e.g. a degenerate-classifier warning."""
    sub = results.main(protocol)
    if sub.empty:
        return None
    tasks = [t for t in results.tasks if t in set(sub.task)]
    cols = [(t, m) for t in tasks for m in table_metrics(sub, t)]
    methods = methods_in_order(list(dict.fromkeys(sub.method)))
    stats = sub.groupby(["method", "task", "metric"]).value.agg(["mean", "std", "count"])
    rows, values = [], []
    for m in methods:
        cells = [_transfer_cell(stats, (m, t, met), (intervals or {}).get((m, t, met))) for t, met in cols]
        rows.append([m] + [text for text, _ in cells])
        values.append([v for _, v in cells])
    header = ["method"] + [f"{t}: {display(m)}" for t, m in cols]
    table = Table(header, rows, best_in_bold(values, [met for _, met in cols]))
    if notes and any(notes.get(m) for m in methods):
        add_column(table, "notes", [notes.get(m, "") for m in methods])
    return table


def coarse_fine_table(results: Results) -> Table | None:
    sub = results.main("full")
    pairs = [(f"{b}-coarse", f"{b}-fine") for b, cls in METHODS.items() if cls.granular]
    pairs = [p for p in pairs if p[0] in set(sub.method) and p[1] in set(sub.method)]
    if not pairs:
        return None
    header = ["method", "task: metric", "coarse", "fine", "fine − coarse"]
    rows: list[list[str]] = []
    bold: set[tuple[int, int]] = set()
    for c, f in pairs:
        for t in [t for t in results.tasks if t in set(sub.task)]:
            for met in table_metrics(sub, t):
                vc = sub[(sub.method == c) & (sub.task == t) & (sub.metric == met)].value
                vf = sub[(sub.method == f) & (sub.task == t) & (sub.metric == met)].value
                if vc.empty or vf.empty:
                    continue
                rows.append([c.split("-")[0], f"{t}: {display(met)}", fmt(vc.mean(), float(np.nan_to_num(vc.std()))),
                             fmt(vf.mean(), float(np.nan_to_num(vf.std()))), f"{vf.mean() - vc.mean():+.3f}"])  # fmt: skip
                better_fine = (vf.mean() < vc.mean()) if lower_is_better(met) else (vf.mean() > vc.mean())
                bold.add((len(rows) - 1, 3 if better_fine else 2))
    return Table(header, rows, bold) if rows else None


def efficiency_table(points: pd.DataFrame) -> Table:
    """Rows: (task, protocol, method); columns: n labelled patients; cells mean [lo, hi]."""
    ns = sorted({int(n) for n in points.n.dropna()})
    cols = [*ns, None]
    rows = []
    for (task, protocol), pp in points.groupby(["task", "protocol"], sort=False):
        for m in methods_in_order(list(dict.fromkeys(pp.method))):
            row = [f"{task} ({protocol})", m]
            for n in cols:
                pt = pp[(pp.method == m) & pp.n.map(lambda v, n=n: (None if is_none(v) else int(v)) == n)]
                if pt.empty:
                    row.append(MISSING)
                    continue
                r = pt.iloc[0]
                row.append(f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" if pd.notna(r["lo"])
                           else fmt(r["mean"], r["std"]))  # fmt: skip
            rows.append(row)
    metric = display(points.metric.iloc[0])
    return Table(["task", "method"] + [f"{metric}, n={n}" if n is not None else f"{metric}, all" for n in cols], rows)


def knn_table(knn: pd.DataFrame) -> Table | None:
    """Per method: kNN accuracy before training, at the end, and the change (mean over runs)."""
    if knn.empty:
        return None
    rows = []
    for m in methods_in_order(list(dict.fromkeys(knn.method))):
        starts, ends, steps = [], [], []
        for _, g in knn[knn.method == m].groupby("run", sort=False):
            g = g.sort_values("epoch")
            ends.append(float(g["knn_acc"].iloc[-1]))
            steps.append(g["step"].iloc[-1])
            if int(g["epoch"].iloc[0]) == 0:
                starts.append(float(g["knn_acc"].iloc[0]))
        s0 = f"{np.mean(starts):.3f}" if starts else MISSING
        change = f"{np.mean(ends) - np.mean(starts):+.3f}" if starts else MISSING
        rows.append([m, s0, f"{np.mean(ends):.3f}", change, str(steps[-1]) if steps else MISSING, str(len(ends))])
    return Table(["method", "kNN before training", "kNN at the end", "change", "steps", "runs"], rows)


def pairwise_tables(results: Results,
                    found: list[Comparison] | None = None) -> tuple[list[Table], list[str], int]:
    """Per task and protocol (main runs, whole training part): every pair of methods, the
    difference of the headline metric with its 95% paired-bootstrap interval.

    Returns (tables, sentences naming the significant differences, number of comparisons);
    ``found`` (when given) receives every row as a :class:`awcl.study.answer.Comparison`."""
    tables, significant, n_tests = [], [], 0
    if results.predictions.empty:
        return tables, significant, n_tests
    for task in results.tasks:
        for protocol in PROTOCOLS:
            sub = results.main_predictions(protocol, task)
            if sub.empty:
                continue
            sub = sub.dropna(axis=1, how="all")  # columns of other tasks' predictions
            kind = str(sub.task_kind.iloc[0])
            if kind not in TASKS:
                continue
            metric = headline_metric(kind)
            methods = methods_in_order(list(dict.fromkeys(sub.method)))
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
                                 str(sub[sub.method == b][unit_column(sub)].nunique()), str(frames)])  # fmt: skip
                    if found is not None:
                        found.append(Comparison(task, protocol, metric, display(metric),
                                                lower_is_better(metric), b, a, d, lo, hi))  # fmt: skip
                    if sig:
                        bold.add((len(rows) - 1, 3))
                        significant.append(
                            f"{task} ({protocol}): {b if better else a} over {a if better else b}, "
                            f"{display(metric)} {b} − {a} = {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                        )
            if rows:
                t = Table(["difference", f"{display(metric)}", "95% CI", "significant",
                           unit_title(sub), "paired frames"], rows, bold)  # fmt: skip
                t.caption = f"{task}, {protocol}"
                tables.append(t)
    return tables, significant, n_tests
