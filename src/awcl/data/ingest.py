"""Ingestion of a user's own data: folders of scan videos / DICOM cine, and labelled images.

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

import argparse
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl.data.crop import Box, crop, detect_region
from awcl.data.imageio import resize
from awcl.data.store import DEFAULT_SIZE, DatasetWriter, anonymize, open_dataset
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
def parse_size(text: str) -> tuple[int, int]:
    """``"224x288"`` (H x W) -> (224, 288)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise AwclError(f"--size {text!r}: expected HxW, e.g. 224x288") from None
    if h < 8 or w < 8:
        raise AwclError(f"--size {text!r}: height and width must be at least 8")
    return h, w


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


def _skip(writer: DatasetWriter, stats: PrepareStats, file: str, reason: str) -> None:
    writer.skip(file, reason)  # recorded in dataset.json and logged (summarised per reason)
    stats.skipped += 1


def _strip_file(reason: str, file: str) -> str:
    """DataError text minus the leading ``<path>: `` (the file is recorded separately)."""
    head, sep, tail = reason.partition(": ")
    return tail if sep and file in head else reason


# ---------------------------------------------------------------------------- label tables
def load_mapping(path: str | os.PathLike) -> dict[str, str]:
    """fine -> coarse mapping from a CSV (two columns: fine, coarse; header row) or YAML.

    YAML may be ``{fine: coarse}`` or ``{coarse: [fine, ...]}``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: mapping file not found")
    mapping: dict[str, str] = {}
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the file as UTF-8)") from None
        except yaml.YAMLError as err:
            raise DataError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise DataError(f"{p}: expected a mapping fine: coarse (or coarse: [fine, ...])")
        for key, value in data.items():
            if isinstance(value, list):
                for fine in value:
                    mapping[str(fine)] = str(key)
            else:
                mapping[str(key)] = str(value)
    else:
        try:
            df = pd.read_csv(
                p, sep=None, engine="python", dtype=str, keep_default_na=False, encoding="utf-8-sig"
            )
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the table as UTF-8)") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{p}: not a readable mapping table ({err})") from None
        if df.shape[1] < 2:
            raise DataError(f"{p}: mapping table needs two columns (fine, coarse)")
        for fine, coarse in zip(df.iloc[:, 0].str.strip(), df.iloc[:, 1].str.strip()):
            if fine in mapping and mapping[fine] != coarse:
                raise DataError(f"{p}: fine label {fine!r} maps to both {mapping[fine]!r} and {coarse!r}")
            mapping[fine] = coarse
    if not mapping:
        raise DataError(f"{p}: mapping file is empty")
    return mapping


AUTO = "auto"  # a LabelTable column given as "auto" is looked up among the usual names
# Usual header names per role, in order of preference, compared after lower-casing and
# turning spaces/dashes into underscores. The manifest's own names come first, so a table
# written like awcl's manifest (``image, coarse_label, fine_label, patient_id``) just works.
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "path": ("path", "image", "file", "filename", "file_name", "image_name", "image_path",
             "filepath", "file_path", "img", "video", "video_path"),
    "coarse": ("coarse_label", "coarse", "label", "class", "class_name"),
    "fine": ("fine_label", "fine"),
    "patient": ("patient_id", "patient", "patientid", "patient_num", "patient_number",
                "subject", "subject_id", "scan_id", "case_id"),
}  # fmt: skip
# Headers that look like labels: reported when a table has them but they are not used.
_LABELISH = re.compile(r"label|class|plane|view|anatomy|organ|diagnos|category|target|finding|standard")


def _sniff_sep(path: Path) -> str:
    """The separator of a table: one of , ; tab | seen in its first lines (default ',')."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            sample = fh.read(64 * 1024)
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except (csv.Error, OSError, UnicodeDecodeError):
        return ","  # one column, or unreadable: read_csv gives the precise error


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


