"""Gathering across processes for the contrastive loss (DDP over torchrun/SLURM/spawn).

Embeddings are gathered **with gradients** (``torch.distributed.nn.functional.all_gather``:
its backward sums every process's gradient for a process's own rows), keys and pair ids
without. Each process then averages the loss over its own anchors; DDP's gradient
averaging turns the sum of those per-process means into the gradient of the mean loss over
the concatenated batch (equal anchors per process, which the samplers guarantee).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """``t: [n, ...]`` on each process -> ``[world·n, ...]`` in rank order, differentiable."""
    _, w = world()
    if w == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), dim=0)


def gather_nograd(t: torch.Tensor) -> torch.Tensor:
    """``t: [n, ...]`` -> ``[world·n, ...]`` (same n on every process), no gradient."""
    _, w = world()
    if w == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(w)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)
