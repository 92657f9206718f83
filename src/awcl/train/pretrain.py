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
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.atomic import atomic_file, sweep_temps, write_atomic, write_json_atomic
from awcl.data.pairs import FrameIndex, frame_labels
from awcl.data.store import GRANULARITIES, describe_source, open_dataset, union_dataset
from awcl.errors import AwclError
from awcl.locking import out_lock
from awcl.methods import build_method
from awcl.models import ENCODER_FILE, resolve_backbone, save_encoder
from awcl.runtime.precision import choose, resolve_accelerator
from awcl.runtime.trainer import build_trainer, is_global_zero, quiet_fit
from awcl.train.config import PretrainConfig, parse_crop_scale  # noqa: F401  (re-exported)
from awcl.train.trackers import build_loggers

log = logging.getLogger(__name__)


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
    from awcl.train.callbacks import KnnMonitor

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
    # the other granularity is scored on the same frames and features (free): a method that
    # pulls all views of an organ together may gain on the organs and lose on the views
    others = {}
    for gran in GRANULARITIES:
        if gran != (cfg.monitor_granularity or cfg.granularity):
            oy = FrameIndex.from_dataset(ds, gran, cfg.ignore_labels).label
            if len(np.unique(oy[bank][oy[bank] >= 0])) >= 2 and (oy[query] >= 0).any():
                others[gran] = (oy[bank], oy[query])
    # patients as codes 0..G-1: the report resamples them, and no identifier reaches summary.json
    groups = np.unique(ds.manifest["patient_id"].astype(str).to_numpy()[query], return_inverse=True)[1]
    return KnnMonitor(frames_path, bank, y[bank], query, y[query], cfg.size,
                      every_n_steps=cfg.monitor_every_n_steps,
                      curve_path=run / "monitor.csv" if run is not None else None, others=others,
                      query_groups=groups)


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
    from awcl.train.callbacks import Throughput
    from awcl.train.engine import PretrainModule

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

    from awcl.train.callbacks import History, StepCheckpoint

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
    from awcl.train.callbacks import hits_record

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
        "knn_granularity": (cfg.monitor_granularity or cfg.granularity) if monitor else None,
        "knn_hits": hits_record(monitor) if monitor else None,
        # the other granularity's curve, on the same frames: step-0 value, final value, crossover
        "knn_other": {g: {"init": c[0][1] if c and c[0][0] == 0 else None, "final": c[-1][1] if c else None,
                          "crossover_step": crossover_step(c)}
                      for g, c in ((g, sorted(c)) for g, c in monitor.other_curves.items())} if monitor else None,
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
