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
from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    GrammarParseError,
    InterpolationKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from awcl.config_env import ENV_DENIED, ENV_PREFIX  # noqa: F401  (re-exported; importing it registers oc.env)
from awcl.errors import AwclError
from awcl.options import cli_type

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
) -> Any:
    """A dataclass field together with what its command-line flag needs."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "flag": flag, "parse": parse, "repeat": repeat, "cli": cli}  # fmt: skip
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def check_ranges(obj: Any, ranges: Mapping[str, tuple[float | None, float | None]],
                 strict: Iterable[str] = ()) -> None:
    """Numeric bounds of a config, checked where every source (flag, YAML, --set, study)
    meets: ``name -> (lo, hi)`` inclusive, or exclusive of ``lo`` for the names in
    ``strict`` (lr > 0). None values (``use the default``) are not checked."""
    strict = set(strict)
    for name, (lo, hi) in ranges.items():
        v = getattr(obj, name)
        if v is None or isinstance(v, bool):
            continue
        f = fields(type(obj))[name]
        if lo is not None and (v <= lo if name in strict else v < lo):
            raise AwclError(f"{flag_name(f)} {v!r}: must be {'>' if name in strict else '>='} {lo:g}")
        if hi is not None and v > hi:
            raise AwclError(f"{flag_name(f)} {v!r}: must be <= {hi:g}")


def check_choices(obj: Any) -> None:
    """Every field of ``obj`` declared with ``choices`` holds one of them (or None): the
    check the flag gets from argparse, for YAML, ``--set`` and the Python API too."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        v = getattr(obj, f.name)
        if choices and v is not None and v not in choices:
            raise AwclError(f"{flag_name(f)} {v!r} is not one of {', '.join(choices)}")


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
    source = " + ".join(s for s, _ in all_layers[1:]) or "defaults"
    return build(schema, resolve(all_layers), source=source)


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
    return key, msg, None


def _error(err: OmegaConfBaseException, source: str) -> AwclError:
    """An OmegaConf exception as one line: ``source: key: problem``."""
    key, msg, _ = describe(err)
    return AwclError(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")


# ------------------------------------------------------------------------ command line
def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, schema: type) -> None:
    """One flag per field of ``schema`` (except metadata ``cli=False``).

    Flags default to ``None`` (= not given), so a config file or a saved run config is not
    overridden by a flag the user did not type. Help shows the dataclass default.
    """
    defaults = _defaults(schema)
    for name, f in fields(schema).items():
        meta = f.metadata
        if not meta.get("cli", True):
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


def add_config_flags(parser: argparse.ArgumentParser, schema: type) -> None:
    """``--config FILE`` and ``--set KEY=VALUE`` for a command whose flags come from ``schema``."""
    name = schema.__name__
    parser.add_argument("--config", help=f"YAML file of {name} keys (${{key}} interpolation; flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value), e.g. --set seed=1; after --config, before flags")


def from_args(schema: type[T], args: argparse.Namespace, required: Mapping[str, str], *,
              cli_defaults: Mapping[str, Any] | None = None, saved: Path | None = None,
              flags: Mapping[str, Any] | None = None, ignore: Iterable[str] = ()) -> T:
    """A command's config: defaults (``cli_defaults`` over the schema's) < ``--config`` YAML
    (keys in ``ignore`` dropped) < ``saved`` (a run's config.yaml) < ``--set`` < ``flags``
    (default: the flags given). Each field of ``required`` must end up non-empty, else its
    message is the error."""
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("defaults", {**{k: "" for k in required}, **(cli_defaults or {})})]
    if args.config:
        skip = set(ignore)
        layers.append((args.config, {k: v for k, v in read_yaml(args.config).items() if k not in skip}))
    if saved is not None:
        layers.append((str(saved), read_yaml(saved)))
    cfg = compose(schema, layers, args.set, flag_values(args, schema) if flags is None else flags)
    for key, message in required.items():
        if not getattr(cfg, key):
            raise AwclError(message)
    return cfg


def flag_values(args: argparse.Namespace, schema: type) -> dict[str, Any]:
    """The fields of ``schema`` the user gave a flag for (``None`` = not given)."""
    given = {name: getattr(args, name, None) for name in fields(schema)}
    return {k: v for k, v in given.items() if v is not None}


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
    if parse is not None:
        return cli_type(parse)  # an AwclError becomes argparse's usage error naming the flag
    return {"int": int, "float": float}.get(kind, str)


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) or "none"
    if v == "":
        return "''"
    return str(v)
