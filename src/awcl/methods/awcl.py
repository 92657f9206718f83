"""AWCL (Fu et al. 2022): Eq. 1-3 per sample.

A labelled anchor (kept with probability ``anatomy_ratio`` at each draw) gets another frame
of the same anatomy as its partner view and the anatomy class as its key, so every view of
that class in the (gathered) batch is a positive (Eq. 2); every other sample is a SimCLR
pair (Eq. 1). Granularity and ignored classes are applied when the FrameIndex is built.
"""

from __future__ import annotations

from awcl.data.pairs import AnatomySampler
from awcl.methods.base import Method


class AWCL(Method):
    name = "awcl"
    granular = True
    reads_labels = True

    def batch_composition(self) -> str:
        k = self.cfg.class_group
        return "random" if k <= 1 else f"kept labelled frames of one class in groups of {k}"

    def sampler(self, batch_size, seed, world_size, rank):
        return AnatomySampler(
            self.index,
            batch_size,
            ratio=self.cfg.anatomy_ratio,
            group=self.cfg.class_group,
            seed=seed,
            world_size=world_size,
            rank=rank,
        )
