"""Per-step learning-rate factors shared by pretraining and the downstream protocols.

A factor is a function ``step -> multiplier of the peak lr`` for ``torch.optim.lr_scheduler.
LambdaLR`` stepped once per optimiser step, over the run's real number of steps (Lightning's
``trainer.estimated_stepping_batches``), so a 600-step run warms up and decays as a 6,000-step
one does, only faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("constant", "warmup-cosine")


def warmup_steps(share: float, total_steps: int, cap: int | None = None) -> int:
    """Steps of the linear ramp: ``ceil(share · total)`` (at least 1 when share > 0), capped."""
    if share <= 0:
        return 0
    w = max(1, math.ceil(share * total_steps))
    return min(cap, w) if cap is not None else w


def warmup_cosine(total_steps: int, warmup: int, cosine: bool = True) -> Callable[[int], float]:
    """``step -> factor``: a linear ramp from ``1/(warmup+1)`` to 1 over ``warmup`` steps, then
    (``cosine``) a half cosine from 1 to 0 at ``total_steps``, else 1."""
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if not cosine:
            return 1.0
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return factor
