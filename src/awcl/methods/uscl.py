"""USCL (Chen et al. 2021) as in its official code (github.com/983632847/USCL).

A sample is a video: a batch holds one sample per video, three distinct frames are augmented
independently and mixed into a positive pair (λ·A(f1)+(1-λ)·A(f2), λ·A(f3)+(1-λ)·A(f2),
λ ~ Beta(0.5, 0.5); see ``VideoMixSampler`` and ``PairViews``). Loss: NT-Xent on the pair plus,
for samples whose video has a label, a cross-entropy classifier on the projection output of
each view, ``uscl_ce_weight`` (official: 0.2) per view.
"""

from __future__ import annotations

from torch import nn

from awcl.data.pairs import VideoMixSampler, video_labels
from awcl.methods.base import Method, cross_entropy_labelled
from awcl.models import FEATURE_DIM


class USCL(Method):
    name = "uscl"
    uses_keys = False
    reads_labels = True  # its cross-entropy head on the labelled subset

    def sampler(self, batch_size, seed, world_size, rank):
        return VideoMixSampler(
            self.index, batch_size, rounds=self.cfg.uscl_rounds, seed=seed,
            world_size=world_size, rank=rank,
        )

    def batch_composition(self) -> str:
        return "one sample per video (no two samples of a video in a batch)"

    def summary(self) -> dict:
        label, length = video_labels(self.index)
        rounds = self.cfg.uscl_rounds if self.cfg.uscl_rounds > 0 else max(1, round(self.index.n / len(length)))
        return {
            "uscl": {
                "ce_weight": self.cfg.uscl_ce_weight,
                "ce_on": "projection output, per view",
                "rounds_per_epoch": rounds,
                "videos": len(length),
                "labelled_videos": int((label >= 0).sum()),
                "video_label": "majority of the video's labelled frames (ties: none)",
            }
        }

    def heads(self, in_dim: int = FEATURE_DIM) -> nn.ModuleDict:
        heads = super().heads(in_dim)
        if self.num_classes >= 2:
            heads["cls"] = nn.Linear(self.cfg.proj_dim, self.num_classes)
        return heads

    def loss(self, heads, h, batch):
        z = heads["proj"](h)  # [2B, proj_dim]
        ntxent = self.contrastive(z, None)
        if "cls" not in heads:
            return ntxent, {"ntxent": ntxent.detach()}
        b = z.shape[0] // 2
        logits = heads["cls"](z)
        ce1 = cross_entropy_labelled(logits[:b], batch["label"])
        ce2 = cross_entropy_labelled(logits[b:], batch["label"])
        loss = ntxent + self.cfg.uscl_ce_weight * (ce1 + ce2)
        return loss, {"ntxent": ntxent.detach(), "ce": (0.5 * (ce1 + ce2)).detach()}
