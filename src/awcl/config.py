"""One configuration system for every step (pretraining, fine-tuning, studies).

A config is a dataclass: its fields, types and defaults are the schema, and its
``__post_init__`` checks values that types cannot (choices, ranges). OmegaConf does the
rest, once, for all of them:

- layers merge in order: the dataclass defaults < YAML files < a run's saved
  ``config.yaml`` < dotted overrides (``--set a.b=v``) < command-line flags;
- ``${name}`` interpolation (typed when a value is exactly ``${name}``, text inside a
  longer string);
- type checking and conversion against the field annotations;
- unknown keys are errors.

Every problem becomes one :class:`~awcl.errors.AwclError` line that names the source (the
file, ``--set`` or the flag) and the key. The command-line flags of a config are generated
from the same fields (:func:`add_flags`), so a setting is declared once.

Field metadata (set with :func:`option`) drives the flags: ``help``, ``choices``,
``flag`` (a different flag name), ``parse`` (turns typed text such as ``224x288`` into the
field's value; also applied to YAML values), ``repeat`` (a repeatable flag building a
list) and ``cli=False`` (no flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    GrammarParseError,
    InterpolationKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from awcl.errors import AwclError

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
) -> Any:
    """A dataclass field together with what its command-line flag needs."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "flag": flag, "parse": parse, "repeat": repeat, "cli": cli}  # fmt: skip
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


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


def dotlist(items: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``["a.b=3", "c=[1, 2]"]`` -> ``{"a": {"b": 3}, "c": [1, 2]}`` (values are YAML)."""
    for item in items:
        name, sep, _ = item.partition("=")
        if not sep or not name.strip():
            raise AwclError(f"{source} {item!r}: expected NAME=VALUE")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise AwclError(f"{source}: {_first_line(err)}") from None


def yaml_value(text: str) -> Any:
    """A value typed on the command line: YAML (``3``, ``0.5``, ``[a, b]``, ``null``), else text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ------------------------------------------------------------------------ merging
def resolve(layers: Sequence[tuple[str, Mapping[str, Any]]], root: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``(source, mapping)`` layers (later wins) and resolve ``${...}`` interpolation.

    ``root`` holds extra names interpolation may refer to (kept out of the result).
    Lists are replaced, not merged, as YAML users expect.
    """
    # nested mappings merge key by key (``pretrain: {epochs: 5}`` keeps the other keys)
    merged = _deep_merge([dict(v) for _, v in layers])
    extra = dict(root or {})
    clash = sorted(set(extra) & set(merged))
    if clash:
        raise AwclError(f"{layers[-1][0] if layers else 'config'}: {clash[0]!r} is both a variable and a key")
    cfg = OmegaConf.create({**extra, **merged}, flags={"allow_objects": False})
    try:
        out = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise _error(err, _source_of(err, layers)) from None
    for k in extra:
        out.pop(k, None)  # type: ignore[union-attr]
    return out  # type: ignore[return-value]


def _deep_merge(dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
                out[k] = _deep_merge([out[k], v])
            else:
                out[k] = v
    return out


def build(schema: type[T], values: Mapping[str, Any], source: str = "config") -> T:
    """``schema`` from plain ``values``: field ``parse`` hooks, OmegaConf's type checks and
    conversion, unknown keys rejected, then the dataclass's own ``__post_init__`` checks."""
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    known = fields(schema)
    for k in values:
        if k not in known:
            raise AwclError(f"{source}: unknown key {k!r} (allowed: {', '.join(known)})")
    parsed: dict[str, Any] = {}
    for k, v in values.items():
        hook = known[k].metadata.get("parse")
        if hook is not None and v is not None:
            try:
                v = hook(v)
            except AwclError as err:
                raise AwclError(f"{source}: {k}: {err}") from None
        parsed[k] = list(v) if isinstance(v, tuple) else v
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), parsed)
        obj = OmegaConf.to_object(typed)
    except AwclError as err:
        msg = str(err)
        raise AwclError(msg if msg.startswith(f"{source}:") else f"{source}: {msg}") from None
    except OmegaConfBaseException as err:
        raise _error(err, source) from None
    return obj  # type: ignore[return-value]


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
    all_layers: list[tuple[str, Mapping[str, Any]]] = [("defaults", _defaults(schema))]
    all_layers += [(s, {str(k).replace("-", "_"): v for k, v in d.items()}) for s, d in layers]
    if overrides:
        all_layers.append(("--set", dotlist(overrides)))
    if flags:
        all_layers.append(("flags", dict(flags)))
    values = resolve(all_layers)
    source = " + ".join(s for s, _ in all_layers[1:]) or "defaults"
    if len(all_layers) == 2:
        source = all_layers[1][0]
    return build(schema, values, source=source)


