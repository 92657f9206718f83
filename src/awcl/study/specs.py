"""A study's data sets and downstream tasks: :class:`DatasetSpec` (``pretrain_data:``, a
task's ``dataset:``) and :class:`TaskSpec` (an entry of ``tasks:``), config dataclasses read
and checked by :func:`awcl.config.build` like every other config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awcl.config import option
from awcl.config_checks import (
    ConfigError,
    check_choices,
    check_filled,
    check_ranges,
    check_unique,
    listed,
)
from awcl.data.recipes import RECIPES as RECIPE_TABLE
from awcl.data.store import GRANULARITIES
from awcl.evaluate.tasks import PROBES, PROTOCOLS, TASKS
from awcl.methods import INITS, LABEL_METHODS, STUDY_METHODS

METHODS = STUDY_METHODS  # the names a study's ``methods:`` may list
# Methods that need a pretraining run (random/imagenet are inits only).
PRETRAINED = tuple(m for m in METHODS if m not in INITS)
RECIPES = tuple(RECIPE_TABLE)  # the recipes a study can prepare data with
ALL_PATIENTS = "all"  # train_patients value: the whole training part
PRETRAIN_DATASET = "pretrain"  # a task's `dataset: pretrain` reuses the pretraining data
# a task's pretrain_per_fold: which pretrained methods are pretrained once per outer fold of
# the task, without that fold's test groups ("labels": those that train on labels)
PER_FOLD = ("off", "labels", "all")


def dataset_value(v: Any) -> Any:
    """A ``parse`` hook: a path (text) or a list of data sets (their union) as the mapping of
    a :class:`DatasetSpec`; a mapping as it is."""
    if isinstance(v, str):
        return {"path": v}
    if isinstance(v, list):
        return {"sources": v}
    return v


def _task_dataset(v: Any) -> Any:
    return v if v == PRETRAIN_DATASET else dataset_value(v)


def _sources(v: Any) -> Any:
    return [dataset_value(x) for x in v] if isinstance(v, list) else v


@dataclass
class DatasetSpec:
    """A prepared dataset directory, a recipe that prepares one (cached in the study), or
    the union of several such ``sources`` (a YAML list; ids qualified by source name)."""

    path: str | None = option(None, help="a prepared dataset directory")
    recipe: str | None = option(None, choices=RECIPES, help="a recipe that prepares one (awcl prepare NAME)")
    src: str | None = option(None, help="the recipe's downloaded data folder")
    params: dict[str, Any] = option(default_factory=dict, help="the recipe's settings")
    sources: list[DatasetSpec] = option(default_factory=list, parse=_sources,
                                        help="several data sets (given as a YAML list): their union")  # fmt: skip

    def __post_init__(self) -> None:
        check_choices(self, keys=True)  # recipe
        if self.sources:
            if len(self.sources) < 2:
                raise ConfigError("", f"a list of datasets needs at least two (got {len(self.sources)}); give one as is")
            if self.path or self.recipe or self.src or self.params:
                raise ConfigError("", "give either a list of data sets or one of them")
            return
        if bool(self.path) == bool(self.recipe):
            raise ConfigError("", "give either path: (a prepared dataset) or recipe: (to prepare one)")
        if self.recipe and RECIPE_TABLE[self.recipe].needs_src and not self.src:
            raise ConfigError("src", f"recipe {self.recipe!r} needs src: (the downloaded data folder)")

    @property
    def label(self) -> str:
        if self.sources:
            return "+".join(s.label for s in self.sources)
        if self.path:
            return Path(self.path).name
        return str(self.recipe)


def _epochs(v: Any) -> Any:
    return None if v == "preset" else v


def _train_patients(v: Any) -> list[Any]:
    return [None if x == ALL_PATIENTS else x for x in listed(int, str)(v)]


def _per_fold(v: Any) -> Any:
    return ("labels" if v else "off") if isinstance(v, bool) else v  # true: the label-using methods


@dataclass
class TaskSpec:
    """One downstream task: a dataset, classification or segmentation, and its protocols."""

    name: str = option(help="the task's name in the report")
    dataset: DatasetSpec | str = option(parse=_task_dataset,
                                        help="a path, a recipe mapping, a list of them, or 'pretrain'")  # fmt: skip
    task: str = option("classify", choices=TASKS, help="downstream task")
    protocols: list[str] = option(default_factory=lambda: ["full"], choices=PROTOCOLS, parse=listed(str),
                                  help="the protocols run on it")  # fmt: skip
    head: str | None = option(None, help="classification head (default: the preset's)")
    preset: str | None = option(None, help="paper protocol (default: task1 / task3)")
    epochs: int | None = option(10, parse=_epochs, help="'preset' (null): the preset's own number of epochs")
    folds: int = option(3, help="cross-validation folds")
    # label efficiency: fit on n patients of each training part; None = all of them (always
    # included: the main tables use it)
    train_patients: list[int | None] = option(default_factory=lambda: [None], parse=_train_patients,
                                              help="[n, ..., all]: patients per training part")  # fmt: skip
    finetune_seeds: list[int] | None = option(None, parse=listed(int), help="this task's downstream seeds (default: the study's)")
    classes: list[str] | None = option(None, parse=listed(str), help="the classes to use")
    granularity: str = option("coarse", choices=GRANULARITIES, help="which anatomy labels")
    extra: dict[str, Any] = option(default_factory=dict, help="further FinetuneConfig settings")
    pretrain_per_fold: str | None = option("off", choices=PER_FOLD, parse=_per_fold,
                                           help="pretrain once per fold: off, labels or all; needs dataset: pretrain")  # fmt: skip

    def __post_init__(self) -> None:
        self.pretrain_per_fold = self.pretrain_per_fold or "off"
        check_filled(self, ("name", "protocols", "head", "preset", "train_patients", "finetune_seeds", "classes"))
        check_choices(self, keys=True)  # task, protocols, granularity, pretrain_per_fold
        check_unique(self, ("protocols", "train_patients", "finetune_seeds"))
        check_ranges(self, {"epochs": (1, None), "folds": (2, None), "train_patients": (1, None),
                            "finetune_seeds": (0, None)}, keys=True)  # fmt: skip
        if self.task != "classify" and set(self.protocols) & set(PROBES):
            raise ConfigError("protocols", f"{', '.join(PROBES)} are classification probes (task is {self.task})")
        if "train_patients" in self.extra:
            raise ConfigError("extra.train_patients", "set it as the task's train_patients: [n, ..., all]")
        # the whole training part (None) always last: the main tables use it
        self.train_patients = [*sorted(n for n in self.train_patients if n is not None), None]

    def per_fold(self, method: str) -> bool:
        """Is ``method`` pretrained once per fold of this task (on its training groups)?"""
        if self.pretrain_per_fold == "all":
            return method in PRETRAINED
        return self.pretrain_per_fold == "labels" and method in LABEL_METHODS
