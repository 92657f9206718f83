"""Configuration of one downstream run: tasks, protocols, the paper presets and
:class:`FinetuneConfig` (written to ``config.yaml`` in the run directory)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from awcl.backbones import BACKBONE_HELP, check_backbone
from awcl.config import option
from awcl.config_checks import check_choices, check_ranges
from awcl.errors import AwclError
from awcl.evaluate.augment import BatchAugmentConfig
from awcl.evaluate.fit import RuntimeOptions
from awcl.evaluate.heads import HEADS
from awcl.evaluate.optim import OPTIMIZERS, Optim
from awcl.evaluate.tasks import PROBES, PROTOCOLS, TASKS
from awcl.options import parse_size
from awcl.runtime.precision import choose, resolve_accelerator


@dataclass(frozen=True)
class Preset:
    """Optimiser, schedule, head and augmentation of one paper protocol."""

    optimizer: str  # awcl.evaluate.optim.OPTIMIZERS: "sgd" | "rmsprop_tf" | ...
    lr: float
    momentum: float
    weight_decay: float  # on conv/linear weights only (none on norm weights and biases)
    batch_size: int
    epochs: int
    milestones: tuple[float, ...]  # fractions of the run's steps where lr *= lr_gamma
    lr_gamma: float
    augment: BatchAugmentConfig
    head: str | None = None  # classification head of the protocol (None: segmentation)
    iterations: int | None = None  # a schedule given in steps (used unless --epochs is set)
    warmup: float = 0.05  # share of the steps with a linear lr ramp (at most 500 steps)
    encoder_lr_scale: float = 1.0  # the encoder's lr relative to the head's (full protocol)
    cosine: bool = False  # half-cosine decay to zero over the run after warmup

    def optim(self) -> Optim:
        return Optim(self.optimizer, self.lr, self.momentum, self.weight_decay, self.milestones,
                     self.lr_gamma, self.warmup, encoder_lr_scale=self.encoder_lr_scale,
                     cosine=self.cosine)


# keys a run's config.yaml records beside the settings (awcl.evaluate.finetune.config_record)
DERIVED_KEYS = ("resolved_preset", "resolved_head")
SPLITS = ("kfold", "fixed")  # k grouped folds, or the manifest's own split column

# The paper's settings, ported by their effect (docs/finetune.md, awcl.evaluate.optim):
# milestones are fractions of the run (a 2-epoch run decays where a 70-epoch one does),
# every preset warms up over 5 % of its steps, and Task III's RMSprop becomes its measured
# equivalent, Adam with a cosine decay (PyTorch's RMSprop takes 10x lr first steps).
PRESETS: dict[str, Preset] = {
    # Task I: full fine-tuning with the SonoNet-style head of the paper's [4] (paper: SGD lr
    # 0.01, 70 epochs, x0.1 at 30 and 55; flips, +-10 degree rotation, gamma, brightness).
    "task1": Preset(
        "sgd", 0.01, 0.9, 5e-4, 16, 70, (30 / 70, 55 / 70), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=10, gamma=(0.8, 1.25), brightness=0.1),
        head="sononet",
    ),
    # Task II: two FC layers (paper: SGD lr 0.1, 200 epochs, x0.1 at 150; +-30 degree
    # rotation, flip, Gaussian noise, shear <= 0.2). lr 0.1 is for the new FC layers; a
    # pretrained encoder at 0.1 and batch 16 moves 20 % in five steps (tests/test_presets.py),
    # so under full fine-tuning it trains at 0.1 x 0.1 = 0.01, Task I's rate.
    "task2": Preset(
        "sgd", 0.1, 0.9, 5e-4, 16, 200, (150 / 200,), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=30, noise_std=0.03, shear=0.2),
        head="fc2", encoder_lr_scale=0.1,
    ),
    # Task III: segmentation (paper: RMSprop lr 1e-3, momentum 0.9, wd 1e-3, 50k iterations;
    # scaling, shifts, rotation, flips). ``epochs`` is the fallback when iterations are off.
    # Optimiser: the measured equivalent, Adam (RMSprop's per-weight scaling with momentum
    # 0.9, bias-corrected) at lr 1e-3. TensorFlow-semantics RMSprop (``--optimizer
    # rmsprop_tf``) starts its square average at one, so a short run spends most of its steps
    # at ~lr·g and then ramps to 10·lr per weight: HC18 112x144, 3 epochs, random init,
    # per-image Dice 0.853 against Adam's 0.93+ and the plain reference's 0.951
    # (docs/finetune.md, docs/results.md).
    "task3": Preset(
        "adam", 1e-3, 0.9, 1e-3, 16, 50, (), 0.1,
        BatchAugmentConfig(hflip=True, rotate_deg=15, scale=(0.9, 1.1), shift=0.1),
        iterations=50_000, cosine=True,
    ),
}


def parse_classes(value: str | list[str]) -> list[str]:
    """``"covid,pneumonia=pneumonia+viral,regular"`` (or a YAML list) -> the class list."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [c.strip() for c in items if c.strip()]


