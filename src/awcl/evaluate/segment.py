"""Segmentation protocol (Task III): ResNet-18 encoder + U-Net decoder, pixel metrics, and
head circumference (HC18) from an ellipse fitted to the predicted head."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from awcl.data.store import PreparedDataset
from awcl.errors import AwclError, DataError
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.fit import DownstreamModule, FoldResult, RuntimeOptions, fit_fold
from awcl.evaluate.heads import make_segmenter
from awcl.evaluate.metrics import head_circumference_errors, segmentation_metrics
from awcl.evaluate.plots import plot_confusion, plot_curves
from awcl.evaluate.records import (
    fold_rows,
    frame_confusion,
    frame_means,
    segmentation_frame_columns,
)
from awcl.evaluate.scores import image_dice
from awcl.evaluate.selection import (
    load_frames,
    make_folds,
    subsample_per_video,
    summarize_folds,
)
from awcl.evaluate.summary import segmentation_summary
from awcl.evaluate.tasks import SEGMENT
from awcl.models import build_encoder

log = logging.getLogger(__name__)
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


def _train_fold(cfg: FinetuneConfig, frames: torch.Tensor, masks: torch.Tensor, fold, C: int,
                out: Path, runtime: RuntimeOptions) -> FoldResult:
    """U-Net on ``fold.train`` (encoder frozen in the partial protocol), best epoch by val
    mIoU; returns the predicted test masks ``[n, H, W]`` uint8."""
    p = cfg.resolved_preset()
    torch.manual_seed(cfg.seed + fold.index)
    model = make_segmenter(build_encoder(cfg.init, cfg.backbone, tuple(frames.shape[-2:])), C)
    if runtime.choice.channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = DownstreamModule(
        model, kind="segment", num_classes=C,
        optim=p.optim(),
        data=(frames, masks), fold=fold, batch_size=p.batch_size, augment_cfg=p.augment,
        channels_last=runtime.choice.channels_last, seed=cfg.seed + fold.index,
        dice=cfg.dice_loss, frozen=model.encoder if cfg.protocol == "partial" else None,
        encoder=model.encoder,
    )
    return fit_fold(module, out, runtime, p.epochs, p.iterations or -1)


def _hc_columns(m: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    hc = next((c for c in HC_COLUMNS if c in m.columns), None)
    if {"pixel_size_y_mm", "pixel_size_x_mm"} <= set(m.columns):
        return hc, "pixel_size_y_mm", "pixel_size_x_mm"
    if "pixel_size_mm" in m.columns:  # isotropic pixel size at the prepared scale
        return hc, "pixel_size_mm", "pixel_size_mm"
    return hc, None, None


def _pixel_sizes(sub: pd.DataFrame, prepared: tuple[int, int], size: tuple[int, int],
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Per frame of ``sub``: pixel size y, x in mm at the working ``size``, and the table's
    HC in mm (None without one); None when the manifest has no pixel size."""
    hc_col, py_col, px_col = _hc_columns(sub)
    if not py_col:
        return None
    sy, sx = prepared[0] / size[0], prepared[1] / size[1]  # prepared -> working pixel scale
    hc = sub[hc_col].to_numpy(float) if hc_col else None
    return sub[py_col].to_numpy(float) * sy, sub[px_col].to_numpy(float) * sx, hc


def _select_masked(cfg: FinetuneConfig, ds: PreparedDataset) -> tuple[np.ndarray, list[str]]:
    """Manifest rows with a mask (capped per video) and the class names; too few is an error."""
    m = ds.manifest
    if ds.masks is None:
        raise DataError(f"{ds.root}: no masks.npy; --task segment needs a dataset with masks")
    classes = ds.mask_classes or {0: "background", 1: "foreground"}
    names = [classes.get(c, str(c)) for c in range(max(classes) + 1)]
    rows = np.flatnonzero(m["mask_index"].to_numpy() >= 0)
    rows = subsample_per_video(m, rows, cfg.max_per_video)
    if len(rows) < 6:
        raise AwclError(f"{ds.root / 'manifest.csv'}: only {len(rows)} frames with masks; too few to split")
    return rows, names


