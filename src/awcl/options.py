"""Parsing of option values the user types (``--size 224x288``, counts), once for the
library and the command line; ``cli_type`` turns a parser into an argparse ``type=``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from awcl.errors import AwclError

T = TypeVar("T")


class OptionError(AwclError, ValueError):
    """A malformed option value (an AwclError for the CLI, a ValueError for callers)."""


MAX_SIDE = 4096  # largest frame height/width any command accepts (documented in README)


def parse_size(value: str | Sequence[int], minimum: int = 1, what: str = "--size") -> tuple[int, int]:
    """``"224x288"`` / ``"224,288"`` (H x W) or ``(224, 288)`` -> ``(224, 288)``.

    ``minimum``: the smallest height and width the caller can work with (each call site
    keeps its own: 8 for prepared frames, 16 for pretraining crops).
    """
    try:
        if isinstance(value, (tuple, list)):
            h, w = (int(v) for v in value)
        else:
            parts = str(value).lower().replace(",", "x").split("x")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError
            h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise OptionError(f"{what} {value!r}: expected HxW, e.g. 224x288") from None
    if h < minimum or w < minimum:
        raise OptionError(f"{what} {value!r}: height and width must be at least {minimum}")
    if h > MAX_SIDE or w > MAX_SIDE:  # 100000x100000 would allocate tens of GB per frame
        raise OptionError(f"{what} {value!r}: height and width must be at most {MAX_SIDE}")
    return h, w


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be >= 1 (``--every``, ``--limit``, ``--jobs``)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return v


def cli_type(parse: Callable[[str], T], **kwargs: Any) -> Callable[[str], T]:
    """argparse ``type=`` wrapper: an AwclError becomes argparse's usage error (exit 2).
    ``kwargs`` are passed to ``parse`` (e.g. ``minimum=8``)."""

    def convert(text: str) -> T:
        try:
            return parse(text, **kwargs)
        except AwclError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names it in errors
    return convert
