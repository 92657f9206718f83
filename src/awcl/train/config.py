"""``PretrainConfig``: every setting of a pretraining run (``awcl pretrain``'s flags, its
``--config`` YAML and the run's ``config.yaml``); ``awcl.train.pretrain`` runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from awcl.backbones import BACKBONE_HELP, check_backbone
from awcl.config import compose, option, read_yaml
from awcl.config import to_dict as config_dict
from awcl.config_checks import check_choices, check_ranges
from awcl.data.store import GRANULARITIES
from awcl.errors import AwclError
from awcl.methods import METHODS
from awcl.options import parse_size
from awcl.runtime.schedule import SCHEDULES
from awcl.train.trackers import check_loggers


def parse_crop_scale(value: str | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``"0.08,1"`` or ``(0.08, 1.0)`` -> (lo, hi) with 0 < lo <= hi <= 1."""
    try:
        parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise AwclError(f"--crop-scale {value!r}: expected LO,HI, e.g. 0.08,1") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise AwclError(f"--crop-scale {value!r}: need 0 < LO <= HI <= 1")
    return lo, hi


def _pretrain_size(value: Any) -> tuple[int, int]:
    return parse_size(value, minimum=16)


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run; defaults are the paper's. The schema of
    ``awcl pretrain``'s flags, ``--config`` YAML and the run's ``config.yaml`` (awcl.config)."""

    data: str | list[str] = option("", repeat=True, help="prepared dataset directory (awcl prepare ...); repeat for several sources (their union is built once and cached)")
    out: str = option("runs/pretrain", help="run directory to create (or to continue with --resume)")
    method: str = option("awcl", choices=METHODS, help="pretraining method (awcl.methods.METHODS)")
    granularity: str = option("coarse", choices=GRANULARITIES, help="which anatomy labels make positives/classes")
    anatomy_ratio: float = option(1.0, help="awcl: probability a labelled frame keeps its label per draw")
    ignore_labels: list[str] = option(default_factory=list, flag="--ignore-label", repeat=True, help="label counted as unlabelled (repeatable; adds to the dataset's own)")
    class_group: int = option(1, help="awcl/clpi: k>1 draws frames of one class/scan in groups of k per batch; 0 or 1: random batches as in the paper")
    clpi_by: str = option("video", choices=("video", "patient"), help="clpi: scan key")
    uscl_ce_weight: float = option(0.2, help="uscl: weight of the cross-entropy head per view (official 0.2)")
    uscl_rounds: int = option(0, help="uscl: passes over the videos per epoch (0: about frames/videos; 1: the official epoch)")
    # model / optimisation
    init: str = option("random", help="random | run dir | encoder.pt | torchvision ResNet .pth | a foundation-model checkpoint (timm/MAE ViT, BEiT, open_clip visual tower; architecture named by --backbone)")
    backbone: str | None = option(None, help=BACKBONE_HELP)
    proj_hidden: int = option(512, help="projection MLP hidden width")
    proj_dim: int = option(128, help="projection output dimension")
    temperature: float = option(0.5, help="contrastive temperature τ")
    epochs: int = option(10, help="training epochs")
    max_steps: int = option(-1, help="stop after this many steps (-1: epochs decide)")
    batch_size: int = option(32, help="samples per process and step (each gives 2 views)")
    lr: float = option(1e-3, help="Adam learning rate")
    weight_decay: float = option(1e-6, help="Adam weight decay")
    lr_schedule: str = option("warmup-cosine", choices=SCHEDULES, help="per-step lr: warmup-cosine (linear warmup, then a half cosine to 0 at the last step; --lr is the peak) or constant (the paper names none)")
    warmup: float = option(0.1, help="warmup-cosine: share of the run's steps spent ramping the lr up")
    # input and augmentation
    size: tuple[int, int] = option((224, 288), parse=_pretrain_size, help="input HxW, e.g. 224x288 (frames are cropped/resized on the fly)")
    crop_scale: tuple[float, float] = option((0.08, 1.0), parse=parse_crop_scale, help="random-resized-crop area share LO,HI (SimCLR: 0.08,1)")
    flip: float = option(0.5, help="horizontal flip probability")
    brightness: float = option(0.4, help="brightness jitter strength")
    contrast: float = option(0.4, help="contrast jitter strength")
    blur: float = option(0.0, help="Gaussian blur probability")
    # engine
    seed: int = option(0, help="random seed (sampling, augmentation, init)")
    accelerator: str = option("auto", help="auto | cpu | gpu")
    devices: str = option("auto", help="devices per node (number or auto)")
    num_nodes: int = option(1, help="nodes (torchrun / SLURM)")
    strategy: str = option("auto", help="Lightning strategy: auto | ddp | ddp_fork | ... (not ddp_spawn)")
    precision: str = option("auto", help="auto (the fastest safe one for this hardware: bf16 only on CPUs with native bf16, timed once per machine; bf16/fp16 mixed on GPU) | 32-true | bf16-mixed | 16-mixed")
    channels_last: bool | None = option(None, help="NHWC memory format (default: with the precision choice)")
    compile: bool = option(False, help="torch.compile the encoder (minutes of start-up; no gain measured on CPU, see benchmarks/bench_pretrain.py --compile)")
    num_workers: int = option(1, help="DataLoader worker processes (0: augment in the main process)")
    threads: int = option(0, help="torch CPU threads (0: all cores)")
    checkpoint_every_n_steps: int = option(0, help="extra checkpoint every N steps (0: per epoch only)")
    monitor_fraction: float = option(0.2, help="share of labelled patients held out for the kNN monitor (0: off)")
    monitor_max: int = option(512, help="cap on kNN monitor bank/query frames")
    monitor_every_n_steps: int = option(0, help="also run the kNN monitor every N steps (0: at step 0 and epoch ends only); the curve goes to monitor.csv")
    monitor_granularity: str = option("", help="labels the kNN monitor scores: coarse | fine ('': the method's granularity)")
    log_every_n_steps: int = option(10, help="logging interval in steps")
    logger: list[str] = option(default_factory=lambda: ["tensorboard", "csv"], repeat=True, help="tensorboard | csv | wandb | mlflow; repeatable (wandb/mlflow: pip install 'awcl[wandb]' / 'awcl[mlflow]')")
    tracker_project: str = option("awcl", help="W&B project / MLflow experiment name")
    tracker_uri: str = option("", help="MLflow tracking URI ('': $MLFLOW_TRACKING_URI or sqlite:///RUN/logs/mlflow.db)")
    progress: bool = option(True, help="no progress bar (the flag turns it off)")
    resume: bool = option(False, help="continue the run in --out from its latest checkpoint")

    def __post_init__(self) -> None:
        self.size = parse_size(self.size, minimum=16)
        self.crop_scale = parse_crop_scale(self.crop_scale)
        self.ignore_labels = list(self.ignore_labels or [])
        self.logger = check_loggers(self.logger)
        if isinstance(self.data, (list, tuple)):
            self.data = [str(d) for d in self.data] if len(self.data) != 1 else str(self.data[0])
        check_choices(self)  # method, granularity, clpi_by
        if self.backbone:
            self.backbone = check_backbone(self.backbone)
        if self.monitor_granularity not in ("", *GRANULARITIES):
            raise AwclError(f"--monitor-granularity must be coarse or fine, not {self.monitor_granularity!r}")
        if "spawn" in str(self.strategy):
            raise AwclError(
                f"--strategy {self.strategy} is not supported (spawned children import torchvision "
                "before awcl's compatibility shim); use ddp (torchrun/SLURM/Lightning launcher) or ddp_fork"
            )
        if self.batch_size < 2:
            raise AwclError("--batch-size must be at least 2")
        check_ranges(self, {"lr": (0, None), "temperature": (0, None), "weight_decay": (0, None),
                            "epochs": (1, None), "anatomy_ratio": (0, 1), "proj_hidden": (1, None),
                            "proj_dim": (1, None), "flip": (0, 1), "blur": (0, 1),
                            "brightness": (0, None), "contrast": (0, None), "class_group": (1, None),
                            "num_workers": (0, None), "threads": (0, None), "num_nodes": (1, None),
                            "monitor_fraction": (0, 1), "warmup": (0, 1), "monitor_every_n_steps": (0, None), "log_every_n_steps": (1, None),
                            "checkpoint_every_n_steps": (0, None), "uscl_rounds": (0, None)},
                     strict=("lr", "temperature"))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples): what ``config.yaml`` holds."""
        return config_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "pretrain config") -> PretrainConfig:
        """Typed and checked (awcl.config); ``${...}`` interpolation resolved."""
        return compose(cls, [(source, d)])

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> PretrainConfig:
        """A YAML file of PretrainConfig keys, then ``a=v`` overrides (``--set``)."""
        return compose(cls, [(str(path), read_yaml(path))], overrides=overrides or [])
