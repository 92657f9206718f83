"""Supervised pretraining: cross-entropy on coarse or fine labels, labelled frames only."""

from __future__ import annotations

from torch import nn

from awcl.data.pairs import LabelledSampler
from awcl.methods.base import Method, cross_entropy_labelled
from awcl.models import FEATURE_DIM


class Supervised(Method):
    name = "supervised"
    granular = True
    views = 1
    needs_labels = True
    reads_labels = True

    def sampler(self, batch_size, seed, world_size, rank):
        return LabelledSampler(self.index, batch_size, seed=seed, world_size=world_size, rank=rank)

    def heads(self, in_dim: int = FEATURE_DIM) -> nn.ModuleDict:
        return nn.ModuleDict({"cls": nn.Linear(in_dim, max(2, self.num_classes))})

    def loss(self, heads, h, batch):
        logits = heads["cls"](h)
        ce = cross_entropy_labelled(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return ce, {"train_acc": acc.detach()}