@dataclass
class LabelTable:
    """Which columns of a user's label table hold what (names as the user wrote them).

    Each column is a header name, ``"auto"`` (the first of :data:`COLUMN_NAMES` the table
    has; the path column must then be found) or None (not used).
    """

    path: str | os.PathLike
    sep: str = AUTO  # or ",", ";", "\t", ...
    path_col: str | None = AUTO
    coarse_col: str | None = AUTO
    fine_col: str | None = AUTO
    patient_col: str | None = AUTO
    # filled by read(): role -> header used, and label-like headers left unused
    used: dict[str, str] = field(default_factory=dict)
    unused_labelish: list[str] = field(default_factory=list)

    def read(self) -> pd.DataFrame:
        """The table with columns ``path, coarse, fine, patient`` (strings, '' = unknown)."""
        p = Path(self.path)
        if not p.is_file():
            raise DataError(f"{p}: label table not found")
        try:
            # utf-8-sig: spreadsheet programs put a byte-order mark before the first header.
            sep = _sniff_sep(p) if self.sep == AUTO else self.sep
            df = pd.read_csv(
                p, sep=sep, dtype=str, keep_default_na=False, engine="python", encoding="utf-8-sig"
            )
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text (save the table as UTF-8)") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, re.error) as err:
            raise DataError(f"{p}: not a readable table with separator {self.sep!r} ({err})") from None
        # Headers with stray spaces ("Train ") are common in released tables: match stripped.
        by_stripped = {c.strip(): c for c in df.columns}
        by_norm: dict[str, str] = {}
        for c in df.columns:
            by_norm.setdefault(_norm(c), c)
        columns = ", ".join(repr(c) for c in df.columns)
        out = pd.DataFrame(index=df.index)
        self.used = {}
        for role, name in (
            ("path", self.path_col),
            ("coarse", self.coarse_col),
            ("fine", self.fine_col),
            ("patient", self.patient_col),
        ):
            col = None
            if name is not None and name.strip().lower() == AUTO:
                taken = set(self.used.values())
                col = next(
                    (by_norm[n] for n in COLUMN_NAMES[role] if n in by_norm and by_norm[n] not in taken),
                    None,
                )
                if col is None and role == "path":
                    raise DataError(
                        f"{p}: no image path column (separator {self.sep!r}; columns are {columns}); "
                        f"name it with --path-col, or call it one of: {', '.join(COLUMN_NAMES['path'][:6])}"
                    )
            elif name is not None:
                col = by_stripped.get(name.strip())
                if col is None:
                    raise DataError(f"{p}: no column {name!r} (separator {self.sep!r}; columns are {columns})")
            if col is None:
                out[role] = ""
                continue
            self.used[role] = col
            out[role] = df[col].astype(str).str.strip()
        used = set(self.used.values())
        self.unused_labelish = [
            c for c in df.columns if c not in used and _LABELISH.search(_norm(c)) and (df[c] != "").any()
        ]
        desc = ", ".join(f"{role}={col.strip()!r}" for role, col in self.used.items())
        log.info("%s: columns used: %s", p.name, desc)
        if self.unused_labelish:
            log.warning(
                "%s: column%s %s look%s like labels but %s not used (name %s with --coarse-col / "
                "--fine-col; columns used: %s)",
                p, "s" * (len(self.unused_labelish) > 1),
                ", ".join(repr(c.strip()) for c in self.unused_labelish),
                "" if len(self.unused_labelish) > 1 else "s",
                "are" if len(self.unused_labelish) > 1 else "is",
                "them" if len(self.unused_labelish) > 1 else "it", desc,
            )  # fmt: skip
        return out

    def describe(self) -> dict[str, Any]:
        """What read() used, for dataset.json (``prepare.columns``)."""
        return {
            "used": {r: c.strip() for r, c in self.used.items()},
            "unused_label_like": [c.strip() for c in self.unused_labelish],
        }


