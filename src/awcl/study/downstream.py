"""An encoder's downstream results in its study, for ``awcl export``'s model card: read from the
study's :class:`~awcl.study.report.results.Results` and computed as the report computes a
table cell (one formula, one bootstrap), over this encoder's own runs only: the report's cell
pools every pretraining seed of the method, the card the one seed it describes.

``awcl.train`` sits below the study and cannot read it; the study hands
:func:`encoder_results` to the export (``awcl export``: the study's command registration sets
it as the export command's ``downstream``; in Python: ``export_run(cfg, encoder_results)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from awcl.study.report.document import is_none
from awcl.study.report.load import load_results, load_study
from awcl.study.report.statistics import pooled_summary, unit_title


def _runs_of(study: Path, encoder_dir: str) -> tuple[Any, set[str]]:
    """The study's Results and the downstream runs fine-tuned from the pretraining run in
    ``runs/<encoder_dir>`` (its ``init`` dependency)."""
    data = load_study(study)
    runs = {p.dir for p in data.planned if p.kind == "finetune" and p.deps.get("init") == encoder_dir}
    return load_results(data), runs


def encoder_results(study: Path, encoder_dir: str) -> list[dict[str, Any]]:
    """One row per (task, protocol, labelled patients, metric) of the encoder's finished
    downstream runs: ``value`` with its 95% interval (``lo``, ``hi``) on the pooled test
    predictions of all folds, bootstrapped over the runs' own group (``unit``), as the
    report's cells; without predictions, the mean and ``std`` over folds and no interval."""
    results, runs = _runs_of(Path(study), encoder_dir)
    table = results.downstream()
    table = table[table.run.isin(runs)]
    preds = results.predictions
    preds = preds[preds.run.isin(runs)] if not preds.empty else preds
    rows: list[dict[str, Any]] = []
    for (task, protocol, n), g in table.groupby(
        ["task", "protocol", table.train_patients.map(lambda v: -1 if is_none(v) else int(v))], sort=False
    ):
        p = preds[(preds.task == task) & (preds.protocol == protocol)] if not preds.empty else preds
        if not p.empty:
            p = p[p.train_patients.map(lambda v, n=n: (-1 if is_none(v) else int(v)) == n)]
        pooled = pooled_summary(p.dropna(axis=1, how="all"), str(g.task_kind.iloc[0])) if not p.empty else {}
        for metric, vals in g.groupby("metric", sort=False).value:
            ci = pooled.get(metric)
            rows.append({"task": task, "protocol": protocol, "train_patients": None if n < 0 else int(n),
                         "metric": metric, "value": ci[0] if ci else float(np.mean(vals)),
                         "lo": ci[1] if ci else None, "hi": ci[2] if ci else None,
                         "std": None if ci else float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                         "folds": len(vals), "unit": unit_title(p) if ci else None})  # fmt: skip
    return rows