def _defaults(schema: type) -> dict[str, Any]:
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


def _error(err: OmegaConfBaseException, source: str) -> AwclError:
    """An OmegaConf exception as one line: ``source: key: problem``."""
    key = getattr(err, "full_key", "") or ""
    msg = _first_line(err)
    if isinstance(err, (InterpolationKeyError, InterpolationResolutionError)):
        m = re.search(r"Interpolation key '([^']+)' not found", msg)
        if m:
            msg = f"${{{m.group(1)}}} is not defined"
    elif isinstance(err, GrammarParseError):
        msg = f"bad interpolation ({msg})"
    elif isinstance(err, ConfigKeyError):
        msg = f"unknown key ({msg})"
    return AwclError(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")


# ------------------------------------------------------------------------ command line
def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, schema: type, skip: Iterable[str] = ()) -> None:
    """One flag per field of ``schema`` (metadata ``cli=False`` and ``skip`` excluded).

    Flags default to ``None`` (= not given), so a config file or a saved run config is not
    overridden by a flag the user did not type. Help shows the dataclass default.
    """
    skip = set(skip)
    defaults = _defaults(schema)
    for name, f in fields(schema).items():
        meta = f.metadata
        if name in skip or not meta.get("cli", True):
            continue
        d = defaults.get(name, dataclasses.MISSING)
        text = meta.get("help", "")
        kind = _kind(f)
        kw: dict[str, Any] = {"dest": name, "default": None}
        if kind == "flag":  # bool, default False: --name
            kw["action"] = "store_true"
        elif kind == "negate":  # bool, default True: --no-name
            parser.add_argument("--no-" + name.replace("_", "-"), action="store_false", **kw,
                                help=text or f"turn {name} off")  # fmt: skip
            continue
        elif kind == "optional-bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _cli_parse(meta.get("parse"), kind)
            if meta.get("choices"):
                kw["choices"] = list(meta["choices"])
            if meta.get("repeat"):
                kw["action"] = "append"
        if d not in (dataclasses.MISSING, None) and kind != "flag" and "default" not in text:
            text = f"{text} (default: {_show(d)})"
        elif d is dataclasses.MISSING:
            text = f"{text} (required)"
        parser.add_argument(flag_name(f), help=text, **kw)


def flag_values(args: argparse.Namespace, schema: type, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of ``schema`` the user gave a flag for (``None`` = not given)."""
    out: dict[str, Any] = {}
    skip = set(skip)
    for name in fields(schema):
        if name in skip:
            continue
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    return out


def _kind(f: dataclasses.Field) -> str:
    ann = str(f.type).replace(" ", "")
    if ann == "bool":
        return "negate" if f.default is True else "flag"
    if ann in ("bool|None", "Optional[bool]"):
        return "optional-bool"
    for base in ("int", "float"):
        if ann in (base, f"{base}|None", f"Optional[{base}]"):
            return base
    return "str"


def _cli_parse(parse: Callable[[Any], Any] | None, kind: str) -> Callable[[str], Any]:
    base: Callable[[str], Any] = {"int": int, "float": float}.get(kind, str)
    if parse is None:
        return base

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except AwclError as err:  # argparse's usage error (exit 2) naming the flag
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) or "none"
    if v == "":
        return "''"
    return str(v)


def unwrap(value: Any) -> Any:
    """OmegaConf containers as plain Python values."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