def _label_rows(
    table: pd.DataFrame, mapping: dict[str, str] | None, strict: bool, source: str
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Apply the fine->coarse mapping; return usable rows and (file, reason) skips."""
    skips: list[tuple[str, str]] = []
    keep = []
    for i, row in table.iterrows():
        fine, coarse = row["fine"], row["coarse"]
        if mapping is not None and fine:
            if fine not in mapping:
                msg = f"fine label {fine!r} is not in the mapping file"
                if strict:
                    raise DataError(f"{source}: row {i + 2}: {msg}")
                skips.append((row["path"], msg))
                continue
            if not coarse:
                table.at[i, "coarse"] = mapping[fine]
            elif coarse != mapping[fine]:
                msg = f"coarse label {coarse!r} contradicts the mapping ({fine!r} -> {mapping[fine]!r})"
                if strict:
                    raise DataError(f"{source}: row {i + 2}: {msg}")
                skips.append((row["path"], msg))
                continue
        keep.append(i)
    return table.loc[keep], skips


def _hierarchy(rows: pd.DataFrame, mapping: dict[str, str] | None) -> dict[str, str]:
    if mapping is not None:
        return dict(sorted(mapping.items()))
    pairs = rows.loc[(rows["fine"] != "") & (rows["coarse"] != ""), ["fine", "coarse"]]
    pairs = pairs.drop_duplicates()
    if pairs.empty or pairs["fine"].duplicated().any():
        return {}  # no hierarchy, or the table's fine labels are not nested in coarse ones
    return dict(sorted(zip(pairs["fine"], pairs["coarse"])))


def _match_table(
    table: pd.DataFrame, files: list[str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Label row for each relative file path (by path, then file name, then stem), and the
    table paths that match no file."""
    by_path: dict[str, int] = {}
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    keys = []
    for i, raw in enumerate(table["path"]):
        key = raw.replace("\\", "/").removeprefix("./")
        keys.append(key)
        by_path.setdefault(key, i)
        by_name.setdefault(Path(key).name, i)
        by_stem.setdefault(Path(key).stem, i)
    out, used = {}, set()
    for rel in files:
        i = by_path.get(rel, by_name.get(Path(rel).name, by_stem.get(Path(rel).stem)))
        if i is not None:
            out[rel] = dict(table.iloc[i])
            used.add(keys[i])
    unmatched = [k for k in dict.fromkeys(keys) if k not in used]
    return out, unmatched


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
) -> Path:
    """Prepare every video / DICOM cine under ``src`` into the dataset ``out``.

    Keeps frames ``0, every, 2*every, ...`` of each file, crops (``'auto'`` = detected
    ultrasound region per video, a fixed Box, or None), resizes to ``size`` (H, W).
    ``video_id`` = relative path without extension; ``patient_id`` = hashed DICOM PatientID,
    else the (hashed) table patient column, else the video id. ``labels_csv`` optionally
    gives labels per video (matched on relative path, file name or stem). ``limit`` keeps
    only the first N files (sorted). Returns ``Path(out)``.
    """
    root = _check_src(src)
    st = stats if stats is not None else PrepareStats()
    files = _walk(root, VIDEO_EXTENSIONS | DICOM_EXTENSIONS, sniff_bare=True)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise DataError(
            f"{root}: no video or DICOM files found "
            f"(looked for {', '.join(sorted(VIDEO_EXTENSIONS | DICOM_EXTENSIONS))})"
        )
    rels = [_rel(f, root) for f in files]
    ids = _unique_ids(rels)
    fine_to_coarse = load_mapping(mapping) if mapping is not None else None
    labels: dict[str, dict[str, str]] = {}
    pre_skips: list[tuple[str, str]] = []
    hierarchy: dict[str, str] = dict(sorted(fine_to_coarse.items())) if fine_to_coarse else {}
    columns: dict[str, Any] | None = None
    if labels_csv is not None:
        spec = LabelTable(labels_csv, sep, path_col, coarse_col, fine_col, patient_col)
        table = spec.read()
        columns = spec.describe()
        table, pre_skips = _label_rows(table, fine_to_coarse, strict, str(labels_csv))
        hierarchy = _hierarchy(table, fine_to_coarse)
        labels, unmatched = _match_table(table, rels)
        pre_skips += [(k, "label row names a file that does not exist") for k in unmatched]
    with DatasetWriter(out, size=size, source=source) as writer:
        writer.meta.update(
            {
                "hierarchy": hierarchy,
                "prepare": {"kind": "videos", "every": every, "crop": _crop_desc(crop),
                            **({"columns": columns} if columns else {})},
            }
        )
        for file, reason in pre_skips:
            _skip(writer, st, file, reason)
        for path, rel, vid in zip(files, rels, ids):
            st.inputs += 1
            info: dict[str, int] = {}
            try:
                indices, frames = read_frames(path, every, stats=info)
                dicom = sniff(path) == "dicom"
                pid = dicom_metadata(path)["patient_id"] if dicom else None
            except DataError as err:
                _skip(writer, st, _shown(rel), _skip_reason(err, path, rel))
                continue
            row = labels.get(rel, {})
            shown = _shown(rel)
            if shown != rel:
                vid = anonymize(rel)
            if pid is None:
                pid = anonymize(row["patient"]) if row.get("patient") else vid
            box = _region(frames, crop)
            for index, frame in zip(indices, frames):
                writer.add(
                    _finish(frame, box, size),
                    video_id=vid,
                    patient_id=pid,
                    frame_index=int(index),
                    coarse_label=row.get("coarse") or None,
                    fine_label=row.get("fine") or None,
                    file=shown,
                    crop_box=str(box) if box is not None else "",
                )
            st.videos += 1
            st.frames_decoded += int(info.get("decoded", 0))
            st.frames_kept += len(frames)
        if labels_csv is not None:
            matched = sum(rel in labels for rel in rels)
            log.info("%d of %d videos matched a row of %s", matched, len(rels), labels_csv)
    return Path(out)


