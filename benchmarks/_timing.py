"""Timing shared by the benchmarks: a model step run alone, the device synchronised."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync() -> None:
    """Wait for queued GPU work (CPU work is synchronous)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def steps_per_second(step: Callable[[], None], warmup: int, steps: int) -> float:
    """``step`` run ``warmup`` times untimed, then ``steps`` times timed."""
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - t)
