"""A study run's record, typed: its labels (what the plan names it by) and its result (what
its executor returns), one frozen dataclass per run kind (data, pretrain, finetune, embed).

The planner (:mod:`awcl.study.grid`) gives each :class:`~awcl.study.runs.Run` its labels; the
executor returns its result; :func:`awcl.study.runs.execute` writes both into the run's
``DONE`` file as a :class:`RunRecord`, and the report's loader (:mod:`awcl.study.report.load`)
and the console read that record back, typed: no reader guesses a key, renames one or falls
back on a default of its own. What a downstream run split and bootstrapped by (``group``), its
own did-it-learn check (``learned``) and its task kind (``FinetuneResult.task``,
``FinetuneLabels.task_kind``) travel in it.

**Versions.** :data:`RECORD_VERSION` is written into every ``DONE`` file. A file without a
``version`` is a version-1 record (the dicts of earlier releases, whose results went through
keep-lists): :func:`upgrade_v1` reads it, so an existing study's cache keeps working without
re-running anything: the keys the types declare keep their values, a missing key takes the
field's default (``group``: ``patient_id``, the only unit before; ``main``: True; a
downstream run's ``ft_seed``: its ``seed``), and any other key (never read by a reader) is
dropped. A record of a later version than this code
knows is an error naming its file. A version-2 record, and an executor's result given as a
plain mapping, must hold only declared keys (an unknown one is an error, never dropped).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from awcl.errors import AwclError

RECORD_VERSION = 2


# --------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class DataLabels:
    """A data run: a recipe's dataset, a union of sources, or one fold's training part."""

    recipe: str | None = None
    task: str | None = None  # fold-train data: the task whose fold ``fold`` it leaves out
    fold: int | None = None
    ft_seed: int | None = None  # ... as that downstream seed splits it


@dataclass(frozen=True)
class EncoderLabels:
    """What names an encoder, a row of the report's tables."""

    method: str | None = None  # the row name: a study method (with its backbone tag) or an init's name
    ratio: float | None = None  # AWCL's anatomy ratio
    seed: int | None = None  # the pretraining seed
    backbone: str | None = None  # only in a study with the backbone axis or inits
    init: str | None = None  # an ``inits:`` entry's name
    layout: str | None = None  # ... and the weights layout it declares


@dataclass(frozen=True)
class PretrainLabels(EncoderLabels):
    fold: int | None = None  # per-fold pretraining: the outer fold ...
    fold_of: str | None = None  # ... of this task whose test groups it never saw
    ft_seed: int | None = None


@dataclass(frozen=True)
class FinetuneLabels(EncoderLabels):
    ft_seed: int | None = None  # the downstream seed
    task: str | None = None  # the study task's name
    task_kind: str | None = None  # its kind (classify, segment, ...: awcl.evaluate.tasks.KINDS)
    protocol: str | None = None
    main: bool = True  # an encoder of the main tables (False: a swept anatomy ratio)
    train_patients: int | None = None  # label efficiency: patients per training part (None: all)


@dataclass(frozen=True)
class EmbedLabels(EncoderLabels):
    task: str | None = None  # the task whose data is embedded


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DataResult:
    frames: int | None = None
    excluded_frames: int | None = None  # fold-train data: the test part's frames ...
    excluded_groups: int | None = None  # ... and groups left out
    group: str | None = None  # ... by this column


@dataclass(frozen=True)
class PretrainResult:
    """A pretraining's ``summary.json`` numbers and the setting the report states."""

    final_loss: float | None = None
    img_per_s: float | None = None
    knn_acc: float | None = None  # the kNN monitor at the end ...
    knn_acc_init: float | None = None  # ... and before the first step
    knn_curve: list[list[float]] | None = None  # [step, kNN accuracy]
    knn_crossover_step: int | None = None
    knn_granularity: str | None = None  # the labels the monitor scores (coarse | fine)
    # the other granularity on the same frames: {gran: {init, final, crossover_step}}
    knn_other: dict[str, Any] | None = None
    # per held-out patient of the monitor: its queries, right at step 0, right at the end
    knn_hits: dict[str, list[int]] | None = None
    epochs: int | None = None
    steps: int | None = None
    views_seen: int | None = None
    lr_schedule: str | None = None
    warmup: float | None = None
    labelled_frames: int | None = None
    frames: int | None = None
    class_group: int | None = None
    batch_composition: str | None = None
    crop_scale: list[float] | None = None
    blur: float | None = None
    trained_on: dict[str, Any] | None = None  # frames, videos, frame_ids_sha256 (trained_on.json)


