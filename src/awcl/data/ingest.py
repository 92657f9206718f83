"""Ingestion of a user's own data (the library; ``awcl.data.ingest_cli`` is its command line): folders of scan videos / DICOM cine, and labelled images.

``awcl prepare videos SRC --out DIR`` walks SRC for videos and DICOM files, keeps every k-th
frame, crops the ultrasound region, resizes and writes a prepared dataset.
``awcl prepare images SRC --labels CSV --out DIR`` does the same for a folder of still images
described by a label table whose columns and separator the user names.

Bad inputs (empty, truncated or mislabelled files, unreadable DICOM, label rows naming missing
files, duplicate rows, labels missing from a mapping) are skipped, counted, logged and listed
in ``dataset.json['skipped']``; problems that make the whole run meaningless (no such folder,
no usable input, a malformed table) raise DataError and leave no output behind.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.crop import Box, crop, detect_region
from awcl.data.imageio import resize
from awcl.data.label_table import (
    AUTO,
    LabelTable,
    _hierarchy,
    _label_rows,
    _match_table,
    load_mapping,
)
from awcl.data.store import DEFAULT_SIZE, DatasetWriter, anonymize
from awcl.data.video import (
    DICOM_EXTENSIONS,
    VIDEO_EXTENSIONS,
    dicom_metadata,
    is_dicom,
    iter_frames,
    read_frames,
    sniff,
)
from awcl.errors import AwclError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
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


# ---------------------------------------------------------------------------- videos
def prepare_videos(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    every: int = 8,
    size: tuple[int, int] = DEFAULT_SIZE,
    crop: CropSpec = "auto",
    labels_csv: str | os.PathLike | None = None,
    sep: str = AUTO,
    path_col: str | None = AUTO,
    coarse_col: str | None = AUTO,
    fine_col: str | None = AUTO,
    patient_col: str | None = AUTO,
    mapping: str | os.PathLike | None = None,
    strict: bool = False,
    source: str = "videos",
    limit: int | None = None,
    stats: PrepareStats | None = None,
    keep_names: bool = False,
) -> Path:
    """Prepare every video / DICOM cine under ``src`` into the dataset ``out``.

    Keeps frames ``0, every, 2*every, ...`` of each file, crops (``'auto'`` = detected
    ultrasound region per video, a fixed Box, or None), resizes to ``size`` (H, W).
    ``video_id`` and ``file`` = keyed pseudonyms of the relative path (``keep_names=True``:
    the relative path without extension, and the path); ``patient_id`` = hashed DICOM
    PatientID, else the (hashed) table patient column, else the video id. ``labels_csv`` optionally
    gives labels per video (matched on relative path, file name or stem). ``limit`` keeps
    only the first N files (sorted). Returns ``Path(out)``.
    """
    root = _check_src(src)
    st = stats if stats is not None else PrepareStats()
    files = _video_files(root, limit)
    rels = [_rel(f, root) for f in files]
    fine_to_coarse = load_mapping(mapping) if mapping is not None else None
    spec = None
    if labels_csv is not None:
        spec = LabelTable(labels_csv, sep, path_col, coarse_col, fine_col, patient_col)
    labels, pre_skips, hierarchy, columns = _video_labels(spec, fine_to_coarse, strict, rels)
    with DatasetWriter(out, size=size, source=source) as writer:
        sink = _Sink(writer, st, crop, size, keep_names)
        sink.begin(hierarchy, {"kind": "videos", "every": every, "crop": _crop_desc(crop),
                               **({"columns": columns} if columns else {})}, pre_skips)  # fmt: skip
        for path, rel, vid in zip(files, rels, _unique_ids(rels)):
            st.inputs += 1
            info: dict[str, int] = {}
            try:
                indices, frames = read_frames(path, every, stats=info)
                dicom = sniff(path) == "dicom"
                pid = dicom_metadata(path)["patient_id"] if dicom else None
            except DataError as err:
                sink.unreadable(err, path, rel)
                continue
            sink.add(rel, vid, labels.get(rel, {}), indices, frames, int(info.get("decoded", 0)), patient_id=pid)
        if labels_csv is not None:
            matched = sum(rel in labels for rel in rels)
            log.info("%d of %d videos matched a row of %s", matched, len(rels), labels_csv)
    return Path(out)


def _video_files(root: Path, limit: int | None) -> list[Path]:
    """The videos and DICOM files under ``root`` (sorted; the first ``limit``); none is an error."""
    files = _walk(root, VIDEO_EXTENSIONS | DICOM_EXTENSIONS, sniff_bare=True)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise DataError(
            f"{root}: no video or DICOM files found "
            f"(looked for {', '.join(sorted(VIDEO_EXTENSIONS | DICOM_EXTENSIONS))})"
        )
    return files


def _video_labels(
    spec: LabelTable | None, fine_to_coarse: dict[str, str] | None, strict: bool, rels: list[str]
) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]], dict[str, str], dict[str, Any] | None]:
    """Labels per video from an optional table: (rel -> row, skips, hierarchy, columns used).

    Without a table the hierarchy is the mapping's (if any) and there is nothing to skip.
    """
    if spec is None:
        hierarchy = dict(sorted(fine_to_coarse.items())) if fine_to_coarse else {}
        return {}, [], hierarchy, None
    table = spec.read()
    columns = spec.describe()
    table, pre_skips = _label_rows(table, fine_to_coarse, strict, str(spec.path))
    hierarchy = _hierarchy(table, fine_to_coarse)
    labels, unmatched = _match_table(table, rels)
    pre_skips += [(k, "label row names a file that does not exist") for k in unmatched]
    return labels, pre_skips, hierarchy, columns


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


# ---------------------------------------------------------------------------- images
def load_still(path: str | os.PathLike) -> np.ndarray:
    """One still frame (PNG/JPEG/BMP/TIFF, single-frame DICOM, or a video's first frame)."""
    for _, frame in iter_frames(path, every=1):
        return frame
    raise DataError(f"{path}: no image could be decoded")


def prepare_images(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labels: str | os.PathLike,
    sep: str = AUTO,
    path_col: str | None = AUTO,
    coarse_col: str | None = AUTO,
    fine_col: str | None = AUTO,
    patient_col: str | None = AUTO,
    mapping: str | os.PathLike | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    crop: CropSpec = "auto",
    strict: bool = False,
    include_unlabelled: bool = False,
    source: str = "images",
    stats: PrepareStats | None = None,
    keep_names: bool = False,
) -> Path:
    """Prepare the still images named in a label table (paths relative to ``src``).

    The user names the table's separator and columns (image path, coarse label, fine label,
    patient/scan id); a column left at ``"auto"`` is found among the usual header names
    (:data:`COLUMN_NAMES`: ``path/image/file/filename``, ``coarse_label``, ``fine_label``,
    ``patient_id``, ...), None leaves it unused. Label-like columns that end up unused are
    reported with a warning. ``mapping`` (CSV fine,coarse or YAML) fills the coarse label from the
    fine one and becomes ``meta['hierarchy']``; a fine label it lacks is a counted skip
    (``strict=True``: an error). Rows naming missing or unreadable files and repeated rows
    are counted skips. Patient ids are pseudonymised with ``anonymize``; without a patient
    column each image is its own patient. ``include_unlabelled`` also adds the images under
    ``src`` that the table does not name, without labels. ``crop``: 'auto' | Box | None.
    """
    root = _check_src(src)
    st = stats if stats is not None else PrepareStats()
    files_on_disk = _walk(root, IMAGE_EXTENSIONS | DICOM_EXTENSIONS, sniff_bare=False)
    if not files_on_disk:
        raise DataError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    fine_to_coarse = load_mapping(mapping) if mapping is not None else None
    spec = LabelTable(labels, sep, path_col, coarse_col, fine_col, patient_col)
    table = spec.read()
    if table.empty:
        raise DataError(f"{labels}: label table has no rows")
    with DatasetWriter(out, size=size, source=source) as writer:
        sink = _Sink(writer, st, crop, size, keep_names)
        rows, skips = _label_rows(table, fine_to_coarse, strict, str(labels))
        st.inputs += len(table)
        sink.begin(_hierarchy(rows, fine_to_coarse),
                   {"kind": "images", "crop": _crop_desc(crop), "columns": spec.describe()}, skips)  # fmt: skip
        todo, seen = _table_images(rows, root, sink)
        if include_unlabelled:
            todo += _unlabelled_images(files_on_disk, root, seen, st)
        ids = _unique_ids([rel for rel, _ in todo])
        for (rel, row), vid in zip(todo, ids):
            try:
                image = load_still(row["path"])
            except DataError as err:
                sink.unreadable(err, Path(row["path"]), rel)
                continue
            sink.add(rel, vid, row, [0], image[None], decoded=1)  # one frame: [1, h, w]
    return Path(out)


def _table_images(
    rows: Any, root: Path, sink: _Sink
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, tuple[str, str, str]]]:
    """The label rows worth decoding, as (path relative to ``root``, row with its full path),
    and every path the table named -> its (coarse, fine, patient). Empty paths, repeated
    rows (the first is kept) and missing files are counted skips."""
    seen: dict[str, tuple[str, str, str]] = {}
    todo: list[tuple[str, dict[str, Any]]] = []
    for _, row in rows.iterrows():
        raw = row["path"]
        if not raw:
            sink.skip("<empty path>", "label row with an empty image path")
            continue
        path = Path(raw) if Path(raw).is_absolute() else root / raw
        try:
            rel = _rel(path.resolve(), root.resolve())
        except ValueError:
            rel = raw  # absolute path outside src: keep the name the user gave
        key = (row["coarse"], row["fine"], row["patient"])
        if rel in seen:
            why = "duplicate row" if seen[rel] == key else "duplicate row with different labels"
            sink.skip(rel, f"{why} (first row kept)")
            continue
        seen[rel] = key
        if not path.is_file():
            sink.skip(rel, "label row names a file that does not exist")
            continue
        todo.append((rel, {**dict(row), "path": path}))
    return todo, seen


def _unlabelled_images(
    files: list[Path], root: Path, seen: dict[str, tuple[str, str, str]], st: PrepareStats
) -> list[tuple[str, dict[str, Any]]]:
    """The images under ``root`` the table does not name, as rows without labels."""
    todo: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        rel = _rel(f, root)
        if rel not in seen:
            seen[rel] = ("", "", "")
            todo.append((rel, {"path": f, "coarse": "", "fine": "", "patient": ""}))
            st.inputs += 1
    return todo
