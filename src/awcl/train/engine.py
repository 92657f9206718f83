"""The Lightning side of pretraining: the module, its data loader, and the callbacks that
measure throughput, run the kNN monitor and write ``history.csv``.

Images travel as uint8 (4x less to copy than float) and become float [0, 1] tensors inside
the step (channels_last where the precision choice says so), under Lightning's autocast at
the precision chosen for the hardware (``awcl.train.precision``).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.atomic import atomic_file
from awcl.data.augment import Augment, ViewAugmentConfig, resize_full
from awcl.data.pairs import PairViews, ResumableLoader, collate_views
from awcl.errors import AwclError
from awcl.methods.base import Method
from awcl.models import build_encoder

log = logging.getLogger(__name__)


class NonFiniteLoss(AwclError):
    """The loss became NaN/inf; training stops and the last good checkpoint is kept."""


def _worker_context() -> str | None:
    """'forkserver' where the platform has it (Linux), else the platform default."""
    import multiprocessing as mp

    return "forkserver" if "forkserver" in mp.get_all_start_methods() else None


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # workers are processes already; no nested thread pools
    torch.set_num_threads(1)


def to_input(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [0, 1] (channels_last when asked)."""
    x = x.unsqueeze(1).float() / 255.0
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class PretrainModule(L.LightningModule):
    """Encoder + the method's heads; ``training_step`` = views -> encoder -> method loss."""

    def __init__(self, cfg: Any, method: Method, frames_path: str, channels_last: bool = True):
        super().__init__()
        self.cfg, self.method, self.frames_path = cfg, method, frames_path
        self.channels_last = channels_last
        self.encoder = build_encoder(cfg.init)
        if channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        if getattr(cfg, "compile", False):
            self.encoder.compile()  # in place: state_dict keys (checkpoints, encoder.pt) unchanged
        self.heads = method.heads()
        self.augment = Augment(
            ViewAugmentConfig(
                size=tuple(cfg.size),
                crop_scale=tuple(cfg.crop_scale),
                flip=cfg.flip,
                brightness=cfg.brightness,
                contrast=cfg.contrast,
                blur=cfg.blur,
            )
        )

    def train_dataloader(self) -> ResumableLoader:
        trainer = self.trainer
        sampler = self.method.sampler(
            self.cfg.batch_size, self.cfg.seed, trainer.world_size, trainer.global_rank
        )
        sampler.epoch_source = lambda: trainer.fit_loop.epoch_progress.current.processed
        self.sampler = sampler
        workers = int(self.cfg.num_workers)
        return ResumableLoader(
            PairViews(self.frames_path, self.augment, views=self.method.views),
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate_views,
            worker_init_fn=_worker_init if workers > 0 else None,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # fork() from a process with live threads (TensorBoard writer, tqdm monitor, a
            # previous run's pools) can copy a held lock into the worker and hang it; workers
            # forked from a clean forkserver process cannot.
            multiprocessing_context=_worker_context() if workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["x1"] if "x2" not in batch else torch.cat([batch["x1"], batch["x2"]])
        h = self.encoder(to_input(x, self.channels_last))  # [V·B, 512]
        loss, logs = self.method.loss(self.heads, h, batch)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLoss(
                f"loss became {loss.item()} at epoch {self.current_epoch} step {self.global_step} "
                f"(lower --lr or check the data); stopped, last good checkpoint kept in "
                f"{Path(self.cfg.out) / 'checkpoints'}"
            )
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        for k, v in logs.items():
            self.log(k, v, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )


class Throughput(Callback):
    """Images/s end to end (data wait included): time between consecutive batch ends.

    The first ``warmup`` steps of the run and the first step of each epoch (worker start-up)
    are left out of the steady-state figure.
    """

    def __init__(self, warmup: int = 3):
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self.epoch_images = 0
        self.epoch_seconds = 0.0
        self._last: float | None = None
        self._steps = 0
        self._first = True
        self.loss_sum, self.loss_n = 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()
        self._first = True
        self.epoch_images, self.epoch_seconds = 0, 0.0
        self.loss_sum, self.loss_n = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sampler = getattr(pl_module, "sampler", None)
        if sampler is not None:
            sampler.done += 1  # before ModelCheckpoint saves (checkpoint callbacks run last)
        now = time.perf_counter()
        n = batch["x1"].shape[0] * (2 if "x2" in batch else 1) * trainer.world_size
        dt = now - (self._last or now)
        self._last = now
        self._steps += 1
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.loss_sum += float(loss)
            self.loss_n += 1
        if self._first:
            self._first = False
            return
        self.epoch_images += n
        self.epoch_seconds += dt
        if self._steps > self.warmup:
            self.images += n
            self.seconds += dt
        if dt > 0:
            pl_module.log("img/s", n / dt, prog_bar=True, on_step=True, on_epoch=False)

    @property
    def steady(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def epoch_loss(self) -> float:
        """Mean training loss of this epoch on this process."""
        return self.loss_sum / self.loss_n if self.loss_n else float("nan")

    @property
    def epoch_rate(self) -> float:
        return self.epoch_images / self.epoch_seconds if self.epoch_seconds > 0 else float("nan")


class KnnMonitor(Callback):
    """kNN accuracy of encoder features: bank = labelled frames of training patients, queries =
    labelled frames of held-out patients (whose labels pretraining never sees).

    Measured once before the first step (``initial``: the accuracy of the initial encoder, the
    random-init baseline of a run from scratch) and after every epoch (``last``). Measuring
    runs the encoder in eval mode without gradients and draws no random numbers, so it leaves
    training (and an exact resume) unchanged.
    """

    def __init__(self, frames_path: str, bank: np.ndarray, bank_y: np.ndarray, query: np.ndarray,
                 query_y: np.ndarray, size: tuple[int, int], k: int = 20, batch: int = 64):
        self.frames_path, self.size, self.k, self.batch = frames_path, tuple(size), k, batch
        self.bank, self.bank_y, self.query, self.query_y = bank, bank_y, query, query_y
        self.last: float = float("nan")
        self.initial: float = float("nan")  # before training (NaN on a resumed run)

    @torch.no_grad()
    def features(self, pl_module: PretrainModule, rows: np.ndarray) -> torch.Tensor:
        frames = np.load(self.frames_path, mmap_mode="r")
        enc = pl_module.encoder
        out = []
        for s in range(0, len(rows), self.batch):
            x = np.stack([resize_full(np.asarray(frames[i]), self.size) for i in rows[s : s + self.batch]])
            x = to_input(torch.from_numpy(x), pl_module.channels_last).to(pl_module.device)
            with pl_module.trainer.precision_plugin.forward_context():
                out.append(torch.nn.functional.normalize(enc(x).float(), dim=1).cpu())
        return torch.cat(out)

    def measure(self, pl_module: PretrainModule) -> float:
        """kNN accuracy of the current encoder on the query frames."""
        was = pl_module.encoder.training
        pl_module.encoder.eval()
        try:
            fb = self.features(pl_module, self.bank)
            fq = self.features(pl_module, self.query)
        finally:
            pl_module.encoder.train(was)
        sim = fq @ fb.T  # [Q, N] cosine
        k = min(self.k, len(self.bank))
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(self.query), int(self.bank_y.max()) + 1)
        # similarity-weighted vote (InstDisc style, temperature 0.1)
        votes.scatter_add_(1, torch.from_numpy(self.bank_y)[idx], (top / 0.1).exp())
        return float((votes.argmax(1).numpy() == self.query_y).mean())

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:  # resumed: the step-0 value is already in history.csv
            return
        self.initial = self.measure(pl_module)
        # self.log() is not allowed in this hook; write the step-0 point to the loggers directly
        for logger in trainer.loggers:
            logger.log_metrics({"knn_acc": self.initial}, step=0)
        if trainer.is_global_zero:
            log.info("kNN monitor: accuracy %.4f before training (step 0, initial encoder)", self.initial)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.last = self.measure(pl_module)
        pl_module.log("knn_acc", self.last, prog_bar=True, on_step=False, on_epoch=True)


class History(Callback):
    """One row per epoch in ``history.csv`` (epoch, step, loss, img/s, knn_acc, seconds); rank
    zero only. ``epoch`` counts the epochs completed, so with the kNN monitor on, the row with
    ``epoch`` 0 and ``step`` 0 holds the accuracy before training (loss and img/s empty).

    Kept in step with the checkpoints: on resume rows from epochs not yet redone are kept."""

    FIELDS = ("epoch", "step", "loss", "img_per_s", "knn_acc", "seconds")

    def __init__(self, path: Path, throughput: Throughput, monitor: KnnMonitor | None):
        self.path, self.throughput, self.monitor = Path(path), throughput, monitor
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        # runs after the monitor's on_train_start (callbacks are called in list order)
        if self.monitor is None or trainer.global_step > 0 or not trainer.is_global_zero:
            return
        row = {"epoch": 0, "step": 0, "loss": math.nan, "img_per_s": math.nan,
               "knn_acc": self.monitor.initial, "seconds": 0.0}  # fmt: skip
        self._write([row])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as fh:
            return list(csv.DictReader(fh))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with atomic_file(self.path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1  # epochs completed, this one included
        row = {
            "epoch": epoch,
            "step": trainer.global_step,
            "loss": round(self.throughput.epoch_loss, 6),
            "img_per_s": round(self.throughput.epoch_rate, 2),
            "knn_acc": self.monitor.last if self.monitor else math.nan,
            "seconds": round(time.perf_counter() - self._t0, 2),
        }
        self._write([r for r in self.rows() if int(r["epoch"]) < epoch] + [row])
