"""CLPI: contrastive learning with patient information. The partner view is another frame
of the same scan (video, or patient with ``clpi_by='patient'``); positives = same scan id."""

from __future__ import annotations

from awcl.data.pairs import ScanSampler
from awcl.methods.base import Method


class CLPI(Method):
    name = "clpi"

    def batch_composition(self) -> str:
        k = self.cfg.class_group
        return "random" if k <= 1 else f"frames of one scan in groups of {k}"

    def sampler(self, batch_size, seed, world_size, rank):
        return ScanSampler(
            self.index,
            batch_size,
            by=self.cfg.clpi_by,
            group=self.cfg.class_group,
            seed=seed,
            world_size=world_size,
            rank=rank,
        )
