"""USCL (Chen et al. 2021): a sample is a video; three of its frames are mixed into a
positive pair (λ·f1+(1-λ)·f2, λ·f3+(1-λ)·f2, λ ~ Beta(0.5, 0.5), done in the data workers),
NT-Xent on the pairs, plus a cross-entropy head on the encoder features of labelled samples
(weight ``uscl_ce_weight``)."""

from __future__ import annotations

from torch import nn

from awcl.data.pairs import VideoMixSampler
from awcl.methods.base import Method, cross_entropy_labelled, register
from awcl.models import FEATURE_DIM


@register
class USCL(Method):
    name = "uscl"
    uses_keys = False

    def sampler(self, batch_size, seed, world_size, rank):
        return VideoMixSampler(self.index, batch_size, seed=seed, world_size=world_size, rank=rank)

    def heads(self) -> nn.ModuleDict:
        heads = super().heads()
        if self.num_classes >= 2:
            heads["cls"] = nn.Linear(FEATURE_DIM, self.num_classes)
        return heads

    def loss(self, heads, h, batch):
        ntxent = self.contrastive(heads["proj"](h), None)
        if "cls" not in heads:
            return ntxent, {"ntxent": ntxent.detach()}
        label = batch["label"].repeat(2)
        ce = cross_entropy_labelled(heads["cls"](h), label)
        loss = ntxent + self.cfg.uscl_ce_weight * ce
        return loss, {"ntxent": ntxent.detach(), "ce": ce.detach()}

