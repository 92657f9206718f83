"""Study configuration: a YAML file naming the data, the methods, the sweep and the tasks.

A study config is read in three steps: YAML -> variables, overrides and ``${var}``
interpolation (the shared config layer, awcl.config / OmegaConf) -> dataclasses validated
here. Variables come from the file's ``vars:`` block, then the ``scales:`` preset named by
the variable ``scale`` (e.g. ``--set scale=paper``), then ``--set name=value`` (later wins).
A value that is exactly ``${name}`` takes the variable's YAML value (a number, a list,
``null``); inside a longer string the variable is pasted as text.
Every problem raises :class:`~awcl.errors.AwclError` with one line naming the file, the key
and the bad value.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from awcl.config import describe, read_yaml, split_override
from awcl.data.recipes import RECIPES as RECIPE_TABLE
from awcl.data.store import GRANULARITIES
from awcl.errors import AwclError
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

TOP_KEYS = frozenset(
    ("name", "pretrain_data", "methods", "tasks", "pretrain", "anatomy_ratios", "anatomy_ratio",
     "sweep_tasks", "sweep_methods", "seeds", "finetune_seeds", "imagenet_weights", "embed",
     "scales")
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
class PretrainSettings:
    """Settings shared by every pretraining run (the method fills in the rest).

    ``extra`` is passed through to :class:`awcl.train.pretrain.PretrainConfig` as is.
    """

    epochs: int = 10
    batch_size: int = 32
    size: list[int] | None = None  # [H, W]; None keeps the dataset's size
    lr: float = 1e-3
    extra: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class EmbedSpec:
    """t-SNE of penultimate features per method, on one task's data (default: the first)."""

    task: str | None = None
    max_samples: int = 500
    enabled: bool = True


