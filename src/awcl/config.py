"""One configuration system for every step (pretraining, fine-tuning, studies).

A config is a dataclass: its fields, types and defaults are the schema, and its
``__post_init__`` checks values that types cannot (choices, ranges). OmegaConf does the
rest, once, for all of them:

- layers merge in order: the dataclass defaults < YAML files < a run's saved
  ``config.yaml`` < dotted overrides (``--set a.b=v``) < command-line flags;
- ``${name}`` interpolation (typed when a value is exactly ``${name}``, text inside a
  longer string);
- type checking and conversion against the field annotations, nested config dataclasses
  included (a study's tasks, data sets, inits);
- unknown keys are errors;
- a null (``extra:`` with nothing after it) on a mapping, list or nested-config field that
  does not take None means that field's default; on any other field it is an error.

Every problem becomes one :class:`~awcl.errors.AwclError` line that names the source (the
file, ``--set`` or the flag) and the key. The values checks of ``__post_init__`` (ranges,
choices) are in :mod:`awcl.config_checks`. The command-line flags of a config are generated
from the same fields (:mod:`awcl.config_flags`), so a setting is declared once.

Field metadata (set with :func:`option`) drives the flags: ``help``, ``choices``,
``flag`` (a different flag name), ``parse`` (turns typed text such as ``224x288`` into the
field's value; also applied to YAML values), ``repeat`` (a repeatable flag building a
list), ``cli=False`` (no flag) and ``internal`` (set by the program, not a config key).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import Container, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    GrammarParseError,
    InterpolationKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from awcl.config_checks import ConfigError
from awcl.config_env import ENV_DENIED, ENV_PREFIX  # noqa: F401  (re-exported; importing it registers oc.env)
from awcl.errors import AwclError

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    default_factory: Callable[[], Any] | None = None,
    choices: Iterable[str] | None = None,
    flag: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    repeat: bool = False,
    cli: bool = True,
    internal: bool = False,
) -> Any:
    """A dataclass field together with what its command-line flag needs. ``internal``: set by
    the program, not a key of a config file (:func:`build` refuses it)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "flag": flag, "parse": parse, "repeat": repeat, "cli": cli, "internal": internal}  # fmt: skip
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def config_keys(schema: type) -> dict[str, dataclasses.Field]:
    """The fields a config file may set: all but those marked ``internal``."""
    return {f.name: f for f in dataclasses.fields(schema) if not f.metadata.get("internal")}


