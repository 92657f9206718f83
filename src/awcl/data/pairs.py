"""Pair samplers: which frames make up each sample's two views, and what key makes positives.

A batch sampler yields, per step, a list of items ``(a, b, c, key, label, seed)``:
``a``/``b`` are the frame rows of view 1 / view 2 (``b == a``: two augmentations of one frame),
``c >= 0`` marks a USCL mix (views ``λ·a + (1-λ)·b`` and ``λ·c + (1-λ)·b``), ``key`` the
positive key (-1 = none, Eq. 1), ``label`` a class for cross-entropy heads (-1 = none), ``seed``
the per-sample seed of the augmentations. Everything is drawn from
``default_rng([seed, epoch])``, so an epoch is the same on resume and on any worker count.

Under DDP every process draws the same global batches of ``batch_size · world_size`` items
and takes its own contiguous slice; the loss gathers keys and pair ids, so positives that
straddle processes still count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from awcl.data.augment import Augment
from awcl.data.store import PreparedDataset
from awcl.errors import AwclError

Item = tuple[int, int, int, int, int, int]  # (a, b, c, key, label, seed)


def _codes(values: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Strings (None/NA = missing) -> int codes (-1 missing) and the sorted vocabulary."""
    vocab = sorted({str(v) for v in values if v is not None and v == v})
    lookup = {v: i for i, v in enumerate(vocab)}
    codes = np.array([lookup.get(str(v), -1) if v is not None and v == v else -1 for v in values])
    return codes.astype(np.int64), vocab


def frame_labels(
    ds: PreparedDataset, granularity: str = "coarse", ignore: Sequence[str] = ()
) -> list[str | None]:
    """Per-frame anatomy label at a granularity (None = unlabelled or ignored).

    coarse: ``coarse_label``, else the coarse parent of ``fine_label`` through ``ds.hierarchy``.
    fine: ``fine_label`` only (a frame with only a coarse label is unlabelled at fine level).
    A frame whose coarse or fine label is in ``ignore`` (plus ``ds.ignore_labels``) is unlabelled.
    """
    if granularity not in ("coarse", "fine"):
        raise AwclError(f"granularity must be 'coarse' or 'fine', not {granularity!r}")
    skip = set(ignore) | set(ds.ignore_labels)
    hier = ds.hierarchy
    coarse = ds.manifest["coarse_label"].astype(object).where(ds.manifest["coarse_label"].notna(), None)
    fine = ds.manifest["fine_label"].astype(object).where(ds.manifest["fine_label"].notna(), None)
    out: list[str | None] = []
    for c, f in zip(coarse.tolist(), fine.tolist()):
        if c is None and f is not None:
            c = hier.get(f)
        if (c is not None and c in skip) or (f is not None and f in skip):
            out.append(None)
        else:
            out.append(c if granularity == "coarse" else f)
    return out


@dataclass
class FrameIndex:
    """Integer codes per frame row, the only thing samplers look at."""

    video: np.ndarray  # [N] int
    patient: np.ndarray  # [N] int
    label: np.ndarray  # [N] int class at the granularity, -1 = unlabelled / ignored / hidden
    classes: list[str]

    @property
    def n(self) -> int:
        return len(self.video)

    @classmethod
    def from_dataset(
        cls,
        ds: PreparedDataset,
        granularity: str = "coarse",
        ignore: Sequence[str] = (),
        hide: np.ndarray | None = None,
    ) -> FrameIndex:
        """``hide``: [N] bool rows whose labels are withheld (the monitor's held-out patients)."""
        labels = frame_labels(ds, granularity, ignore)
        code, classes = _codes(labels)
        if hide is not None:
            code = np.where(hide, -1, code)
        video, _ = _codes(ds.manifest["video_id"].tolist())
        patient, _ = _codes(ds.manifest["patient_id"].tolist())
        return cls(video=video, patient=patient, label=code, classes=classes)


def _groups(members: np.ndarray, size: int) -> list[np.ndarray]:
    return [members[i : i + size] for i in range(0, len(members), size)]


