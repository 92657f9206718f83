"""Writing a prepared dataset atomically: ``DatasetWriter`` appends frames (and masks) to
``.npy`` files of a temporary sibling directory and renames it into place on success."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl import logs
from awcl.atomic import replace_dir, sweep_temps, temp_sibling
from awcl.data.store.schema import DEFAULT_SIZE, FORMAT, MANIFEST_COLUMNS
from awcl.errors import DataError
from awcl.locking import out_lock
from awcl.secret import SecretError, key_fingerprint

log = logging.getLogger("awcl.data")


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


# ---------------------------------------------------------------------------- the writer
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
            mask_index = self.add_mask(mask)
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

    def add_frames(self, frames: np.ndarray) -> None:
        """Append a block of frames (uint8 [n, H, W] at the dataset size) whose manifest rows
        the caller appends to ``rows`` itself (a merge copies whole manifests)."""
        assert self._frames is not None, "use DatasetWriter as a context manager"
        self._frames.append_block(frames)

    def add_mask(self, mask: np.ndarray) -> int:
        """Append one mask (uint8 [H, W] class indices at the dataset size); returns its
        ``mask_index``. ``masks.npy`` is created with the first one."""
        assert self._tmp is not None, "use DatasetWriter as a context manager"
        if self._masks is None:
            self._masks = _ArrayAppender(self._tmp / "masks.npy", self.size)
        return self._masks.append(mask)

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
