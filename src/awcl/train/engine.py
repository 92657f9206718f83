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
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.atomic import atomic_file
from awcl.data.augment import Augment, ViewAugmentConfig, resize_full
from awcl.data.pairs import PairViews, ResumableLoader, collate_views
from awcl.errors import AwclError
from awcl.methods.base import Method
from awcl.models import build_encoder
from awcl.train.schedule import warmup_cosine, warmup_steps

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


def epoch_end_as_last_batch(checkpoint: dict[str, Any]) -> bool:
    """Rewrite the loop state of an epoch-end checkpoint as that of the same moment one hook
    earlier, the end of the epoch's last batch; True when it did.

    With ``max_steps`` set, Lightning (2.6) resumes an epoch-end checkpoint as if a validation
    loop were still to run: it trains one extra batch in the finished epoch and ends it again,
    so the run goes on with other batches than an uninterrupted one. From the last-batch state
    it starts the next epoch at its first batch, as the uninterrupted run did (the epoch-end
    hooks ran before the checkpoint was written and are not repeated)."""
    try:
        fit = checkpoint["loops"]["fit_loop"]
        ep, bp = fit["epoch_progress"], fit["epoch_loop.batch_progress"]
        loop = fit["epoch_loop.state_dict"]
    except (KeyError, TypeError):
        return False
    cur, bcur = ep["current"], bp["current"]
    at_epoch_end = (cur["started"] == cur["processed"] == cur["completed"] + 1 and bp.get("is_last_batch")
                    and bcur["completed"] == bcur["processed"])  # fmt: skip
    if not at_epoch_end:
        return False
    for progress, key in ((ep, "processed"), (bp, "completed")):
        for part in ("total", "current"):
            progress[part][key] -= 1
    if "_batches_that_stepped" in loop:
        loop["_batches_that_stepped"] -= 1
    return True