# ------------------------------------------------------------------------ reading
def read_yaml(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """A YAML mapping from ``path``; one-line errors for a missing file, bad YAML, a non-mapping."""
    p = Path(path)
    if not p.is_file():
        raise AwclError(f"{p}: {what} file not found")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise AwclError(f"{p}: not valid YAML ({first})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise AwclError(f"{p}: expected a mapping of config keys, got {type(d).__name__}")
    return d


def split_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is YAML (:func:`yaml_value`)."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise AwclError(f"{source} {item!r}: expected NAME=VALUE")
    return name.strip(), yaml_value(value)


def dotlist(items: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``["a.b=3", "c=[1, 2]"]`` -> ``{"a": {"b": 3}, "c": [1, 2]}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, value = split_override(item, source)
        *parents, last = name.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise AwclError(f"{source} {item!r}: {p!r} is not a mapping")
        node[last] = value
    return out


def yaml_value(text: str) -> Any:
    """A value typed on the command line: YAML (``3``, ``0.5``, ``[a, b]``, ``null``), else text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ------------------------------------------------------------------------ merging
def resolve(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Merge ``(source, mapping)`` layers (later wins; nested mappings key by key, lists
    replaced) and resolve ``${...}`` interpolation."""
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(dict(v)) for _, v in layers))
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise _error(err, _source_of(err, layers)) from None


def build(schema: type[T], values: Mapping[str, Any] | None, source: str = "config", key: str = "") -> T:
    """``schema`` from plain ``values``: field ``parse`` hooks, OmegaConf's type checks and
    conversion, unknown keys rejected, then the dataclass's own ``__post_init__`` checks.

    A field holding config dataclasses (``DatasetSpec``, ``list[TaskSpec]``,
    ``dict[str, InitSpec]``, ``DatasetSpec | str`` given as a mapping) is built the same way,
    one level down: ``key`` is the path of ``values`` in the file (``tasks[0]``), so every
    error names the whole path (``my.yaml: tasks[0].folds: ...``).
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise _at(source, key, f"expected a mapping, got {type(values).__name__} {values!r}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    known = config_keys(schema)
    for k in values:
        if k not in known:
            raise AwclError(f"{source}: unknown key {_path(key, k)!r} (allowed: {', '.join(known)})")
    hints = _hints(schema)
    # ``extra:`` with nothing after it (YAML's null) on a mapping, list or config-dataclass
    # field that does not take None means its default (empty); a scalar's null stays an error
    values = {k: v for k, v in values.items() if v is not None or _takes_none(hints.get(k), known[k])}
    nested: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for k, v in values.items():
        hook = known[k].metadata.get("parse")
        if hook is not None and v is not None:
            try:
                v = hook(v)
            except AwclError as err:
                raise _located(err, source, _path(key, k)) from None
        built = _nested(hints.get(k), v, source, _path(key, k))
        if built is not _FLAT:
            nested[k] = built
        else:
            _check_container(hints.get(k), v, source, _path(key, k))
            flat[k] = list(v) if isinstance(v, tuple) else v
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), flat)
        kwargs = {k: _plain(typed, k) for k, f in fields(schema).items() if f.init and k not in nested}
    except OmegaConfBaseException as err:
        raise _error(err, source, key) from None
    except ConfigError as err:
        raise _located(err, source, key) from None
    try:
        return schema(**kwargs, **nested)
    except AwclError as err:
        raise _located(err, source, key) from None


def _takes_none(tp: Any, f: dataclasses.Field) -> bool:
    """Whether a null for field ``f`` (annotation ``tp``) is passed on as a value (to be
    checked) rather than read as "the default": only an empty mapping, list or config
    dataclass with a default is read so; a scalar's null (``init``, ``epochs``) is never
    silently replaced."""
    has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
    if tp is None or not has_default or type(None) in typing.get_args(tp):
        return True  # unknown type, a required field, or None is a value of it
    return not (typing.get_origin(tp) in (dict, list) or dataclasses.is_dataclass(tp))


_FLAT = object()  # _nested: not a value of config dataclasses; OmegaConf types it


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    """The resolved annotations of ``schema`` (none if a name in them cannot be resolved:
    then OmegaConf alone types every field)."""
    try:
        return typing.get_type_hints(schema)
    except (NameError, TypeError):
        return {}


def _nested(tp: Any, v: Any, source: str, key: str) -> Any:
    """``v`` built into the config dataclasses ``tp`` declares (one, a list, a mapping of
    them, or one of a union given as a mapping), else ``_FLAT``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, v, source, key)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(v, list):
            raise _at(source, key, f"expected a list, got {v!r}")
        return [_nested(args[0], x, source, f"{key}[{i}]") for i, x in enumerate(v)]
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        if v is not None and not isinstance(v, Mapping):
            raise _at(source, key, f"expected a mapping, got {type(v).__name__} {v!r}")
        return {k: _nested(args[1], x, source, _path(key, str(k))) for k, x in (v or {}).items()}
    if origin in (typing.Union, types.UnionType) and isinstance(v, Mapping):
        classes = [a for a in args if dataclasses.is_dataclass(a)]
        if len(classes) == 1:
            return build(classes[0], v, source, key)
    return _FLAT


