"""What the two ways of preparing a user's data share (``awcl.data.ingest`` for videos,
``awcl.data.ingest_images`` for labelled stills): finding the input files, the crop, the
names a source file is written under, and ``_Sink``, where prepared frames go.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.crop import Box, crop, detect_region
from awcl.data.imageio import resize
from awcl.data.store import DatasetWriter, anonymize
from awcl.data.video import is_dicom
from awcl.errors import AwclError, DataError

_UID = re.compile(r"^[0-9]+(\.[0-9]+){3,}$")
CropSpec = str | Box | None  # 'auto' | fixed Box | None (no crop)


@dataclass
class PrepareStats:
    """What a prepare run did (also printed by the CLI)."""

    inputs: int = 0  # files / table rows considered
    videos: int = 0  # videos or images that gave frames
    frames_decoded: int = 0
    frames_kept: int = 0
    skipped: int = 0


# ---------------------------------------------------------------------------- helpers
def parse_crop(text: str) -> CropSpec:
    """``auto`` | ``none`` | ``y0,y1,x0,x1`` -> crop spec."""
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("none", "off", "no"):
        return None
    return Box.parse(t)


def _region(frames: np.ndarray, spec: CropSpec) -> Box | None:
    """frames: uint8 [T, h, w] -> the box to crop (None = whole frame)."""
    if spec is None:
        return None
    if isinstance(spec, Box):
        return spec.clip(*frames.shape[1:])
    if spec != "auto":
        raise AwclError(f"crop must be 'auto', None or a Box, not {spec!r}")
    return detect_region(frames)


def _finish(frame: np.ndarray, box: Box | None, size: tuple[int, int]) -> np.ndarray:
    """[h, w] -> cropped and resized uint8 [H, W]."""
    return resize(np.ascontiguousarray(crop(frame, box)), size)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _unique_ids(rels: list[str]) -> list[str]:
    """Relative paths without extension, kept unique (``a.mp4`` + ``a.avi`` -> full names)."""
    stems = [str(Path(r).with_suffix("")) if Path(r).suffix else r for r in rels]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [r if counts[s] > 1 else s for r, s in zip(rels, stems)]


def _walk(src: Path, suffixes: Iterable[str], sniff_bare: bool) -> list[Path]:
    """Files under src with one of the suffixes (any case), sorted; hidden files ignored.

    ``sniff_bare``: also take extension-less (or numeric-suffix) files whose content is DICOM.
    """
    wanted = {s.lower() for s in suffixes}
    found = []
    for p in src.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(src).parts) or not p.is_file():
            continue
        # PACS exports often have no extension or a UID-like name ("1.2.840...45").
        bare = p.suffix == "" or p.suffix[1:].isdigit()
        if p.suffix.lower() in wanted or (sniff_bare and bare and is_dicom(p)):
            found.append(p)
    return sorted(found, key=lambda q: q.relative_to(src).as_posix())


def _check_src(src: str | os.PathLike) -> Path:
    root = Path(src)
    if not root.exists():
        raise DataError(f"{root}: source folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: source is not a folder")
    return root


@dataclass
class _Sink:
    """Where prepared frames go: the writer, the run's counts, and the crop and size to apply.
    Videos and images share it, so both write the same columns the same way."""

    writer: DatasetWriter
    stats: PrepareStats
    crop: CropSpec
    size: tuple[int, int]
    keep_names: bool = False  # False: source paths are written only as keyed pseudonyms

    def shown(self, rel: str) -> str:
        """The name of a source file as written to the dataset (``file``, ``skipped``)."""
        return _shown(rel) if self.keep_names else _pseudonym(rel)

    def video_id(self, rel: str, vid: str) -> str:
        """``vid`` (the path without extension) with --keep-names, else the path's pseudonym:
        a folder named after a patient (``DOE_JOHN/scan.dcm``) must not reach the dataset."""
        if not self.keep_names:
            return anonymize(rel, "v")
        return anonymize(rel) if _shown(rel) != rel else vid

    def begin(self, hierarchy: dict[str, str], prepare: dict[str, Any], skips: list[tuple[str, str]]) -> None:
        """Record how the dataset was prepared, then the skips known before any decoding."""
        self.writer.meta.update({"hierarchy": hierarchy, "prepare": prepare})
        for file, reason in skips:
            self.skip(file, reason)

    def skip(self, rel: str, reason: str) -> None:
        # recorded in dataset.json and logged (summarised per reason) under the name the
        # dataset shows; the writer drops a leading "<file>: " from the reason
        shown = self.shown(rel) if rel != "<empty path>" else rel
        self.writer.skip(shown, reason.replace(rel, shown) if shown != rel else reason)
        self.stats.skipped += 1

    def unreadable(self, err: DataError, path: Path, rel: str) -> None:
        reason, shown = str(err), self.shown(rel)
        if shown != rel:  # decoders repeat the path inside their message: never the real name
            for real, alias in ((str(path), shown), (rel, shown), (path.name, Path(shown).name)):
                reason = reason.replace(real, alias)
        self.writer.skip(shown, reason)
        self.stats.skipped += 1

    def add(self, rel: str, vid: str, row: dict[str, Any], indices: Iterable[int], frames: np.ndarray,
            decoded: int, patient_id: str | None = None) -> None:
        """frames: uint8 [T, h, w] of one file -> T rows, cropped by one box for the file.

        ``patient_id`` (a DICOM's own, already hashed) wins over the table's patient column;
        without either the file is its own patient.
        """
        shown = self.shown(rel)
        vid = self.video_id(rel, vid)
        if patient_id is None:
            patient_id = anonymize(row["patient"]) if row.get("patient") else vid
        box = _region(frames, self.crop)
        for index, frame in zip(indices, frames):
            self.writer.add(
                _finish(frame, box, self.size),
                video_id=vid,
                patient_id=patient_id,
                frame_index=int(index),
                coarse_label=row.get("coarse") or None,
                fine_label=row.get("fine") or None,
                file=shown,
                crop_box=str(box) if box is not None else "",
            )
        self.stats.videos += 1
        self.stats.frames_decoded += decoded
        self.stats.frames_kept += len(frames)


def _shown(rel: str) -> str:
    """The name written to the dataset: PACS exports name files by their SOP Instance UID,
    a DICOM identifier, which is pseudonymised like a patient id."""
    p = Path(rel)
    if _UID.match(p.name):
        return anonymize(rel)
    return anonymize(rel) + p.suffix if _UID.match(p.stem) else rel


def _pseudonym(rel: str) -> str:
    """A source path as a keyed pseudonym that keeps only the extension (``f<hex>.mp4``)."""
    suffix = Path(rel).suffix
    return anonymize(rel, "f") + (suffix.lower() if suffix[1:].isalnum() and not suffix[1:].isdigit() else "")


def _crop_desc(spec: CropSpec) -> str:
    return "none" if spec is None else str(spec)
