"""The command-line side of the config layer (:mod:`awcl.config`): one flag per field of a
config dataclass (:func:`add_flags`, from the field's :func:`~awcl.config.option` metadata:
``help``, ``choices``, ``flag``, ``parse``, ``repeat``, ``cli=False``), ``--config FILE`` and
``--set KEY=VALUE`` (:func:`add_config_flags`), and a command's config from its arguments
(:func:`from_args`: defaults < ``--config`` < a saved run config < ``--set`` < flags)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from awcl.config import compose, defaults, fields, read_yaml
from awcl.config_checks import flag_name
from awcl.errors import AwclError
from awcl.options import cli_type

T = TypeVar("T")


def add_flags(parser: argparse.ArgumentParser, schema: type) -> None:
    """One flag per field of ``schema`` (except metadata ``cli=False``).

    Flags default to ``None`` (= not given), so a config file or a saved run config is not
    overridden by a flag the user did not type. Help shows the dataclass default.
    """
    given = defaults(schema)
    for name, f in fields(schema).items():
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        d = given.get(name, dataclasses.MISSING)
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
