"""Data selection shared by every downstream protocol: frames, labels, classes and folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch

from awcl.data.store import PreparedDataset
from awcl.errors import AwclError
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.splits import (
    Fold,
    check_classes,
    fixed_split,
    kfold_splits,
    limit_train_patients,
)

log = logging.getLogger(__name__)


def subsample_per_video(m: pd.DataFrame, rows: np.ndarray, k: int | None) -> np.ndarray:
    """At most ``k`` evenly spaced frames of each video (keeps long videos from dominating)."""
    if not k:
        return rows
    keep = []
    for _, idx in m.iloc[rows].groupby("video_id", sort=False).indices.items():
        r = rows[idx]
        if len(r) > k:
            r = r[np.linspace(0, len(r) - 1, k).round().astype(int)]
        keep.append(r)
    return np.sort(np.concatenate(keep)) if keep else rows


def load_frames(ds: PreparedDataset, rows: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 ``[N, H, W]`` tensor of the selected frames, resized (area) when ``size`` is set."""
    out = []
    for i in rows:
        f = np.asarray(ds.frames[i])
        if size and f.shape != tuple(size):
            f = cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(f)
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, 1, 1, dtype=torch.uint8)


def resolve_labels(
    m: pd.DataFrame, label: str, classes: list[str] | None, source: str
) -> tuple[np.ndarray, list[str]]:
    """Per-row class index (-1 = not used) and the class names.

    ``classes`` items are names or merges ``new=a+b``; names match manifest values
    case-insensitively. Unknown names raise with the list of available values.
    """
    col = {"coarse": "coarse_label", "fine": "fine_label"}.get(label, label)
    if col not in m.columns:
        raise AwclError(
            f"{source}: no label column {label!r} (columns: {', '.join(map(str, m.columns))})"
        )
    values = m[col].astype("string").fillna("").str.strip()
    avail = sorted(v for v in values.unique() if v)
    if not avail:
        raise AwclError(f"{source}: label column {col!r} is empty")
    lower = {v.lower(): v for v in avail}
    if not classes:
        spec = [(v, [v]) for v in avail]
    else:
        spec = []
        for item in classes:
            name, _, members = item.partition("=")
            parts = [p.strip() for p in (members.split("+") if members else [name]) if p.strip()]
            unknown = [p for p in parts if p.lower() not in lower]
            if unknown:
                raise AwclError(
                    f"{source}: unknown class name(s) {', '.join(unknown)} in column {col!r} "
                    f"(available: {', '.join(avail)})"
                )
            spec.append((name.strip(), [lower[p.lower()] for p in parts]))
    y = np.full(len(m), -1, dtype=np.int64)
    for ci, (_, members) in enumerate(spec):
        y[values.isin(members).to_numpy()] = ci
    return y, [n for n, _ in spec]


def drop_rare_classes(
    y: np.ndarray, groups: np.ndarray, names: list[str], min_groups: int, explicit: bool
) -> tuple[np.ndarray, list[str], list[str]]:
    """Classes with fewer than ``min_groups`` patients cannot appear in every fold: error when
    the user listed them, otherwise drop them with a warning."""
    warnings, keep = [], []
    for ci, n in enumerate(names):
        ng = len(np.unique(groups[y == ci]))
        if ng >= min_groups:
            keep.append(ci)
            continue
        msg = f"class {n!r} has {ng} patient(s)/group(s), fewer than the {min_groups} needed"
        if explicit:
            raise AwclError(msg + "; merge it (--classes a=a+b) or drop it, or use fewer --folds")
        log.warning("%s; dropped", msg)
        warnings.append(msg + "; dropped")
    remap = {old: new for new, old in enumerate(keep)}
    y2 = np.array([remap.get(int(v), -1) for v in y], dtype=np.int64)
    if len(keep) < 2:
        total = len(np.unique(groups[y >= 0]))
        if total < min_groups:  # the real reason: too few patients for the folds asked for
            raise AwclError(
                f"--folds {min_groups} needs at least {min_groups} patients/groups with the chosen "
                f"classes, the data has {total}; use --folds {max(2, total)} or fewer"
            )
        raise AwclError(
            f"need at least 2 classes with {min_groups} patients/groups each (one per fold; "
            f"have {len(keep)}); use fewer --folds or merge classes"
        )
    return y2, [names[c] for c in keep], warnings


def make_folds(
    cfg: FinetuneConfig, m: pd.DataFrame, y: np.ndarray, groups: np.ndarray, source: str
) -> list[Fold]:
    if cfg.split == "fixed":
        if "split" not in m.columns:
            raise AwclError(f"{source}: --split fixed needs a 'split' column in the manifest")
        folds = fixed_split(
            m["split"].to_numpy(), y, groups, cfg.seed, cfg.val_fraction, source=f"{source}"
        )
    else:
        folds = kfold_splits(y, groups, cfg.folds, cfg.seed, cfg.val_fraction)
    if cfg.train_patients:  # label efficiency: fewer labelled patients to fit on, same val/test
        folds = [limit_train_patients(f, y, groups, cfg.train_patients, cfg.seed) for f in folds]
    return folds


def summarize_folds(per_fold: list[dict], keys: list[str]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for k in keys:
        vals = [f[k] for f in per_fold if f.get(k) is not None]
        if vals:
            mean[k] = float(np.mean(vals))
            std[k] = float(np.std(vals))
    return mean, std


def check_fold_classes(folds: list[Fold], y: np.ndarray, names: list[str]) -> list[str]:
    return check_classes(folds, y, names)


@dataclass
class ClassSelection:
    """The labelled frames a classification protocol uses and their grouped folds."""

    rows: np.ndarray  # [n] manifest rows used
    sub: pd.DataFrame  # manifest of those rows, re-indexed 0..n-1
    y: np.ndarray  # [n] class index
    groups: np.ndarray  # [n] grouping key (--group)
    names: list[str]  # class names
    folds: list[Fold]
    warnings: list[str]


def select_classification(cfg: FinetuneConfig, ds: PreparedDataset) -> ClassSelection:
    """Labels -> classes with enough groups -> rows (per-video cap) -> grouped folds; shared by
    the trained classifiers and the probes so both see exactly the same frames and splits."""
    m = ds.manifest
    src = str(ds.root / "manifest.csv")
    y_all, names = resolve_labels(m, cfg.label, cfg.classes, src)
    groups_all = m[cfg.group].astype(str).to_numpy()
    need = 2 if cfg.split == "fixed" else cfg.folds
    y_all, names, warns = drop_rare_classes(y_all, groups_all, names, need, explicit=bool(cfg.classes))
    rows = np.flatnonzero(y_all >= 0)
    rows = subsample_per_video(m, rows, cfg.max_per_video)
    sub = m.iloc[rows].reset_index(drop=True)
    y, groups = y_all[rows], groups_all[rows]
    folds = make_folds(cfg, sub, y, groups, src)
    warns += check_fold_classes(folds, y, names)
    return ClassSelection(rows, sub, y, groups, names, folds, warns)
