"""Classification protocols: ``full`` (encoder + head trained) and ``partial`` (encoder
frozen; its feature maps are computed once and only the head is trained on them)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from awcl.data.store import PreparedDataset
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.fit import (
    DownstreamModule,
    FoldResult,
    RuntimeOptions,
    cpu_threads,
    encode,
    fit_fold,
)
from awcl.evaluate.heads import Classifier, last_feature_map, make_head
from awcl.evaluate.plots import plot_confusion, plot_curves
from awcl.evaluate.records import class_fold_record, class_predictions
from awcl.evaluate.selection import load_frames, select_classification, summarize_folds
from awcl.evaluate.summary import classification_summary, fold_classification_metrics
from awcl.evaluate.tasks import CLASSIFY
from awcl.models import build_encoder, encoder_dim

log = logging.getLogger(__name__)


def frozen_features(cfg: FinetuneConfig, frames: torch.Tensor, runtime: RuntimeOptions,
                    batch: int = 64) -> torch.Tensor:
    """Maps of the frozen encoder for every frame, computed once for all folds, on the
    runtime's device at its precision.

    Returns ``[N, 512, 1, 1]`` (pooled; linear/fc2 heads) or ``[N, 512, h, w]`` (sononet);
    the encoder's ``out_dim`` channels.
    """
    torch.manual_seed(cfg.seed)  # the same (random) encoder for every fold
    encoder = build_encoder(cfg.init, cfg.backbone, tuple(frames.shape[-2:]))
    pooled = cfg.resolved_head != "sononet"
    return encode(encoder, frames, runtime,
                  lambda enc, x: _pool(last_feature_map(enc, x, pooled), pooled), batch)


def _pool(f: torch.Tensor, pooled: bool) -> torch.Tensor:
    return f.mean(dim=(2, 3), keepdim=True) if pooled else f


def _fold_module(cfg: FinetuneConfig, frames: torch.Tensor, y: np.ndarray, fold, K: int,
                 runtime: RuntimeOptions, cached: torch.Tensor | None) -> DownstreamModule:
    """The Lightning module of one fold: encoder + head (full) or head on cached maps."""
    p = cfg.resolved_preset()
    torch.manual_seed(cfg.seed + fold.index)
    size = tuple(frames.shape[-2:])
    # sized from the encoder; for full fine-tuning before the encoder is built (as always)
    width = cached.shape[1] if cached is not None else encoder_dim(cfg.init, cfg.backbone, size)
    head = make_head(cfg.resolved_head, K, width)
    optim = p.optim()
    yt = torch.from_numpy(y)
    common = dict(kind="classify", num_classes=K, optim=optim, fold=fold, batch_size=p.batch_size,
                  seed=cfg.seed + fold.index)
    if cfg.protocol == "partial":
        assert cached is not None
        x = cached
        if cfg.resolved_head != "sononet":
            # Standardise with training-part statistics: pooled features of a random or
            # foreign encoder can be large, which makes SGD on a linear head diverge.
            mu = x[fold.train].mean(0, keepdim=True)
            sd = x[fold.train].std(0, keepdim=True).clamp_min(1e-6)
            x = (x - mu) / sd
        return DownstreamModule(head, data=(x, yt), augment_cfg=None, channels_last=False, **common)
    model = Classifier(build_encoder(cfg.init, cfg.backbone, size), head)
    if runtime.choice.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return DownstreamModule(model, data=(frames, yt), augment_cfg=p.augment,
                            channels_last=runtime.choice.channels_last, encoder=model.encoder, **common)


def _train_fold(cfg: FinetuneConfig, frames: torch.Tensor, y: np.ndarray, fold, K: int,
                out: Path, runtime: RuntimeOptions, cached: torch.Tensor | None = None) -> FoldResult:
    """Train on ``fold.train``, select the epoch by val macro-F1, predict ``fold.test`` once."""
    p = cfg.resolved_preset()
    module = _fold_module(cfg, frames, y, fold, K, runtime, cached)
    # head only on a CPU: one thread is faster (the work is too small to share)
    threads = 1 if cfg.protocol == "partial" and runtime.accelerator == "cpu" else None
    with cpu_threads(threads):
        return fit_fold(module, out, runtime, p.epochs, p.iterations or -1)


def run_classification(cfg: FinetuneConfig, ds: PreparedDataset, out: Path,
                    get_runtime: Callable[[], RuntimeOptions]) -> dict:
    """``get_runtime`` resolves the device and precision once the data have been checked."""
    sel = select_classification(cfg, ds)
    rows, sub, y, names, folds, warnings = sel.rows, sel.sub, sel.y, sel.names, sel.folds, sel.warnings
    log.info("%d frames, %d classes (%s), %d fold(s)", len(rows), len(names), ", ".join(names), len(folds))
    frames = load_frames(ds, rows, cfg.size)
    K = len(names)
    per_fold, history, preds = [], [], []
    cm_total = np.zeros((K, K), dtype=np.int64)
    runtime = get_runtime()
    partial = cfg.protocol == "partial"
    cached = frozen_features(cfg, frames, runtime) if partial and cfg.fold_inits is None else None
    for fold in folds:
        fcfg = cfg.for_fold(fold.index)  # per-fold pretraining: the fold's own encoder
        if partial and cfg.fold_inits is not None:
            cached = frozen_features(fcfg, frames, runtime)
        res = _train_fold(fcfg, frames, y, fold, K, out, runtime, cached)
        logits, hist, best_epoch, best_val = res.output, res.history, res.best_epoch, res.best_val
        pred = logits.argmax(1)
        yt = y[fold.test]
        record, cm = class_fold_record(fold, yt, pred, K, best_epoch=best_epoch,
                                        **{CLASSIFY.selection_key: best_val})
        cm_total += cm
        per_fold.append(record)
        history += hist
        prob = torch.softmax(torch.from_numpy(logits), 1).numpy()
        preds.append(class_predictions(sub, fold.test, fold.index, cfg.group, names, yt, pred, prob))
    pred_df = pd.concat(preds)
    per_fold_extra = fold_classification_metrics(pred_df, names)  # AUROC from fold predictions
    for f in per_fold:
        f["auroc"] = per_fold_extra[f["fold"]].get("auroc")
    mean, std = summarize_folds(per_fold, CLASSIFY.metrics)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    pred_df.to_csv(out / "predictions.csv", index=False)
    plot_confusion(cm_total, names, out / "confusion_matrix.png")
    plot_curves(pd.DataFrame(history), out / "curves.png", score=CLASSIFY.selection_key)
    return {
        "task": "classify",
        "protocol": cfg.protocol,
        "head": cfg.resolved_head,
        "init": str(cfg.init),
        "preset": cfg.preset or "task1",
        "data": str(cfg.data),
        "label": cfg.label,
        "classes": names,
        "seed": cfg.seed,
        "split": cfg.split,
        "group": cfg.group,
        "num_frames": len(rows),
        "folds": per_fold,
        "mean": mean,
        "std": std,
        "confusion_matrix": cm_total.tolist(),
        **classification_summary(pred_df, names, cfg.group, cfg.bootstrap, cfg.seed),
        "warnings": warnings,
    }
