"""One base for every pretraining method: how a sample's views are drawn, which key makes
positives, and which heads/loss turn encoder features into a loss.

Batch layout everywhere: a process holds B samples; two-view methods feed the encoder
``x = cat([x1, x2])`` so ``h: [2B, 512]`` with rows i and i+B the two views of sample i.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from awcl.data.pairs import FrameIndex, PairBatchSampler
from awcl.losses import masked_contrastive_loss, positive_mask
from awcl.models import FEATURE_DIM, ProjectionHead
from awcl.runtime.distributed import gather_nograd, gather_with_grad, world


class Method:
    """Subclasses set ``name``/``views`` and implement ``sampler`` (and ``loss`` if not plain
    contrastive). ``cfg`` is the PretrainConfig (only plain attributes are read)."""

    name: ClassVar[str] = ""
    views: ClassVar[int] = 2
    uses_keys: ClassVar[bool] = True  # False: pure Eq. 1 (keys ignored)
    needs_labels: ClassVar[bool] = False  # needs at least one labelled frame
    granular: ClassVar[bool] = False  # coarse vs fine labels change it (a study runs both)
    # trains on the anatomy/class labels (a study pretrains it per fold on a task's own data)
    reads_labels: ClassVar[bool] = False

    def __init__(self, cfg: Any, index: FrameIndex):
        self.cfg, self.index = cfg, index
        self.num_classes = len(index.classes)

    # -- data
    def sampler(self, batch_size: int, seed: int, world_size: int, rank: int) -> PairBatchSampler:
        raise NotImplementedError

    def batch_composition(self) -> str:
        """How a batch is put together, for summary.json and the report."""
        return "random"

    def summary(self) -> dict[str, Any]:
        """Method-specific settings recorded in summary.json."""
        return {}

    # -- model
    def heads(self, in_dim: int = FEATURE_DIM) -> nn.ModuleDict:
        """The method's heads on ``in_dim``-wide encoder features (the encoder's ``out_dim``)."""
        return nn.ModuleDict(
            {"proj": ProjectionHead(in_dim, self.cfg.proj_hidden, self.cfg.proj_dim)}
        )

    def loss(
        self, heads: nn.ModuleDict, h: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """h: [2B, 512] -> (loss, extra logs)."""
        loss = self.contrastive(heads["proj"](h), batch["key"] if self.uses_keys else None)
        return loss, {}

    def contrastive(self, z: torch.Tensor, key: torch.Tensor | None) -> torch.Tensor:
        """Eq. 1-3 over the batch gathered from every process.

        z: [2B, d] (views [x1; x2]), key: [B] per sample (-1 none) or None.
        """
        b = z.shape[0] // 2
        rank, w = world()
        z_all = gather_with_grad(z)  # [W·2B, d]
        # pair id = global sample number; rows of process r are [r·2B, (r+1)·2B)
        local = torch.arange(b, device=z.device).repeat(2)
        pair = torch.cat([local + r * b for r in range(w)])
        key_all = None
        if key is not None:
            key_all = gather_nograd(key.repeat(2))
        pos = positive_mask(pair, key_all)
        anchors = torch.arange(rank * 2 * b, (rank + 1) * 2 * b, device=z.device)
        return masked_contrastive_loss(z_all, pos, self.cfg.temperature, anchors=anchors)


def cross_entropy_labelled(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean CE over rows with label >= 0 (0 with a graph if there are none). logits: [n, C]."""
    ok = label >= 0
    if not bool(ok.any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[ok].float(), label[ok])
