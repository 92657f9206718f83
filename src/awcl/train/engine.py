"""The Lightning side of pretraining: the module and its data loader (the callbacks that
measure throughput, run the kNN monitor and write ``history.csv`` are in
``awcl.train.callbacks``).

Images travel as uint8 (4x less to copy than float) and become float [0, 1] tensors inside
the step (channels_last where the precision choice says so), under Lightning's autocast at
the precision chosen for the hardware (``awcl.runtime.precision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from awcl import _compat  # noqa: F401  (before lightning/torchvision)
from awcl.data.augment import Augment, ViewAugmentConfig
from awcl.data.views import PairViews, ResumableLoader, collate_views
from awcl.errors import AwclError
from awcl.methods.base import Method
from awcl.models import build_encoder
from awcl.runtime.inputs import to_input
from awcl.runtime.schedule import warmup_cosine, warmup_steps


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
