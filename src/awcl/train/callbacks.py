"""The callbacks of a pretraining run: throughput (and the epoch's loss), the kNN monitor,
the every-N-step checkpoint and ``history.csv``.

Lightning keys a callback's checkpointed state by its class name, so these keep theirs.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.atomic import atomic_file
from awcl.data.augment import resize_full
from awcl.runtime.inputs import to_input

if TYPE_CHECKING:
    from awcl.train.engine import PretrainModule

log = logging.getLogger("awcl.train.engine")  # the name its log lines have always had


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
                 every_n_steps: int = 0, curve_path: Path | None = None,
                 others: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 query_groups: np.ndarray | None = None):
        self.frames_path, self.size, self.k, self.batch = frames_path, tuple(size), k, batch
        self.bank, self.bank_y, self.query, self.query_y = bank, bank_y, query, query_y
        # other label sets scored on the same features (e.g. the coarse anatomy beside the
        # fine views): name -> (bank labels, query labels), -1 where a frame has none
        self.others = dict(others or {})
        self.last: float = float("nan")
        self.initial: float = float("nan")  # before training (a resumed run: from its checkpoint)
        # the curve (step, knn_acc): step 0, every ``every_n_steps`` steps and each epoch end,
        # written to ``curve_path`` (monitor.csv) so the crossover can be read off one run;
        # ``other_curves`` holds the same steps for each of ``others``
        self.every = int(every_n_steps)
        self.curve_path = Path(curve_path) if curve_path else None
        self.curve: list[tuple[int, float]] = []
        self.other_curves: dict[str, list[tuple[int, float]]] = {name: [] for name in self.others}
        self._other_now: dict[str, float] = {}
        # per query: its patient as a code 0..G-1 (no identifier), and whether the kNN vote was
        # right before the first step and at the last epoch end: the report's interval of
        # (final - step 0) resamples these patients
        self.query_groups = None if query_groups is None else np.asarray(query_groups, dtype=np.int64)
        self.initial_hits: np.ndarray | None = None
        self.last_hits: np.ndarray | None = None
        self._hits_now: np.ndarray | None = None

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

    def knn_hits(self, sim: torch.Tensor, bank_y: np.ndarray, query_y: np.ndarray) -> np.ndarray:
        """Similarity-weighted kNN vote (InstDisc style, temperature 0.1) of ``sim`` [Q, N]
        (queries x bank, cosine) -> [Q'] bool, right or not per labelled query; bank frames and
        queries labelled -1 take no part."""
        qk, bk = query_y >= 0, bank_y >= 0
        if not qk.any() or not bk.any():
            return np.zeros(0, dtype=bool)
        sim = sim[torch.from_numpy(qk)][:, torch.from_numpy(bk)]
        by, qy = bank_y[bk], query_y[qk]
        top, idx = sim.topk(min(self.k, len(by)), dim=1)
        votes = torch.zeros(len(qy), int(by.max()) + 1)
        votes.scatter_add_(1, torch.from_numpy(by)[idx], (top / 0.1).exp())
        return votes.argmax(1).numpy() == qy

    def knn_accuracy(self, sim: torch.Tensor, bank_y: np.ndarray, query_y: np.ndarray) -> float:
        return _accuracy(self.knn_hits(sim, bank_y, query_y))

    def measure(self, pl_module: PretrainModule) -> float:
        """kNN accuracy of the current encoder on the query frames (the other label sets are
        scored on the same features and kept for the next :meth:`_record`)."""
        was = pl_module.encoder.training
        pl_module.encoder.eval()
        try:
            fb = self.features(pl_module, self.bank)
            fq = self.features(pl_module, self.query)
        finally:
            pl_module.encoder.train(was)
        sim = fq @ fb.T  # [Q, N] cosine
        self._other_now = {name: self.knn_accuracy(sim, by, qy) for name, (by, qy) in self.others.items()}
        self._hits_now = self.knn_hits(sim, self.bank_y, self.query_y)
        return _accuracy(self._hits_now)

    def _record(self, trainer, step: int, acc: float) -> None:
        self.curve = [(s, a) for s, a in self.curve if s != step] + [(step, acc)]
        for name, a in self._other_now.items():
            self.other_curves[name] = [(s, x) for s, x in self.other_curves[name] if s != step] + [(step, a)]
        if self.curve_path is not None and trainer.is_global_zero:
            others = {name: dict(c) for name, c in self.other_curves.items()}
            with atomic_file(self.curve_path) as tmp, open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(("step", "knn_acc", *(f"knn_acc_{n}" for n in others)))
                w.writerows((s, round(a, 6), *(_rounded(o.get(s)) for o in others.values()))
                            for s, a in sorted(self.curve))  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        # what was measured so far goes into every checkpoint, so a resumed run (even one resumed
        # from its last checkpoint, which measures nothing) reports what an uninterrupted run does
        return {"initial": self.initial, "last": self.last, "curve": [[s, a] for s, a in self.curve],
                "other_curves": {n: [[s, a] for s, a in c] for n, c in self.other_curves.items()},
                "initial_hits": _as_list(self.initial_hits), "last_hits": _as_list(self.last_hits)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial = float(state_dict.get("initial", math.nan))
        self.last = float(state_dict.get("last", math.nan))
        self.curve = [(int(s), float(a)) for s, a in state_dict.get("curve", [])]
        self.initial_hits = _as_hits(state_dict.get("initial_hits"))
        self.last_hits = _as_hits(state_dict.get("last_hits"))
        saved = state_dict.get("other_curves", {})
        self.other_curves = {n: [(int(s), float(a)) for s, a in saved.get(n, [])] for n in self.others}

    def _load_curve(self, upto: int) -> None:
        """On resume from a checkpoint without the monitor's state: keep the points measured up
        to the checkpoint's step."""
        if not self.curve and self.curve_path is not None and self.curve_path.is_file():
            with open(self.curve_path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]
            self.curve = [(int(r["step"]), float(r["knn_acc"])) for r in rows]
            self.other_curves = {n: [(int(r["step"]), float(r[f"knn_acc_{n}"])) for r in rows
                                     if r.get(f"knn_acc_{n}") not in (None, "")] for n in self.others}  # fmt: skip

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:  # resumed: the step-0 value is already in history.csv
            self._load_curve(trainer.global_step)
            return
        self.initial = self.measure(pl_module)
        self.initial_hits = self._hits_now
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
        self.last_hits = self._hits_now
        self._record(trainer, trainer.global_step, self.last)
        pl_module.log("knn_acc", self.last, prog_bar=True, on_step=False, on_epoch=True)


def _accuracy(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


def _as_list(hits: np.ndarray | None) -> list[int] | None:
    return None if hits is None else hits.astype(int).tolist()


def _as_hits(saved: Any) -> np.ndarray | None:
    return None if saved is None else np.asarray(saved, dtype=bool)


def hits_record(monitor: KnnMonitor) -> dict[str, list[int]] | None:
    """summary.json's ``knn_hits``: per held-out patient (a code 0..G-1, no identifier), its
    monitor queries and how many of them the kNN vote got right at step 0 and at the end; what
    a paired bootstrap over patients needs. None when a part is missing (e.g. resumed from a
    checkpoint written before the monitor kept the votes)."""
    g, a, b = monitor.query_groups, monitor.initial_hits, monitor.last_hits
    if g is None or a is None or b is None or not (len(g) == len(a) == len(b)) or not len(g):
        return None
    n = int(g.max()) + 1
    return {"queries": np.bincount(g, minlength=n).tolist(),
            "init": np.bincount(g, weights=a.astype(np.float64), minlength=n).astype(int).tolist(),
            "final": np.bincount(g, weights=b.astype(np.float64), minlength=n).astype(int).tolist()}


def _rounded(v: float | None) -> float | str:
    return "" if v is None or not math.isfinite(v) else round(v, 6)


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
