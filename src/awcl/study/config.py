"""Study configuration: a YAML file naming the data, the methods, the sweep and the tasks.

A study config is read in three steps: YAML -> variables, overrides and ``${var}``
interpolation (the shared config layer, awcl.config / OmegaConf) -> dataclasses validated
here. Variables come from the file's ``vars:`` block, then the ``scales:`` preset named by
the variable ``scale`` (e.g. ``--set scale=paper``), then ``--set name=value`` (later wins).
A value that is exactly ``${name}`` takes the variable's YAML value (a number, a list,
``null``); inside a longer string the variable is pasted as text.
Every problem raises :class:`~awcl.errors.AwclError` with one line naming the file, the key
and the bad value (:mod:`awcl.study.validate`). Data sets and tasks are parsed in
:mod:`awcl.study.specs`, the ``backbones:`` and ``inits:`` axes in :mod:`awcl.study.inits`.
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

from awcl.backbones import DEFAULT_BACKBONE
from awcl.config import describe, read_yaml, split_override
from awcl.errors import AwclError
from awcl.methods import LABEL_METHODS
from awcl.study.inits import InitSpec, parse_backbones, parse_inits
from awcl.study.specs import (
    ALL_PATIENTS,
    METHODS,
    PER_FOLD,
    PRETRAIN_DATASET,
    PRETRAINED,
    PROBES,
    RECIPES,
    DatasetSpec,
    TaskSpec,
    parse_dataset,
    parse_tasks,
)
from awcl.study.validate import Ctx, seed_list
from awcl.study.validate import size as parse_size

__all__ = [
    "ALL_PATIENTS", "LABEL_METHODS", "METHODS", "PER_FOLD", "PRETRAINED", "PRETRAIN_DATASET", "PROBES",
    "RECIPES", "TOP_KEYS", "DatasetSpec", "EmbedSpec", "InitSpec", "PretrainSettings", "StudyConfig",
    "TaskSpec", "builtin_config", "compose_raw", "load_config", "parse_config",
]  # fmt: skip

TOP_KEYS = frozenset(
    ("name", "pretrain_data", "methods", "tasks", "pretrain", "anatomy_ratios", "anatomy_ratio",
     "sweep_tasks", "sweep_methods", "seeds", "finetune_seeds", "imagenet_weights", "embed",
     "scales", "backbones", "inits")
)  # fmt: skip


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
    # every method is pretrained and evaluated on each backbone (awcl.study.inits)
    backbones: list[str] = field(default_factory=lambda: [DEFAULT_BACKBONE])
    inits: dict[str, InitSpec] = field(default_factory=dict)  # weights files compared as they are

    @property
    def default_encoders(self) -> bool:
        """ResNet-18 only and no init: run names, labels and files as before the axes existed."""
        return self.backbones == [DEFAULT_BACKBONE] and not self.inits

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source", None)
        if self.default_encoders:  # written as before
            d.pop("backbones")
            d.pop("inits")
        return _drop_empty_sources(d)


def _drop_empty_sources(obj: Any) -> Any:
    """A dataset spec without ``sources`` is written as before (no ``sources: []``)."""
    if isinstance(obj, dict):
        return {k: _drop_empty_sources(v) for k, v in obj.items() if not (k == "sources" and v == [])}
    if isinstance(obj, list):
        return [_drop_empty_sources(v) for v in obj]
    return obj


_ROOT = "__study__"  # the config sits under this key; its variables beside it (no clash)


def compose_raw(raw: dict[str, Any], overrides: list[str], ctx: Ctx) -> tuple[dict[str, Any], dict[str, Any]]:
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
def _pretrain_settings(raw: dict[str, Any], ctx: Ctx) -> PretrainSettings:
    p = ctx.mapping(raw.get("pretrain"), "pretrain")
    ctx.check_keys(p, "pretrain", {"epochs", "batch_size", "size", "lr", "extra"})
    return PretrainSettings(
        epochs=ctx.integer(p.get("epochs", 10), "pretrain.epochs", 1),
        batch_size=ctx.integer(p.get("batch_size", 32), "pretrain.batch_size", 2),
        size=parse_size(p.get("size"), "pretrain.size", ctx),
        lr=ctx.number(p.get("lr", 1e-3), "pretrain.lr", 0.0),
        extra=dict(ctx.mapping(p.get("extra"), "pretrain.extra")),
    )


def _methods(raw: dict[str, Any], ctx: Ctx) -> list[str]:
    methods = ctx.str_list(raw["methods"], "methods")
    for i, m in enumerate(methods):
        ctx.choice(m, f"methods[{i}]", METHODS)
    ctx.unique(methods, "methods")
    return methods


def _ratios(raw: dict[str, Any], ctx: Ctx) -> tuple[list[float], float]:
    """The anatomy ratios swept (the main one always among them) and the main one."""
    ratios_raw = raw.get("anatomy_ratios", [0.5])
    if not isinstance(ratios_raw, list) or not ratios_raw:
        raise ctx.err("anatomy_ratios", f"expected a non-empty list, got {ratios_raw!r}")
    ratios = [ctx.number(r, f"anatomy_ratios[{i}]", 0.0, 1.0) for i, r in enumerate(ratios_raw)]
    main = ctx.number(raw.get("anatomy_ratio", ratios[len(ratios) // 2]), "anatomy_ratio", 0.0, 1.0)
    return sorted({*ratios, main}), main


def _sweep(raw: dict[str, Any], names: list[str], methods: list[str], ctx: Ctx) -> tuple[list[str] | None, list[str] | None]:
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


def _embed(raw: dict[str, Any], names: list[str], ctx: Ctx) -> EmbedSpec:
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
    ctx = Ctx(source)
    if not isinstance(raw, dict):
        raise AwclError(f"{source}: a study config must be a YAML mapping, got {type(raw).__name__}")
    raw, variables = compose_raw(raw, overrides or [], ctx)
    ctx.check_keys(raw, "", set(TOP_KEYS))
    for req in ("pretrain_data", "methods", "tasks"):
        if req not in raw:
            raise ctx.err(req, "missing")
    methods = _methods(raw, ctx)
    tasks = parse_tasks(raw, ctx)
    names = [t.name for t in tasks]
    ratios, main_ratio = _ratios(raw, ctx)
    sweep_tasks, sweep_methods = _sweep(raw, names, methods, ctx)
    seeds = seed_list(raw.get("seeds", [0]), "seeds", ctx)
    weights = raw.get("imagenet_weights")
    pretrain_data = parse_dataset(raw["pretrain_data"], "pretrain_data", ctx)
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
        finetune_seeds=seed_list(raw.get("finetune_seeds"), "finetune_seeds", ctx),
        imagenet_weights=ctx.string(weights, "imagenet_weights") if weights else None,
        embed=_embed(raw, names, ctx),
        vars=dict(variables),
        source=source,
        backbones=parse_backbones(raw, ctx),
        inits=parse_inits(raw, METHODS, ctx),
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