@dataclass
class StudyConfig:
    name: str
    pretrain_data: DatasetSpec
    methods: list[str]
    tasks: list[TaskSpec]
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    anatomy_ratios: list[float] = field(default_factory=lambda: [0.5])
    anatomy_ratio: float = 0.5  # the ratio used in the main tables
    sweep_tasks: list[str] | None = None  # tasks the ratio sweep is evaluated on (None: all)
    sweep_methods: list[str] | None = None  # awcl methods swept over ratios (None: all listed)
    seeds: list[int] = field(default_factory=lambda: [0])
    # downstream seeds (fold split, head init, sampling) per encoder; None: the encoder's seed
    finetune_seeds: list[int] | None = None
    imagenet_weights: str | None = None
    embed: EmbedSpec = field(default_factory=EmbedSpec)
    vars: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it came from (for messages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        return _drop_empty_sources(d)


def _drop_empty_sources(obj: Any) -> Any:
    """A dataset spec without ``sources`` is written as before (no ``sources: []``)."""
    if isinstance(obj, dict):
        return {k: _drop_empty_sources(v) for k, v in obj.items() if not (k == "sources" and v == [])}
    if isinstance(obj, list):
        return [_drop_empty_sources(v) for v in obj]
    return obj


# ------------------------------------------------------------------------- helpers
class _Ctx:
    """Carries the file name so every error names the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def err(self, key: str, msg: str) -> AwclError:
        return AwclError(f"{self.source}: {key}: {msg}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.err(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value

    def check_keys(self, d: dict[str, Any], key: str, allowed: set[str]) -> None:
        unknown = sorted(set(d) - allowed)
        if unknown:
            where = f"{key}.{unknown[0]}" if key else unknown[0]
            raise self.err(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def integer(self, v: Any, key: str, minimum: int = 0) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.err(key, f"expected an integer >= {minimum}, got {v!r}")
        return int(v)

    def number(self, v: Any, key: str, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(key, f"expected a number, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(key, f"{v!r} is outside [{lo}, {hi}]")
        return float(v)

    def string(self, v: Any, key: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.err(key, f"expected a non-empty string, got {v!r}")
        return v

    def choice(self, v: Any, key: str, choices: tuple[str, ...]) -> str:
        if v not in choices:
            raise self.err(key, f"{v!r} is not one of {', '.join(choices)}")
        return str(v)

    def str_list(self, v: Any, key: str) -> list[str]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise self.err(key, f"expected a non-empty list, got {v!r}")
        return [self.string(x, f"{key}[{i}]") for i, x in enumerate(v)]


_ROOT = "__study__"  # the config sits under this key; its variables beside it (no clash)


def compose_raw(raw: dict[str, Any], overrides: list[str], ctx: _Ctx) -> tuple[dict[str, Any], dict[str, Any]]:
    """Variables, scale preset and ``--set`` overrides, then ``${name}`` interpolation
    (awcl.config / OmegaConf). Returns the resolved config and its variables.

    ``--set name=value`` sets a variable (or a top-level key such as ``seeds=[0,1]``), and
    ``a.b=value`` / ``tasks.0.epochs=70`` a nested key; values are YAML.
    """
    raw = copy.deepcopy(raw)
    variables = dict(ctx.mapping(raw.pop("vars", None), "vars"))
    scales = ctx.mapping(raw.pop("scales", None), "scales")
    given: dict[str, Any] = {}  # variables set on the command line beat a scale preset
    keys: list[tuple[str, Any, str]] = []
    for item in overrides:
        name, value = split_override(item)
        if "." not in name and "[" not in name and (name in variables or name not in TOP_KEYS):
            given[name] = value
        else:
            keys.append((name, value, item))
    variables.update(given)
    if scales:
        name = str(variables.get("scale", ""))
        if name not in scales:
            raise ctx.err("scale", f"{name!r} is not one of the scales: {', '.join(map(str, scales))}"
                          " (set it under vars: or with --set scale=NAME)")  # fmt: skip
        preset = ctx.mapping(scales[name], f"scales.{name}")
        variables.update({k: v for k, v in preset.items() if k not in given})
    try:  # create() already parses every ${...}: a malformed one fails here
        tree = OmegaConf.create({**variables, _ROOT: raw})
    except OmegaConfBaseException as err:
        key, msg, _ = describe(err)
        raise ctx.err(key.removeprefix(_ROOT).lstrip(".") or "vars", msg) from None
    for name, value, item in keys:
        try:
            OmegaConf.update(tree, f"{_ROOT}.{name}", value, force_add=True)
        except OmegaConfBaseException as err:
            raise AwclError(f"--set {item!r}: {str(err).splitlines()[0]} (not an index or key of the config)") from None
    try:
        resolved = OmegaConf.to_container(tree, resolve=True)
    except OmegaConfBaseException as err:
        key, msg, missing = describe(err)
        if missing:
            msg += f" (add it under vars: or pass --set {missing}=...)"
        raise ctx.err(key.removeprefix(_ROOT).lstrip(".") or "vars", msg) from None
    return resolved[_ROOT], {k: resolved[k] for k in variables}  # type: ignore[index]


# ------------------------------------------------------------------------- parsing
def _dataset(v: Any, key: str, ctx: _Ctx, allow_pretrain: bool = False) -> DatasetSpec | str:
    if isinstance(v, list):  # several sources: their union
        if len(v) < 2:
            raise ctx.err(key, f"a list of datasets needs at least two (got {v!r}); give one as is")
        parts = [_dataset(x, f"{key}[{i}]", ctx) for i, x in enumerate(v)]
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


def _size(v: Any, key: str, ctx: _Ctx) -> list[int] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise ctx.err(key, f"expected [H, W], got {v!r}")
    return [ctx.integer(x, f"{key}[{i}]", 8) for i, x in enumerate(v)]


def _task(v: Any, key: str, ctx: _Ctx) -> TaskSpec:
    d = ctx.mapping(v, key)
    allowed = {
        "name", "dataset", "task", "protocols", "head", "preset", "epochs", "folds",
        "classes", "granularity", "extra", "train_patients", "finetune_seeds", "pretrain_per_fold",
    }  # fmt: skip
    ctx.check_keys(d, key, allowed)
    if "name" not in d:
        raise ctx.err(f"{key}.name", "missing")
    if "dataset" not in d:
        raise ctx.err(f"{key}.dataset", "missing (a path, a recipe mapping, or 'pretrain')")
    t = TaskSpec(
        name=ctx.string(d["name"], f"{key}.name"),
        dataset=_dataset(d["dataset"], f"{key}.dataset", ctx, allow_pretrain=True),
    )
    t.task = ctx.choice(d.get("task", t.task), f"{key}.task", TASKS)
    t.protocols = ctx.str_list(d.get("protocols", t.protocols), f"{key}.protocols")
    for i, p in enumerate(t.protocols):
        ctx.choice(p, f"{key}.protocols[{i}]", PROTOCOLS)
    if len(set(t.protocols)) != len(t.protocols):
        raise ctx.err(f"{key}.protocols", f"duplicates in {t.protocols}")
    if t.task != "classify" and set(t.protocols) & set(PROBES):
        raise ctx.err(f"{key}.protocols", f"{', '.join(PROBES)} are classification probes (task is {t.task})")
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
        tp = d["train_patients"]
        tp = tp if isinstance(tp, list) else [tp]
        if not tp:
            raise ctx.err(f"{key}.train_patients", "expected a non-empty list such as [2, 4, 8, all]")
        values: list[int | None] = []
        for i, v in enumerate(tp):
            values.append(None if v == ALL_PATIENTS else ctx.integer(v, f"{key}.train_patients[{i}]", 1))
        if len(set(values)) != len(values):
            raise ctx.err(f"{key}.train_patients", f"duplicates in {tp}")
        # the whole training part is always run: the main tables use it
        t.train_patients = [*sorted(v for v in values if v is not None), None]
    t.finetune_seeds = _seed_list(d.get("finetune_seeds"), f"{key}.finetune_seeds", ctx)
    per_fold = d.get("pretrain_per_fold", "off")
    if per_fold is None or isinstance(per_fold, bool):  # true: the label-using methods
        per_fold = "labels" if per_fold else "off"
    t.pretrain_per_fold = ctx.choice(per_fold, f"{key}.pretrain_per_fold", PER_FOLD)
    return t


def _seed_list(v: Any, key: str, ctx: _Ctx) -> list[int] | None:
    """None, an integer or a non-empty list of distinct integers >= 0."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise ctx.err(key, f"expected a non-empty list of integers, got {v!r}")
    seeds = [ctx.integer(s, f"{key}[{i}]", 0) for i, s in enumerate(v)]
    if len(set(seeds)) != len(seeds):
        raise ctx.err(key, f"duplicates in {v}")
    return seeds


def _pretrain_settings(raw: dict[str, Any], ctx: _Ctx) -> PretrainSettings:
    p = ctx.mapping(raw.get("pretrain"), "pretrain")
    ctx.check_keys(p, "pretrain", {"epochs", "batch_size", "size", "lr", "extra"})
    return PretrainSettings(
        epochs=ctx.integer(p.get("epochs", 10), "pretrain.epochs", 1),
        batch_size=ctx.integer(p.get("batch_size", 32), "pretrain.batch_size", 2),
        size=_size(p.get("size"), "pretrain.size", ctx),
        lr=ctx.number(p.get("lr", 1e-3), "pretrain.lr", 0.0),
        extra=dict(ctx.mapping(p.get("extra"), "pretrain.extra")),
    )


def _methods(raw: dict[str, Any], ctx: _Ctx) -> list[str]:
    methods = ctx.str_list(raw["methods"], "methods")
    for i, m in enumerate(methods):
        ctx.choice(m, f"methods[{i}]", METHODS)
    if len(set(methods)) != len(methods):
        raise ctx.err("methods", f"duplicates in {methods}")
    return methods


def _tasks(raw: dict[str, Any], ctx: _Ctx) -> list[TaskSpec]:
    tasks_raw = raw["tasks"]
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise ctx.err("tasks", f"expected a non-empty list of tasks, got {tasks_raw!r}")
    tasks = [_task(t, f"tasks[{i}]", ctx) for i, t in enumerate(tasks_raw)]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ctx.err("tasks", f"task names must be unique, got {names}")
    return tasks


def _ratios(raw: dict[str, Any], ctx: _Ctx) -> tuple[list[float], float]:
    """The anatomy ratios swept (the main one always among them) and the main one."""
    ratios_raw = raw.get("anatomy_ratios", [0.5])
    if not isinstance(ratios_raw, list) or not ratios_raw:
        raise ctx.err("anatomy_ratios", f"expected a non-empty list, got {ratios_raw!r}")
    ratios = [ctx.number(r, f"anatomy_ratios[{i}]", 0.0, 1.0) for i, r in enumerate(ratios_raw)]
    main = ctx.number(raw.get("anatomy_ratio", ratios[len(ratios) // 2]), "anatomy_ratio", 0.0, 1.0)
    return sorted({*ratios, main}), main


def _sweep(raw: dict[str, Any], names: list[str], methods: list[str], ctx: _Ctx) -> tuple[list[str] | None, list[str] | None]:
    """``sweep_tasks`` (task names) and ``sweep_methods`` (awcl methods listed)."""
    sweep_tasks = None
    if raw.get("sweep_tasks") is not None:
        sweep_tasks = ctx.str_list(raw["sweep_tasks"], "sweep_tasks")
        for i, s in enumerate(sweep_tasks):
            if s not in names:
                raise ctx.err(f"sweep_tasks[{i}]", f"{s!r} is not a task name ({', '.join(names)})")
    sweep_methods = None
    if raw.get("sweep_methods") is not None:
        sweep_methods = ctx.str_list(raw["sweep_methods"], "sweep_methods")
        for i, m in enumerate(sweep_methods):
            if not m.startswith("awcl-") or m not in methods:
                raise ctx.err(f"sweep_methods[{i}]", f"{m!r} is not an awcl method listed in methods")
    return sweep_tasks, sweep_methods


def _embed(raw: dict[str, Any], names: list[str], ctx: _Ctx) -> EmbedSpec:
    e = ctx.mapping(raw.get("embed"), "embed")
    ctx.check_keys(e, "embed", {"task", "max_samples", "enabled"})
    embed = EmbedSpec(
        task=e.get("task"),
        max_samples=ctx.integer(e.get("max_samples", 500), "embed.max_samples", 10),
        enabled=bool(e.get("enabled", True)),
    )
    if embed.task is not None and embed.task not in names:
        raise ctx.err("embed.task", f"{embed.task!r} is not a task name ({', '.join(names)})")
    return embed


def parse_config(raw: Any, source: str = "<config>", overrides: list[str] | None = None) -> StudyConfig:
    """Validate a raw (YAML-loaded) config; ``overrides`` are ``--set`` items."""
    ctx = _Ctx(source)
    if not isinstance(raw, dict):
        raise AwclError(f"{source}: a study config must be a YAML mapping, got {type(raw).__name__}")
    raw, variables = compose_raw(raw, overrides or [], ctx)
    ctx.check_keys(raw, "", set(TOP_KEYS))
    for req in ("pretrain_data", "methods", "tasks"):
        if req not in raw:
            raise ctx.err(req, "missing")
    methods = _methods(raw, ctx)
    tasks = _tasks(raw, ctx)
    names = [t.name for t in tasks]
    ratios, main_ratio = _ratios(raw, ctx)
    sweep_tasks, sweep_methods = _sweep(raw, names, methods, ctx)
    seeds = _seed_list(raw.get("seeds", [0]), "seeds", ctx)
    weights = raw.get("imagenet_weights")
    pretrain_data = _dataset(raw["pretrain_data"], "pretrain_data", ctx)
    for i, t in enumerate(tasks):
        if t.pretrain_per_fold != "off" and t.dataset not in (PRETRAIN_DATASET, pretrain_data):
            raise ctx.err(f"tasks[{i}].pretrain_per_fold", "per-fold pretraining needs the task to "
                          "use the pretraining data (dataset: pretrain)")  # fmt: skip
    return StudyConfig(
        name=ctx.string(raw.get("name", Path(source).stem), "name"),
        pretrain_data=pretrain_data,  # type: ignore[arg-type]
        methods=methods,
        tasks=tasks,
        pretrain=_pretrain_settings(raw, ctx),
        anatomy_ratios=ratios,
        anatomy_ratio=main_ratio,
        sweep_tasks=sweep_tasks,
        sweep_methods=sweep_methods,
        seeds=seeds or [0],
        finetune_seeds=_seed_list(raw.get("finetune_seeds"), "finetune_seeds", ctx),
        imagenet_weights=ctx.string(weights, "imagenet_weights") if weights else None,
        embed=_embed(raw, names, ctx),
        vars=dict(variables),
        source=source,
    )


def builtin_config(name: str) -> Path | None:
    """Path of a config shipped with awcl (``demo``, ``pocus``, ``hc18``), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    ref = resources.files("awcl") / "configs" / f"{stem}.yaml"
    return Path(str(ref)) if ref.is_file() else None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study config file (or a shipped config by name, e.g. ``pocus``)."""
    p = Path(path)
    if not p.is_file():
        # ``pocus`` or ``configs/pocus.yaml`` name a config shipped in awcl/configs/
        shipped = builtin_config(p.name) if p.parent.name in ("", "configs") else None
        if shipped is None:
            raise AwclError(f"{p}: study config not found")
        p = shipped
    raw = read_yaml(p, "study config")
    return parse_config(raw, source=str(p), overrides=overrides)
