"""Study configuration: a YAML file naming the data, the methods, the sweep and the tasks.

A study config is read in three steps: YAML -> variables, overrides and ``${var}``
interpolation (:func:`compose_raw`, OmegaConf) -> :class:`StudyConfig`, a config dataclass
typed and checked by :func:`awcl.config.build` like every other config (its data sets and
tasks in :mod:`awcl.study.specs`, its ``inits:`` in :mod:`awcl.study.inits`). Variables come
from the file's ``vars:`` block, then the ``scales:`` preset named by the variable ``scale``
(e.g. ``--set scale=paper``), then ``--set name=value`` (later wins). A value that is exactly
``${name}`` takes the variable's YAML value (a number, a list, ``null``); inside a longer
string the variable is pasted as text. Every problem raises :class:`~awcl.errors.AwclError`
with one line naming the file, the key and the bad value.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from awcl.backbones import DEFAULT_BACKBONE
from awcl.config import build, config_keys, describe, option, read_yaml, split_override
from awcl.config_checks import (
    ConfigError,
    check_choices,
    check_filled,
    check_ranges,
    check_unique,
    listed,
)
from awcl.errors import AwclError
from awcl.methods import LABEL_METHODS
from awcl.study.inits import InitSpec, backbone_name, named
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
    dataset_value,
)

__all__ = [
    "ALL_PATIENTS", "LABEL_METHODS", "METHODS", "PER_FOLD", "PRETRAINED", "PRETRAIN_DATASET", "PROBES",
    "RECIPES", "TOP_KEYS", "DatasetSpec", "EmbedSpec", "InitSpec", "PretrainSettings", "StudyConfig",
    "TaskSpec", "builtin_config", "compose_raw", "load_config", "parse_config",
]  # fmt: skip


@dataclass
class PretrainSettings:
    """Settings shared by every pretraining run (the method fills in the rest).

    ``extra`` is passed through to :class:`awcl.train.pretrain.PretrainConfig` as is.
    """

    epochs: int = option(10, help="pretraining epochs")
    batch_size: int = option(32, help="samples per step")
    size: list[int] | None = option(None, help="[H, W]; null keeps the dataset's size")
    lr: float = option(1e-3, help="learning rate")
    extra: dict[str, Any] = option(default_factory=dict, help="further PretrainConfig settings")

    def __post_init__(self) -> None:
        if self.size is not None and len(self.size) != 2:
            raise ConfigError("size", f"expected [H, W], got {self.size!r}")
        check_ranges(self, {"epochs": (1, None), "batch_size": (2, None), "size": (8, None), "lr": (0, None)},
                     keys=True)  # fmt: skip


@dataclass
class EmbedSpec:
    """t-SNE of penultimate features per method, on one task's data (default: the first)."""

    task: str | None = option(None, help="the task whose data is embedded (default: the first)")
    max_samples: int = option(500, help="frames embedded at most")
    enabled: bool = option(True, help="false: no t-SNE")

    def __post_init__(self) -> None:
        check_ranges(self, {"max_samples": (10, None)}, keys=True)


def _or_none(v: Any) -> Any:
    return v or None


