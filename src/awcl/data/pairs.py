"""Pair samplers: which frames make up each sample's two views, and what key makes positives.

A batch sampler yields, per step, a list of items ``(a, b, c, key, label, seed)``:
``a``/``b`` are the frame rows of view 1 / view 2 (``b == a``: two augmentations of one frame),
``c >= 0`` marks a USCL mix (views ``λ·A(a) + (1-λ)·A(b)`` and ``λ·A(c) + (1-λ)·A(b)``, A = an
independent augmentation of each frame, A(b) shared), ``key`` the
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
from torch.utils.data import Sampler

from awcl.data.store import GRANULARITIES, PreparedDataset
from awcl.data.views import (  # noqa: F401  (PairViews, ResumableLoader, collate_views: re-exported)
    Item,
    PairViews,
    ResumableLoader,
    collate_views,
)
from awcl.errors import AwclError


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
    if granularity not in GRANULARITIES:
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
        if self._resume is not None:
            ep, done = self._resume
            if done >= len(self.epoch_batches(ep)):  # saved after the epoch's last batch
                ep, done = self._resume = (ep + 1, 0)
            if ep > self.epoch:
                # on a resume Lightning makes the iterator (and loader workers draw from it at
                # once) before it counts the checkpoint's epoch as finished: the checkpoint wins
                self.epoch = ep
            elif ep != self.epoch:
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
    is the class; the rest are self-pairs with key -1. ``group`` 1 (default): every sample is
    placed independently (random batches, as in the paper); ``group`` k > 1: kept frames of
    one class travel in groups of k, so every batch holds several frames per class present."""

    def __init__(self, index: FrameIndex, batch_size: int, ratio: float = 1.0, group: int = 1, **kw):
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
    ``group`` k > 1: frames of a scan travel in groups of k so batches hold more same-scan
    positives than the partner; 1 (default): random batches."""

    def __init__(self, index: FrameIndex, batch_size: int, by: str = "video", group: int = 1, **kw):
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


def video_labels(index: FrameIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per video (code 0..V-1): its label and its frame count.

    label: [V] int, the most frequent label among the video's labelled frames; -1 when it
    has none or the top two labels tie (USCL assumes one class per video; a tie has none).
    """
    nv = int(index.video.max()) + 1 if index.n else 0
    k = max(1, len(index.classes))
    lab = index.label >= 0
    counts = np.zeros((nv, k), dtype=np.int64)
    np.add.at(counts, (index.video[lab], index.label[lab]), 1)
    top = counts.argmax(1)
    srt = np.sort(counts, axis=1)
    tie = (srt[:, -1] == srt[:, -2]) if k > 1 else np.zeros(nv, dtype=bool)
    label = np.where((srt[:, -1] > 0) & ~tie, top, -1)
    return label.astype(np.int64), np.bincount(index.video, minlength=nv)


class VideoMixSampler(PairBatchSampler):
    """USCL as in its official code: the unit is a video. A global batch holds one sample per
    video (never two of one video, so no same-video negatives); an epoch is ``rounds``
    passes over the videos in a fresh random order, each cut into full batches (the few
    videos left over differ from pass to pass). A sample draws three distinct frames f1, f2,
    f3 of its video, uniformly; ``PairViews`` augments each independently and mixes them into
    ``λ·A(f1)+(1-λ)·A(f2)`` and ``λ·A(f3)+(1-λ)·A(f2)``. Videos of two frames give the two
    frames as views, of one frame two augmentations of it. The label is the video's
    (``video_labels``), for the classifier head.

    ``rounds`` 0 = auto: about as many samples per epoch as frames (mean frames per video
    passes), so an epoch costs what it costs the frame-based methods; 1 = the official
    code's epoch. Fewer videos than one global batch is an error (a smaller batch would
    silently change the number of negatives).
    """

    def __init__(self, index: FrameIndex, batch_size: int, rounds: int = 0, **kw):
        self.vlabel, self.vlen = video_labels(index)
        nv = len(self.vlen)
        g = int(batch_size) * int(kw.get("world_size", 1))
        if nv < g:
            raise AwclError(
                f"uscl: a batch holds one sample per video, but the data has only {nv} videos, "
                f"fewer than one batch ({batch_size} x {kw.get('world_size', 1)} processes); "
                f"lower --batch-size to at most {nv // int(kw.get('world_size', 1))}"
            )
        self.rounds = int(rounds) if rounds and rounds > 0 else max(1, round(index.n / nv))
        self.per_round = nv // g  # global batches per pass over the videos
        # rows grouped by video: video v owns order[start[v] : start[v] + vlen[v]]
        self.order = np.argsort(index.video, kind="stable")
        self.start = np.concatenate([[0], np.cumsum(self.vlen)[:-1]])
        super().__init__(index, batch_size, **kw)

    def num_items(self) -> int:
        return self.rounds * self.per_round * self.batch_size * self.world_size

    def draw(self, videos: np.ndarray, rng: np.random.Generator) -> list[Item]:
        """One sample per entry of ``videos`` ([n] video codes): three distinct frames each."""
        n = len(videos)
        length = self.vlen[videos]
        u = rng.random((3, n))
        # three distinct positions, uniform over ordered triples (where the video has 3)
        i1 = (u[0] * length).astype(np.int64)
        i2 = (u[1] * np.maximum(length - 1, 1)).astype(np.int64)
        i2 += i2 >= i1
        i3 = (u[2] * np.maximum(length - 2, 1)).astype(np.int64)
        lo, hi = np.minimum(i1, i2), np.maximum(i1, i2)
        i3 += i3 >= lo
        i3 += i3 >= hi
        start = self.start[videos]
        f1 = self.order[start + i1]
        f2 = np.where(length >= 2, self.order[start + np.minimum(i2, length - 1)], f1)
        f3 = np.where(length >= 3, self.order[start + np.minimum(i3, length - 1)], -1)
        seeds = self._seeds(rng, n)
        label = self.vlabel[videos]
        # item (a, b, c): f1, f2 (the shared frame), f3; c = -1 for videos of fewer than 3
        return [
            (int(a), int(b), int(c), -1, int(y), int(sd))
            for a, b, c, y, sd in zip(f1, f2, f3, label, seeds)
        ]

    def units(self, rng):
        g = self.batch_size * self.world_size
        units = []
        for _ in range(self.rounds):
            perm = rng.permutation(len(self.vlen))[: self.per_round * g]
            items = self.draw(perm, rng)
            units += [items[s : s + g] for s in range(0, len(items), g)]
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
