"""Training one fold of a downstream protocol on the Lightning engine.

Every downstream loop (classification full/partial, segmentation full/partial) is one
:class:`DownstreamModule` fitted by a trainer from :func:`awcl.runtime.trainer.build_trainer`:
devices (CPU, one or more GPUs), the precision chosen for the hardware, a checkpoint of the
best validation epoch (the task kind's selection metric, ``val_f1`` macro-F1 / ``val_dice_per_image``:
:class:`awcl.evaluate.tasks.TaskKind`, computed by :mod:`awcl.evaluate.scores`), progress bar,
TensorBoard and CSV logs. The test part of the fold is predicted once, with the best epoch's weights.

Data stay in memory as tensors (``x``: uint8 frames ``[N, H, W]`` or cached float features
``[N, C, h, w]``; ``y``: class ``[N]`` or masks ``[N, H, W]``); augmentation runs on the
device, batched.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.evaluate.augment import BatchAugmentConfig, augment
from awcl.evaluate.metrics import metrics_of
from awcl.evaluate.optim import Optim, build_optimizer, build_schedule, head_lr
from awcl.evaluate.scores import confusion, image_dice
from awcl.evaluate.tasks import task_kind
from awcl.runtime.inputs import to_input
from awcl.runtime.precision import Choice
from awcl.runtime.trainer import build_trainer, quiet_fit

log = logging.getLogger(__name__)


class Rows(Dataset):
    """``(x[i], y[i])`` for the rows of one part of a fold."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray):
        self.x, self.y, self.rows = x, y, torch.as_tensor(np.asarray(rows), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = int(self.rows[i])
        return self.x[r], self.y[r]


@dataclass
class FoldResult:
    output: np.ndarray  # classify: test logits [n, K] float32; segment: masks [n, H, W] uint8
    history: list[dict[str, Any]]
    best_epoch: int
    best_val: float


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over foreground classes. ``logits: [B,C,H,W]``, ``target: [B,H,W]``."""
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    den = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (den + 1)).mean()


class DownstreamModule(L.LightningModule):
    """``model`` trained with cross-entropy (+ soft Dice) on one fold; validation each epoch.

    ``frozen``: a sub-module kept frozen and in eval mode (partial segmentation's encoder).
    ``encoder``: the sub-module trained at the preset's ``encoder_lr_scale`` (None: the whole
    model is head, e.g. a head on cached features).
    """

    def __init__(self, model: nn.Module, kind: str, num_classes: int, optim: Optim,
                 data: tuple[torch.Tensor, torch.Tensor], fold: Any, batch_size: int,
                 augment_cfg: BatchAugmentConfig | None, channels_last: bool, seed: int,
                 dice: bool = False, frozen: nn.Module | None = None, encoder: nn.Module | None = None):
        super().__init__()
        self.model, self.kind, self.num_classes, self.optim = model, kind, num_classes, optim
        self.x, self.y = data
        self.fold, self.batch_size, self.augment_cfg = fold, batch_size, augment_cfg
        self.channels_last, self.seed, self.dice, self.frozen = channels_last, seed, dice, frozen
        self._encoder = (encoder,) if encoder is not None else ()  # a tuple: not registered twice
        if frozen is not None:
            for q in frozen.parameters():
                q.requires_grad_(False)
        self.history: list[dict[str, Any]] = []
        self._gen: torch.Generator | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._loss_sum, self._loss_n = torch.zeros((), dtype=torch.float64), 0  # on the device: no sync per step

    # -- data
    def _loader(self, part: str, train: bool = False) -> DataLoader:
        ds = Rows(self.x, self.y, getattr(self.fold, part))
        pin = self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        if not train:
            return DataLoader(ds, batch_size=64, shuffle=False, pin_memory=pin)
        if self.trainer.world_size > 1:
            sampler = DistributedSampler(ds, num_replicas=self.trainer.world_size,
                                         rank=self.trainer.global_rank, shuffle=True, seed=self.seed)
        else:
            sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, pin_memory=pin)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        # every process scores the whole validation part: exact metrics, no padding or gather
        return self._loader("val")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen is not None:
            self.frozen.eval()  # frozen: its BatchNorm statistics stay as pretrained
        return self

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # frames; cached features arrive as floats
            return to_input(x, self.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._inputs(x))

    # -- steps
    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_n = torch.zeros((), dtype=torch.float64), 0  # on the device: no sync per step

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        if x.shape[0] < 2:
            return None  # BatchNorm cannot train on a single sample: skip the step
        x = self._inputs(x)
        if self.augment_cfg is not None:
            if self._gen is None or self._gen.device != x.device:
                self._gen = torch.Generator(device=x.device).manual_seed(self.seed)
            x, m = augment(x, self.augment_cfg, self._gen, y.long() if self.kind == "segment" else None)
            if m is not None:
                y = m
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        logits = self.model(x).float()
        loss = F.cross_entropy(logits, y.long())
        if self.dice:
            loss = loss + dice_loss(logits, y.long())
        n = x.shape[0]
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().double() * n
        self._loss_n += n
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=n, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        out = self(x).float()
        if self.kind == "classify":
            self._val.append((out.cpu(), y.cpu()))
        else:  # per-image pixel confusion on the device: [B, C, C] counts (per-image Dice)
            b = y.shape[0]
            groups = torch.arange(b, device=y.device)
            cms = confusion(y, out.argmax(1), self.num_classes, groups=groups, n_groups=b)
            self._val.append((cms.cpu(), y.new_zeros(0).cpu()))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val:
            return
        row: dict[str, Any] = {"fold": self.fold.index, "epoch": self.current_epoch + 1,
                               "train_loss": float(self._loss_sum) / max(self._loss_n, 1)}
        if self.kind == "classify":
            logits = torch.cat([v[0] for v in self._val])
            y = torch.cat([v[1] for v in self._val])
            cm = confusion(y, logits.argmax(1), self.num_classes)
            row["val_loss"] = float(F.cross_entropy(logits, y.long()))
        else:
            per_image = torch.cat([v[0] for v in self._val])  # [N, C, C]
            cm = per_image.sum(0)
            row["val_loss"] = float("nan")
        # the task kind's validation metrics, the selection metric first (the checkpoint's)
        kind, vm = task_kind(self.kind), metrics_of(self.kind, cm.numpy())
        if self.kind == "segment":  # the headline, per-image Dice (the selection metric)
            vm["dice_per_image"] = float(image_dice(per_image.numpy()).mean())
        row.update({f"val_{m}": vm[m] for m in kind.monitor})
        for m in sorted(kind.monitor, key=lambda m: m != kind.selection):
            self.log(f"val_{m}", vm[m], prog_bar=m == kind.selection)
        row["lr"] = head_lr(self.trainer.optimizers[0])  # the head's (Task II: 0.1, not the encoder's 0.01)
        self.history.append(row)
        score = kind.selection_key
        log.info("fold %d epoch %d: loss %.4f %s %.4f", self.fold.index, row["epoch"],
                 row["train_loss"], score, row[score])

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        out = self(x).float()
        return out.cpu() if self.kind == "classify" else out.argmax(1).to(torch.uint8).cpu()

    def configure_optimizers(self):
        # warmup and milestones over the run's real number of steps (awcl.evaluate.optim)
        # frozen parts have no trainable params; the encoder trains at the preset's encoder_lr_scale
        opt = build_optimizer(self.model, self.optim, *self._encoder)
        sched = build_schedule(opt, self.optim, self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with ``n`` intra-op threads (tiny head-only steps are slower with more: the
    threads' synchronisation outweighs the work, badly so on a busy machine)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class RuntimeOptions:
    """Where and how folds run: the device and precision options (awcl.runtime's precision
    choice, accelerator, devices, strategy), the progress bar and checkpoint keeping; from the
    fine-tuning config (``FinetuneConfig.runtime``)."""

    choice: Choice
    accelerator: str = "cpu"
    devices: str | int = 1
    strategy: str = "auto"
    progress: bool = False
    keep_checkpoints: bool = False


def device_of(runtime: RuntimeOptions) -> torch.device:
    return torch.device("cuda") if runtime.accelerator in ("gpu", "cuda") else torch.device("cpu")


@torch.no_grad()
def encode(encoder: nn.Module, frames: torch.Tensor, runtime: RuntimeOptions,
           fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
           batch: int = 64) -> torch.Tensor:
    """``frames: uint8 [N, H, W]`` -> ``fn(encoder, x)`` per batch (default the pooled
    ``[N, 512]`` features), float32 on the CPU; run on the runtime's device and precision."""
    dev = device_of(runtime)
    cl = runtime.choice.channels_last
    encoder = encoder.eval().to(dev)
    if cl:
        encoder = encoder.to(memory_format=torch.channels_last)
    out = []
    for s in range(0, len(frames), batch):
        x = to_input(frames[s : s + batch].to(dev), cl)
        with runtime.choice.autocast(dev.type):
            f = fn(encoder, x) if fn is not None else encoder(x)
        out.append(f.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def fit_fold(module: DownstreamModule, out: Path, runtime: RuntimeOptions, max_epochs: int,
             max_steps: int = -1) -> FoldResult:
    """Fit ``module`` on its fold, keep the best validation epoch, predict the test part once.

    Writes ``out/logs/{tb,csv}/fold<k>`` and (with ``keep_checkpoints``) the best epoch's
    weights in ``out/checkpoints/fold<k>/best.ckpt``.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    k = module.fold.index
    score = task_kind(module.kind).selection_key
    ckdir = Path(out) / "checkpoints" / f"fold{k}"
    ckpt = ModelCheckpoint(dirpath=ckdir, filename="best", monitor=score, mode="max",
                           save_top_k=1, save_weights_only=True, auto_insert_metric_name=False,
                           enable_version_counter=False)
    loggers = [
        TensorBoardLogger(save_dir=str(Path(out) / "logs"), name="tb", version=f"fold{k}",
                          default_hp_metric=False),
        CSVLogger(save_dir=str(Path(out) / "logs"), name="csv", version=f"fold{k}"),
    ]
    steps_per_epoch = max(1, -(-len(module.fold.train) // module.batch_size))
    trainer = build_trainer(
        Path(out), runtime.choice, accelerator=runtime.accelerator, devices=runtime.devices,
        strategy=runtime.strategy, max_epochs=max_epochs if max_steps < 0 else -1,
        max_steps=max_steps, callbacks=[ckpt], loggers=loggers,
        log_every_n_steps=max(1, min(50, steps_per_epoch)), progress=runtime.progress,
        use_distributed_sampler=False,  # the module shards the training part itself
    )
    with quiet_fit():
        trainer.fit(module)
        best_path = ckpt.best_model_path
        if best_path:
            state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        test = DataLoader(Rows(module.x, module.y, module.fold.test), batch_size=64, shuffle=False)
        output = torch.cat(trainer.predict(module, dataloaders=test)).numpy()
    if not runtime.keep_checkpoints:
        shutil.rmtree(ckdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            ckdir.parent.rmdir()  # only when no other fold kept anything
    hist = module.history
    vals = [h[score] for h in hist]
    best_i = int(np.argmax(vals)) if vals else 0  # first maximum, as the checkpoint's strict '>'
    return FoldResult(output, hist, best_i + 1 if vals else 0, float(vals[best_i]) if vals else float("nan"))
