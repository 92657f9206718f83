"""``awcl finetune``: configuration, paper presets, data selection, and the run directory.

``finetune(cfg)`` runs every fold of a classification or segmentation protocol, writes the
run directory atomically (temporary sibling renamed on success) and returns the metrics dict
that it also writes to ``metrics.json`` (schema in docs/finetune.md).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import platform
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import yaml

from awcl import _compat  # noqa: F401
from awcl.data.store import PreparedDataset, open_dataset
from awcl.errors import AwclError, DataError
from awcl.evaluate.augment import AugmentConfig
from awcl.evaluate.fit import Engine
from awcl.evaluate.splits import Fold, check_classes, fixed_split, kfold_splits
from awcl.train.precision import choose, resolve_accelerator
from awcl.train.trainer import is_global_zero

log = logging.getLogger(__name__)

TASKS = ("classify", "segment")
PROTOCOLS = ("full", "partial", "knn", "linear-probe")
PROBES = ("knn", "linear-probe")  # frozen-feature probes (scikit-learn; awcl.evaluate.probe)


@dataclass(frozen=True)
class Preset:
    """Optimiser, schedule, head and augmentation of one paper protocol."""

    optimizer: str  # "sgd" | "rmsprop"
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    milestones: tuple[int, ...]
    lr_gamma: float
    augment: AugmentConfig
    head: str | None = None  # classification head of the protocol (None: segmentation)
    iterations: int | None = None  # a schedule given in steps (used unless --epochs is set)


PRESETS: dict[str, Preset] = {
    # Task I: full fine-tuning with the SonoNet-style head of the paper's [4] (paper: SGD lr
    # 0.01, 70 epochs, x0.1 at 30 and 55; flips, +-10 degree rotation, gamma, brightness).
    "task1": Preset(
        "sgd", 0.01, 0.9, 5e-4, 16, 70, (30, 55), 0.1,
        AugmentConfig(hflip=True, rotate_deg=10, gamma=(0.8, 1.25), brightness=0.1),
        head="sononet",
    ),
    # Task II: two FC layers (paper: SGD lr 0.1, 200 epochs, x0.1 at 150; +-30 degree
    # rotation, flip, Gaussian noise, shear <= 0.2).
    "task2": Preset(
        "sgd", 0.1, 0.9, 5e-4, 16, 200, (150,), 0.1,
        AugmentConfig(hflip=True, rotate_deg=30, noise_std=0.03, shear=0.2),
        head="fc2",
    ),
    # Task III: segmentation (paper: RMSprop lr 1e-3, momentum 0.9, wd 1e-3, 50k iterations;
    # scaling, shifts, rotation, flips). ``epochs`` is the fallback when iterations are off.
    "task3": Preset(
        "rmsprop", 1e-3, 0.9, 1e-3, 16, 50, (), 0.1,
        AugmentConfig(hflip=True, rotate_deg=15, scale=(0.9, 1.1), shift=0.1),
        iterations=50_000,
    ),
}


@dataclass
class FinetuneConfig:
    """Everything one downstream run needs; written to ``config.yaml`` in the run directory."""

    data: str
    out: str
    init: str = "random"
    task: str = "classify"  # classify | segment
    protocol: str = "full"  # full | partial (encoder frozen)
    head: str | None = None  # linear | fc2 | sononet; None = the preset's (task1 sononet, task2 fc2)
    preset: str | None = None  # task1 | task2 | task3 (default: task1 / task3 by task)
    label: str = "coarse"  # coarse | fine | any manifest column
    classes: list[str] | None = None  # e.g. ["covid", "pneumonia=pneumonia+viral", "regular"]
    folds: int = 3
    split: str = "kfold"  # kfold | fixed (manifest column ``split``)
    group: str = "patient_id"  # grouping column: no group on both sides of a split
    val_fraction: float = 0.2
    epochs: int | None = None  # overrides the preset's epochs (and its iterations)
    batch_size: int | None = None
    lr: float | None = None
    size: tuple[int, int] | None = None  # (H, W) to resize to; None = prepared size
    max_per_video: int | None = None  # keep at most this many frames per video (evenly spaced)
    train_patients: int | None = None  # label efficiency: fit on n patients of each training part
    dice_loss: bool = False  # segmentation: CE + soft Dice
    seed: int = 0
    threads: int | None = None
    # engine (awcl.train.trainer / awcl.train.precision)
    precision: str = "auto"  # auto: the fastest safe precision for this hardware
    channels_last: bool | None = None  # None: with the precision choice
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: str = "1"  # devices for training (>1: DDP, see docs/finetune.md)
    strategy: str = "auto"
    progress: bool = False  # Lightning progress bar per fold
    keep_checkpoints: bool = False  # keep checkpoints/fold<k>/best.ckpt (best validation epoch)
    bootstrap: int = 1000  # patient-level bootstrap resamples for the 95% intervals (0: none)

    def resolved_preset(self) -> Preset:
        name = self.preset or ("task3" if self.task == "segment" else "task1")
        if name not in PRESETS:
            raise AwclError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        p = PRESETS[name]
        epochs = self.epochs or p.epochs
        milestones = tuple(
            sorted({max(1, round(m * epochs / p.epochs)) for m in p.milestones if m < p.epochs})
        )
        return replace(
            p,
            epochs=epochs,
            batch_size=self.batch_size or p.batch_size,
            lr=self.lr or p.lr,
            milestones=milestones,
            iterations=p.iterations if self.epochs is None else None,
        )

    @property
    def resolved_head(self) -> str:
        """The classification head: as given, else the preset's, else linear."""
        return self.head or self.resolved_preset().head or "linear"

    def validate(self) -> None:
        if self.task not in TASKS:
            raise AwclError(f"--task must be one of {', '.join(TASKS)} (got {self.task!r})")
        if self.protocol not in PROTOCOLS:
            raise AwclError(f"--protocol must be one of {', '.join(PROTOCOLS)} (got {self.protocol!r})")
        from awcl.evaluate.heads import HEADS

        if self.task == "classify" and self.resolved_head not in HEADS:
            raise AwclError(f"--head must be one of {', '.join(HEADS)} (got {self.head!r})")
        if self.protocol in PROBES and self.task != "classify":
            raise AwclError(f"--protocol {self.protocol} is a classification probe (got --task {self.task})")
        if self.split not in ("kfold", "fixed"):
            raise AwclError(f"--split must be kfold or fixed (got {self.split!r})")
        if self.epochs is not None and self.epochs < 1:
            raise AwclError("--epochs must be >= 1")
        self.resolved_preset()

    def engine(self, size: tuple[int, int]) -> Engine:
        """Device, precision (chosen for this hardware at frame ``size``) and trainer options."""
        accelerator = resolve_accelerator(self.accelerator)
        choice = choose(self.precision, accelerator, size, channels_last=self.channels_last)
        return Engine(choice, accelerator, self.devices, self.strategy, self.progress,
                      self.keep_checkpoints)


