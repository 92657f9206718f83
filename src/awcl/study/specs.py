"""A study's data sets and downstream tasks: :class:`DatasetSpec`, :class:`TaskSpec` and the
parsing of their YAML (``pretrain_data:``, a task's ``dataset:``, ``tasks:``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awcl.data.recipes import RECIPES as RECIPE_TABLE
from awcl.data.store import GRANULARITIES
from awcl.evaluate.tasks import PROBES, PROTOCOLS, TASKS
from awcl.methods import INITS, LABEL_METHODS, STUDY_METHODS
from awcl.study.validate import Ctx, seed_list

METHODS = STUDY_METHODS  # the names a study's ``methods:`` may list
# Methods that need a pretraining run (random/imagenet are inits only).
PRETRAINED = tuple(m for m in METHODS if m not in INITS)
RECIPES = tuple(RECIPE_TABLE)  # the recipes a study can prepare data with
ALL_PATIENTS = "all"  # train_patients value: the whole training part
PRETRAIN_DATASET = "pretrain"  # a task's `dataset: pretrain` reuses the pretraining data
# a task's pretrain_per_fold: which pretrained methods are pretrained once per outer fold of
# the task, without that fold's test groups ("labels": those that train on labels)
PER_FOLD = ("off", "labels", "all")
TASK_KEYS = frozenset(
    ("name", "dataset", "task", "protocols", "head", "preset", "epochs", "folds", "classes",
     "granularity", "extra", "train_patients", "finetune_seeds", "pretrain_per_fold")
)  # fmt: skip


@dataclass
class DatasetSpec:
    """A prepared dataset directory, a recipe that prepares one (cached in the study), or
    the union of several such ``sources`` (a YAML list; ids qualified by source name)."""

    path: str | None = None
    recipe: str | None = None
    src: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sources: list[DatasetSpec] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.sources:
            return "+".join(s.label for s in self.sources)
        if self.path:
            return Path(self.path).name
        return str(self.recipe)


@dataclass
class TaskSpec:
    """One downstream task: a dataset, classification or segmentation, and its protocols."""

    name: str
    dataset: DatasetSpec | str  # a DatasetSpec, or "pretrain"
    task: str = "classify"
    protocols: list[str] = field(default_factory=lambda: ["full"])
    head: str | None = None
    preset: str | None = None
    epochs: int | None = 10  # None: the preset's own (the paper's) number of epochs
    folds: int = 3
    # label efficiency: fit on n patients of each training part; None = all of them (always
    # included: the main tables use it)
    train_patients: list[int | None] = field(default_factory=lambda: [None])
    finetune_seeds: list[int] | None = None  # this task's downstream seeds (default: the study's)
    classes: list[str] | None = None
    granularity: str = "coarse"
    extra: dict[str, Any] = field(default_factory=dict)
    pretrain_per_fold: str = "off"  # one of PER_FOLD; needs dataset: pretrain

    def per_fold(self, method: str) -> bool:
        """Is ``method`` pretrained once per fold of this task (on its training groups)?"""
        if self.pretrain_per_fold == "all":
            return method in PRETRAINED
        return self.pretrain_per_fold == "labels" and method in LABEL_METHODS


def parse_dataset(v: Any, key: str, ctx: Ctx, allow_pretrain: bool = False) -> DatasetSpec | str:
    if isinstance(v, list):  # several sources: their union
        if len(v) < 2:
            raise ctx.err(key, f"a list of datasets needs at least two (got {v!r}); give one as is")
        parts = [parse_dataset(x, f"{key}[{i}]", ctx) for i, x in enumerate(v)]
        return DatasetSpec(sources=parts)  # type: ignore[arg-type]
    if isinstance(v, str):
        if allow_pretrain and v == PRETRAIN_DATASET:
            return PRETRAIN_DATASET
        return DatasetSpec(path=v)
    d = ctx.mapping(v, key)
    ctx.check_keys(d, key, {"path", "recipe", "src", "params"})
    if bool(d.get("path")) == bool(d.get("recipe")):
        raise ctx.err(key, "give either path: (a prepared dataset) or recipe: (to prepare one)")
    if d.get("path"):
        return DatasetSpec(path=ctx.string(d["path"], f"{key}.path"))
    recipe = ctx.choice(d["recipe"], f"{key}.recipe", RECIPES)
    src = d.get("src")
    if RECIPE_TABLE[recipe].needs_src and not src:
        raise ctx.err(f"{key}.src", f"recipe {recipe!r} needs src: (the downloaded data folder)")
    params = ctx.mapping(d.get("params"), f"{key}.params")
    return DatasetSpec(
        recipe=recipe,
        src=ctx.string(src, f"{key}.src") if src else None,
        params=dict(params),
    )


def _protocols(d: dict[str, Any], t: TaskSpec, key: str, ctx: Ctx) -> list[str]:
    protocols = ctx.str_list(d.get("protocols", t.protocols), f"{key}.protocols")
    for i, p in enumerate(protocols):
        ctx.choice(p, f"{key}.protocols[{i}]", PROTOCOLS)
    ctx.unique(protocols, f"{key}.protocols")
    if t.task != "classify" and set(protocols) & set(PROBES):
        raise ctx.err(f"{key}.protocols", f"{', '.join(PROBES)} are classification probes (task is {t.task})")
    return protocols


def _train_patients(tp: Any, key: str, ctx: Ctx) -> list[int | None]:
    """``[n, ..., all]`` sorted, the whole training part (None) always last: the main tables use it."""
    tp = tp if isinstance(tp, list) else [tp]
    if not tp:
        raise ctx.err(key, "expected a non-empty list such as [2, 4, 8, all]")
    values = [None if v == ALL_PATIENTS else ctx.integer(v, f"{key}[{i}]", 1) for i, v in enumerate(tp)]
    if len(set(values)) != len(values):
        raise ctx.err(key, f"duplicates in {tp}")
    return [*sorted(v for v in values if v is not None), None]


def parse_task(v: Any, key: str, ctx: Ctx) -> TaskSpec:
    d = ctx.mapping(v, key)
    ctx.check_keys(d, key, set(TASK_KEYS))
    if "name" not in d:
        raise ctx.err(f"{key}.name", "missing")
    if "dataset" not in d:
        raise ctx.err(f"{key}.dataset", "missing (a path, a recipe mapping, or 'pretrain')")
    t = TaskSpec(
        name=ctx.string(d["name"], f"{key}.name"),
        dataset=parse_dataset(d["dataset"], f"{key}.dataset", ctx, allow_pretrain=True),
    )
    t.task = ctx.choice(d.get("task", t.task), f"{key}.task", TASKS)
    t.protocols = _protocols(d, t, key, ctx)
    t.head = ctx.string(d["head"], f"{key}.head") if d.get("head") is not None else None
    t.preset = ctx.string(d["preset"], f"{key}.preset") if d.get("preset") is not None else None
    epochs = d.get("epochs", t.epochs)
    t.epochs = None if epochs in (None, "preset") else ctx.integer(epochs, f"{key}.epochs", 1)
    t.folds = ctx.integer(d.get("folds", t.folds), f"{key}.folds", 2)
    if d.get("classes") is not None:
        t.classes = ctx.str_list(d["classes"], f"{key}.classes")
    t.granularity = ctx.choice(d.get("granularity", t.granularity), f"{key}.granularity", GRANULARITIES)
    t.extra = dict(ctx.mapping(d.get("extra"), f"{key}.extra"))
    if "train_patients" in t.extra:
        raise ctx.err(f"{key}.extra.train_patients", "set it as the task's train_patients: [n, ..., all]")
    if d.get("train_patients") is not None:
        t.train_patients = _train_patients(d["train_patients"], f"{key}.train_patients", ctx)
    t.finetune_seeds = seed_list(d.get("finetune_seeds"), f"{key}.finetune_seeds", ctx)
    per_fold = d.get("pretrain_per_fold", "off")
    if per_fold is None or isinstance(per_fold, bool):  # true: the label-using methods
        per_fold = "labels" if per_fold else "off"
    t.pretrain_per_fold = ctx.choice(per_fold, f"{key}.pretrain_per_fold", PER_FOLD)
    return t


def parse_tasks(raw: dict[str, Any], ctx: Ctx) -> list[TaskSpec]:
    tasks_raw = raw["tasks"]
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise ctx.err("tasks", f"expected a non-empty list of tasks, got {tasks_raw!r}")
    tasks = [parse_task(t, f"tasks[{i}]", ctx) for i, t in enumerate(tasks_raw)]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ctx.err("tasks", f"task names must be unique, got {names}")
    return tasks