def _shown(rel: str) -> str:
    """The name written to the dataset: PACS exports name files by their SOP Instance UID,
    a DICOM identifier, which is pseudonymised like a patient id."""
    p = Path(rel)
    if _UID.match(p.name):
        return anonymize(rel)
    return anonymize(rel) + p.suffix if _UID.match(p.stem) else rel


def _skip_reason(err: DataError, path: Path, rel: str) -> str:
    """The error without its leading file name; a UID-named file stays pseudonymised even
    where a decoder repeats its path inside the message."""
    reason = _strip_file(str(err), str(path))
    shown = _shown(rel)
    if shown != rel:
        reason = reason.replace(str(path), shown).replace(path.name, Path(shown).name)
    return reason


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
        rows, skips = _label_rows(table, fine_to_coarse, strict, str(labels))
        writer.meta.update(
            {
                "hierarchy": _hierarchy(rows, fine_to_coarse),
                "prepare": {"kind": "images", "crop": _crop_desc(crop), "columns": spec.describe()},
            }
        )
        st.inputs += len(table)
        for file, reason in skips:
            _skip(writer, st, file, reason)
        seen: dict[str, tuple[str, str, str]] = {}
        todo: list[tuple[str, dict[str, Any]]] = []
        for _, row in rows.iterrows():
            raw = row["path"]
            if not raw:
                _skip(writer, st, "<empty path>", "label row with an empty image path")
                continue
            path = Path(raw) if Path(raw).is_absolute() else root / raw
            try:
                rel = _rel(path.resolve(), root.resolve())
            except ValueError:
                rel = raw  # absolute path outside src: keep the name the user gave
            key = (row["coarse"], row["fine"], row["patient"])
            if rel in seen:
                why = "duplicate row" if seen[rel] == key else "duplicate row with different labels"
                _skip(writer, st, rel, f"{why} (first row kept)")
                continue
            seen[rel] = key
            if not path.is_file():
                _skip(writer, st, rel, "label row names a file that does not exist")
                continue
            todo.append((rel, {**dict(row), "path": path}))
        if include_unlabelled:
            for f in files_on_disk:
                rel = _rel(f, root)
                if rel not in seen:
                    seen[rel] = ("", "", "")
                    todo.append((rel, {"path": f, "coarse": "", "fine": "", "patient": ""}))
                    st.inputs += 1
        ids = _unique_ids([rel for rel, _ in todo])
        for (rel, row), vid in zip(todo, ids):
            try:
                image = load_still(row["path"])
            except DataError as err:
                _skip(writer, st, _shown(rel), _skip_reason(err, Path(row["path"]), rel))
                continue
            box = _region(image[None], crop)
            if _shown(rel) != rel:
                vid = anonymize(rel)
            writer.add(
                _finish(image, box, size),
                video_id=vid,
                patient_id=anonymize(row["patient"]) if row["patient"] else vid,
                frame_index=0,
                coarse_label=row["coarse"] or None,
                fine_label=row["fine"] or None,
                file=_shown(rel),
                crop_box=str(box) if box is not None else "",
            )
            st.videos += 1
            st.frames_decoded += 1
            st.frames_kept += 1
    return Path(out)