def select_segmentation(cfg: FinetuneConfig, ds: PreparedDataset
                        ) -> tuple[np.ndarray, list[str], pd.DataFrame, np.ndarray, list]:
    """Masked rows (capped per video), class names, their manifest, groups and grouped folds:
    the one selection the segmentation protocol (and per-fold pretraining) splits by."""
    rows, names = _select_masked(cfg, ds)
    sub = ds.manifest.iloc[rows].reset_index(drop=True)
    groups = sub[cfg.group].astype(str).to_numpy()
    dummy = np.zeros(len(rows), dtype=np.int64)
    folds = make_folds(cfg, sub, dummy, groups, str(ds.root / "manifest.csv"))
    return rows, names, sub, groups, folds


def run_segmentation(cfg: FinetuneConfig, ds: PreparedDataset, out: Path,
                  get_runtime: Callable[[], RuntimeOptions]) -> dict:
    """``get_runtime`` resolves the device and precision once the data have been checked."""
    rows, names, sub, _, folds = select_segmentation(cfg, ds)
    C = len(names)
    size = tuple(cfg.size) if cfg.size else ds.size
    frames = load_frames(ds, rows, size)
    masks = load_masks(ds, rows, size, C)
    pixel_sizes = _pixel_sizes(sub, ds.size, size)
    per_fold, history, preds = [], [], []
    cm_total = np.zeros((C, C), dtype=np.int64)
    runtime = get_runtime()
    for fold in folds:
        res = _train_fold(cfg.for_fold(fold.index), frames, masks, fold, C, out, runtime)
        pred, true = res.output, masks[fold.test].numpy()
        frame_cm = frame_confusion(true, pred, C)  # [n, C, C]: the fold's one pixel count
        cm = frame_cm.sum(0)
        cm_total += cm
        pf, met = _score_fold(cfg, sub, fold.index, fold.test, pred, true, frame_cm, pixel_sizes)
        per_fold.append(
            {"fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val),
             "n_test": len(fold.test), "best_epoch": res.best_epoch, SEGMENT.selection_key: res.best_val, **met,
             "confusion_matrix": cm.tolist()}
        )
        history += res.history
        preds.append(pf)
    pred_df = pd.concat(preds)
    mean, std = summarize_folds(per_fold, SEGMENT.metrics)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    pred_df.to_csv(out / "predictions.csv", index=False)
    plot_confusion(cm_total, names, out / "confusion_matrix.png", title="pixel confusion (all test folds)")
    plot_curves(pd.DataFrame(history), out / "curves.png", score=SEGMENT.selection_key)
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


def _score_fold(cfg: FinetuneConfig, sub: pd.DataFrame, index: int, test: np.ndarray, pred: np.ndarray,
                true: np.ndarray, frame_cm: np.ndarray,
                pixel_sizes: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
                ) -> tuple[pd.DataFrame, dict]:
    """One test fold's per-frame table (predictions.csv rows) and its metrics.

    ``pred, true: [n, H, W]`` class masks of the rows ``test`` of ``sub``; ``frame_cm: [n, C,
    C]`` their per-frame pixel confusions. Frame columns: Dice, per-class confusion, surface
    distances (in mm with pixel sizes) and, with pixel sizes, head circumference (HC18).
    """
    C = frame_cm.shape[-1]
    met = segmentation_metrics(frame_cm.sum(0))
    pf = fold_rows(sub, test, index, cfg.group)
    pf["dice"] = image_dice(frame_cm)  # per-image foreground Dice
    met["dice_per_image"] = float(pf["dice"].mean())  # the HC18 convention: mean over images
    spacing = (pixel_sizes[0][test], pixel_sizes[1][test]) if pixel_sizes else (None, None)
    cols = segmentation_frame_columns(pred, true, C, *spacing, frame_cm=frame_cm)  # cm_<t>_<p>, hd95_/msd_<unit>
    pf = pf.assign(**cols)
    met.update(frame_means(cols))
    if pixel_sizes:
        hc_table = pixel_sizes[2][test] if pixel_sizes[2] is not None else None
        hc_cols, hc_met = head_circumference_errors(pred, true, *spacing, hc_table)
        pf = pf.assign(**hc_cols)
        met.update(hc_met)
        met["hc_fail_rate"] = hc_met["hc_failed"] / max(len(test), 1)
    return pf, met