@dataclass(frozen=True)
class FinetuneResult:
    """A downstream run's ``metrics.json`` summary (the file keeps the rest)."""

    task: str | None = None  # the task kind it ran
    protocol: str | None = None
    classes: list[str] | None = None
    num_frames: int | None = None
    folds: list[dict[str, Any]] = field(default_factory=list)  # per fold: metric -> value (and fold facts)
    mean: dict[str, Any] = field(default_factory=dict)
    std: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    train_patients: int | None = None
    intervals: dict[str, Any] = field(default_factory=dict)
    pooled: dict[str, Any] = field(default_factory=dict)
    group: str = "patient_id"  # the column it split and bootstrapped by
    learned: dict[str, Any] | None = None  # its trivial-baseline check (awcl.evaluate.sanity)
    fold_pretraining: list[dict[str, Any]] | None = None  # per-fold pretraining: the leak check

    def fold_metrics(self) -> list[dict[str, float]]:
        """Per fold, its numbers only (no bools, lists or texts), as floats."""
        return [{k: float(v) for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                for f in self.folds]  # fmt: skip


@dataclass(frozen=True)
class EmbedResult:
    num_frames: int | None = None
    plots: list[str] = field(default_factory=list)


Labels = DataLabels | PretrainLabels | FinetuneLabels | EmbedLabels
Result = DataResult | PretrainResult | FinetuneResult | EmbedResult
LABELS: dict[str, type] = {"data": DataLabels, "pretrain": PretrainLabels, "finetune": FinetuneLabels,
                           "embed": EmbedLabels}  # fmt: skip
RESULTS: dict[str, type] = {"data": DataResult, "pretrain": PretrainResult, "finetune": FinetuneResult,
                            "embed": EmbedResult}  # fmt: skip


def _kind_type(table: dict[str, type], kind: str, what: str) -> type:
    if kind not in table:
        raise AwclError(f"{what}: unknown run kind {kind!r} (expected {', '.join(table)})")
    return table[kind]


def declared(cls: type, data: Mapping[str, Any], what: str, strict: bool = True) -> Any:
    """``cls`` from ``data``'s keys. ``strict``: an undeclared key is an error naming it;
    otherwise (reading a version-1 record, or a run's whole ``metrics.json``) it stays out."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown and strict:
        raise AwclError(f"{what}: {', '.join(map(repr, unknown))} is not a field of {cls.__name__} "
                        f"(fields: {', '.join(sorted(names))})")  # fmt: skip
    return cls(**{k: v for k, v in data.items() if k in names})


def labels_for(kind: str, labels: Labels | Mapping[str, Any] | None = None, where: str = "") -> Labels:
    """A run's labels as its kind's type (``None``: all defaults). ``where``: the file they
    were read from, named in errors."""
    what = f"{where}: {kind} run labels" if where else f"{kind} run labels"
    cls = _kind_type(LABELS, kind, what)
    if isinstance(labels, cls):
        return labels
    if labels is None or isinstance(labels, Mapping):
        return declared(cls, labels or {}, what)
    raise AwclError(f"{what}: expected {cls.__name__}, got {type(labels).__name__}")


def result_for(kind: str, result: Result | Mapping[str, Any] | None, what: str) -> Result:
    """An executor's return value as its kind's result type: the type itself, or a mapping of
    its fields (strict), or None (every field at its default)."""
    cls = _kind_type(RESULTS, kind, what)
    if isinstance(result, cls):
        return result
    if result is None or isinstance(result, Mapping):
        return declared(cls, result or {}, what)
    raise AwclError(f"{what}: the executor returned {type(result).__name__}, expected {cls.__name__}")


# --------------------------------------------------------------------------- the DONE record
@dataclass(frozen=True)
class RunRecord:
    """One finished run, as its ``DONE`` file holds it (``dir``: where the loader found it)."""

    kind: str
    name: str
    key: str
    labels: Labels
    config: dict[str, Any]
    result: Result
    seconds: float = 0.0
    finished: str = ""
    version: int = RECORD_VERSION
    dir: Path = field(default=Path(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind, "name": self.name, "key": self.key,
                "labels": asdict(self.labels), "config": self.config, "result": asdict(self.result),
                "seconds": self.seconds, "finished": self.finished}  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """The record of the ``DONE`` file ``path`` (found in its folder)."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AwclError(f"{path}: unreadable run record ({err})") from None
        return cls.from_json(raw, str(path)).at(Path(path).parent)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], where: str) -> RunRecord:
        """A record read from a ``DONE`` file (``where`` names it in errors)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
            raise AwclError(f"{where}: not a run record (no 'kind' name)")
        for k in ("labels", "result", "config"):
            if raw.get(k) is not None and not isinstance(raw[k], Mapping):
                raise AwclError(f"{where}: run record {k!r} is a {type(raw[k]).__name__}, not a mapping")
        version = raw["version"] if "version" in raw else 1
        if version == 1:
            raw = upgrade_v1(raw, where)
        elif version != RECORD_VERSION:
            raise AwclError(f"{where}: run record version {version!r}; this awcl reads versions 1 to "
                            f"{RECORD_VERSION} (a newer awcl wrote it)")  # fmt: skip
        missing = [k for k in ("name", "key", "labels", "config", "result", "seconds", "finished") if k not in raw]
        if missing:
            raise AwclError(f"{where}: run record lacks {', '.join(map(repr, missing))}")
        kind = raw["kind"]
        try:
            seconds = float(raw["seconds"])
        except (TypeError, ValueError):
            raise AwclError(f"{where}: run record 'seconds' is {raw['seconds']!r}, not a number") from None
        return cls(kind, raw["name"], raw["key"], labels_for(kind, raw["labels"], where), dict(raw["config"] or {}),
                   result_for(kind, raw["result"], f"{where}: result"), seconds,
                   str(raw["finished"]), RECORD_VERSION)  # fmt: skip

    def at(self, run_dir: Path) -> RunRecord:
        """The same record, found in ``run_dir``."""
        return dataclasses.replace(self, dir=Path(run_dir))


def upgrade_v1(raw: Mapping[str, Any], where: str = "DONE") -> dict[str, Any]:
    """A version-1 ``DONE`` record (no ``version`` key) in the version-2 layout: declared keys
    kept, missing or null ones at their defaults (a null ``group``: patient_id), any other
    key dropped (see the module docstring)."""
    kind = raw["kind"]
    labels = _set_fields(_kind_type(LABELS, kind, f"{where}: run labels"), raw.get("labels"))
    result = _set_fields(_kind_type(RESULTS, kind, f"{where}: run result"), raw.get("result"))
    if kind == "finetune":
        if "ft_seed" not in labels:  # before downstream seeds: the pretraining seed
            labels["ft_seed"] = labels.get("seed")
    return {"version": RECORD_VERSION, "kind": kind, "name": raw.get("name", ""), "key": raw.get("key", ""),
            "labels": labels, "config": raw.get("config") or {}, "result": result,
            "seconds": raw.get("seconds", 0.0), "finished": raw.get("finished", "")}  # fmt: skip


def _set_fields(cls: type, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data``'s keys that are fields of ``cls``, less those that are null where the field's
    default is not (a version-1 writer's "unknown": the default, e.g. ``folds: []``)."""
    out = {}
    for f in fields(cls):
        if f.name not in (data or {}):
            continue
        v = data[f.name]  # type: ignore[index]
        default_none = f.default is None and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if v is None and not default_none:
            continue
        out[f.name] = v
    return out


# --------------------------------------------------------------------------- the plan's entries
@dataclass(frozen=True)
class PlannedRun:
    """One run of ``study.json`` (finished or not): what the plan said about it."""

    kind: str
    name: str
    key: str
    dir: str  # its directory name under ``runs/``
    labels: Labels
    deps: dict[str, str]  # role -> the directory name of the run it needs

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "key": self.key, "dir": self.dir,
                "labels": asdict(self.labels), "deps": dict(self.deps)}  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PlannedRun:
        """An entry of ``study.json`` (earlier studies wrote labels as plain dicts: read as
        :func:`upgrade_v1` reads a record's)."""
        kind = raw["kind"]
        known = {f.name for f in fields(_kind_type(LABELS, kind, "run labels"))}
        labels = {k: v for k, v in (raw.get("labels") or {}).items() if k in known}
        return cls(kind, raw.get("name", ""), raw.get("key", ""), raw["dir"], labels_for(kind, labels),
                   dict(raw.get("deps") or {}))  # fmt: skip