# ---------------------------------------------------------------------------- helpers
def subsample_per_video(m: pd.DataFrame, rows: np.ndarray, k: int | None) -> np.ndarray:
    """At most ``k`` evenly spaced frames of each video (keeps long videos from dominating)."""
    if not k:
        return rows
    keep = []
    for _, idx in m.iloc[rows].groupby("video_id", sort=False).indices.items():
        r = rows[idx]
        if len(r) > k:
            r = r[np.linspace(0, len(r) - 1, k).round().astype(int)]
        keep.append(r)
    return np.sort(np.concatenate(keep)) if keep else rows


def load_frames(ds: PreparedDataset, rows: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 ``[N, H, W]`` tensor of the selected frames, resized (area) when ``size`` is set."""
    out = []
    for i in rows:
        f = np.asarray(ds.frames[i])
        if size and f.shape != tuple(size):
            f = cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(f)
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, 1, 1, dtype=torch.uint8)


def resolve_labels(
    m: pd.DataFrame, label: str, classes: list[str] | None, source: str
) -> tuple[np.ndarray, list[str]]:
    """Per-row class index (-1 = not used) and the class names.

    ``classes`` items are names or merges ``new=a+b``; names match manifest values
    case-insensitively. Unknown names raise with the list of available values.
    """
    col = {"coarse": "coarse_label", "fine": "fine_label"}.get(label, label)
    if col not in m.columns:
        raise AwclError(
            f"{source}: no label column {label!r} (columns: {', '.join(map(str, m.columns))})"
        )
    values = m[col].astype("string").fillna("").str.strip()
    avail = sorted(v for v in values.unique() if v)
    if not avail:
        raise AwclError(f"{source}: label column {col!r} is empty")
    lower = {v.lower(): v for v in avail}
    if not classes:
        spec = [(v, [v]) for v in avail]
    else:
        spec = []
        for item in classes:
            name, _, members = item.partition("=")
            parts = [p.strip() for p in (members.split("+") if members else [name]) if p.strip()]
            unknown = [p for p in parts if p.lower() not in lower]
            if unknown:
                raise AwclError(
                    f"{source}: unknown class name(s) {', '.join(unknown)} in column {col!r} "
                    f"(available: {', '.join(avail)})"
                )
            spec.append((name.strip(), [lower[p.lower()] for p in parts]))
    y = np.full(len(m), -1, dtype=np.int64)
    for ci, (_, members) in enumerate(spec):
        y[values.isin(members).to_numpy()] = ci
    return y, [n for n, _ in spec]


def drop_rare_classes(
    y: np.ndarray, groups: np.ndarray, names: list[str], min_groups: int, explicit: bool
) -> tuple[np.ndarray, list[str], list[str]]:
    """Classes with fewer than ``min_groups`` patients cannot appear in every fold: error when
    the user listed them, otherwise drop them with a warning."""
    warnings, keep = [], []
    for ci, n in enumerate(names):
        ng = len(np.unique(groups[y == ci]))
        if ng >= min_groups:
            keep.append(ci)
            continue
        msg = f"class {n!r} has {ng} patient(s)/group(s), fewer than the {min_groups} needed"
        if explicit:
            raise AwclError(msg + "; merge it (--classes a=a+b) or drop it, or use fewer --folds")
        log.warning("%s; dropped", msg)
        warnings.append(msg + "; dropped")
    remap = {old: new for new, old in enumerate(keep)}
    y2 = np.array([remap.get(int(v), -1) for v in y], dtype=np.int64)
    if len(keep) < 2:
        raise AwclError(f"need at least 2 classes with enough patients (have {len(keep)})")
    return y2, [names[c] for c in keep], warnings


def make_folds(
    cfg: FinetuneConfig, m: pd.DataFrame, y: np.ndarray, groups: np.ndarray, source: str
) -> list[Fold]:
    if cfg.split == "fixed":
        if "split" not in m.columns:
            raise AwclError(f"{source}: --split fixed needs a 'split' column in the manifest")
        folds = fixed_split(
            m["split"].to_numpy(), y, groups, cfg.seed, cfg.val_fraction, source=f"{source}"
        )
    else:
        folds = kfold_splits(y, groups, cfg.folds, cfg.seed, cfg.val_fraction)
    if cfg.train_patients:  # label efficiency: fewer labelled patients to fit on, same val/test
        from awcl.evaluate.splits import limit_train_patients

        folds = [limit_train_patients(f, y, groups, cfg.train_patients, cfg.seed) for f in folds]
    return folds


def summarize_folds(per_fold: list[dict], keys: list[str]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for k in keys:
        vals = [f[k] for f in per_fold if f.get(k) is not None]
        if vals:
            mean[k] = float(np.mean(vals))
            std[k] = float(np.std(vals))
    return mean, std


class RunDir:
    """Temporary run directory renamed to ``out`` on success (a failed run leaves no output)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()

    def commit(self) -> Path:
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            self.out.rename(old)
            self.tmp.rename(self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def config_record(cfg: FinetuneConfig) -> dict:
    d = asdict(cfg)
    d["size"] = list(cfg.size) if cfg.size else None
    d["resolved_preset"] = json.loads(json.dumps(asdict(cfg.resolved_preset())))
    if cfg.task == "classify":
        d["resolved_head"] = cfg.resolved_head
    return d


# ---------------------------------------------------------------------------- entry point
def finetune(cfg: FinetuneConfig) -> dict:
    """Run a downstream protocol on every fold; write the run directory; return metrics."""
    cfg = copy.deepcopy(cfg)
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = open_dataset(cfg.data)
    if cfg.group not in ds.manifest.columns:
        raise DataError(f"{ds.root}: manifest has no grouping column {cfg.group!r}")

    @functools.cache
    def get_engine() -> Engine:
        """Resolved once the data have been checked (choosing may time a few steps)."""
        e = cfg.engine(tuple(cfg.size) if cfg.size else tuple(ds.size))
        log.info("precision %s%s on %s: %s", e.choice.precision,
                 " + channels_last" if e.choice.channels_last else "", e.choice.device,
                 e.choice.reason)
        return e

    run = RunDir(cfg.out)
    t0 = time.time()
    try:
        if cfg.protocol in PROBES:
            from awcl.evaluate.probe import run_probe

            metrics = run_probe(cfg, ds, run.tmp, get_engine)
        elif cfg.task == "classify":
            from awcl.evaluate.classify import run_classification

            metrics = run_classification(cfg, ds, run.tmp, get_engine)
        else:
            from awcl.evaluate.segment import run_segmentation

            metrics = run_segmentation(cfg, ds, run.tmp, get_engine)
        metrics["elapsed_s"] = round(time.time() - t0, 2)
        engine = get_engine()
        metrics["environment"] = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "accelerator": engine.accelerator,
            "devices": str(engine.devices),
            **engine.choice.to_dict(),
        }
        (run.tmp / "config.yaml").write_text(yaml.safe_dump(config_record(cfg), sort_keys=False))
        (run.tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if not is_global_zero():  # other DDP processes computed the same; rank zero writes
            run.abort()
            return metrics
        run.commit()
    except BaseException:
        run.abort()
        raise
    log.info("wrote %s (%.1f s)", cfg.out, metrics["elapsed_s"])
    return metrics


def check_fold_classes(folds: list[Fold], y: np.ndarray, names: list[str]) -> list[str]:
    return check_classes(folds, y, names)
