"""Configuration of one downstream run: tasks, protocols, the paper presets and
:class:`FinetuneConfig` (written to ``config.yaml`` in the run directory)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from awcl.errors import AwclError
from awcl.evaluate.augment import BatchAugmentConfig
from awcl.evaluate.fit import Engine
from awcl.evaluate.heads import HEADS
from awcl.evaluate.tasks import PROBES, PROTOCOLS, TASKS
from awcl.train.precision import choose, resolve_accelerator


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
    augment: BatchAugmentConfig
    head: str | None = None  # classification head of the protocol (None: segmentation)
    iterations: int | None = None  # a schedule given in steps (used unless --epochs is set)


PRESETS: dict[str, Preset] = {
    # Task I: full fine-tuning with the SonoNet-style head of the paper's [4] (paper: SGD lr
    # 0.01, 70 epochs, x0.1 at 30 and 55; flips, +-10 degree rotation, gamma, brightness).
    "task1": Preset(
        "sgd", 0.01, 0.9, 5e-4, 16, 70, (30, 55), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=10, gamma=(0.8, 1.25), brightness=0.1),
        head="sononet",
    ),
    # Task II: two FC layers (paper: SGD lr 0.1, 200 epochs, x0.1 at 150; +-30 degree
    # rotation, flip, Gaussian noise, shear <= 0.2).
    "task2": Preset(
        "sgd", 0.1, 0.9, 5e-4, 16, 200, (150,), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=30, noise_std=0.03, shear=0.2),
        head="fc2",
    ),
    # Task III: segmentation (paper: RMSprop lr 1e-3, momentum 0.9, wd 1e-3, 50k iterations;
    # scaling, shifts, rotation, flips). ``epochs`` is the fallback when iterations are off.
    "task3": Preset(
        "rmsprop", 1e-3, 0.9, 1e-3, 16, 50, (), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=15, scale=(0.9, 1.1), shift=0.1),
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
