"""Reading a prepared dataset: ``open_dataset`` (frames memory-mapped, manifest in memory),
``read_manifest`` with stable dtypes, and ``summarize`` (``awcl info``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl.data.store.schema import FORMAT, GRANULARITIES, LABEL_COLUMNS, MANIFEST_COLUMNS
from awcl.errors import DataError


@dataclass
class PreparedDataset:
    """An opened prepared dataset. ``frames[i]`` is the image of ``manifest.iloc[i]``."""

    root: Path
    manifest: pd.DataFrame
    frames: np.ndarray  # uint8 [N, H, W], memory-mapped
    masks: np.ndarray | None  # uint8 [M, H, W], memory-mapped, or None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def hierarchy(self) -> dict[str, str]:
        """fine label -> coarse label, as recorded by the recipe (may be empty)."""
        return dict(self.meta.get("hierarchy", {}))

    @property
    def ignore_labels(self) -> list[str]:
        """Labels that count as unlabelled for contrastive pretraining (e.g. background)."""
        return list(self.meta.get("ignore_labels", []))

    def labels(self, granularity: str = "coarse") -> pd.Series:
        """Per-frame label at ``coarse`` or ``fine`` granularity (<NA> where unknown)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be 'coarse' or 'fine', not {granularity!r}")
        return self.manifest[f"{granularity}_label"]

    def mask(self, i: int) -> np.ndarray | None:
        """Mask of frame ``i`` ([H, W] uint8 class indices) or None."""
        j = int(self.manifest["mask_index"].iat[i])
        if j < 0 or self.masks is None:
            return None
        return self.masks[j]

    @property
    def mask_classes(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta.get("mask_classes", {}).items()}


def _load_array(path: Path) -> np.ndarray:
    """Memory-map a uint8 [N, H, W] .npy of a prepared dataset (DataError if missing/corrupt)."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: missing or not a readable array ({err.__class__.__name__})") from None
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 [N, H, W], found {arr.dtype} {tuple(arr.shape)}")
    return arr


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV with stable dtypes: ids as strings, labels <NA> where empty."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: missing or unreadable manifest ({err.__class__.__name__})") from None
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            raise DataError(f"{path}: manifest lacks column {col!r}")
    try:
        df["frame_index"] = df["frame_index"].astype("int64")
        df["mask_index"] = df["mask_index"].astype("int64")
    except ValueError:
        raise DataError(f"{path}: frame_index / mask_index must be integers") from None
    for col in LABEL_COLUMNS:
        df[col] = df[col].replace("", pd.NA).astype("string")
    for col in df.columns:
        if col in MANIFEST_COLUMNS:
            continue
        converted = pd.to_numeric(df[col], errors="coerce")
        if converted.notna().sum() == (df[col] != "").sum() and (df[col] != "").any():
            df[col] = converted  # numeric extras (pixel size, HC) come back as numbers
    return df


def open_dataset(path: str | os.PathLike) -> PreparedDataset:
    """Open a prepared dataset directory (frames memory-mapped, manifest in memory)."""
    root = Path(path)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{root}: not a prepared dataset (no dataset.json); run `awcl prepare` first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{meta_path}: unreadable ({err.__class__.__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{meta_path}: unknown format {got!r} (expected {FORMAT})")
    manifest = read_manifest(root / "manifest.csv")
    frames = _load_array(root / "frames.npy")
    masks = _load_array(root / "masks.npy") if (root / "masks.npy").exists() else None
    if len(frames) != len(manifest):
        raise DataError(
            f"{root}: frames.npy holds {len(frames)} frames but manifest.csv has {len(manifest)} rows"
        )
    if masks is not None and int(manifest["mask_index"].to_numpy().max(initial=-1)) >= len(masks):
        raise DataError(f"{root}: manifest mask_index points past masks.npy")
    if masks is not None and masks.shape[1:] != frames.shape[1:]:
        raise DataError(f"{root}: masks.npy is {masks.shape[1:]} but frames.npy is {frames.shape[1:]}")
    return PreparedDataset(root=root, manifest=manifest, frames=frames, masks=masks, meta=meta)


def summarize(ds: PreparedDataset) -> str:
    """Human-readable counts per label, per video and per patient (``awcl info``)."""
    m = ds.manifest
    lines = [
        f"{ds.root}: {len(m)} frames of {ds.size[0]}x{ds.size[1]} (HxW), "
        f"{m['video_id'].nunique()} videos, {m['patient_id'].nunique()} patients, "
        f"{int((m['mask_index'] >= 0).sum())} masks",
    ]
    if ds.meta.get("skipped"):
        lines.append(f"skipped inputs at prepare time: {len(ds.meta['skipped'])}")
    for col in LABEL_COLUMNS:
        counts = m[col].fillna("<unlabelled>").value_counts().sort_index()
        lines.append(f"{col} (frames / videos / patients):")
        groups = m.assign(_l=m[col].fillna("<unlabelled>")).groupby("_l")
        vids, pats = groups["video_id"].nunique(), groups["patient_id"].nunique()
        for name, n in counts.items():
            lines.append(f"  {name:<28} {n:>8} / {vids[name]:>5} / {pats[name]:>5}")
    if "split" in m.columns:
        lines.append("split: " + ", ".join(f"{k}={v}" for k, v in m["split"].value_counts().items()))
    per_video = m.groupby("video_id").size()
    per_patient = m.groupby("patient_id").size()
    lines.append(
        f"frames per video: min {per_video.min()}, median {int(per_video.median())}, max {per_video.max()}"
    )
    lines.append(
        f"frames per patient: min {per_patient.min()}, median {int(per_patient.median())}, "
        f"max {per_patient.max()}"
    )
    if ds.hierarchy:
        lines.append("hierarchy: " + ", ".join(f"{f}->{c}" for f, c in sorted(ds.hierarchy.items())))
    for s in ds.meta.get("sources", []):  # a union (awcl prepare merge)
        lines.append(f"source {s['name']}: {s['frames']} frames, {s['videos']} videos, "
                     f"{s['patients']} patients, manifest {s['manifest_sha256'][:12]} ({s['path']})")  # fmt: skip
    return "\n".join(lines)