def _check_container(tp: Any, v: Any, source: str, key: str) -> None:
    """A mapping or a list where the annotation wants one (OmegaConf's merge would fail
    without naming the key)."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    kinds = {typing.get_origin(a) or a for a in (typing.get_args(tp) if union else (tp,))} - {type(None)}
    if v is None or len(kinds) != 1:
        return
    if kinds == {dict} and not isinstance(v, Mapping):
        raise _at(source, key, f"expected a mapping, got {type(v).__name__} {v!r}")
    if kinds <= {list, tuple} and not isinstance(v, (list, tuple)):
        raise _at(source, key, f"expected a list, got {v!r}")


def _plain(typed: Any, k: str) -> Any:
    """Field ``k`` of a typed OmegaConf config as plain values (dataclasses built)."""
    if OmegaConf.is_missing(typed, k):
        raise ConfigError(k, "missing")
    v = typed[k]
    return OmegaConf.to_object(v) if isinstance(v, Container) else v


def compose(
    schema: type[T],
    layers: Sequence[tuple[str, Mapping[str, Any]]] = (),
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> T:
    """The config of a run: ``schema`` defaults < ``layers`` (``(source, mapping)``: YAML
    files, a saved run config) < ``overrides`` (``a.b=v``) < ``flags`` (set flags only).

    Interpolation sees every setting, defaults included (``proj_hidden: ${proj_dim}``).
    """
    all_layers: list[tuple[str, Mapping[str, Any]]] = [("defaults", defaults(schema))]
    all_layers += [(s, {str(k).replace("-", "_"): v for k, v in d.items()}) for s, d in layers]
    if overrides:
        all_layers.append(("--set", dotlist(overrides)))
    if flags:
        all_layers.append(("flags", dict(flags)))
    source = " + ".join(s for s, _ in all_layers[1:]) or "defaults"
    return build(schema, resolve(all_layers), source=source)


def defaults(schema: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in fields(schema).items():
        if f.default is not dataclasses.MISSING:
            out[name] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[name] = f.default_factory()  # type: ignore[misc]
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as plain YAML-able values (tuples as lists), for ``config.yaml``."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return v

    return plain(obj)


# ------------------------------------------------------------------------ errors
def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _source_of(err: OmegaConfBaseException, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    key = (getattr(err, "full_key", "") or "").split(".")[0].split("[")[0]
    for s, d in reversed(layers):
        if key in d:
            return s
    return layers[-1][0] if layers else "config"


def describe(err: OmegaConfBaseException) -> tuple[str, str, str | None]:
    """``(key, problem, undefined name or None)`` of an OmegaConf exception, in one line."""
    key = getattr(err, "full_key", "") or ""
    msg = _first_line(err)
    if isinstance(err, (InterpolationKeyError, InterpolationResolutionError)):
        m = re.search(r"Interpolation key '([^']+)' not found", msg)
        if m:
            return key, f"${{{m.group(1)}}} is not defined", m.group(1)
        msg = re.sub(r"^\w+ raised while resolving interpolation: ", "", msg)
    elif isinstance(err, GrammarParseError):
        msg = f"bad interpolation ({msg})"
    elif isinstance(err, ConfigKeyError):
        msg = f"unknown key ({msg})"
    elif isinstance(err, MissingMandatoryValue):
        msg = "missing"
    return key, msg, None


def _error(err: OmegaConfBaseException, source: str, key: str = "") -> AwclError:
    """An OmegaConf exception as one line: ``source: key: problem`` (``key``: the path of the
    config the exception's key is relative to)."""
    sub, msg, _ = describe(err)
    return _at(source, _path(key, sub), msg)


def _at(source: str, key: str, problem: str) -> AwclError:
    return AwclError(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _path(*parts: str) -> str:
    """``("tasks[0]", "folds")`` -> ``"tasks[0].folds"`` (empty parts skipped, ``[i]`` appended)."""
    out = ""
    for p in parts:
        if p:
            out = f"{out}{p}" if not out or p.startswith("[") else f"{out}.{p}"
    return out


def _located(err: AwclError, source: str, key: str) -> AwclError:
    """A check's error with the source and the key's path (kept if it has them already)."""
    msg = str(err)
    if msg.startswith(f"{source}:"):
        return err
    if isinstance(err, ConfigError):
        return _at(source, _path(key, err.key), err.problem)
    return _at(source, key, msg)
