"""``awcl finetune``: the entry point of a downstream run, and its run directory.

The configuration and presets live in :mod:`awcl.evaluate.config`, the data selection in
:mod:`awcl.evaluate.selection`, and the protocols in ``classify`` / ``segment`` / ``probe``
(re-exported here, their public path).
``finetune(cfg)`` runs every fold of a classification or segmentation protocol, writes the
run directory atomically (temporary sibling renamed on success) and returns the metrics dict
that it also writes to ``metrics.json`` (schema in docs/finetune.md).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import platform
import time
from dataclasses import asdict

import torch
import yaml

from awcl import _compat  # noqa: F401
from awcl.atomic import RunDir
from awcl.data.store import open_dataset
from awcl.errors import DataError
from awcl.evaluate.classify import run_classification
from awcl.evaluate.config import PRESETS, PROBES, PROTOCOLS, TASKS, FinetuneConfig, Preset
from awcl.evaluate.fit import RuntimeOptions
from awcl.evaluate.probe import run_probe
from awcl.evaluate.sanity import check_metrics
from awcl.evaluate.segment import run_segmentation
from awcl.evaluate.selection import (
    check_fold_classes,
    drop_rare_classes,
    load_frames,
    make_folds,
    resolve_labels,
    subsample_per_video,
    summarize_folds,
)
from awcl.locking import out_lock
from awcl.runtime.trainer import is_global_zero

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS", "PROBES", "PROTOCOLS", "TASKS", "FinetuneConfig", "Preset", "RunDir",
    "check_fold_classes", "drop_rare_classes", "finetune", "load_frames", "make_folds",
    "resolve_labels", "subsample_per_video", "summarize_folds",
]  # fmt: skip

def config_record(cfg: FinetuneConfig) -> dict:
    d = asdict(cfg)
    d["size"] = list(cfg.size) if cfg.size else None
    d["resolved_preset"] = json.loads(json.dumps(asdict(cfg.resolved_preset())))
    if cfg.task == "classify":
        d["resolved_head"] = cfg.resolved_head
    return d


# ---------------------------------------------------------------------------- entry point
def finetune(cfg: FinetuneConfig) -> dict:
    """Run a downstream protocol on every fold; write the run directory; return metrics."""
    cfg = copy.deepcopy(cfg)
    cfg.validate()
    with out_lock(cfg.out, "fine-tuning run") if is_global_zero() else contextlib.nullcontext():
        return _finetune(cfg)


def _finetune(cfg: FinetuneConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = open_dataset(cfg.data)
    if cfg.group not in ds.manifest.columns:
        raise DataError(f"{ds.root}: manifest has no grouping column {cfg.group!r}")

    @functools.cache
    def get_runtime() -> RuntimeOptions:
        """Resolved once the data have been checked (choosing may time a few steps)."""
        e = cfg.runtime(tuple(cfg.size) if cfg.size else tuple(ds.size))
        log.info("precision %s%s on %s: %s", e.choice.precision,
                 " + channels_last" if e.choice.channels_last else "", e.choice.device,
                 e.choice.reason)
        return e

    run = RunDir(cfg.out)
    t0 = time.time()
    try:
        if cfg.protocol in PROBES:
            metrics = run_probe(cfg, ds, run.tmp, get_runtime)
        elif cfg.task == "classify":
            metrics = run_classification(cfg, ds, run.tmp, get_runtime)
        else:
            metrics = run_segmentation(cfg, ds, run.tmp, get_runtime)
        metrics["elapsed_s"] = round(time.time() - t0, 2)
        metrics["learned"] = check_metrics(metrics)
        if not metrics["learned"]["learned"]:
            # the stored warning names no path: the same run elsewhere writes the same record
            log.warning("%s: %s", cfg.out, metrics["learned"]["reason"])
            metrics.setdefault("warnings", []).append(metrics["learned"]["reason"])
        runtime = get_runtime()
        metrics["environment"] = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "accelerator": runtime.accelerator,
            "devices": str(runtime.devices),
            **runtime.choice.to_dict(),
        }
        (run.tmp / "config.yaml").write_text(yaml.safe_dump(config_record(cfg), sort_keys=False))
        (run.tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if not is_global_zero():  # other DDP processes computed the same; rank zero writes
            run.abort()
            return metrics
        run.commit()
    except BaseException:
        run.abort()
        raise
    log.info("wrote %s (%.1f s)", cfg.out, metrics["elapsed_s"])
    return metrics
