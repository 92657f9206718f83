"""``awcl prepare images``: the still images a label table names (the library; its command
line is ``awcl.data.ingest_cli``). The shared parts are in ``awcl.data.ingest_sink``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from awcl.data.ingest_sink import (
    CropSpec,
    PrepareStats,
    _check_src,
    _crop_desc,
    _rel,
    _Sink,
    _unique_ids,
    _walk,
)
from awcl.data.label_table import AUTO, LabelTable, _hierarchy, _label_rows, load_mapping
from awcl.data.store import DEFAULT_SIZE, DatasetWriter
from awcl.data.video import DICOM_EXTENSIONS, iter_frames
from awcl.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


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
