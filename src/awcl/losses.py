"""The one masked contrastive loss behind every contrastive method (Eq. 1-3 of AWCL).

Notation: 2N views, ``z: [M, d]`` with M = 2N (or the gathered batch under DDP).
``pair: [M]`` — the sample each view came from (a view and its partner share it).
``key: [M]`` — the positive-defining key (anatomy label, scan id, ...), -1 = none.

Per anchor i (Eq. 3): A(i) = {j != i : key_j == key_i >= 0}. If A(i) is empty the
positives are the partner view(s) {j != i : pair_j == pair_i} (Eq. 1, SimCLR); otherwise
they are A(i) and the anchor's loss is the mean of -log softmax over them (Eq. 2).
The denominator is always every k != i. The choice is per sample, never per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_mask(pair: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[M, M]`` positives per Eq. 3 (diagonal always False).

    pair: [M] long, key: [M] long with -1 for "no key" (or None: pure instance loss).
    """
    m = pair.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=pair.device)
    partner = (pair[:, None] == pair[None, :]) & ~eye
    if key is None:
        return partner
    anatomy = (key[:, None] == key[None, :]) & (key[:, None] >= 0) & ~eye
    has_anatomy = anatomy.any(dim=1, keepdim=True)
    return torch.where(has_anatomy, anatomy, partner)


def masked_contrastive_loss(
    z: torch.Tensor,
    pos: torch.Tensor,
    temperature: float = 0.5,
    anchors: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean over anchors of -(1/|P(i)|) sum_{p in P(i)} log softmax_{k != i}(sim(z_i, z_k)/τ)[p].

    z: [M, d] (normalised here), pos: [M, M] bool, anchors: optional [M] bool (or [A] long
    indices) of the rows to average over — under DDP each process takes its own rows of
    the gathered batch. Anchors without any positive are left out of the mean.
    Computed in float32 for stability under bf16 autocast.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):  # autocast would make z @ z.T bf16
        return _masked_contrastive_loss_fp32(z.float(), pos, temperature, anchors, reduction)


def _masked_contrastive_loss_fp32(
    z: torch.Tensor,
    pos: torch.Tensor,
    temperature: float,
    anchors: torch.Tensor | None,
    reduction: str,
) -> torch.Tensor:
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature  # [M, M]
    if anchors is not None:
        logits, pos = logits[anchors], pos[anchors]
        rows = torch.arange(logits.shape[0], device=z.device)
        cols = torch.arange(z.shape[0], device=z.device)[anchors]
    else:
        rows = cols = torch.arange(z.shape[0], device=z.device)
    self_mask = torch.zeros_like(pos)
    self_mask[rows, cols] = True
    logits = logits.masked_fill(self_mask, float("-inf"))  # k != i in the denominator
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = pos & ~self_mask
    n_pos = pos.sum(dim=1)
    # where() rather than multiply: log_prob is -inf on the diagonal and 0 * -inf = NaN
    per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp(min=1)
    valid = n_pos > 0
    if reduction == "none":
        return torch.where(valid, per_anchor, torch.full_like(per_anchor, float("nan")))
    if not bool(valid.any()):
        return z.sum() * 0.0  # keeps the graph; no anchor had a positive
    if reduction == "sum":
        return per_anchor[valid].sum()
    return per_anchor[valid].mean()


def contrastive_loss(
    z: torch.Tensor,
    pair: torch.Tensor,
    key: torch.Tensor | None = None,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Convenience: ``masked_contrastive_loss(z, positive_mask(pair, key), τ)``."""
    return masked_contrastive_loss(z, positive_mask(pair, key), temperature)
