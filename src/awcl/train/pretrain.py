"""``pretrain(cfg) -> run dir``: every method on one Lightning engine.

A run directory holds::

    config.yaml     the PretrainConfig of the run
    checkpoints/    epochNNN.ckpt every epoch, last.ckpt (link), stepNNNNNNN.ckpt every N steps
    logs/tb/        TensorBoard events;  logs/csv/metrics.csv  per-step metrics
    history.csv     per epoch: epoch, step, loss, img_per_s, knn_acc, seconds (with the kNN
                    monitor on, a first row epoch 0 / step 0 holds knn_acc before training)
    encoder.pt      the encoder, loadable strict into torchvision resnet18 minus fc
    heads.pt        the method's heads (projection / classifier) state dict
    summary.json    method, epochs, final loss, steady-state img/s, kNN accuracy, classes
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.atomic import atomic_file, sweep_temps, write_atomic, write_json_atomic
from awcl.backbones import BACKBONE_HELP, check_backbone
from awcl.config import check_choices, check_ranges, compose, option, read_yaml
from awcl.config import to_dict as config_dict
from awcl.data.pairs import FrameIndex, frame_labels
from awcl.data.store import GRANULARITIES, describe_source, open_dataset, union_dataset
from awcl.errors import AwclError
from awcl.locking import out_lock
from awcl.methods import METHODS, build_method
from awcl.models import ENCODER_FILE, resolve_backbone, save_encoder
from awcl.options import parse_size
from awcl.train.precision import choose, resolve_accelerator
from awcl.train.schedule import SCHEDULES
from awcl.train.trackers import build_loggers, check_loggers
from awcl.train.trainer import build_trainer, is_global_zero, quiet_fit

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------- helpers
def _held_out(ds, cfg: PretrainConfig) -> np.ndarray:
    """[N] bool: frames of the patients held out for the kNN monitor (labels hidden)."""
    n = len(ds)
    hide = np.zeros(n, dtype=bool)
    if cfg.monitor_fraction <= 0:
        return hide
    gran = cfg.monitor_granularity or cfg.granularity  # patients the monitor can query
    labels = np.array([v is not None for v in frame_labels(ds, gran, cfg.ignore_labels)])
    patients = ds.manifest["patient_id"].to_numpy()
    labelled_patients = np.unique(patients[labels])
    if len(labelled_patients) < 2:
        return hide
    rng = np.random.default_rng([cfg.seed, 7])
    k = min(len(labelled_patients) - 1, max(1, round(cfg.monitor_fraction * len(labelled_patients))))
    chosen = rng.choice(labelled_patients, size=k, replace=False)
    return np.isin(patients, chosen)


def _monitor(ds, cfg: PretrainConfig, hide: np.ndarray, frames_path: str, run: Path | None = None):
    from awcl.train.engine import KnnMonitor

    if not hide.any():
        return None
    # one label set for every method of a study makes their kNN curves comparable
    full = FrameIndex.from_dataset(ds, cfg.monitor_granularity or cfg.granularity, cfg.ignore_labels)
    y = full.label
    rng = np.random.default_rng([cfg.seed, 8])
    bank = np.flatnonzero((y >= 0) & ~hide)
    query = np.flatnonzero((y >= 0) & hide)
    if len(bank) == 0 or len(query) == 0 or len(np.unique(y[bank])) < 2:
        return None
    bank = np.sort(rng.permutation(bank)[: cfg.monitor_max])
    query = np.sort(rng.permutation(query)[: cfg.monitor_max])
    return KnnMonitor(frames_path, bank, y[bank], query, y[query], cfg.size,
                      every_n_steps=cfg.monitor_every_n_steps,
                      curve_path=run / "monitor.csv" if run is not None else None)


def _cpus() -> int:
    """Cores this process may use (a SLURM job's or a parallel study job's share), not all
    of the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _latest_checkpoint(ckdir: Path) -> Path | None:
    """The checkpoint with the most training steps (epoch-end 'last' wins ties)."""
    best: tuple[int, int, Path] | None = None
    for p in ckdir.glob("*.ckpt"):
        try:
            meta = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a torn file from a kill mid-write: skip it
            warnings.warn(f"{p}: unreadable checkpoint skipped", stacklevel=2)
            continue
        cand = (int(meta.get("global_step", 0)), int(p.name == "last.ckpt"), p)
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best else None


