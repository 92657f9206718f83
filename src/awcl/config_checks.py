"""The value checks of config dataclasses, for their ``__post_init__`` (what types cannot say:
ranges, choices, duplicates, empty values) and ``parse`` hooks, shared by every config.

A command's config names a bad value by its flag (``--lr 0: must be > 0``). A config read only
from a file (a study's) passes ``keys=True`` and raises :class:`ConfigError` naming the key;
:func:`awcl.config.build` adds the file and the key's path above it
(``my.yaml: tasks[0].folds: must be >= 2, got 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from awcl.errors import AwclError


class ConfigError(AwclError):
    """A bad value of one key of a config (``key`` relative to the dataclass that raised it;
    ``""``: the dataclass as a whole). :func:`awcl.config.build` prefixes the source and the
    path of that dataclass."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key, self.problem = key, problem


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _items(name: str, v: Any, keys: bool) -> list[tuple[str, Any]]:
    """``(key, value)`` per element of a list value (``seeds[1]``), else of the value itself."""
    if keys and isinstance(v, (list, tuple)):
        return [(f"{name}[{i}]", x) for i, x in enumerate(v)]
    return [(name, v)]


def check_ranges(obj: Any, ranges: Mapping[str, tuple[float | None, float | None]],
                 strict: Iterable[str] = (), keys: bool = False) -> None:
    """Numeric bounds of a config, checked where every source (flag, YAML, --set, study)
    meets: ``name -> (lo, hi)`` inclusive, or exclusive of ``lo`` for the names in
    ``strict`` (lr > 0). None values (``use the default``) are not checked. ``keys``: name
    the key (and check each element of a list) instead of the flag."""
    strict = set(strict)
    for name, (lo, hi) in ranges.items():
        f = {g.name: g for g in dataclasses.fields(obj)}[name]
        for key, v in _items(name, getattr(obj, name), keys):
            if v is None or isinstance(v, bool):
                continue
            bound = None
            if lo is not None and (v <= lo if name in strict else v < lo):
                bound = f"{'>' if name in strict else '>='} {lo:g}"
            elif hi is not None and v > hi:
                bound = f"<= {hi:g}"
            if bound and keys:
                raise ConfigError(key, f"must be {bound}, got {v!r}")
            if bound:
                raise AwclError(f"{flag_name(f)} {v!r}: must be {bound}")


def check_choices(obj: Any, keys: bool = False) -> None:
    """Every field of ``obj`` declared with ``choices`` holds one of them (or None): the
    check the flag gets from argparse, for YAML, ``--set`` and the Python API too.
    ``keys``: name the key (and check each element of a list) instead of the flag."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        if not choices:
            continue
        for key, v in _items(f.name, getattr(obj, f.name), keys):
            if v is not None and v not in choices:
                if keys:
                    raise ConfigError(key, f"{v!r} is not one of {', '.join(choices)}")
                raise AwclError(f"{flag_name(f)} {v!r} is not one of {', '.join(choices)}")


def check_unique(obj: Any, names: Iterable[str]) -> None:
    """No list field of ``names`` holds a value twice (None: not checked)."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and len(set(v)) != len(v):
            raise ConfigError(name, f"duplicates in {list(v)}")


def check_filled(obj: Any, names: Iterable[str]) -> None:
    """No field of ``names`` is empty (``""``, ``[]``; None: not given, not checked)."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and len(v) == 0:
            raise ConfigError(name, "must not be empty")


def listed(*kinds: type) -> Callable[[Any], list[Any]]:
    """A ``parse`` hook: a list as it is, or one value of ``kinds`` as a one-item list
    (``methods: simclr``, ``seeds: 0``)."""

    def parse(value: Any) -> list[Any]:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, kinds):
            return [value]
        raise ConfigError("", f"expected a list, got {value!r}")

    return parse