# ---------------------------------------------------------------------------- CLI
def _print_summary(out: Path, st: PrepareStats) -> None:
    ds = open_dataset(out)
    m = ds.manifest
    print(
        f"prepared {out}: {len(m)} frames from {st.videos} files "
        f"({m['patient_id'].nunique()} patients), {ds.size[0]}x{ds.size[1]}; "
        f"{st.frames_decoded} frames decoded; skipped {st.skipped}"
    )
    for col in ("coarse_label", "fine_label"):
        counts = m[col].dropna().value_counts().sort_index()
        if len(counts):
            print(f"  {col}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if ds.meta.get("skipped"):
        # the reasons were logged (one summary per reason); the full list stays in the dataset
        print(f"  every skipped input with its reason: {out / 'dataset.json'}, key \"skipped\"")


def _add_common(p: argparse.ArgumentParser, default_crop: str = "auto") -> None:
    p.add_argument("src", help="source folder (searched recursively)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--size", type=cli_type(parse_size), default=DEFAULT_SIZE, metavar="HxW",
                   help="frame size of the prepared dataset")  # fmt: skip
    p.add_argument(
        "--crop",
        type=cli_type(parse_crop),
        default=default_crop,
        help="auto (detect the ultrasound region), none, or a fixed box y0,y1,x0,x1",
    )
    p.add_argument("--no-crop", dest="crop", action="store_const", const=None, help="same as --crop none")
    p.add_argument("--sep", default=AUTO, help="label table separator ('auto': detected from the table)")

    def col(text: str) -> str | None:
        return None if text.strip().lower() == "none" else text

    for role, flag, what in (
        ("path", "--path-col", "the file path"),
        ("coarse", "--coarse-col", "the coarse label"),
        ("fine", "--fine-col", "the fine label"),
        ("patient", "--patient-col", "the patient/scan id"),
    ):
        names = "/".join(COLUMN_NAMES[role][:4])
        p.add_argument(
            flag, type=col, default=AUTO, metavar="NAME",
            help=f"table column with {what}; 'auto' takes the first of {names}, ... the table "
            "has" + ("" if role == "path" else ", 'none' leaves it unused"),
        )  # fmt: skip
    p.add_argument("--mapping", default=None, help="fine->coarse mapping (CSV fine,coarse or YAML)")
    p.add_argument(
        "--strict", action="store_true", help="fail on a label missing from the mapping instead of skipping"
    )


def _run_videos(args: argparse.Namespace) -> int:
    st = PrepareStats()
    out = prepare_videos(
        args.src,
        args.out,
        every=args.every,
        size=args.size,
        crop=args.crop,
        labels_csv=args.labels,
        sep=args.sep,
        path_col=args.path_col,
        coarse_col=args.coarse_col,
        fine_col=args.fine_col,
        patient_col=args.patient_col,
        mapping=args.mapping,
        strict=args.strict,
        stats=st,
    )
    _print_summary(out, st)
    return 0


def _run_images(args: argparse.Namespace) -> int:
    st = PrepareStats()
    out = prepare_images(
        args.src,
        args.out,
        labels=args.labels,
        sep=args.sep,
        path_col=args.path_col,
        coarse_col=args.coarse_col,
        fine_col=args.fine_col,
        patient_col=args.patient_col,
        mapping=args.mapping,
        size=args.size,
        crop=args.crop,
        strict=args.strict,
        include_unlabelled=args.include_unlabelled,
        stats=st,
    )
    _print_summary(out, st)
    return 0


def cli_type(parse):
    """argparse ``type=`` wrapper: our AwclError becomes argparse's usage error (exit 2)."""

    def convert(text: str):
        try:
            return parse(text)
        except AwclError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be >= 1 (``--every``, ``--limit``)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return v


def register_prepare(sub: argparse._SubParsersAction) -> None:
    """Add ``awcl prepare videos`` and ``awcl prepare images``."""
    pv = sub.add_parser(
        "videos",
        help="scan videos (mp4/avi/mov/mpeg/gif) and DICOM cine -> prepared dataset",
        description="Walk SRC for videos and DICOM files, keep every k-th frame, crop the "
        "ultrasound region, resize and write a prepared dataset.",
    )
    _add_common(pv)
    pv.add_argument("--every", type=positive_int, default=8, help="keep every k-th frame")
    pv.add_argument("--labels", default=None, help="optional table of per-video labels")
    pv.set_defaults(func=_run_videos)

    pi = sub.add_parser(
        "images",
        help="a folder of still images plus a label table -> prepared dataset",
        description="Prepare the images named in a label table. Columns named like awcl's "
        "manifest (image/path/file/filename, coarse_label, fine_label, patient_id) are used "
        "without flags; name others with --path-col/--coarse-col/--fine-col/--patient-col. "
        "Label-like columns left unused are reported.",
    )
    _add_common(pi)
    pi.add_argument("--labels", required=True, help="label table (CSV/TSV...)")
    pi.add_argument(
        "--include-unlabelled",
        action="store_true",
        help="also add images under SRC that the table does not name (no labels)",
    )
    pi.set_defaults(func=_run_images)
