"""Segmentation protocol (Task III): ResNet-18 encoder + U-Net decoder, pixel metrics, and
head circumference (HC18) from an ellipse fitted to the predicted head."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from awcl.data.store import PreparedDataset
from awcl.errors import AwclError, DataError
from awcl.evaluate.augment import augment
from awcl.evaluate.finetune import (
    FinetuneConfig,
    autocast,
    load_frames,
    make_folds,
    make_optimizer,
    subsample_per_video,
    summarize_folds,
    to_input,
)
from awcl.evaluate.heads import UNet
from awcl.evaluate.metrics import head_circumference_mm, pixel_confusion, segmentation_metrics
from awcl.evaluate.plots import plot_confusion, plot_curves
from awcl.evaluate.summary import frame_means, segmentation_frame_columns, segmentation_summary
from awcl.models import build_encoder

log = logging.getLogger(__name__)
METRIC_KEYS = ["gaa", "ma", "miou", "dice", "hd95_mm", "msd_mm", "hd95_px", "msd_px", "hc_mae_mm",
               "hc_mae_vs_gt_ellipse_mm"]
HC_COLUMNS = ("hc_mm", "head_circumference_mm")


def load_masks(ds: PreparedDataset, rows: np.ndarray, size: tuple[int, int] | None,
               num_classes: int) -> torch.Tensor:
    """uint8 ``[N, H, W]`` class-index masks (nearest resize); unexpected values raise."""
    out = []
    for i in rows:
        mk = ds.mask(int(i))
        if size and mk.shape != tuple(size):
            mk = cv2.resize(np.asarray(mk), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        out.append(np.asarray(mk))
    masks = np.stack(out)
    bad = np.unique(masks[masks >= num_classes])
    if len(bad):
        first = int(rows[int(np.argmax((masks >= num_classes).reshape(len(masks), -1).any(1)))])
        raise DataError(
            f"{ds.root / 'masks.npy'}: mask values {bad.tolist()} outside the classes "
            f"0..{num_classes - 1} (first in frame {ds.manifest['frame_id'].iat[first]!r})"
        )
    return torch.from_numpy(masks)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over foreground classes. ``logits: [B,C,H,W]``, ``target: [B,H,W]``."""
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    den = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (den + 1)).mean()


def _predict(model, frames, rows, cfg, batch=32) -> np.ndarray:
    """Predicted class masks ``[N, H, W]`` uint8."""
    out = []
    with torch.no_grad(), autocast(cfg):
        for s in range(0, len(rows), batch):
            out.append(model(to_input(frames[rows[s : s + batch]], cfg)).argmax(1).to(torch.uint8))
    return torch.cat(out).numpy()


