"""The prepared-dataset format: every later step reads only this.

A prepared dataset is a directory::

    DIR/
      dataset.json   # format version, frame size, label hierarchy, mask classes, provenance
      manifest.csv   # one row per frame (row i <-> frames[i]); opens with pandas
      frames.npy     # uint8 [N, H, W] grey-scale, memory-mapped by readers
      masks.npy      # uint8 [M, H, W] class-index masks (only if the source has masks);
                     # manifest column ``mask_index`` points into it (-1 = no mask)

Manifest columns: ``frame_id, source, video_id, patient_id, frame_index, coarse_label,
fine_label, mask_index`` then any columns a recipe adds (split, pixel_size_mm, ...).
Labels are empty where unknown. A dataset is written to a temporary sibling directory
and renamed into place on success, so a failed run never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl import logs
from awcl.atomic import replace_dir, sweep_temps, temp_sibling
from awcl.data.secret import SecretError, key_fingerprint, keyed_hash
from awcl.errors import DataError
from awcl.locking import out_lock

log = logging.getLogger("awcl.data")

FORMAT = "awcl-prepared/1"
GRANULARITIES = ("coarse", "fine")  # the two anatomy label levels of a manifest
MANIFEST_COLUMNS = [
    "frame_id",
    "source",
    "video_id",
    "patient_id",
    "frame_index",
    "coarse_label",
    "fine_label",
    "mask_index",
]
LABEL_COLUMNS = ("coarse_label", "fine_label")
DEFAULT_SIZE = (224, 288)  # (H, W), the paper's frame size after cropping


def anonymize(value: Any, kind: str = "p") -> str:
    """Stable, keyed pseudonym for a patient name / DICOM identifier / source path (never
    store the original): ``kind`` + 16 hex digits of HMAC-SHA256 under the project secret
    (:mod:`awcl.data.secret`). Irreversible without the secret, which no dataset holds."""
    return f"{kind}{keyed_hash(str(value))[:16]}"


# ---------------------------------------------------------------------------- npy writing
_HEADER_BYTES = 128  # fixed, so the header can be rewritten in place once N is known


def _npy_header(shape: tuple[int, ...]) -> bytes:
    desc = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"
    body = desc.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"npy header too long for shape {shape}")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) + body + b" " * pad + b"\n"


class _ArrayAppender:
    """Append uint8 [H, W] planes to a .npy file without knowing their count in advance."""

    def __init__(self, path: Path, hw: tuple[int, int]):
        self.path, self.hw, self.count = path, hw, 0
        self._fh = open(path, "wb")
        self._fh.write(_npy_header((0, *hw)))

    def append(self, plane: np.ndarray) -> int:
        if plane.shape != self.hw or plane.dtype != np.uint8:
            raise ValueError(f"expected uint8 {self.hw}, got {plane.dtype} {plane.shape}")
        self._fh.write(np.ascontiguousarray(plane).tobytes())
        self.count += 1
        return self.count - 1

    def append_block(self, planes: np.ndarray) -> None:
        """planes: uint8 [n, H, W]."""
        if planes.shape[1:] != self.hw or planes.dtype != np.uint8:
            raise ValueError(f"expected uint8 [n, {self.hw}], got {planes.dtype} {planes.shape}")
        self._fh.write(np.ascontiguousarray(planes).tobytes())
        self.count += len(planes)

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.seek(0)
        self._fh.write(_npy_header((self.count, *self.hw)))
        self._fh.close()


# ---------------------------------------------------------------------------- reading
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


# ---------------------------------------------------------------------------- writing
class DatasetWriter:
    """Write a prepared dataset atomically.

    >>> with DatasetWriter(out, size=(224, 288), source="hc18") as w:
    ...     w.add(frame, video_id="v1", patient_id="p1", frame_index=0, coarse_label="head",
    ...           mask=mask)
    ...     w.meta["hierarchy"] = {...}
    On a clean exit the temporary directory is renamed to ``out``; on an exception it is
    removed and ``out`` is left as it was.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        size: tuple[int, int] = DEFAULT_SIZE,
        source: str = "",
        overwrite: bool = True,
        wait_lock: float = 0.0,
    ):
        self.out = Path(out)
        self.wait_lock = wait_lock  # seconds to wait for another writer of ``out`` (0: refuse)
        self.size = (int(size[0]), int(size[1]))
        self.source = source
        self.overwrite = overwrite
        self.rows: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {"source": source, "hierarchy": {}, "ignore_labels": []}
        self.skipped: list[dict[str, str]] = []
        self.notes: list[dict[str, str]] = []
        self._tmp: Path | None = None
        self._frames: _ArrayAppender | None = None
        self._masks: _ArrayAppender | None = None

    def __enter__(self) -> DatasetWriter:
        self._lock = out_lock(self.out, "prepared dataset", wait=self.wait_lock)
        try:
            self._lock.__enter__()  # one writer per output; released in __exit__
        except OSError as err:  # e.g. the output's parent is a plain file
            raise DataError(f"{self.out}: cannot write the dataset here: {_os_reason(err)}") from None
        try:
            return self._enter()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _enter(self) -> DatasetWriter:
        if self.out.exists() or self.out.is_symlink():
            if not self.overwrite:
                raise DataError(f"{self.out}: already exists (pass overwrite to replace it)")
            # Replacing deletes the old directory: only ever do that to a prepared dataset
            # (or an empty folder), never to a folder the user pointed --out at by mistake.
            if not _replaceable(self.out):
                raise DataError(
                    f"{self.out}: exists and is not a prepared dataset; refusing to replace it "
                    "(choose another output or remove it)"
                )
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            sweep_temps(self.out.parent, self.out.name)  # left by a killed earlier prepare
            self._tmp = temp_sibling(self.out)
            self._tmp.mkdir()
            self._frames = _ArrayAppender(self._tmp / "frames.npy", self.size)
        except OSError as err:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            raise DataError(f"{self.out}: cannot write the dataset here ({_os_reason(err)})") from None
        return self

    def skip(self, file: str | os.PathLike, reason: str) -> None:
        """Record a skipped input in dataset.json (``skipped``) and log it (one summary line
        per reason on the console, see :mod:`awcl.logs`). A leading ``<file>: `` of the
        reason (DataError texts start so) is dropped: the file is recorded beside it."""
        reason = _without_file(reason, str(file))
        self.skipped.append({"file": str(file), "reason": reason})
        logs.skipped(log, file, reason)

    def note(self, file: str | os.PathLike, reason: str) -> None:
        """Record a problem that did not stop the input from being used (``notes`` in
        dataset.json), e.g. an image kept without a mask."""
        reason = _without_file(reason, str(file))
        self.notes.append({"file": str(file), "reason": reason})
        logs.noted(log, file, reason)

    def add(
        self,
        frame: np.ndarray,
        *,
        video_id: str,
        patient_id: str,
        frame_index: int = 0,
        coarse_label: str | None = None,
        fine_label: str | None = None,
        mask: np.ndarray | None = None,
        frame_id: str | None = None,
        source: str | None = None,
        **extra: Any,
    ) -> int:
        """Append one frame (uint8 [H, W] at the dataset size); returns its row index."""
        assert self._frames is not None, "use DatasetWriter as a context manager"
        idx = self._frames.append(frame)
        mask_index = -1
        if mask is not None:
            if self._masks is None:
                self._masks = _ArrayAppender(self._tmp / "masks.npy", self.size)  # type: ignore[operator]
            mask_index = self._masks.append(mask)
        row = {
            "frame_id": frame_id or f"{video_id}:{frame_index:06d}",
            "source": source or self.source,
            "video_id": str(video_id),
            "patient_id": str(patient_id),
            "frame_index": int(frame_index),
            "coarse_label": coarse_label or "",
            "fine_label": fine_label or "",
            "mask_index": mask_index,
            **extra,
        }
        self.rows.append(row)
        return idx

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        try:
            self._finish(exc)
        except OSError as err:  # disk full, permissions: one line, not a traceback
            raise DataError(f"{self.out}: dataset not written: {_os_reason(err)}") from None
        finally:
            if self._tmp is not None and self._tmp.exists():
                shutil.rmtree(self._tmp, ignore_errors=True)
            self._lock.__exit__(None, None, None)

    def _finish(self, exc: BaseException | None) -> None:
        assert self._tmp is not None
        if self._frames is not None:
            self._frames.close()
        if self._masks is not None:
            self._masks.close()
        if exc is not None:
            if isinstance(exc, OSError):
                raise exc
            return
        if not self.rows:
            raise DataError(
                f"{self.out}: no frames were prepared"
                + (f" ({len(self.skipped)} inputs skipped)" if self.skipped else "")
            )
        df = pd.DataFrame(self.rows)
        extras = [c for c in df.columns if c not in MANIFEST_COLUMNS]
        df = df[MANIFEST_COLUMNS + extras]
        if df["frame_id"].duplicated().any():
            dup = df.loc[df["frame_id"].duplicated(), "frame_id"].iloc[0]
            raise DataError(f"{self.out}: duplicate frame_id {dup!r}")
        df.to_csv(self._tmp / "manifest.csv", index=False)
        meta = {
            "format": FORMAT,
            # which key made this dataset's pseudonyms (a public tag: datasets with different
            # keys have unrelated patient ids, so they must not be merged or pooled)
            **_key_tag(),
            **self.meta,
            "height": self.size[0],
            "width": self.size[1],
            "num_frames": len(df),
            "num_masks": self._masks.count if self._masks else 0,
            "skipped": self.skipped,
            **({"notes": self.notes} if self.notes else {}),
        }
        (self._tmp / "dataset.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        replace_dir(self._tmp, self.out)
        self._tmp = None
        if self.skipped or self.notes:
            keys = " and ".join(k for k, v in (("skipped", self.skipped), ("notes", self.notes)) if v)
            logs.details_at(f"{self.out / 'dataset.json'} (key {keys}: every file and its reason)")


def _key_tag() -> dict[str, str]:
    try:
        return {"key_fingerprint": key_fingerprint()}
    except SecretError:  # no usable key: this dataset made no pseudonyms with one either
        return {}


def _without_file(reason: str, file: str) -> str:
    head, sep, tail = reason.partition(": ")
    return tail if sep and head and (head == file or head.endswith(file)) else reason


def _replaceable(path: Path) -> bool:
    """A prepared dataset or an empty directory may be replaced by a new prepare run."""
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / "dataset.json").is_file() or not any(path.iterdir())


def _os_reason(err: OSError) -> str:
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}"


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


# ---------------------------------------------------------------------------- several sources
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
    assert w._frames is not None and w._tmp is not None
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
        w._frames.append_block(block)
        for j in np.flatnonzero(mask_index[s : s + MERGE_CHUNK] >= 0):
            plane = np.asarray(ds.masks[mask_index[s + j]])  # type: ignore[index]
            if plane.shape != size:
                plane = _resize(plane, size, nearest=True)
            if w._masks is None:
                w._masks = _ArrayAppender(w._tmp / "masks.npy", size)
            new_mask[s + j] = w._masks.append(plane)
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
