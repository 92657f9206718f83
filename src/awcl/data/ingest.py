"""Ingestion of a user's own data (the library; ``awcl.data.ingest_cli`` is its command line): folders of scan videos / DICOM cine, and labelled images.

``awcl prepare videos SRC --out DIR`` walks SRC for videos and DICOM files, keeps every k-th
frame, crops the ultrasound region, resizes and writes a prepared dataset.
``awcl prepare images SRC --labels CSV --out DIR`` does the same for a folder of still images
described by a label table whose columns and separator the user names.

Bad inputs (empty, truncated or mislabelled files, unreadable DICOM, label rows naming missing
files, duplicate rows, labels missing from a mapping) are skipped, counted, logged and listed
in ``dataset.json['skipped']``; problems that make the whole run meaningless (no such folder,
no usable input, a malformed table) raise DataError and leave no output behind.

Videos are prepared here, images in ``awcl.data.ingest_images``; what both share is in
``awcl.data.ingest_sink``. ``prepare_images`` and the shared names stay importable from here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from awcl.data.ingest_images import IMAGE_EXTENSIONS, load_still, prepare_images  # noqa: F401  (re-exported)
from awcl.data.ingest_sink import (  # noqa: F401  (CropSpec, parse_crop: re-exported)
    CropSpec,
    PrepareStats,
    _check_src,
    _crop_desc,
    _rel,
    _Sink,
    _unique_ids,
    _walk,
    parse_crop,
)
from awcl.data.label_table import (
    AUTO,
    LabelTable,
    _hierarchy,
    _label_rows,
    _match_table,
    load_mapping,
)
from awcl.data.store import DEFAULT_SIZE, DatasetWriter
from awcl.data.video import DICOM_EXTENSIONS, VIDEO_EXTENSIONS, dicom_metadata, read_frames, sniff
from awcl.errors import DataError

log = logging.getLogger(__name__)


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
