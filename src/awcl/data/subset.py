"""A prepared dataset holding some rows of another: the frames (and labels) a pretraining may
see, e.g. one fold's training groups under per-fold pretraining (awcl.study).

The subset is a full copy (frames.npy, manifest.csv, dataset.json), so a run given it cannot
read any other frame of the source. Masks are not copied (pretraining reads none).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.store import LABEL_COLUMNS, DatasetWriter, open_dataset
from awcl.errors import DataError

CHUNK = 512  # frames copied per block
# dataset.json keys the writer fills in itself (the rest of the source's meta is kept)
_OWN_KEYS = {"format", "height", "width", "num_frames", "num_masks", "skipped", "notes", "mask_classes"}


def write_subset(src: str | os.PathLike, out: str | os.PathLike, keep: np.ndarray,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write the rows of ``src`` where the boolean ``keep`` holds to ``out`` (atomically);
    ``meta`` goes into its dataset.json under ``subset``. Returns ``Path(out)``."""
    ds = open_dataset(src)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(ds),):
        raise DataError(f"{ds.root}: subset mask has {keep.shape} entries for {len(ds)} frames")
    if not keep.any():
        raise DataError(f"{ds.root}: the subset keeps no frame")
    idx = np.flatnonzero(keep)
    rows = ds.manifest.iloc[idx].copy()
    for col in LABEL_COLUMNS:
        rows[col] = rows[col].fillna("")
    rows["mask_index"] = -1
    with DatasetWriter(out, size=ds.size, source=str(ds.meta.get("source", ""))) as w:
        assert w._frames is not None
        for s in range(0, len(idx), CHUNK):
            w._frames.append_block(np.asarray(ds.frames[idx[s : s + CHUNK]]))
        w.rows.extend(rows.to_dict("records"))
        w.meta.update({k: v for k, v in ds.meta.items() if k not in _OWN_KEYS})
        w.meta["subset"] = {"of": str(ds.root), "frames": len(idx), "of_frames": len(ds), **(meta or {})}
    return Path(out)
