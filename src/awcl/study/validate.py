"""Checks of a study config's raw (YAML-loaded) values, each failing with one line that names
the file, the key and the bad value (:class:`Ctx`); shared by :mod:`awcl.study.config`,
:mod:`awcl.study.specs` and :mod:`awcl.study.inits`."""

from __future__ import annotations

from typing import Any

from awcl.errors import AwclError


class Ctx:
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

    def unique(self, values: list[Any], key: str) -> None:
        if len(set(values)) != len(values):
            raise self.err(key, f"duplicates in {values}")


def seed_list(v: Any, key: str, ctx: Ctx) -> list[int] | None:
    """None, an integer or a non-empty list of distinct integers >= 0."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise ctx.err(key, f"expected a non-empty list of integers, got {v!r}")
    seeds = [ctx.integer(s, f"{key}[{i}]", 0) for i, s in enumerate(v)]
    ctx.unique(seeds, key)
    return seeds


def size(v: Any, key: str, ctx: Ctx) -> list[int] | None:
    """None or ``[H, W]`` (each >= 8)."""
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise ctx.err(key, f"expected [H, W], got {v!r}")
    return [ctx.integer(x, f"{key}[{i}]", 8) for i, x in enumerate(v)]