# ---------------------------------------------------------------------------- main API
def pretrain(cfg: PretrainConfig, callbacks: list | None = None) -> Path:
    """Run one pretraining and return its run directory (see the module docstring).

    ``callbacks``: extra Lightning callbacks (tests use one to simulate a kill).
    """
    run = Path(cfg.out)
    # one writer per run folder (rank zero of a distributed launch speaks for all)
    with out_lock(run, "pretraining run") if is_global_zero() else contextlib.nullcontext():
        return _pretrain_unlocked(cfg, run, callbacks)


def _pretrain_unlocked(cfg: PretrainConfig, run: Path, callbacks: list | None) -> Path:
    new = not run.exists()
    try:
        return _pretrain(cfg, run, callbacks)
    except BaseException:
        # a failed run leaves nothing in a new --out (a bad --init, a batch too large, a full
        # disk), unless it got as far as a checkpoint: that one is for --resume
        ckdir = run / "checkpoints"
        if new and run.is_dir() and not (ckdir.is_dir() and any(ckdir.glob("*.ckpt"))) and is_global_zero():
            shutil.rmtree(run, ignore_errors=True)
        raise


def _pretrain(cfg: PretrainConfig, run: Path, callbacks: list | None) -> Path:
    # long: one straight sequence (inputs, run dir, trainer, fit, outputs)
    from awcl.train.engine import PretrainModule, Throughput

    ckpt_path = _resume_point(run, cfg.resume)
    ds = open_dataset(union_dataset(cfg.data))  # several --data: their cached union
    frames_path = str(Path(ds.root) / "frames.npy")
    accelerator = resolve_accelerator(cfg.accelerator)
    if accelerator == "cpu":
        torch.set_num_threads(cfg.threads or _cpus())

    hide = _held_out(ds, cfg)
    index = FrameIndex.from_dataset(ds, cfg.granularity, cfg.ignore_labels, hide=hide)
    method = build_method(cfg.method, cfg, index)
    if method.needs_labels and not (index.label >= 0).any():
        raise AwclError(
            f"{ds.root}: method {cfg.method!r} needs {cfg.granularity} labels but no frame has one"
        )
    run.mkdir(parents=True, exist_ok=True)
    for folder in (run, run / "checkpoints"):  # temporaries of a killed earlier attempt
        sweep_temps(folder)
    write_atomic(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    loggers, keep_ids = build_loggers(cfg.logger, run, cfg.tracker_project, cfg.tracker_uri, cfg.resume)
    # chosen once the inputs are known to be good (choosing may time a few steps)
    choice = choose(cfg.precision, accelerator, cfg.size, channels_last=cfg.channels_last)
    log.info("precision %s%s on %s: %s", choice.precision,
             " + channels_last" if choice.channels_last else "", choice.device, choice.reason)

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    module = PretrainModule(cfg, method, frames_path, channels_last=choice.channels_last)
    throughput = Throughput()
    monitor = _monitor(ds, cfg, hide, frames_path, run)
    cbs = _callbacks(run, cfg, throughput, monitor, extra=callbacks, keep_ids=keep_ids)
    trainer = build_trainer(
        run, choice, accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, max_epochs=cfg.epochs, max_steps=cfg.max_steps, callbacks=cbs,
        loggers=loggers, log_every_n_steps=cfg.log_every_n_steps, progress=cfg.progress,
        use_distributed_sampler=False,  # our batch samplers shard by rank themselves
    )
    with quiet_fit():
        trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)

    if trainer.is_global_zero:
        save_encoder(module.encoder, run / ENCODER_FILE)
        with atomic_file(run / "heads.pt") as tmp:
            torch.save({k: v.cpu() for k, v in module.heads.state_dict().items()}, tmp)
        summary = _summary(cfg, method, index, ds, choice, trainer, throughput, monitor)
        write_json_atomic(run / "summary.json", summary, indent=2)
    return run


