"""Optimisers and step schedules of the downstream protocols, in PyTorch's semantics.

The paper's presets come from TensorFlow-era code. Copied literally into PyTorch they do
something else:

- ``torch.optim.RMSprop`` starts its square average at zero without bias correction, so its
  first update is ``lr · g / sqrt((1-α) g²) = 10 · lr`` per weight (α = 0.99), and momentum
  0.9 multiplies that. That wipes a pretrained encoder in a few steps (measured on HC18:
  Dice 0.08). TensorFlow's RMSProp starts the square average at **one** and puts ε inside
  the root; :class:`RMSpropTF` does the same, so the first update is about ``lr · g``.
- Milestones given in epochs of a 70- or 200-epoch schedule collapse in a short run; here
  they are fractions of the run's real number of optimiser steps.
- Every preset warms up linearly over its first steps (5 %, at most 500), and BatchNorm
  weights and biases get no weight decay (they are scale-free or offsets: decaying them only
  shrinks what the network learned).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from awcl.runtime import schedule

OPTIMIZERS = ("sgd", "rmsprop_tf", "rmsprop_torch", "adam")


@dataclass
class Optim:
    """Optimiser and step schedule of a protocol (from a paper preset).

    ``milestones`` are fractions of the run's optimiser steps where the learning rate is
    multiplied by ``gamma``; ``warmup`` is the fraction of the steps spent ramping it up
    linearly (capped at ``warmup_max`` steps).
    """

    name: str  # one of OPTIMIZERS
    lr: float
    momentum: float
    weight_decay: float
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    warmup: float = 0.05
    warmup_max: int = 500
    encoder_lr_scale: float = 1.0  # the pretrained encoder's lr relative to the head's
    cosine: bool = False  # after warmup, decay to zero along a half cosine over the run


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow defines it (``tf.compat.v1.train.RMSPropOptimizer``).

    Per weight, with gradient ``g`` (plus ``weight_decay · p``)::

        ms  = rho · ms + (1 - rho) · g²          # ms starts at 1, not 0
        mom = momentum · mom + lr · g / sqrt(ms + eps)
        p  -= mom

    The first update is ``lr · g / sqrt(rho + (1-rho) g²)``: about ``lr · g`` for the small
    gradients of a network, never the ``10 · lr`` of ``torch.optim.RMSprop``'s first step.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.9, momentum: float = 0.0,
                 eps: float = 1e-10, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, eps=eps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, mu, eps, wd = (group[k] for k in ("lr", "rho", "momentum", "eps", "weight_decay"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(rho).addcmul_(g, g, value=1 - rho)
                step = g / ms.add(eps).sqrt_()
                if mu > 0:
                    mom.mul_(mu).add_(step, alpha=lr)
                    p.sub_(mom)
                else:
                    p.sub_(step, alpha=lr)
        return loss


def param_groups(model: nn.Module, weight_decay: float, lr: float = 1.0,
                 encoder_lr_scale: float = 1.0, encoder: nn.Module | None = None) -> list[dict]:
    """Trainable parameters in groups: weights of conv/linear layers get ``weight_decay``;
    normalisation weights and every bias (1-d tensors) get none. Parameters of ``encoder``
    (a sub-module of ``model``, passed by the caller: no attribute name is assumed; None =
    no pretrained part) train at ``lr · encoder_lr_scale``, the rest at ``lr``. Each group is
    named ``"encoder"`` or ``"head"`` (its ``name`` key)."""
    in_enc = {id(q) for q in encoder.parameters()} if encoder is not None else set()
    groups: dict[tuple[bool, bool], dict] = {}  # (decays, in encoder) -> group
    for q in model.parameters():
        if not q.requires_grad:
            continue
        decays, is_enc = q.ndim > 1, id(q) in in_enc
        g = groups.setdefault((decays, is_enc), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * (encoder_lr_scale if is_enc else 1.0), "name": "encoder" if is_enc else "head"})  # fmt: skip
        g["params"].append(q)
    return list(groups.values())


def head_lr(opt: torch.optim.Optimizer) -> float:
    """The current lr of the head (the groups :func:`param_groups` names ``"head"``; the
    largest lr when none is named): what the preset's ``lr`` sets, whatever the encoder's scale."""
    named = [g["lr"] for g in opt.param_groups if g.get("name") == "head"]
    return float(max(named or [g["lr"] for g in opt.param_groups]))


def build_optimizer(model: nn.Module, o: Optim, encoder: nn.Module | None = None) -> torch.optim.Optimizer:
    """The preset's optimiser over ``model``; ``encoder`` (a sub-module) trains at
    ``o.lr · o.encoder_lr_scale`` (see :func:`param_groups`)."""
    groups = param_groups(model, o.weight_decay, o.lr, o.encoder_lr_scale, encoder)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "rmsprop_tf":
        return RMSpropTF(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "rmsprop_torch":  # PyTorch's own (square average from zero): for comparison
        return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    raise ValueError(f"unknown optimizer {o.name!r} (choose from {', '.join(OPTIMIZERS)})")


def warmup_steps(o: Optim, total_steps: int) -> int:
    return schedule.warmup_steps(o.warmup, total_steps, cap=o.warmup_max)


def lr_factor(o: Optim, total_steps: int):
    """``step -> factor`` of the base lr: linear warmup from ``1/(w+1)``, then ``gamma`` at
    each milestone (a fraction of ``total_steps``, so a 2-epoch run decays as a 70-epoch one)."""
    w = warmup_steps(o, total_steps)
    marks = sorted(max(w + 1, round(f * total_steps)) for f in o.milestones if 0 < f < 1)

    ramp = schedule.warmup_cosine(total_steps, w, cosine=o.cosine)

    def factor(step: int) -> float:
        return ramp(step) * o.gamma ** sum(step >= m for m in marks)

    return factor


def build_schedule(opt: torch.optim.Optimizer, o: Optim, total_steps: int):
    """A per-step ``LambdaLR`` over the run's ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o, max(1, int(total_steps))))
