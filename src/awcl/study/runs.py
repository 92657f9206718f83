"""The nodes of a study grid and how one is carried out.

A :class:`Run` is one node (prepare data, pretrain, fine-tune, embed) keyed by a hash of its
configuration and its dependencies; :func:`execute` runs it through an :class:`Executors`
table and writes its ``DONE`` record last. Planning (:mod:`awcl.study.runner`), launching
(:mod:`awcl.study.launch`) and the real executors (:mod:`awcl.study.backends`) build on this
module, which imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from awcl.atomic import write_json_atomic
from awcl.errors import AwclError
from awcl.locking import dir_lock
from awcl.study.records import Labels, Result, RunRecord, labels_for, result_for

DONE = "DONE"
RUN_SUBDIR = "run"
MERGE = "merge"  # the data run that builds the union of several sources
FOLD_TRAIN = "fold-train"  # the data run that keeps one fold's training groups (per-fold pretraining)


@dataclass
class Run:
    """One node of the grid. ``deps`` maps a role (``data``, ``init``) to the run it needs;
    ``labels`` is the run's metadata, typed by kind (:mod:`awcl.study.records`; a mapping of
    its fields, or None, is converted)."""

    kind: str  # data | pretrain | finetune | embed
    name: str
    config: dict[str, Any]
    labels: Labels = None  # type: ignore[assignment]  # None: the kind's labels, all at their defaults
    deps: dict[str, Run] = field(default_factory=dict)
    weight: float = 1.0  # relative cost, for the progress bar's time estimate
    key: str = ""
    dir: Path = Path()

    def __post_init__(self) -> None:
        self.labels = labels_for(self.kind, self.labels)
        payload = {
            "kind": self.kind,
            "config": self.config,
            "deps": {role: dep.key for role, dep in sorted(self.deps.items())},
        }
        blob = json.dumps(payload, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def dirname(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return f"{self.kind}-{safe}-{self.key}"

    @property
    def output(self) -> Path:
        """Where the run's own files live (a prepared dataset, a pretrain run dir, ...)."""
        return self.dir / RUN_SUBDIR

    @property
    def done(self) -> bool:
        return (self.dir / DONE).is_file()

    def record(self) -> RunRecord:
        return RunRecord.read(self.dir / DONE)


# the executor of a kind returns that kind's result (awcl.study.records), or a mapping of its fields
RunFn = Callable[[Run, dict[str, Path | str]], Result | dict[str, Any]]


@dataclass
class Executors:
    """How each kind of run is carried out: ``fn(run, inputs) -> result``.

    ``inputs`` maps each dependency role to that run's output dir; the function writes into
    ``run.output`` and returns its kind's result (:mod:`awcl.study.records`: ``FinetuneResult``
    with its ``folds``, ``PretrainResult``, ...) or a mapping of that type's fields (an unknown
    key is an error).
    """

    data: RunFn
    pretrain: RunFn
    finetune: RunFn
    embed: RunFn

    def __getitem__(self, kind: str) -> RunFn:
        return getattr(self, kind)


def _inputs(run: Run) -> dict[str, Path | str]:
    return {role: dep.output for role, dep in run.deps.items()}


def execute(run: Run, executors: Executors) -> RunRecord:
    """Run one grid node (or return its cached record)."""
    if run.done:
        return run.record()
    with dir_lock(run.dir.parent / f".{run.dir.name}.lock", f"run folder {run.dir}"):
        return _execute_locked(run, executors)


def _execute_locked(run: Run, executors: Executors) -> RunRecord:
    if run.done:  # finished by another process while we waited for nothing
        return run.record()
    if run.dir.exists():  # leftover of an interrupted study (its lock holder is gone)
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True)
    write_json_atomic(
        run.dir / "config.json",
        {"kind": run.kind, "name": run.name, "config": run.config, "labels": asdict(run.labels),
         "deps": {r: d.dirname for r, d in run.deps.items()}},
        indent=2, sort_keys=True, default=str,
    )  # fmt: skip
    for role, dep in run.deps.items():
        if not dep.done:
            raise AwclError(f"{run.dir}: dependency {role} ({dep.dirname}) has not finished")
    t0 = time.perf_counter()
    try:
        result = result_for(run.kind, executors[run.kind](run, _inputs(run)), "its result")
    except AwclError as err:
        raise AwclError(f"{run.kind} {run.name}: {err}") from None
    record = RunRecord(run.kind, run.name, run.key, run.labels, run.config, result,
                       round(time.perf_counter() - t0, 3), time.strftime("%Y-%m-%dT%H:%M:%S"), dir=run.dir)  # fmt: skip
    # last: marks the run finished
    write_json_atomic(run.dir / DONE, record.to_json(), indent=2, sort_keys=True, default=str)
    return record