def _resume_point(run: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to overwrite a run."""
    ckdir = run / "checkpoints"
    if resume:
        ckpt_path = _latest_checkpoint(ckdir) if ckdir.is_dir() else None
        if ckpt_path is None:
            raise AwclError(f"{run}: nothing to resume (no checkpoints/*.ckpt)")
        return ckpt_path
    if (run / "summary.json").exists() or (ckdir.is_dir() and any(ckdir.glob("*.ckpt"))):
        raise AwclError(f"{run}: already holds a run; pass --resume to continue it or a new --out")
    return None


def _callbacks(run: Path, cfg: PretrainConfig, throughput: Any, monitor: Any, extra: list | None,
               keep_ids: Any) -> list:
    """Throughput, kNN monitor, history.csv, epoch (and every-N-step) checkpoints, then the
    caller's callbacks; ``keep_ids`` last."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from awcl.train.engine import History, StepCheckpoint

    ckdir = run / "checkpoints"
    cbs: list = [throughput]
    if monitor is not None:
        cbs.append(monitor)
    cbs.append(History(run / "history.csv", throughput, monitor))
    cbs.append(
        ModelCheckpoint(
            dirpath=ckdir,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            every_n_epochs=1,
            save_top_k=-1,
            save_last="link",  # a link to the newest epoch checkpoint, not a second copy
        )
    )
    if cfg.checkpoint_every_n_steps > 0:
        cbs.append(
            StepCheckpoint(
                dirpath=ckdir,
                filename="step{step:07d}",
                auto_insert_metric_name=False,
                every_n_train_steps=cfg.checkpoint_every_n_steps,
                save_top_k=1,
                monitor="step",
                mode="max",
            )
        )
    cbs += list(extra or [])
    cbs.append(keep_ids)
    return cbs


def crossover_step(curve: list[tuple[int, float]]) -> int | None:
    """The first monitored step from which the kNN accuracy stays at or above its step-0 value
    (the random-init baseline of a run from scratch); None when the last point is below it, or
    when the curve has no step-0 point (a resumed run reads it back from monitor.csv)."""
    pts = sorted(curve)
    if not pts or pts[0][0] != 0:
        return None
    init = pts[0][1]
    cross = None
    for st, a in pts[1:]:
        if a < init:
            cross = None
        elif cross is None:
            cross = st
    return cross


def _summary(cfg: PretrainConfig, method: Any, index: FrameIndex, ds: Any, choice: Any, trainer: Any,
             throughput: Any, monitor: Any) -> dict[str, Any]:
    """summary.json of a finished run; non-finite floats become null (JSON has no NaN)."""
    summary = {
        "method": cfg.method,
        "granularity": cfg.granularity,
        "anatomy_ratio": cfg.anatomy_ratio,
        "class_group": cfg.class_group,
        "batch_composition": method.batch_composition(),
        **method.summary(),
        # epochs trained (a last partial one counts); not current_epoch alone, which a run resumed
        # from its final checkpoint leaves one short (Lightning counts that epoch as unfinished)
        "epochs": max(trainer.current_epoch, trainer.fit_loop.epoch_progress.current.processed),
        "steps": trainer.global_step,
        "final_loss": throughput.epoch_loss,
        "img_per_s": throughput.steady,
        "knn_acc": monitor.last if monitor else None,
        "knn_acc_init": monitor.initial if monitor else None,  # before training (step 0)
        "knn_curve": [[st, round(a, 6)] for st, a in sorted(monitor.curve)] if monitor else None,
        "knn_crossover_step": crossover_step(monitor.curve) if monitor else None,
        "lr_schedule": cfg.lr_schedule,
        "warmup": cfg.warmup if cfg.lr_schedule == "warmup-cosine" else 0.0,
        # equal compute, stated: optimiser steps x samples x views, all processes together
        "views_seen": trainer.global_step * cfg.batch_size * method.views * trainer.world_size,
        "classes": index.classes,
        "labelled_frames": int((index.label >= 0).sum()),
        "frames": index.n,
        "size": list(cfg.size),
        "precision": choice.precision,
        "channels_last": choice.channels_last,
        "precision_reason": choice.reason,
        "device": choice.device,
        "compiled": bool(cfg.compile),
        "devices": trainer.world_size,
        "encoder": ENCODER_FILE,
        "backbone": resolve_backbone(cfg.init, cfg.backbone),
        "data_sources": ds.meta.get("sources") or [describe_source(ds)],
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