@dataclass
class FinetuneConfig:
    """Everything one downstream run needs; written to ``config.yaml`` in the run directory.
    The schema of ``awcl finetune``'s flags and ``--config`` YAML (awcl.config)."""

    data: str = option(help="prepared dataset directory")
    out: str = option(help="run directory to write")
    init: str = option("random", help="'random', an awcl pretrain run dir / encoder.pt, a torchvision ResNet .pth, or a foundation-model checkpoint (timm/MAE ViT, BEiT, open_clip visual tower; its architecture named by --backbone)")
    backbone: str | None = option(None, help=BACKBONE_HELP)
    # per-fold pretraining (a study's pretrain_per_fold): fold k starts from the k-th encoder,
    # pretrained without fold k's test groups; replaces init
    fold_inits: list[str] | None = option(None, flag="--fold-init", repeat=True, help="one encoder per fold, in fold order (repeat once per fold): fold k starts from the k-th instead of --init")
    task: str = option("classify", choices=TASKS, help="downstream task")
    protocol: str = option("full", choices=PROTOCOLS, help="full: train encoder + head; partial: encoder frozen; knn / linear-probe: scikit-learn kNN or logistic regression on frozen features")
    head: str | None = option(None, choices=HEADS, help="classification head (default: the preset's, task1 sononet, task2 fc2)")
    preset: str | None = option(None, choices=PRESETS, help="paper protocol (default task1 for classify, task3 for segment)")
    label: str = option("coarse", help="coarse | fine | a manifest column")
    classes: list[str] | None = option(None, parse=parse_classes, help="comma list of classes to use, merges as new=a+b (e.g. covid,pneumonia=pneumonia+viral,regular)")
    folds: int = option(3, help="cross-validation folds (grouped by --group)")
    split: str = option("kfold", choices=SPLITS, help="fixed: use the manifest's split column (train/val/test)")
    group: str = option("patient_id", help="grouping column (never on both sides of a split)")
    val_fraction: float = option(0.2, help="share of each training part held out for validation")
    epochs: int | None = option(None, help="override the preset's epochs (and its iterations; the schedule follows the run's steps)")
    batch_size: int | None = option(None, help="override the preset's batch size")
    lr: float | None = option(None, help="override the preset's learning rate")
    optimizer: str | None = option(None, choices=OPTIMIZERS, help="override the preset's optimiser (rmsprop_torch: PyTorch's RMSprop, for comparison)")
    size: tuple[int, int] | None = option(None, parse=parse_size, help="HxW to resize frames to, e.g. 112x144 (default: the prepared size)")
    max_per_video: int | None = option(None, help="at most N frames per video (evenly spaced)")
    train_patients: int | None = option(None, help="label efficiency: fit on N patients of each training part (seeded, every class kept)")
    dice_loss: bool = option(False, help="segmentation: add soft Dice to CE")
    seed: int = option(0, help="random seed (folds, head init, sampling)")
    threads: int | None = option(None, help="torch CPU threads (default: all cores)")
    # runtime (awcl.runtime.trainer / awcl.runtime.precision)
    precision: str = option("auto", help="auto (fastest safe for this hardware) | 32-true | bf16-mixed | 16-mixed")
    channels_last: bool | None = option(None, help="NHWC memory format (default: with the precision choice)")
    accelerator: str = option("auto", help="auto | cpu | gpu")
    devices: str = option("1", help="devices to train on (>1: DDP, see docs/finetune.md)")
    strategy: str = option("auto", help="Lightning strategy (ddp with --devices > 1)")
    progress: bool = option(False, cli=False, help="Lightning progress bar per fold")
    keep_checkpoints: bool = option(False, help="keep checkpoints/fold<k>/best.ckpt (the best validation epoch)")
    bootstrap: int = option(1000, help="patient-level bootstrap resamples for the 95%% intervals (0: none)")

    def resolved_preset(self) -> Preset:
        name = self.preset or ("task3" if self.task == "segment" else "task1")
        if name not in PRESETS:
            raise AwclError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        p = PRESETS[name]
        return replace(
            p,
            optimizer=self.optimizer or p.optimizer,
            epochs=self.epochs or p.epochs,
            batch_size=self.batch_size or p.batch_size,
            lr=self.lr or p.lr,
            iterations=p.iterations if self.epochs is None else None,
        )

    @property
    def resolved_head(self) -> str:
        """The classification head: as given, else the preset's, else linear."""
        return self.head or self.resolved_preset().head or "linear"

    def validate(self) -> None:
        check_choices(self)  # task, protocol, head, preset, split
        if self.protocol in PROBES and self.task != "classify":
            raise AwclError(f"--protocol {self.protocol} is a classification probe (got --task {self.task})")
        if self.epochs is not None and self.epochs < 1:
            raise AwclError("--epochs must be >= 1")
        check_ranges(self, {"lr": (0, None), "batch_size": (1, None), "folds": (2, None),
                            "train_patients": (1, None), "max_per_video": (1, None),
                            "val_fraction": (0, 1), "threads": (0, None), "bootstrap": (0, None)},
                     strict=("lr", "val_fraction"))  # fmt: skip
        self.resolved_preset()
        if self.backbone:
            self.backbone = check_backbone(self.backbone)
        if self.fold_inits is not None:
            n = 1 if self.split == "fixed" else self.folds
            if len(self.fold_inits) != n:
                raise AwclError(f"--fold-init given {len(self.fold_inits)} times for {n} fold(s); give one encoder per fold")

    def for_fold(self, index: int) -> FinetuneConfig:
        """The config fold ``index`` runs with: ``init`` is that fold's own encoder when
        ``fold_inits`` is set (per-fold pretraining), else this config as it is."""
        if self.fold_inits is None:
            return self
        return replace(self, init=str(self.fold_inits[index]), fold_inits=None)

    def runtime(self, size: tuple[int, int]) -> RuntimeOptions:
        """Device, precision (chosen for this hardware at frame ``size``) and trainer options."""
        accelerator = resolve_accelerator(self.accelerator)
        choice = choose(self.precision, accelerator, size, channels_last=self.channels_last)
        return RuntimeOptions(choice, accelerator, self.devices, self.strategy, self.progress,
                              self.keep_checkpoints)
