"""Classification protocols: ``full`` (encoder + head trained) and ``partial`` (encoder
frozen; its feature maps are computed once and only the head is trained on them)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from awcl.data.store import PreparedDataset
from awcl.evaluate.augment import augment
from awcl.evaluate.finetune import (
    FinetuneConfig,
    autocast,
    check_fold_classes,
    drop_rare_classes,
    load_frames,
    make_folds,
    make_optimizer,
    resolve_labels,
    subsample_per_video,
    summarize_folds,
    to_input,
)
from awcl.evaluate.heads import Classifier, last_feature_map, make_head
from awcl.evaluate.metrics import class_confusion, classification_metrics
from awcl.evaluate.plots import plot_confusion, plot_curves
from awcl.evaluate.summary import classification_summary, fold_classification_metrics
from awcl.models import build_encoder

log = logging.getLogger(__name__)
METRIC_KEYS = ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "auroc"]


def _predict(fn, n: int, batch: int) -> np.ndarray:
    """Concatenate ``fn(slice)`` logits (float32 numpy) over ``n`` rows in batches."""
    out = []
    with torch.no_grad():
        for s in range(0, n, batch):
            out.append(fn(slice(s, min(n, s + batch))).float())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@contextlib.contextmanager
def _threads(n: int | None):
    """Run with ``n`` intra-op threads (tiny head-only steps are slower with more: the
    threads' synchronisation outweighs the work, badly so on a busy machine)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def frozen_features(cfg: FinetuneConfig, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Maps of the frozen encoder for every frame, computed once for all folds.

    Returns ``[N, 512, 1, 1]`` (pooled; linear/fc2 heads) or ``[N, 512, h, w]`` (sononet).
    """
    torch.manual_seed(cfg.seed)  # the same (random) encoder for every fold
    encoder = build_encoder(cfg.init).eval()
    if cfg.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    out = []
    with torch.no_grad(), autocast(cfg):
        for s in range(0, len(frames), batch):
            f = last_feature_map(encoder, to_input(frames[s : s + batch], cfg)).float()
            out.append(f.mean(dim=(2, 3), keepdim=True) if cfg.head != "sononet" else f)
    return torch.cat(out)


def _train_fold(
    cfg: FinetuneConfig,
    frames: torch.Tensor,  # uint8 [N, H, W] of the used rows
    y: np.ndarray,  # [N] class index
    fold,
    num_classes: int,
    cached: torch.Tensor | None = None,  # partial: frozen-encoder maps of all rows
) -> tuple[np.ndarray, list[dict], int, float]:
    """Train on ``fold.train``, select the epoch by val macro-F1; return test logits,
    the per-epoch history, the best epoch and its val F1."""
    p = cfg.resolved_preset()
    torch.manual_seed(cfg.seed + fold.index)
    g = torch.Generator().manual_seed(cfg.seed + fold.index)
    head = make_head(cfg.head, num_classes)
    yt = torch.from_numpy(y)
    bs = p.batch_size

    if cfg.protocol == "partial":
        assert cached is not None
        cfg = dataclasses.replace(cfg, bf16=False)  # head only: autocast costs more than it saves
        cache = {k: cached[getattr(fold, k)] for k in ("train", "val", "test")}
        if cfg.head != "sononet":
            # Standardise with training-part statistics: pooled features of a random or
            # foreign encoder can be large, which makes SGD on a linear head diverge.
            mu = cache["train"].mean(0, keepdim=True)
            sd = cache["train"].std(0, keepdim=True).clamp_min(1e-6)
            cache = {k: (v - mu) / sd for k, v in cache.items()}
        model = head
        forward = {k: (lambda sl, k=k: model(cache[k][sl])) for k in cache}
        train_input = lambda idx: cache["train"][idx]  # noqa: E731
    else:
        model = Classifier(build_encoder(cfg.init), head)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)

        def fwd(rows):
            return lambda sl: model(to_input(frames[rows[sl]], cfg))

        forward = {k: fwd(getattr(fold, k)) for k in ("train", "val", "test")}

        def train_input(idx):
            x = to_input(frames[fold.train[idx]], cfg)
            x, _ = augment(x, p.augment, g)
            return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

    opt, sched = make_optimizer(model.parameters(), p)
    y_train = yt[fold.train]
    history, best = [], (-1.0, 0, None)
    with _threads(1 if cfg.protocol == "partial" else None):
        for epoch in range(1, p.epochs + 1):
            best = _epoch(cfg, p, model, opt, sched, g, fold, y, yt, y_train, train_input,
                          forward, num_classes, bs, epoch, history, best)
    model.load_state_dict(best[2])
    model.eval()
    with autocast(cfg):
        test_logits = _predict(forward["test"], len(fold.test), 64)
    return test_logits, history, best[1], best[0]


def _epoch(cfg, p, model, opt, sched, g, fold, y, yt, y_train, train_input, forward,
           num_classes, bs, epoch, history, best):
    """One training epoch and its validation; returns the (val F1, epoch, state) best so far."""
    model.train()
    perm = torch.randperm(len(fold.train), generator=g)
    tot, n = 0.0, 0
    for s in range(0, len(perm), bs):
        idx = perm[s : s + bs]
        if len(idx) < 2 and len(perm) > 1:
            continue  # BatchNorm cannot train on a single sample
        with autocast(cfg):
            logits = model(train_input(idx))
        loss = F.cross_entropy(logits.float(), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
        n += len(idx)
    sched.step()
    model.eval()
    with autocast(cfg):
        val_logits = _predict(forward["val"], len(fold.val), 64)
    vm = classification_metrics(y[fold.val], val_logits.argmax(1), num_classes)
    vloss = float(F.cross_entropy(torch.from_numpy(val_logits), yt[fold.val]))
    history.append(
        {"fold": fold.index, "epoch": epoch, "train_loss": tot / max(n, 1), "val_loss": vloss,
         "val_accuracy": vm["accuracy"], "val_f1": vm["f1"], "lr": opt.param_groups[0]["lr"]}
    )
    log.info("fold %d epoch %d: loss %.4f val F1 %.4f", fold.index, epoch, tot / max(n, 1), vm["f1"])
    if vm["f1"] > best[0]:
        best = (vm["f1"], epoch, copy.deepcopy(model.state_dict()))
    return best


def run_classification(cfg: FinetuneConfig, ds: PreparedDataset, out: Path) -> dict:
    m = ds.manifest
    src = str(ds.root / "manifest.csv")
    y_all, names = resolve_labels(m, cfg.label, cfg.classes, src)
    groups_all = m[cfg.group].astype(str).to_numpy()
    need = 2 if cfg.split == "fixed" else cfg.folds
    y_all, names, warnings = drop_rare_classes(
        y_all, groups_all, names, need, explicit=bool(cfg.classes)
    )
    rows = np.flatnonzero(y_all >= 0)
    rows = subsample_per_video(m, rows, cfg.max_per_video)
    sub = m.iloc[rows].reset_index(drop=True)
    y, groups = y_all[rows], groups_all[rows]
    folds = make_folds(cfg, sub, y, groups, src)
    warnings += check_fold_classes(folds, y, names)
    log.info("%d frames, %d classes (%s), %d fold(s)", len(rows), len(names), ", ".join(names), len(folds))
    frames = load_frames(ds, rows, cfg.size)
    K = len(names)
    per_fold, history, preds = [], [], []
    cm_total = np.zeros((K, K), dtype=np.int64)
    cached = frozen_features(cfg, frames) if cfg.protocol == "partial" else None
    for fold in folds:
        logits, hist, best_epoch, best_val = _train_fold(cfg, frames, y, fold, K, cached)
        pred = logits.argmax(1)
        yt = y[fold.test]
        met = classification_metrics(yt, pred, K)
        cm = class_confusion(yt, pred, K)
        cm_total += cm
        per_fold.append(
            {"fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val),
             "n_test": len(fold.test), "best_epoch": best_epoch, "val_f1": best_val, **met,
             "confusion_matrix": cm.tolist()}
        )
        history += hist
        prob = torch.softmax(torch.from_numpy(logits), 1).numpy()
        pf = sub.iloc[fold.test][list(dict.fromkeys(["frame_id", "video_id", "patient_id", cfg.group]))].copy()
        pf.insert(0, "fold", fold.index)
        pf["true"] = [names[i] for i in yt]
        pf["pred"] = [names[i] for i in pred]
        for ci, n in enumerate(names):
            pf[f"prob_{n}"] = prob[:, ci]
        preds.append(pf)
    pred_df = pd.concat(preds)
    per_fold_extra = fold_classification_metrics(pred_df, names)  # AUROC from fold predictions
    for f in per_fold:
        f["auroc"] = per_fold_extra[f["fold"]].get("auroc")
    mean, std = summarize_folds(per_fold, METRIC_KEYS)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    pred_df.to_csv(out / "predictions.csv", index=False)
    plot_confusion(cm_total, names, out / "confusion_matrix.png")
    plot_curves(pd.DataFrame(history), out / "curves.png", score="val_f1")
    return {
        "task": "classify",
        "protocol": cfg.protocol,
        "head": cfg.head,
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
