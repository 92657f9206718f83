"""Run a study's grid of runs (planned by :mod:`awcl.study.grid`) once each, cache by config
hash, resume.

Every run (preparing a dataset, a pretraining, a downstream fine-tuning, an embedding) lives
in ``DIR/runs/<kind>-<name>-<hash>/``; the hash covers the run's resolved config and the
hashes of the runs it depends on, so changing a setting re-runs exactly what it affects. The
run writes into ``<run dir>/run/``; a ``DONE`` file (JSON record, written atomically last)
marks it finished. A run dir without ``DONE`` is a leftover of an interrupted study and is
cleared and redone.

The work itself is done by an :class:`Executors` bundle (the real one calls
``awcl.data``/``awcl.train``/``awcl.evaluate``; tests inject fast stand-ins).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from awcl.atomic import sweep_temps, write_atomic, write_json_atomic
from awcl.evaluate.tasks import TASKS, headline_metric
from awcl.locking import dir_lock
from awcl.study.backends import real_executors
from awcl.study.config import StudyConfig
from awcl.study.grid import Plan, plan_study
from awcl.study.launch import Serial
from awcl.study.overlap import overlap_index
from awcl.study.records import (
    DataResult,
    FinetuneResult,
    PlannedRun,
    PretrainResult,
    Result,
    RunRecord,
)
from awcl.study.runs import DONE, RUN_SUBDIR, Executors, Run, RunFn, execute

__all__ = [
    "DONE", "INDEX", "RUN_SUBDIR", "Executors", "Plan", "Run", "RunFn", "StudyResult", "execute",
    "headline", "plan_study", "run_study", "write_index",
]  # fmt: skip

log = logging.getLogger(__name__)

INDEX = "study.json"


# ------------------------------------------------------------------------ running
def _describe(run: Run) -> str:
    seed = getattr(run.labels, "seed", None)  # the encoder's seed (data runs have none)
    return f"{run.kind:<8} {run.name} (seed={seed})" if seed is not None else f"{run.kind:<8} {run.name}"


def headline(run: Run, result: Result) -> str:
    """A short result summary for the per-run line."""
    if isinstance(result, FinetuneResult) and result.folds:
        import numpy as np

        folds = result.fold_metrics()
        kind = run.labels.task_kind or result.task
        head = headline_metric(kind) if kind in TASKS else None  # the report's metric too
        metric = head if head in folds[0] else next(iter(folds[0]))
        vals = [f[metric] for f in folds if metric in f]
        return f"{metric} {np.mean(vals):.3f} ± {np.std(vals):.3f} over {len(vals)} folds"
    if isinstance(result, PretrainResult) and result.final_loss is not None:
        text = f"final loss {result.final_loss:.4f}"
        if result.knn_acc_init is not None and result.knn_acc is not None:
            text += f", kNN {result.knn_acc_init:.3f} (step 0) -> {result.knn_acc:.3f}"
        return text
    if isinstance(result, DataResult) and result.frames is not None:
        return f"{result.frames} frames"
    return ""


@dataclass
class StudyResult:
    out: Path
    plan: Plan
    computed: list[str]  # dirnames of runs computed in this call
    cached: list[str]  # dirnames of runs found finished


def write_index(cfg: StudyConfig, plan: Plan, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    index = {
        "name": cfg.name,
        "source": cfg.source,
        "anatomy_ratio": cfg.anatomy_ratio,
        "notes": plan.notes,
        "runs": [PlannedRun(r.kind, r.name, r.key, r.dirname, r.labels,
                            {role: d.dirname for role, d in r.deps.items()}).to_json() for r in plan.runs],
    }  # fmt: skip
    if cfg.inits:  # which init was pretrained on which task's data (awcl.study.overlap)
        index["overlap"] = overlap_index(cfg)
    write_json_atomic(out / INDEX, index, indent=2, sort_keys=True, default=str)
    write_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_study(
    cfg: StudyConfig,
    out: str | os.PathLike,
    executors: Executors | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    launcher: Any = None,
    kinds: tuple[str, ...] | None = None,
) -> StudyResult:
    """Run every run of the study that is not finished yet; return what was done.

    A progress bar covers the whole grid (weighted by each run's rough cost, so its time
    remaining is meaningful); one line is printed per finished run. ``launcher`` (see
    :mod:`awcl.study.launch`) decides where runs execute: one after another here (default),
    ``--jobs N`` processes on this machine, or cluster jobs. ``kinds``: run only the runs of
    these kinds (e.g. ``("data",)``: prepare the datasets, as ``--plan --prepare`` does).
    """
    out = Path(out)
    if executors is None:
        executors = real_executors()
    # one study process per directory: a second one would delete the first one's unfinished
    # run folders as leftovers of an interrupted study
    with dir_lock(out / ".awcl-study.lock", f"study directory {out}"):
        for folder in (out, out / "report_files", out / "runs"):  # temporaries of a killed earlier study
            sweep_temps(folder)
        return _run_locked(cfg, out, executors, progress, echo, launcher, kinds)


def _run_locked(cfg: StudyConfig, out: Path, executors: Executors, progress: bool,
                echo: Callable[[str], None] | None, launcher: Any,
                kinds: tuple[str, ...] | None = None) -> StudyResult:
    plan = plan_study(cfg, out)
    write_index(cfg, plan, out)
    say = echo or tqdm.write
    for note in plan.notes:
        say(f"note: {note}")
    cached = [r for r in plan.runs if r.done]
    todo = [r for r in plan.runs if not r.done and (kinds is None or r.kind in kinds)]
    say(
        f"study {cfg.name}: {len(plan.runs)} runs, {len(cached)} already finished, "
        f"{len(todo)} to run -> {out}"
    )
    bar = _progress_bar(cfg.name, plan.runs, cached, progress)
    computed: list[str] = []
    active: list[str] = []

    def started(run: Run) -> None:
        active.append(f"{run.kind} {run.name}")
        bar.set_description_str(f"{cfg.name} | {' + '.join(active)}"[:60])

    def finished(run: Run, rec: RunRecord) -> None:
        active.remove(f"{run.kind} {run.name}")
        computed.append(run.dirname)
        bar.update(min(run.weight, max(0.0, bar.total - bar.n)))  # float sums may overshoot
        line = f"done {_describe(run)}  {rec.seconds:.1f}s"
        h = headline(run, rec.result)
        say(f"{line}  {h}" if h else line)

    if launcher is None:
        launcher = Serial()
    try:
        launcher.run(todo, executors, started, finished)
    finally:
        bar.close()
    return StudyResult(out, plan, computed, [r.dirname for r in cached])


def _progress_bar(name: str, runs: list[Run], cached: list[Run], progress: bool) -> Any:
    """A tqdm bar over the grid's total weight, starting at what is already finished."""
    return tqdm(
        total=sum(r.weight for r in runs),
        initial=sum(r.weight for r in cached),
        disable=not progress,
        smoothing=0,  # runs differ a lot; the average rate gives a steadier ETA
        unit="w",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        desc=name,
    )
