"""One fold's records of a downstream run: its rows of ``predictions.csv`` (ids, then the
classification ``true``/``pred``/``prob_<class>`` or the segmentation per-frame columns) and
its entry in ``metrics.json``. ``awcl.evaluate.summary`` reads the pooled table back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from awcl.evaluate.metrics import class_metrics, frame_surface_metrics
from awcl.evaluate.scores import confusion


def fold_rows(sub: pd.DataFrame, test: np.ndarray, fold: int, group: str) -> pd.DataFrame:
    """The start of one fold's rows of predictions.csv: ``fold``, then the ids (and the
    grouping column) of its test frames ``sub.iloc[test]``."""
    pf = sub.iloc[test][list(dict.fromkeys(["frame_id", "video_id", "patient_id", group]))].copy()
    pf.insert(0, "fold", fold)
    return pf


def class_fold_record(fold: Any, y_true: np.ndarray, pred: np.ndarray, n_classes: int, /,
                      **extra: Any) -> tuple[dict[str, Any], np.ndarray]:
    """One classification fold's entry of metrics.json ``folds`` (sizes, then ``extra``: what
    was selected on validation, then the metrics) and its confusion matrix ``[K, K]``."""
    cm = confusion(y_true, pred, n_classes)
    met = class_metrics(cm)
    record = {"fold": fold.index, "n_train": len(fold.train), "n_val": len(fold.val),
              "n_test": len(fold.test), **extra, **met, "confusion_matrix": cm.tolist()}  # fmt: skip
    return record, cm


def class_predictions(sub: pd.DataFrame, test: np.ndarray, fold: int, group: str, names: list[str],
                      y_true: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> pd.DataFrame:
    """One classification fold's rows of predictions.csv: ids, ``true`` and ``pred`` (class
    names of ``y_true, pred: [T]``) and ``prob_<class>`` from ``prob: [T, K]``."""
    pf = fold_rows(sub, test, fold, group)
    pf["true"] = [names[i] for i in y_true]
    pf["pred"] = [names[i] for i in pred]
    for ci, n in enumerate(names):
        pf[f"prob_{n}"] = prob[:, ci]
    return pf


def segmentation_frame_columns(
    pred: np.ndarray, true: np.ndarray, num_classes: int,
    spacing_y: np.ndarray | None = None, spacing_x: np.ndarray | None = None,
    frame_cm: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-frame columns of a segmentation predictions table.

    pred, true: [N, H, W] class masks; spacing_y/x: [N] pixel sizes in mm at the working size
    (None: distances in pixels, columns ``*_px``); frame_cm: their per-frame pixel confusions
    ``[N, C, C]`` when already counted. Returns ``cm_<t>_<p>`` pixel counts and
    ``hd95_<unit>``, ``msd_<unit>`` (NaN where undefined).
    """
    n, c = len(pred), num_classes
    if frame_cm is None:
        frame_cm = frame_confusion(true, pred, c)
    out = {f"cm_{t}_{p}": frame_cm[:, t, p] for t in range(c) for p in range(c)}
    unit = "mm" if spacing_y is not None else "px"
    hd, msd = np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        sp = (float(spacing_y[i]), float(spacing_x[i])) if spacing_y is not None else (1.0, 1.0)
        r = frame_surface_metrics(pred[i], true[i], c, sp)
        if r is not None:
            hd[i], msd[i] = r
    out[f"hd95_{unit}"], out[f"msd_{unit}"] = hd, msd
    return out


def frame_confusion(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[N, C, C]`` pixel confusion of each frame of ``true, pred: [N, H, W]`` (rows true)."""
    return confusion(true, pred, num_classes, groups=np.arange(len(true)), n_groups=len(true))


def frame_means(columns: dict[str, np.ndarray]) -> dict:
    """Fold-level means of the per-frame surface distances (None when all undefined) and
    ``surface_failed``, the count of frames where they are undefined."""
    out: dict = {}
    for k, v in columns.items():
        if k.startswith(("hd95_", "msd_")):
            ok = np.isfinite(v)
            out[k] = float(v[ok].mean()) if ok.any() else None
            out["surface_failed"] = int((~ok).sum())
    return out