@dataclass
class StudyConfig:
    name: str = option(help="the study's name (default: the file's name)")
    pretrain_data: DatasetSpec = option(parse=dataset_value, help="the pretraining data")
    methods: list[str] = option(parse=listed(str), choices=METHODS, help="the methods compared")
    tasks: list[TaskSpec] = option(help="the downstream tasks")
    pretrain: PretrainSettings = option(default_factory=PretrainSettings, help="pretraining settings")
    anatomy_ratios: list[float] = option(default_factory=lambda: [0.5], parse=listed(int, float),
                                         help="the anatomy ratios swept")  # fmt: skip
    # the ratio used in the main tables (default: the middle one listed)
    anatomy_ratio: float | None = option(None, help="the anatomy ratio of the main tables")
    sweep_tasks: list[str] | None = option(None, parse=listed(str), help="tasks the ratio sweep is evaluated on (null: all)")
    sweep_methods: list[str] | None = option(None, parse=listed(str), help="awcl methods swept over ratios (null: all listed)")
    seeds: list[int] = option(default_factory=lambda: [0], parse=listed(int), help="pretraining seeds")
    # downstream seeds (fold split, head init, sampling) per encoder; None: the encoder's seed
    finetune_seeds: list[int] | None = option(None, parse=listed(int), help="downstream seeds (null: the encoder's)")
    imagenet_weights: str | None = option(None, parse=_or_none, help="torchvision ImageNet weights file")
    embed: EmbedSpec = option(default_factory=EmbedSpec, help="the t-SNE figure")
    vars: dict[str, Any] = option(default_factory=dict, internal=True, help="the variables, resolved")
    source: str = option("", internal=True, help="the file it came from (for messages)")
    # every method is pretrained and evaluated on each backbone (None: ResNet-18 only)
    backbones: list[str] | None = option(None, parse=listed(str), help="the backbones every method is run on")
    inits: dict[str, InitSpec] = option(default_factory=dict, parse=named, help="weights files compared as they are")

    def __post_init__(self) -> None:
        check_filled(self, ("name", "methods", "tasks", "anatomy_ratios", "seeds", "finetune_seeds",
                            "sweep_tasks", "sweep_methods"))  # fmt: skip
        check_choices(self, keys=True)  # methods
        check_unique(self, ("methods", "seeds", "finetune_seeds"))
        check_ranges(self, {"anatomy_ratios": (0, 1), "anatomy_ratio": (0, 1), "seeds": (0, None),
                            "finetune_seeds": (0, None)}, keys=True)  # fmt: skip
        if self.anatomy_ratio is None:
            self.anatomy_ratio = self.anatomy_ratios[len(self.anatomy_ratios) // 2]
        self.anatomy_ratios = sorted({*self.anatomy_ratios, self.anatomy_ratio})  # the main one among them
        self._check_tasks()
        self._check_backbones()

    def _check_tasks(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError("tasks", f"task names must be unique, got {names}")
        for i, t in enumerate(self.tasks):
            if t.pretrain_per_fold != "off" and t.dataset not in (PRETRAIN_DATASET, self.pretrain_data):
                raise ConfigError(f"tasks[{i}].pretrain_per_fold", "per-fold pretraining needs the task to use the "
                                  "pretraining data (dataset: pretrain)")  # fmt: skip
        for i, s in enumerate(self.sweep_tasks or []):
            if s not in names:
                raise ConfigError(f"sweep_tasks[{i}]", f"{s!r} is not a task name ({', '.join(names)})")
        for i, m in enumerate(self.sweep_methods or []):
            if not m.startswith("awcl-") or m not in self.methods:
                raise ConfigError(f"sweep_methods[{i}]", f"{m!r} is not an awcl method listed in methods")
        if self.embed.task is not None and self.embed.task not in names:
            raise ConfigError("embed.task", f"{self.embed.task!r} is not a task name ({', '.join(names)})")

    def _check_backbones(self) -> None:
        if self.backbones is None:
            self.backbones = [DEFAULT_BACKBONE]
            return
        check_filled(self, ("backbones",))
        self.backbones = [backbone_name(b, f"backbones[{i}]") for i, b in enumerate(self.backbones)]
        check_unique(self, ("backbones",))
        # the single-backbone way (a backbone in extra:) would contradict the axis
        places = [("pretrain.extra", self.pretrain.extra)]
        places += [(f"tasks[{i}].extra", t.extra) for i, t in enumerate(self.tasks)]
        for where, extra in places:
            if extra.get("backbone") is not None:
                raise ConfigError(f"{where}.backbone", "the study has backbones: (every method is run on each); "
                                  "drop this one")  # fmt: skip

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


# the top-level keys of a study file (``--set KEY=...`` sets one; any other name a variable)
TOP_KEYS = frozenset(config_keys(StudyConfig)) | {"scales"}


def _drop_empty_sources(obj: Any) -> Any:
    """A dataset spec without ``sources`` is written as before (no ``sources: []``)."""
    if isinstance(obj, dict):
        return {k: _drop_empty_sources(v) for k, v in obj.items() if not (k == "sources" and v == [])}
    if isinstance(obj, list):
        return [_drop_empty_sources(v) for v in obj]
    return obj


_ROOT = "__study__"  # the config sits under this key; its variables beside it (no clash)


def compose_raw(raw: dict[str, Any], overrides: list[str], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Variables, scale preset and ``--set`` overrides, then ``${name}`` interpolation
    (awcl.config / OmegaConf). Returns the resolved config and its variables.

    ``--set name=value`` sets a variable (or a top-level key such as ``seeds=[0,1]``), and
    ``a.b=value`` / ``tasks.0.epochs=70`` a nested key; values are YAML.
    """
    raw = copy.deepcopy(raw)
    variables = dict(_mapping(raw.pop("vars", None), "vars", source))
    scales = _mapping(raw.pop("scales", None), "scales", source)
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
            raise AwclError(f"{source}: scale: {name!r} is not one of the scales: {', '.join(map(str, scales))}"
                            " (set it under vars: or with --set scale=NAME)")  # fmt: skip
        preset = _mapping(scales[name], f"scales.{name}", source)
        variables.update({k: v for k, v in preset.items() if k not in given})
    try:  # create() already parses every ${...}: a malformed one fails here
        tree = OmegaConf.create({**variables, _ROOT: raw})
    except OmegaConfBaseException as err:
        key, msg, _ = describe(err)
        raise AwclError(f"{source}: {key.removeprefix(_ROOT).lstrip('.') or 'vars'}: {msg}") from None
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
        raise AwclError(f"{source}: {key.removeprefix(_ROOT).lstrip('.') or 'vars'}: {msg}") from None
    return resolved[_ROOT], {k: resolved[k] for k in variables}  # type: ignore[index]


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is not None and not isinstance(value, dict):
        raise AwclError(f"{source}: {key}: expected a mapping, got {type(value).__name__} {value!r}")
    return value or {}


def parse_config(raw: Any, source: str = "<config>", overrides: list[str] | None = None) -> StudyConfig:
    """Validate a raw (YAML-loaded) config; ``overrides`` are ``--set`` items."""
    if not isinstance(raw, dict):
        raise AwclError(f"{source}: a study config must be a YAML mapping, got {type(raw).__name__}")
    raw, variables = compose_raw(raw, overrides or [], source)
    raw.setdefault("name", Path(source).stem)
    cfg = build(StudyConfig, raw, source)
    cfg.vars, cfg.source = dict(variables), source
    return cfg


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
