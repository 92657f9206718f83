"""The views of a pretraining batch: ``PairViews`` turns a sampler's items
(:mod:`awcl.data.pairs`) into augmented uint8 views, ``collate_views`` stacks them, and
``ResumableLoader`` keeps the loader's place in the epoch in Lightning's checkpoints.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from awcl.data.augment import Augment

Item = tuple[int, int, int, int, int, int]  # (a, b, c, key, label, seed): see awcl.data.pairs


class PairViews(Dataset):
    """Turns sampler items into augmented uint8 views. Opens the frame store lazily so that
    DataLoader workers memory-map it themselves instead of pickling it."""

    def __init__(self, frames_path: str, augment: Augment, views: int = 2):
        self.frames_path, self.augment, self.views = str(frames_path), augment, views
        self._frames: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            self._frames = np.load(self.frames_path, mmap_mode="r")
        return self._frames

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_frames"] = None
        return state

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item: Item):
        a, b, c, key, label, seed = item
        rng = np.random.default_rng(seed)
        fa = np.asarray(self.frames[a])
        if c >= 0:  # USCL: augment f1, f2, f3 independently, then mix with the shared A(f2)
            lam = rng.beta(0.5, 0.5)
            a1 = self.augment(fa, rng).astype(np.float32)
            a2 = self.augment(np.asarray(self.frames[b]), rng).astype(np.float32)
            a3 = self.augment(np.asarray(self.frames[c]), rng).astype(np.float32)
            v1 = np.rint(lam * a1 + (1 - lam) * a2).astype(np.uint8)
            v2 = np.rint(lam * a3 + (1 - lam) * a2).astype(np.uint8)
            return v1, v2, key, label
        x1 = self.augment(fa, rng)
        if self.views == 1:
            return x1, None, key, label
        fb = fa if b == a else np.asarray(self.frames[b])
        return x1, self.augment(fb, rng), key, label


class ResumableLoader(DataLoader):
    """DataLoader whose position in the epoch goes into Lightning checkpoints (Lightning saves
    ``state_dict()`` of stateful loaders and restores it on a mid-epoch resume)."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)  # type: ignore[union-attr]


def collate_views(batch: list) -> dict[str, torch.Tensor]:
    """-> {'x1': uint8 [B, H, W], 'x2': uint8 [B, H, W] (two-view methods), 'key': [B], 'label': [B]}."""
    out = {
        "x1": torch.from_numpy(np.stack([b[0] for b in batch])),
        "key": torch.tensor([b[2] for b in batch], dtype=torch.long),
        "label": torch.tensor([b[3] for b in batch], dtype=torch.long),
    }
    if batch[0][1] is not None:
        out["x2"] = torch.from_numpy(np.stack([b[1] for b in batch]))
    return out
