"""SimCLR: two augmentations of one frame, Eq. 1 only (labels ignored)."""

from __future__ import annotations

from awcl.data.pairs import InstanceSampler
from awcl.methods.base import Method


class SimCLR(Method):
    name = "simclr"
    uses_keys = False

    def sampler(self, batch_size, seed, world_size, rank):
        return InstanceSampler(self.index, batch_size, seed=seed, world_size=world_size, rank=rank)
