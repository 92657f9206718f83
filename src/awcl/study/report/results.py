"""The study's numbers as one typed object: :class:`Results`, built once from the study
directory (:func:`awcl.study.report.load.load_results`) and read by every part of the report
(sections, tables, statistics, figures) and the console summary.

Its selectors name the subsets the report shows, so each is written once: the main runs
(main encoders on the whole training part, :meth:`Results.main`), one protocol of them, the
label-efficiency runs (:meth:`Results.label_efficiency`) and the anatomy-ratio sweep
(:meth:`Results.ratio_sweep`); each has a twin over the stacked test predictions, so a table
cell and its interval come from the same runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from awcl.study.report.document import is_none

# the labels every downstream row carries (results.csv, the predictions, the runs table)
LABEL_COLS = ("method", "ratio", "seed", "ft_seed", "task", "task_kind", "protocol", "main", "train_patients")
GROUP_BY, UNIT = "group_by", "unit"  # the run's bootstrap column (cfg.group) and its value per frame
RESULT_COLUMNS = ["kind", "method", "ratio", "seed", "ft_seed", "train_patients", "task", "task_kind",
                  "protocol", "main", "fold", "epoch", "step", "metric", "value", "run"]  # fmt: skip
RUN_COLUMNS = [*LABEL_COLS, "run", "dir"]
KNN_COLUMNS = ["method", "ratio", "seed", "labels", "epoch", "step", "knn_acc", "run"]


def _frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


def _main_whole(df: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    """The rows of the main encoders on the whole training part (of ``protocol`` when given)."""
    if df.empty:
        return df
    whole = df["train_patients"].map(is_none) if "train_patients" in df.columns else True
    keep = (df["main"] == True) & whole  # noqa: E712  (object column)
    if protocol is not None:
        keep &= df["protocol"] == protocol
    return df[keep]


@dataclass(frozen=True, eq=False)  # eq=False: tables do not compare with ==
class Results:
    """Every number of a study and the predictions behind them (tidy tables, one row each).

    ``table``: each number (finetune folds, pretraining epochs): ``results.csv``;
    ``predictions``: every downstream test prediction with its run's labels (:data:`LABEL_COLS`),
    ``run`` and the run's bootstrap unit (:data:`GROUP_BY`, :data:`UNIT`);
    ``runs``: every finished downstream run, its labels, ``run`` (directory name), ``dir``;
    ``knn``: the kNN monitor per pretraining run and step."""

    table: pd.DataFrame = field(default_factory=lambda: _frame(RESULT_COLUMNS))
    predictions: pd.DataFrame = field(default_factory=lambda: _frame([*LABEL_COLS, "run", GROUP_BY, UNIT]))
    runs: pd.DataFrame = field(default_factory=lambda: _frame(RUN_COLUMNS))
    knn: pd.DataFrame = field(default_factory=lambda: _frame(KNN_COLUMNS))

    # ------------------------------------------------------------------ the numbers
    def downstream(self) -> pd.DataFrame:
        """The downstream (finetune and probe) rows of :attr:`table`."""
        return self.table[self.table["kind"] == "finetune"]

    @cached_property
    def tasks(self) -> list[str]:
        """The downstream tasks, in study order (the predictions' where the table has none)."""
        src = self.downstream() if not self.downstream().empty else self.predictions
        return list(dict.fromkeys(src["task"].dropna())) if "task" in src.columns else []

    def main(self, protocol: str | None = None) -> pd.DataFrame:
        """The main tables' rows: main encoders (not a swept ratio), whole training part."""
        return _main_whole(self.downstream(), protocol)

    def label_efficiency(self) -> pd.DataFrame:
        """Downstream rows of the main encoders, every number of labelled training patients."""
        fin = self.downstream()
        return fin[fin["main"] == True]  # noqa: E712  (object column)

    def ratio_sweep(self) -> pd.DataFrame:
        """AWCL's downstream rows with an anatomy ratio (main or swept), whole training part."""
        fin = self.downstream()
        sub = fin[fin["method"].astype(str).str.startswith("awcl") & fin["ratio"].notna()]
        return sub[sub["train_patients"].isna()]

    # ------------------------------------------------------------------ the predictions
    def main_predictions(self, protocol: str | None = None, task: str | None = None) -> pd.DataFrame:
        """The test predictions of :meth:`main`'s runs (of one task when given)."""
        p = _main_whole(self.predictions, protocol)
        return p if task is None or p.empty else p[p["task"] == task]

    def efficiency_predictions(self, task: str, protocol: str, method: str, n: int | None) -> pd.DataFrame:
        """The predictions behind one label-efficiency point (``n`` None: all patients)."""
        p = self.predictions
        if p.empty:
            return p
        p = p[(p["task"] == task) & (p["protocol"] == protocol) & (p["method"] == method) & (p["main"] == True)]  # noqa: E712
        return p[p["train_patients"].map(lambda v: (None if is_none(v) else int(v)) == n)]

    # ------------------------------------------------------------------ the runs
    def main_runs(self, protocol: str | None = None) -> pd.DataFrame:
        """The finished downstream runs behind :meth:`main` (``run``, ``dir`` and labels)."""
        return _main_whole(self.runs, protocol)