class PairBatchSampler(Sampler[list[Item]]):
    """Base: subclasses list an epoch's items as units (runs of items that should share a
    batch); units are shuffled, concatenated and cut into global batches."""

    def __init__(
        self,
        index: FrameIndex,
        batch_size: int,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
    ):
        self.index, self.batch_size, self.seed = index, int(batch_size), int(seed)
        self.world_size, self.rank = int(world_size), int(rank)
        self.epoch = 0
        self.done = 0  # batches of this epoch already trained (kept up by the engine)
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint
        # the engine points this at the trainer's epoch counter: Lightning may create the
        # epoch's iterator before any hook could call set_epoch (and only calls set_epoch on
        # batch_sampler.sampler), so the epoch is read when iteration starts
        self.epoch_source: Callable[[], int] | None = None
        if self.num_items() < self.batch_size * self.world_size:
            raise AwclError(
                f"{type(self).__name__}: only {self.num_items()} samples per epoch, fewer than one "
                f"batch ({self.batch_size} x {self.world_size} processes); lower --batch-size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """Position within the epoch, for exact mid-epoch resume."""
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["done"]))
        self.epoch, self.done = self._resume

    def num_items(self) -> int:
        return self.index.n

    def units(self, rng: np.random.Generator) -> list[list[Item]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_items() // (self.batch_size * self.world_size)

    def epoch_batches(self, epoch: int | None = None) -> list[list[Item]]:
        """This process's batches of an epoch (deterministic in seed and epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        units = self.units(rng)
        order = rng.permutation(len(units))
        flat = [it for u in order for it in units[u]]
        g = self.batch_size * self.world_size
        out = []
        for s in range(0, len(flat) - g + 1, g):
            lo = s + self.rank * self.batch_size
            out.append(flat[lo : lo + self.batch_size])
        return out

    def __iter__(self) -> Iterator[list[Item]]:
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        if self._resume is not None and self._resume[0] != self.epoch:
            self._resume = None
        skip = self._resume[1] if self._resume else 0
        self.done = skip
        yield from self.epoch_batches()[skip:]

    @staticmethod
    def _seeds(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, 2**31 - 1, size=n)


class InstanceSampler(PairBatchSampler):
    """SimCLR: every frame once, two augmentations of itself, no key."""

    def units(self, rng):
        seeds = self._seeds(rng, self.index.n)
        return [[(i, i, -1, -1, -1, int(seeds[i]))] for i in range(self.index.n)]


class AnatomySampler(PairBatchSampler):
    """AWCL (Algorithm 1). Each draw, a labelled frame keeps its label with prob ``ratio``;
    then its partner is another frame of the same class (same or other scan) and its key
    is the class. Kept frames of one class travel in groups of ``group`` so that every
    batch holds several frames per class present; the rest are self-pairs with key -1."""

    def __init__(self, index: FrameIndex, batch_size: int, ratio: float = 1.0, group: int = 4, **kw):
        if not 0.0 <= ratio <= 1.0:
            raise AwclError(f"--anatomy-ratio must be in [0, 1], not {ratio}")
        self.ratio, self.group = float(ratio), max(1, int(group))
        super().__init__(index, batch_size, **kw)
        lab = index.label
        self.members = {int(c): np.flatnonzero(lab == c) for c in np.unique(lab[lab >= 0])}

    def units(self, rng):
        lab = self.index.label
        n = self.index.n
        seeds = self._seeds(rng, n)
        keep = (lab >= 0) & (rng.random(n) < self.ratio)
        units: list[list[Item]] = [
            [(i, i, -1, -1, -1, int(seeds[i]))] for i in np.flatnonzero(~keep)
        ]
        for c, members in self.members.items():
            kept = rng.permutation(members[keep[members]])
            for grp in _groups(kept, self.group):
                unit = []
                for i in grp:
                    others = members[members != i]
                    j = int(others[rng.integers(len(others))]) if len(others) else int(i)
                    unit.append((int(i), j, -1, c, c, int(seeds[i])))
                units.append(unit)
        return units


class ScanSampler(PairBatchSampler):
    """CLPI: partner = another frame of the same scan (video or patient); key = scan id.
    Frames of a scan travel in groups of ``group`` so batches hold same-scan positives."""

    def __init__(self, index: FrameIndex, batch_size: int, by: str = "video", group: int = 4, **kw):
        if by not in ("video", "patient"):
            raise AwclError(f"CLPI scan key must be 'video' or 'patient', not {by!r}")
        self.by, self.group = by, max(1, int(group))
        super().__init__(index, batch_size, **kw)
        scan = index.video if by == "video" else index.patient
        self.scan = scan
        self.members = {int(s): np.flatnonzero(scan == s) for s in np.unique(scan)}

    def units(self, rng):
        seeds = self._seeds(rng, self.index.n)
        units = []
        for s, members in self.members.items():
            for grp in _groups(rng.permutation(members), self.group):
                unit = []
                for i in grp:
                    others = members[members != i]
                    j = int(others[rng.integers(len(others))]) if len(others) else int(i)
                    unit.append((int(i), j, -1, s, -1, int(seeds[i])))
                units.append(unit)
        return units


class VideoMixSampler(PairBatchSampler):
    """USCL: a sample is three frames of one video (f2 = every frame once per epoch, f1/f3
    random frames of its video); views ``λ·f1+(1-λ)·f2`` and ``λ·f3+(1-λ)·f2``. The CE label
    is f2's class when all three frames share it, else -1."""

    def units(self, rng):
        vid, lab = self.index.video, self.index.label
        seeds = self._seeds(rng, self.index.n)
        members = {int(v): np.flatnonzero(vid == v) for v in np.unique(vid)}
        units = []
        for i in range(self.index.n):
            m = members[int(vid[i])]
            f1, f3 = (int(x) for x in m[rng.integers(len(m), size=2)])
            y = int(lab[i]) if lab[f1] == lab[i] == lab[f3] else -1
            units.append([(f1, i, f3, -1, y, int(seeds[i]))])
        return units


class LabelledSampler(PairBatchSampler):
    """Supervised: labelled frames only, one view each, label for cross-entropy."""

    def __init__(self, index: FrameIndex, batch_size: int, **kw):
        self.rows = np.flatnonzero(index.label >= 0)
        super().__init__(index, batch_size, **kw)

    def num_items(self) -> int:
        return len(self.rows)

    def units(self, rng):
        seeds = self._seeds(rng, len(self.rows))
        lab = self.index.label
        return [[(int(i), int(i), -1, -1, int(lab[i]), int(s))] for i, s in zip(self.rows, seeds)]


# ---------------------------------------------------------------------------- dataset
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
        if c >= 0:  # USCL mix-up of three frames of one video
            lam = rng.beta(0.5, 0.5)
            fb = np.asarray(self.frames[b], dtype=np.float32)
            fc = np.asarray(self.frames[c], dtype=np.float32)
            v1 = np.rint(lam * fa + (1 - lam) * fb).astype(np.uint8)
            v2 = np.rint(lam * fc + (1 - lam) * fb).astype(np.uint8)
            return self.augment(v1, rng), self.augment(v2, rng), key, label
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