class PretrainModule(L.LightningModule):
    """Encoder + the method's heads; ``training_step`` = views -> encoder -> method loss."""

    def __init__(self, cfg: Any, method: Method, frames_path: str, channels_last: bool = True):
        super().__init__()
        self.cfg, self.method, self.frames_path = cfg, method, frames_path
        self.channels_last = channels_last
        self.encoder = build_encoder(cfg.init, getattr(cfg, "backbone", None), tuple(cfg.size))
        if channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        if getattr(cfg, "compile", False):
            self.encoder.compile()  # in place: state_dict keys (checkpoints, encoder.pt) unchanged
        self.heads = method.heads(self.encoder.out_dim)
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trainer.max_steps != -1:
            epoch_end_as_last_batch(checkpoint)

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
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.cfg.lr_schedule == "constant":
            return opt
        # per step over the run's real length (max_steps or epochs x batches), so a short run
        # warms up and decays as a long one does. Not trainer.estimated_stepping_batches: it
        # builds the train loader before a checkpoint is restored, so the loader's position is
        # never restored and a mid-epoch --resume replays the epoch from its start.
        t = self.trainer
        batches = len(self.method.sampler(self.cfg.batch_size, self.cfg.seed, t.world_size, t.global_rank))
        total = batches * max(int(t.max_epochs or 1), 1)
        total = min(total, t.max_steps) if t.max_steps != -1 else total
        factor = warmup_cosine(total, warmup_steps(self.cfg.warmup, total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
        self.loss_sum, self.loss_n, self.loss_epoch = 0.0, 0, -1

    def state_dict(self) -> dict[str, Any]:
        # the epoch's loss so far goes into every checkpoint: a run resumed mid-epoch (or from
        # its last checkpoint) reports the epoch loss of an uninterrupted run, not a part of it
        return {"loss_sum": self.loss_sum, "loss_n": self.loss_n, "epoch": self.loss_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning skips on_train_epoch_start when it restarts mid-epoch (and after a checkpoint
        # of an epoch's last batch); the first batch of another epoch resets these
        self.loss_sum = float(state_dict.get("loss_sum", 0.0))
        self.loss_n = int(state_dict.get("loss_n", 0))
        self.loss_epoch = int(state_dict.get("epoch", -1))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()
        self._first = True
        self.epoch_images, self.epoch_seconds = 0, 0.0
        self.loss_sum, self.loss_n, self.loss_epoch = 0.0, 0, trainer.current_epoch

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
        if self.loss_epoch != trainer.current_epoch:
            self.loss_sum, self.loss_n, self.loss_epoch = 0.0, 0, trainer.current_epoch
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
                 query_y: np.ndarray, size: tuple[int, int], k: int = 20, batch: int = 64,
                 every_n_steps: int = 0, curve_path: Path | None = None):
        self.frames_path, self.size, self.k, self.batch = frames_path, tuple(size), k, batch
        self.bank, self.bank_y, self.query, self.query_y = bank, bank_y, query, query_y
        self.last: float = float("nan")
        self.initial: float = float("nan")  # before training (a resumed run: from its checkpoint)
        # the curve (step, knn_acc): step 0, every ``every_n_steps`` steps and each epoch end,
        # written to ``curve_path`` (monitor.csv) so the crossover can be read off one run
        self.every = int(every_n_steps)
        self.curve_path = Path(curve_path) if curve_path else None
        self.curve: list[tuple[int, float]] = []

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

    def _record(self, trainer, step: int, acc: float) -> None:
        self.curve = [(s, a) for s, a in self.curve if s != step] + [(step, acc)]
        if self.curve_path is not None and trainer.is_global_zero:
            with atomic_file(self.curve_path) as tmp, open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(("step", "knn_acc"))
                w.writerows((s, round(a, 6)) for s, a in sorted(self.curve))

    def state_dict(self) -> dict[str, Any]:
        # what was measured so far goes into every checkpoint, so a resumed run (even one resumed
        # from its last checkpoint, which measures nothing) reports what an uninterrupted run does
        return {"initial": self.initial, "last": self.last, "curve": [[s, a] for s, a in self.curve]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial = float(state_dict.get("initial", math.nan))
        self.last = float(state_dict.get("last", math.nan))
        self.curve = [(int(s), float(a)) for s, a in state_dict.get("curve", [])]

    def _load_curve(self, upto: int) -> None:
        """On resume from a checkpoint without the monitor's state: keep the points measured up
        to the checkpoint's step."""
        if not self.curve and self.curve_path is not None and self.curve_path.is_file():
            with open(self.curve_path, newline="") as fh:
                self.curve = [(int(r["step"]), float(r["knn_acc"])) for r in csv.DictReader(fh)
                              if int(r["step"]) <= upto]  # fmt: skip

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:  # resumed: the step-0 value is already in history.csv
            self._load_curve(trainer.global_step)
            return
        self.initial = self.measure(pl_module)
        self._record(trainer, 0, self.initial)
        # self.log() is not allowed in this hook; write the step-0 point to the loggers directly
        for logger in trainer.loggers:
            logger.log_metrics({"knn_acc": self.initial}, step=0)
        if trainer.is_global_zero:
            log.info("kNN monitor: accuracy %.4f before training (step 0, initial encoder)", self.initial)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step not in dict(self.curve):
            acc = self.measure(pl_module)
            self._record(trainer, step, acc)
            for logger in trainer.loggers:
                logger.log_metrics({"knn_acc_step": acc}, step=step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.last = self.measure(pl_module)
        self._record(trainer, trainer.global_step, self.last)
        pl_module.log("knn_acc", self.last, prog_bar=True, on_step=False, on_epoch=True)


class StepCheckpoint(ModelCheckpoint):
    """``every_n_train_steps`` checkpoints, except after an epoch's last batch: the epoch-end
    checkpoint follows there once the epoch's bookkeeping (kNN monitor, history.csv) is done,
    while Lightning resumes a last-batch checkpoint without redoing that bookkeeping (a kill
    between the two would lose the epoch's row and kNN point)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


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
