"""POCUS lung ultrasound (Born et al. 2021): videos and still images, 4 classes.

Release layout (GitHub ``jannisborn/covid19_ultrasound``, folder ``data/``)::

    dataset_metadata.csv                 # Filename (no extension), Label, Probe, Type, ...
    pocus_videos/{convex,linear}/...     # mp4, avi, mov, mpeg, gif (may sit in subfolders,
    pocus_images/{convex,linear}/...     #   e.g. linear/label_uncertain/)

The class comes from ``dataset_metadata.csv`` (joined on the file name without extension,
and on the probe where a name appears twice) and, where a file has no row, from the file-name
prefix (``Cov`` covid, ``Pneu`` pneumonia, ``Reg`` regular, ``Vir`` viral); disagreements
are logged and counted. Each file is one ``video_id`` (``<probe>/<name>``), which is also its
``patient_id``: the metadata's patient column can hold names and is never read. Videos keep
every k-th frame, cropped to the ultrasound region (:func:`awcl.data.crop.detect_region`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from awcl.data.crop import crop, detect_region
from awcl.data.imageio import resize
from awcl.data.recipes._common import (
    ReleaseFile,
    add_common_args,
    find_release_root,
    report,
    source_from_args,
)
from awcl.data.store import DEFAULT_SIZE, DatasetWriter
from awcl.data.video import VIDEO_EXTENSIONS, read_frames
from awcl.errors import DataError
from awcl.options import positive_int

log = logging.getLogger(__name__)

META_NAME = "dataset_metadata.csv"
# The authors' repository as a branch archive: it changes over time, so no checksum can be
# pinned; several videos are fetched by the repository's own scripts and are not in it.
RELEASE = (ReleaseFile("https://github.com/jannisborn/covid19_ultrasound/archive/refs/heads/master.zip"),)
CLASSES = ("covid", "pneumonia", "regular", "viral")
_PREFIX = re.compile(r"^(cov|pneu|reg|vir)(?=[_\-\s]|$)", re.IGNORECASE)
_PREFIX_CLASS = {"cov": "covid", "pneu": "pneumonia", "reg": "regular", "vir": "viral"}
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
PROBES = ("convex", "linear")


@dataclass
class PocusConfig:
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W)
    every: int = 8  # keep every k-th video frame
    images: bool = True  # also prepare pocus_images/
    limit: int | None = None  # first N files only (quick runs)


def class_from_label(label: str) -> str | None:
    """Metadata ``Label`` (``COVID-19``, ``Bacterial pneumonia``, ``regular``...) -> class."""
    s = str(label).strip().lower()
    if s.startswith("covid"):
        return "covid"
    if "viral" in s:
        return "viral"
    if "pneumonia" in s:
        return "pneumonia"
    if s in ("regular", "normal", "healthy"):
        return "regular"
    return None


def class_from_name(name: str) -> str | None:
    """File-name prefix (``Cov``, ``Pneu``, ``Reg``, ``Vir``; any case) -> class."""
    m = _PREFIX.match(Path(name).name)
    return _PREFIX_CLASS[m.group(1).lower()] if m else None


def read_metadata(path: Path) -> pd.DataFrame | None:
    """``Filename, Label, Probe`` of the metadata table (None, with a warning, if absent)."""
    if not path.is_file():
        log.warning("%s: not found; classes come from the file-name prefixes only", path)
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the metadata table ({err.__class__.__name__})") from None
    df.columns = [c.strip() for c in df.columns]
    for col in ("Filename", "Label"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r}")
    if "Probe" not in df.columns:
        df["Probe"] = ""
    # Only what the recipe uses: the patient column may contain names and is dropped here.
    out = df[["Filename", "Label", "Probe"]].apply(lambda s: s.str.strip())
    out["key"] = out["Filename"].str.lower()
    out["Probe"] = out["Probe"].str.lower()
    return out


def _lookup(meta: pd.DataFrame | None, stem: str, probe: str) -> pd.Series | None:
    if meta is None:
        return None
    rows = meta[meta["key"] == stem.lower()]
    if len(rows) > 1:  # the same name under both probes (e.g. Reg-nephropocus)
        same = rows[rows["Probe"] == probe]
        rows = same if len(same) else rows
    return rows.iloc[0] if len(rows) else None


def find_root(src: str | os.PathLike) -> Path:
    return find_release_root(
        src,
        lambda d: (d / "pocus_videos").is_dir() or (d / "pocus_images").is_dir(),
        "pocus_videos/ or pocus_images/",
    )


@dataclass
class PocusFile:
    path: Path
    kind: str  # "video" | "image"
    probe: str  # "convex" | "linear" | ""
    label_uncertain: bool


def list_files(root: Path, images: bool = True) -> list[PocusFile]:
    """Every video (and image) file under the release, sorted by path."""
    found = []
    for kind, folder, exts in (("video", "pocus_videos", VIDEO_EXTENSIONS), ("image", "pocus_images", _IMAGE_EXT)):
        if kind == "image" and not images:
            continue
        base = root / folder
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in exts:
                continue
            parts = [s.lower() for s in p.relative_to(base).parts[:-1]]
            probe = next((s for s in parts if s in PROBES), "")
            found.append(PocusFile(p, kind, probe, any("uncertain" in s for s in parts)))
    return found


def prepare_pocus(src: str | os.PathLike, out: str | os.PathLike, config: PocusConfig | None = None) -> Path:
    """Prepare POCUS videos (every k-th frame, cropped) and images at ``config.size``.

    Manifest extras: ``kind`` (video/image), ``probe``, ``filename`` (relative to the
    release), ``label_source`` (metadata/prefix), ``label_uncertain``, ``metadata_label``,
    ``crop_box`` (y0,y1,x0,x1 in the original frame), ``orig_height``, ``orig_width``.
    Undecodable files and files with no class are skipped, counted and warned about.
    """
    cfg = config or PocusConfig()
    root = find_root(src)
    meta = read_metadata(root / META_NAME)
    files = list_files(root, cfg.images)
    if cfg.limit is not None:
        files = files[: cfg.limit]
    if cfg.every < 1:
        raise DataError(f"--every must be at least 1, not {cfg.every}")
    conflicts: list[str] = []
    used_ids: set[str] = set()
    with DatasetWriter(out, size=cfg.size, source="pocus") as w:
        for f in files:
            rel = f.path.relative_to(root).as_posix()
            stem = f.path.stem
            row = _lookup(meta, stem, f.probe)
            label, by_meta = _file_class(w, f.path.name, rel, row, conflicts)
            if label is None:
                w.skip(f.path, "no class: no metadata row and no Cov/Pneu/Reg/Vir prefix")
                continue
            probe = f.probe or (row["Probe"] if row is not None and row["Probe"] in PROBES else "")
            try:
                indices, frames = read_frames(f.path, every=cfg.every if f.kind == "video" else 1)
            except DataError as err:
                w.skip(f.path, str(err))
                continue
            box = detect_region(frames).clip(*frames.shape[1:])
            vid = _video_id(probe, stem, rel, used_ids)
            for i, frame in zip(indices.tolist(), frames):
                w.add(
                    resize(crop(frame, box), cfg.size),
                    video_id=vid,
                    patient_id=vid,  # one video per patient as far as we know; never the name column
                    frame_index=i,
                    coarse_label=label,
                    kind=f.kind,
                    probe=probe,
                    filename=rel,
                    label_source="metadata" if by_meta else "prefix",
                    label_uncertain=f.label_uncertain,
                    metadata_label=row["Label"] if row is not None else "",
                    crop_box=str(box),
                    orig_height=int(frames.shape[1]),
                    orig_width=int(frames.shape[2]),
                )
        w.meta["label_conflicts"] = conflicts
        w.meta["recipe"] = {"name": "pocus", "root": str(root), "size": list(cfg.size), "every": cfg.every}
        skipped, n = w.skipped, len(w.rows)
    report("pocus", Path(out), n, skipped)
    return Path(out)


def _file_class(w: DatasetWriter, name: str, rel: str, row: pd.Series | None,
                conflicts: list[str]) -> tuple[str | None, str | None]:
    """(class, class by the metadata) of one file: the metadata row's, else the file-name
    prefix's; where they disagree the metadata wins and the file is noted."""
    by_meta = class_from_label(row["Label"]) if row is not None else None
    by_name = class_from_name(name)
    if by_meta and by_name and by_meta != by_name:
        conflicts.append(rel)
        w.note(rel, f"metadata says {by_meta}, file name says {by_name}; using metadata")
    return by_meta or by_name, by_meta


def _video_id(probe: str, stem: str, rel: str, used_ids: set[str]) -> str:
    """``<probe>/<stem>``, or the path below the release folder where that name is taken
    (the same name twice: another extension or subfolder); recorded in ``used_ids``."""
    vid = f"{probe or 'unknown'}/{stem}"
    if vid in used_ids:
        vid = rel.split("/", 1)[1]
    used_ids.add(vid)
    return vid


def _cli(args: argparse.Namespace) -> int:
    src = source_from_args(args, RELEASE)
    cfg = PocusConfig(size=args.size, every=args.every, images=not args.no_images, limit=args.limit)
    prepare_pocus(src, args.out, cfg)
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pocus", help="POCUS lung ultrasound videos and images, class per file")
    add_common_args(p, "pocus")
    p.add_argument("--every", type=positive_int, default=8, help="keep every k-th video frame (default 8)")
    p.add_argument("--no-images", action="store_true", help="skip pocus_images/ (videos only)")
    p.set_defaults(func=_cli)