def _train_fold(cfg, frames, masks, fold, C):
    p = cfg.resolved_preset()
    torch.manual_seed(cfg.seed + fold.index)
    g = torch.Generator().manual_seed(cfg.seed + fold.index)
    model = UNet(build_encoder(cfg.init), C)
    if cfg.protocol == "partial":
        for q in model.encoder.parameters():
            q.requires_grad_(False)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model.parameters(), p)
    history, best = [], (-1.0, 0, None)
    for epoch in range(1, p.epochs + 1):
        model.train()
        if cfg.protocol == "partial":
            model.encoder.eval()  # frozen: keep its BatchNorm statistics too
        perm = torch.randperm(len(fold.train), generator=g)
        tot, n = 0.0, 0
        for s in range(0, len(perm), p.batch_size):
            idx = fold.train[perm[s : s + p.batch_size].numpy()]
            if len(idx) < 2 and len(perm) > 1:
                continue
            x, m = augment(to_input(frames[idx], cfg), p.augment, g, masks[idx].long())
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(cfg):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, m)
            if cfg.dice_loss:
                loss = loss + dice_loss(logits, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        sched.step()
        model.eval()
        vp = _predict(model, frames, fold.val, cfg)
        vm = segmentation_metrics(pixel_confusion(masks[fold.val].numpy(), vp, C))
        history.append(
            {"fold": fold.index, "epoch": epoch, "train_loss": tot / max(n, 1),
             "val_loss": float("nan"), "val_miou": vm["miou"], "val_dice": vm["dice"],
             "lr": opt.param_groups[0]["lr"]}
        )
        log.info("fold %d epoch %d: loss %.4f val mIoU %.4f", fold.index, epoch, tot / max(n, 1), vm["miou"])
        if vm["miou"] > best[0]:
            best = (vm["miou"], epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return _predict(model, frames, fold.test, cfg), history, best[1], best[0]


def _hc_columns(m: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    hc = next((c for c in HC_COLUMNS if c in m.columns), None)
    if {"pixel_size_y_mm", "pixel_size_x_mm"} <= set(m.columns):
        return hc, "pixel_size_y_mm", "pixel_size_x_mm"
    if "pixel_size_mm" in m.columns:  # isotropic pixel size at the prepared scale
        return hc, "pixel_size_mm", "pixel_size_mm"
    return hc, None, None


def run_segmentation(cfg: FinetuneConfig, ds: PreparedDataset, out: Path) -> dict:
    m = ds.manifest
    src = str(ds.root / "manifest.csv")
    if ds.masks is None:
        raise DataError(f"{ds.root}: no masks.npy; --task segment needs a dataset with masks")
    classes = ds.mask_classes or {0: "background", 1: "foreground"}
    C = max(classes) + 1
    names = [classes.get(c, str(c)) for c in range(C)]
    rows = np.flatnonzero(m["mask_index"].to_numpy() >= 0)
    rows = subsample_per_video(m, rows, cfg.max_per_video)
    if len(rows) < 6:
        raise AwclError(f"{src}: only {len(rows)} frames with masks; too few to split")
    sub = m.iloc[rows].reset_index(drop=True)
    groups = sub[cfg.group].astype(str).to_numpy()
    dummy = np.zeros(len(rows), dtype=np.int64)
    folds = make_folds(cfg, sub, dummy, groups, src)
    size = tuple(cfg.size) if cfg.size else ds.size
    frames = load_frames(ds, rows, size)
    masks = load_masks(ds, rows, size, C)
    hc_col, py_col, px_col = _hc_columns(sub)
    sy, sx = ds.size[0] / size[0], ds.size[1] / size[1]  # prepared -> working pixel scale
    per_fold, history, preds = [], [], []
    cm_total = np.zeros((C, C), dtype=np.int64)
    for fold in folds:
        pred, hist, best_epoch, best_val = _train_fold(cfg, frames, masks, fold, C)
        true = masks[fold.test].numpy()
        cm = pixel_confusion(true, pred, C)
        cm_total += cm
        met = segmentation_metrics(cm)
        pf = sub.iloc[fold.test][list(dict.fromkeys(["frame_id", "video_id", "patient_id", cfg.group]))].copy()
        pf.insert(0, "fold", fold.index)
        inter = ((pred > 0) & (true > 0)).reshape(len(pred), -1).sum(1)
        den = (pred > 0).reshape(len(pred), -1).sum(1) + (true > 0).reshape(len(pred), -1).sum(1)
        pf["dice"] = np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0)
        spacing = (sub[py_col].to_numpy(float)[fold.test] * sy, sub[px_col].to_numpy(float)[fold.test] * sx) if py_col else (None, None)
        cols = segmentation_frame_columns(pred, true, C, *spacing)  # cm_<t>_<p>, hd95_/msd_<unit>
        pf = pf.assign(**cols)
        met.update(frame_means(cols))
        if py_col:
            py = sub[py_col].to_numpy(float)[fold.test] * sy
            px = sub[px_col].to_numpy(float)[fold.test] * sx
            hc_pred = [head_circumference_mm(pred[i], py[i], px[i]) for i in range(len(pred))]
            hc_gt = [head_circumference_mm(true[i], py[i], px[i]) for i in range(len(pred))]
            pf["hc_pred_mm"] = [np.nan if v is None else v for v in hc_pred]
            pf["hc_gt_ellipse_mm"] = [np.nan if v is None else v for v in hc_gt]
            ok = pf["hc_pred_mm"].notna()
            met["hc_failed"] = int((~ok).sum())
            met["hc_mae_vs_gt_ellipse_mm"] = float(
                (pf["hc_pred_mm"] - pf["hc_gt_ellipse_mm"]).abs()[ok].mean()
            ) if ok.any() else None
            if hc_col:
                pf["hc_table_mm"] = sub[hc_col].to_numpy(float)[fold.test]
                met["hc_mae_mm"] = float((pf["hc_pred_mm"] - pf["hc_table_mm"]).abs()[ok].mean()) if ok.any() else None
                met["hc_gt_ellipse_vs_table_mm"] = float(
                    (pf["hc_gt_ellipse_mm"] - pf["hc_table_mm"]).abs().mean()
                )
        per_fold.append(
            {"fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val),
             "n_test": len(fold.test), "best_epoch": best_epoch, "val_miou": best_val, **met,
             "confusion_matrix": cm.tolist()}
        )
        history += hist
        preds.append(pf)
    pred_df = pd.concat(preds)
    mean, std = summarize_folds(per_fold, METRIC_KEYS)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    pred_df.to_csv(out / "predictions.csv", index=False)
    plot_confusion(cm_total, names, out / "confusion_matrix.png", title="pixel confusion (all test folds)")
    plot_curves(pd.DataFrame(history), out / "curves.png", score="val_miou")
    return {
        "task": "segment",
        "protocol": cfg.protocol,
        "head": "unet",
        "init": str(cfg.init),
        "preset": cfg.preset or "task3",
        "data": str(cfg.data),
        "classes": names,
        "seed": cfg.seed,
        "split": cfg.split,
        "group": cfg.group,
        "size": list(size),
        "num_frames": len(rows),
        "folds": per_fold,
        "mean": mean,
        "std": std,
        "confusion_matrix": cm_total.tolist(),
        **segmentation_summary(pred_df, cfg.group, cfg.bootstrap, cfg.seed),
        "warnings": [],
    }
