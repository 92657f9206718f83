"""Several sources as one dataset: ``merge_datasets`` writes their union (ids qualified by
source name), ``union_dataset`` builds it once per set of sources in a cache and re-uses it;
``describe_source`` is what a union or a run records about each source."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.store.reader import PreparedDataset, open_dataset
from awcl.data.store.schema import LABEL_COLUMNS
from awcl.data.store.writer import DatasetWriter
from awcl.errors import DataError

log = logging.getLogger("awcl.data")

MERGE_CHUNK = 4096  # frames copied per block


def manifest_sha256(root: str | os.PathLike) -> str:
    """SHA-256 of a prepared dataset's manifest.csv (identifies its rows and labels)."""
    h = hashlib.sha256()
    with open(Path(root) / "manifest.csv", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_source(ds: PreparedDataset, name: str | None = None) -> dict[str, Any]:
    """Counts and fingerprint of one dataset, as recorded in a union's / a run's metadata."""
    m = ds.manifest
    labelled = m["coarse_label"].notna() | m["fine_label"].notna()
    return {
        "name": name or source_name(ds.root),
        "path": str(Path(ds.root).resolve()),
        "frames": len(m),
        "labelled_frames": int(labelled.sum()),
        "videos": int(m["video_id"].nunique()),
        "patients": int(m["patient_id"].nunique()),
        "size": list(ds.size),
        "manifest_sha256": manifest_sha256(ds.root),
    }


def source_name(root: str | os.PathLike) -> str:
    """Default name of a source in a union: its directory name (``runs/x/run`` -> ``x``)."""
    p = Path(root).resolve()
    name = p.parent.name if p.name == "run" and p.parent.name else p.name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "source"


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def merge_datasets(
    sources: list[str | os.PathLike],
    out: str | os.PathLike,
    names: list[str] | None = None,
    size: tuple[int, int] | None = None,
    wait_lock: float = 0.0,
) -> Path:
    """Write the union of several prepared datasets to ``out``; returns ``Path(out)``.

    Ids are qualified by the source name (``frame_id``, ``video_id`` and ``patient_id``
    become ``<name>/<id>``; ``source`` becomes the name), so two sources never share a scan
    or a patient and splits/samplers stay correct. Labels are kept as they are; the fine ->
    coarse hierarchies and ignored labels are combined (a fine label mapped to two different
    coarse labels is an error). Frames (and masks) are resized to ``size`` (default: the
    first source's). ``meta['sources']`` records each source's path, counts and manifest
    hash. ``names`` default to the directory names (made unique).
    """
    if len(sources) < 1:
        raise DataError("merge: give at least one prepared dataset")
    datasets = [open_dataset(s) for s in sources]
    names = _merge_names(datasets, names)
    keys = _common_key(datasets, names)
    size = tuple(size) if size else datasets[0].size  # type: ignore[assignment]
    hierarchy, mask_classes = _merged_labels(datasets, names)
    with DatasetWriter(out, size=size, source="+".join(names), wait_lock=wait_lock) as w:
        for ds, name in zip(datasets, names):
            _append_source(w, ds, name, size)
        ignore = sorted({lab for ds in datasets for lab in ds.ignore_labels})
        w.meta.update(
            {
                "hierarchy": dict(sorted(hierarchy.items())),
                "ignore_labels": ignore,
                "sources": [describe_source(ds, n) for ds, n in zip(datasets, names)],
                "prepare": {"kind": "merge", "names": names},
                **({"key_fingerprint": keys} if keys else {}),
            }
        )
        if mask_classes:
            w.meta["mask_classes"] = mask_classes
    return Path(out)


def _common_key(datasets: list[PreparedDataset], names: list[str]) -> str | None:
    """The one pseudonym key of the sources (None: none recorded); two keys are an error,
    since the same patient would then carry unrelated ids in the union."""
    seen: dict[str, str] = {}
    for ds, name in zip(datasets, names):
        tag = ds.meta.get("key_fingerprint")
        if tag:
            seen.setdefault(str(tag), name)
    if len(seen) > 1:
        (a, na), (b, nb) = list(seen.items())[:2]
        raise DataError(
            f"merge: {na} and {nb} were prepared with different pseudonymisation keys "
            f"(fingerprints {a} and {b}): their patient ids do not match; prepare both with one "
            "key ($AWCL_SECRET or $AWCL_SECRET_FILE)"
        )
    return next(iter(seen), None)


def _merge_names(datasets: list[PreparedDataset], names: list[str] | None) -> list[str]:
    """One unique, '/'-free name per source (default: the directory names)."""
    names = _unique_names(list(names) if names else [source_name(d.root) for d in datasets])
    if len(names) != len(datasets):
        raise DataError(f"merge: {len(names)} names for {len(datasets)} datasets")
    bad = [n for n in names if not n or "/" in n]
    if bad:
        raise DataError(f"merge: source name {bad[0]!r} must be non-empty and have no '/'")
    return names


def _merged_labels(datasets: list[PreparedDataset], names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The union's fine -> coarse hierarchy and mask classes; a conflict is an error."""
    hierarchy: dict[str, str] = {}
    where: dict[str, str] = {}
    mask_classes: dict[str, str] = {}
    for ds, name in zip(datasets, names):
        for fine, coarse in ds.hierarchy.items():
            if fine in hierarchy and hierarchy[fine] != coarse:
                raise DataError(
                    f"merge: fine label {fine!r} is under {hierarchy[fine]!r} in {where[fine]} but "
                    f"under {coarse!r} in {name}; relabel one of them first"
                )
            hierarchy[fine], where[fine] = coarse, name
        if ds.masks is not None and (ds.manifest["mask_index"] >= 0).any():
            own = {str(k): v for k, v in ds.meta.get("mask_classes", {}).items()}
            if mask_classes and own and own != mask_classes:
                raise DataError(f"merge: mask classes of {name} ({own}) differ from {mask_classes}")
            mask_classes = mask_classes or own
    return hierarchy, mask_classes


def _append_source(w: DatasetWriter, ds: PreparedDataset, name: str, size: tuple[int, int]) -> None:
    """Copy one source's frames, masks (resized to ``size``), rows (ids qualified by ``name``)
    and skip records into the union's writer, in blocks of MERGE_CHUNK frames."""
    m = ds.manifest
    rows = m.copy()
    for col in ("frame_id", "video_id", "patient_id"):
        rows[col] = name + "/" + m[col].astype(str)
    rows["source"] = name
    for col in LABEL_COLUMNS:
        rows[col] = m[col].fillna("")
    mask_index = m["mask_index"].to_numpy()
    new_mask = np.full(len(m), -1, dtype=np.int64)
    for s in range(0, len(m), MERGE_CHUNK):
        block = np.asarray(ds.frames[s : s + MERGE_CHUNK])
        if block.shape[1:] != size:
            block = np.stack([_resize(f, size) for f in block])
        w.add_frames(block)
        for j in np.flatnonzero(mask_index[s : s + MERGE_CHUNK] >= 0):
            plane = np.asarray(ds.masks[mask_index[s + j]])  # type: ignore[index]
            if plane.shape != size:
                plane = _resize(plane, size, nearest=True)
            new_mask[s + j] = w.add_mask(plane)
    rows["mask_index"] = new_mask
    w.rows.extend(rows.to_dict("records"))
    w.skipped.extend(
        {"file": f"{name}: {s['file']}", "reason": s["reason"]} for s in ds.meta.get("skipped", [])
    )


def _resize(plane: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    from awcl.data.imageio import resize

    return resize(plane, size, cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def union_key(sources: list[str | os.PathLike], size: tuple[int, int] | None = None) -> str:
    """Cache key of the union of ``sources``: their paths, manifests and frame files."""
    parts = []
    for s in sources:
        root = Path(s).resolve()
        frames = root / "frames.npy"
        try:
            st = frames.stat()
            meta = (root / "dataset.json").read_bytes()
        except OSError:
            raise DataError(f"{root}: not a prepared dataset (no dataset.json / frames.npy)") from None
        parts.append([str(root), manifest_sha256(root), hashlib.sha256(meta).hexdigest(),
                      st.st_size, st.st_mtime_ns])  # fmt: skip
    blob = json.dumps({"sources": parts, "size": list(size) if size else None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache() -> Path:
    return Path(os.environ.get("AWCL_CACHE", Path.home() / ".cache" / "awcl"))


def union_dataset(
    sources: str | os.PathLike | list[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """One prepared dataset for one or several: a single source is returned as it is; for
    several, their union (:func:`merge_datasets`) is built once under
    ``cache_dir`` (default ``$AWCL_CACHE/merged``, ``~/.cache/awcl/merged``) and re-used while
    the sources are unchanged."""
    if isinstance(sources, (str, os.PathLike)):
        return Path(sources)
    sources = list(sources)
    if len(sources) == 1:
        return Path(sources[0])
    if not sources:
        raise DataError("no prepared dataset given")
    for s in sources:
        open_dataset(s)  # one clear error for a bad source before any work
    out = Path(cache_dir or default_cache() / "merged") / union_key(sources)
    if (out / "dataset.json").is_file():
        try:
            open_dataset(out)
            return out
        except DataError:
            pass  # damaged: rebuild
    log.info("building the union of %d datasets in %s", len(sources), out)
    return merge_datasets(sources, out, wait_lock=3600.0)
