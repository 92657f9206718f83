"""The one place a Lightning ``Trainer`` is configured for awcl's training loops.

Pretraining (``awcl.train.pretrain``) and every downstream protocol (``awcl.evaluate.fit``)
build their trainer here, so devices, precision, progress bars and logs behave alike.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO

from awcl import (
    _compat,  # noqa: F401  (before lightning/torchvision)
    logs,
)
from awcl.atomic import atomic_file
from awcl.runtime.precision import Choice


class _DropHardwareBanner(logging.Filter):
    """Lightning prints which accelerators exist and a product tip on every fit (one fold,
    one probe: dozens per study). awcl logs its own device and precision choice once, with
    the reason, so these lines are dropped; everything else Lightning says still shows."""

    PREFIXES = ("GPU available", "TPU available", "HPU available", "IPU available", "💡 Tip")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.PREFIXES)


BANNER_FILTER = _DropHardwareBanner()
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    if BANNER_FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(BANNER_FILTER)


def parse_devices(devices: str | int) -> int | str:
    """'auto' stays a string; '2' becomes 2."""
    d = str(devices)
    return int(d) if d.isdigit() else d


def file_loggers(out: Path, name: str = "logs") -> list:
    """TensorBoard events in ``out/name/tb`` and per-step metrics in ``out/name/csv``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return [
        TensorBoardLogger(save_dir=str(out), name=name, version="tb", default_hp_metric=False),
        CSVLogger(save_dir=str(out), name=name, version="csv"),
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written to a temporary sibling and renamed: a full
    disk or a kill mid-write leaves the previous checkpoint, never a torn ``epoch000.ckpt``
    that --resume would then fail to load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def build_trainer(out: Path, choice: Choice, *, accelerator: str, devices: str | int = 1,
                  num_nodes: int = 1, strategy: str = "auto", max_epochs: int = 1,
                  max_steps: int = -1, callbacks: list | None = None, loggers: list | None = None,
                  log_every_n_steps: int = 10, progress: bool = True,
                  use_distributed_sampler: bool = True, **kw) -> L.Trainer:
    """A Trainer at the hardware's precision ``choice``; no sanity validation, no model summary.
    Checkpoints are written atomically (:class:`AtomicCheckpointIO`)."""
    kw.setdefault("plugins", [AtomicCheckpointIO()])
    return L.Trainer(
        accelerator=accelerator,
        devices=parse_devices(devices),
        num_nodes=num_nodes,
        strategy=strategy,
        precision=choice.precision,
        max_epochs=max_epochs,
        max_steps=max_steps,
        callbacks=callbacks or [],
        logger=loggers if loggers is not None else file_loggers(Path(out)),
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=use_distributed_sampler,
        deterministic=False,
        default_root_dir=str(out),
        **kw,
    )


@contextmanager
def quiet_fit() -> Iterator[None]:
    """Hide Lightning's advice that does not apply to awcl's loaders (in-memory tensors), and
    the deprecation notices of our dependencies about each other (``--verbose`` shows them)."""
    with warnings.catch_warnings():
        if not logs.verbose():
            # lightning's own _pytree builds torch's deprecated LeafSpec on every fit
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(lightning|torch|torchvision|timm)\b.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Precision bf16-mixed is not supported.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        # awcl skips a one-sample batch on purpose (BatchNorm cannot train on it: evaluate/fit.py)
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        yield


def is_global_zero() -> bool:
    """Rank zero of a distributed launch, or a single process. Works before any process group
    exists (torchrun sets RANK, Lightning's launcher LOCAL_RANK/NODE_RANK, SLURM SLURM_PROCID)."""
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in keys)
