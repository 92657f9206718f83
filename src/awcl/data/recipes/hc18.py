"""HC18 fetal head circumference (van den Heuvel et al. 2018), training part.

Release layout::

    training_set_pixel_size_and_HC.csv   # filename, pixel size(mm), head circumference (mm)
    training_set/NNN_HC.png              # mostly 800x540 grey images
    training_set/NNN_HC_Annotation.png   # head as an ellipse OUTLINE (some copies: filled)

``NNN_2HC.png`` is a further image of the subject of ``NNN_HC.png``. Every image becomes one
frame with a filled head mask {0: background, 1: head}. Frames are resized (anisotropically)
to the prepared size, so the manifest keeps the original pixel size and image size and the
per-axis pixel size at the prepared scale: ``hc_from_mask(mask, pixel_size_y_mm,
pixel_size_x_mm)`` recovers an HC in mm from a (predicted) mask at the prepared size.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from awcl.data.imageio import load_grey, resize
from awcl.data.recipes._common import (
    ReleaseFile,
    add_common_args,
    find_release_root,
    report,
    source_from_args,
)
from awcl.data.store import DEFAULT_SIZE, DatasetWriter
from awcl.errors import DataError
from awcl.geometry import head_circumference_mm, outline_points

log = logging.getLogger(__name__)

CSV_NAME = "training_set_pixel_size_and_HC.csv"
# Zenodo record 1327317. Zenodo publishes MD5 only; no SHA-256 is pinned (see docs/recipes.md).
RELEASE = (
    ReleaseFile("https://zenodo.org/records/1327317/files/training_set.zip"),
    ReleaseFile("https://zenodo.org/records/1327317/files/" + CSV_NAME, extract=False),
)
MASK_CLASSES = {0: "background", 1: "head"}
# The release draws each head as a ~2.8 px wide outline whose centre line is the ellipse of
# the table's HC. Filled copies are that outline filled to its OUTER edge: measured with
# awcl.geometry.outline_points on the 999 filled masks, their edge lies 1.40 px
# (sd 0.07) outside the table's ellipse, as a cv2 2-px outline filled the same way does.
FILLED_EDGE_OFFSET_PX = 1.4
_NAME = re.compile(r"^(\d+)_(?:(\d+))?HC\.png$", re.IGNORECASE)


@dataclass
class HC18Config:
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W) of the prepared frames
    limit: int | None = None  # prepare only the first N rows of the CSV (quick runs)
    # filled annotations: their edge lies this far (native px) outside the annotated ellipse
    filled_edge_offset_px: float = FILLED_EDGE_OFFSET_PX


def subject_id(filename: str) -> str:
    """``010_HC.png`` and ``010_2HC.png`` -> ``"010"`` (same subject)."""
    m = _NAME.match(Path(filename).name)
    if not m:
        raise DataError(f"{filename}: not an HC18 image name (expected NNN_HC.png or NNN_kHC.png)")
    return m.group(1)


def fill_annotation(ann: np.ndarray) -> np.ndarray:
    """Annotation image (outline ellipse or filled, any grey level > 0) -> filled uint8 {0,1}.

    ann: [h, w] uint8. Filling the outer contour of the largest drawn component turns an
    outline ring into the solid head and leaves a filled ellipse unchanged. Where the ring is
    not closed (the fill stays thin), an ellipse fitted to the drawn points is filled instead.
    """
    binary = (ann > 127).astype(np.uint8)
    if not binary.any():
        raise DataError("annotation is empty")
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    largest = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, [largest], -1, 1, thickness=cv2.FILLED)
    hull_area = cv2.contourArea(cv2.convexHull(largest))
    if int(filled.sum()) < 0.5 * hull_area:  # open outline: fill its fitted ellipse instead
        pts = np.column_stack(np.nonzero(binary)[::-1]).astype(np.float32)  # (x, y)
        if len(pts) < 5:
            raise DataError("annotation has too few points for an ellipse")
        filled = np.zeros_like(binary)
        cv2.ellipse(filled, cv2.fitEllipse(pts), 1, thickness=cv2.FILLED)
    return filled


def annotated_ellipse(
    ann: np.ndarray, filled_edge_offset_px: float = FILLED_EDGE_OFFSET_PX
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """The annotated ellipse ``((cx, cy), (a, b), angle_deg)`` in pixels of ``ann: [h, w]``.

    ``a`` lies along ``angle_deg`` (cv2.fitEllipse's convention). An outline ring straddles
    the ellipse, so a fit to all its pixels is its centre line; a filled annotation's sub-pixel
    edge is fitted and moved ``filled_edge_offset_px`` inwards (see FILLED_EDGE_OFFSET_PX).
    """
    binary = (ann > 127).astype(np.uint8)
    filled = fill_annotation(ann)
    if int(binary.sum()) < 0.5 * int(filled.sum()):  # an outline (closed or not)
        pts = np.column_stack(np.nonzero(binary)[::-1]).astype(np.float32)
        offset = 0.0
    else:
        pts = outline_points(filled).astype(np.float32)
        offset = float(filled_edge_offset_px)
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(pts)
    a, b = d1 / 2 - offset, d2 / 2 - offset
    if min(a, b) <= 1:
        raise DataError("annotated ellipse is too small")
    return (cx, cy), (a, b), angle


def rasterize_ellipse(
    ellipse: tuple[tuple[float, float], tuple[float, float], float],
    src_shape: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """uint8 ``[H, W]`` mask of an ellipse given in pixels of a ``src_shape`` image, drawn at
    ``size``: a pixel is 1 when its centre (mapped to the source) lies inside, so the mask's
    edge is the ellipse itself (cv2.ellipse/INTER_NEAREST would shift or grow it)."""
    (cx, cy), (a, b), angle = ellipse
    (h0, w0), (H, W) = src_shape, size
    x = (np.arange(W) + 0.5) * (w0 / W) - 0.5
    y = (np.arange(H) + 0.5) * (h0 / H) - 0.5
    dx, dy = x[None, :] - cx, y[:, None] - cy
    t = math.radians(angle)
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def hc_from_mask(mask: np.ndarray, pixel_size_y_mm: float, pixel_size_x_mm: float) -> float:
    """Head circumference (mm) of the ellipse fitted to a head mask.

    mask: [H, W], non-zero = head (at any scale; pass that scale's per-axis pixel size, e.g.
    the manifest's ``pixel_size_y_mm``/``pixel_size_x_mm``). The sub-pixel outline is
    converted to mm before fitting, so anisotropic resizing is undone exactly. It is
    ``awcl.geometry.head_circumference_mm``, the measure the segmentation task
    reports, so reference and predicted HC agree by construction.
    """
    if not (np.asarray(mask) > 0).any():
        raise ValueError("mask is empty")
    hc = head_circumference_mm(mask, pixel_size_y_mm, pixel_size_x_mm)
    if hc is None:
        raise ValueError("mask is too small to fit an ellipse")
    return hc


def _read_table(root: Path) -> pd.DataFrame:
    path = root / CSV_NAME
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the table ({err.__class__.__name__})") from None
    df.columns = [c.strip() for c in df.columns]
    cols = {c.lower(): c for c in df.columns}
    need = {"filename": None, "pixel size(mm)": None, "head circumference (mm)": None}
    for key in need:
        if key not in cols:
            raise DataError(f"{path}: missing column {key!r} (has {list(df.columns)})")
        need[key] = cols[key]
    out = pd.DataFrame(
        {
            "filename": df[need["filename"]].astype(str).str.strip(),
            "pixel_size_mm": pd.to_numeric(df[need["pixel size(mm)"]], errors="coerce"),
            "hc_mm": pd.to_numeric(df[need["head circumference (mm)"]], errors="coerce"),
        }
    )
    if out.empty:
        raise DataError(f"{path}: table has no rows")
    return out


def _image_dir(root: Path) -> Path:
    # The Zenodo zip may unpack to training_set/ or training_set/training_set/.
    for cand in (root / "training_set" / "training_set", root / "training_set", root):
        if cand.is_dir() and any(cand.glob("*HC.png")):
            return cand
    raise DataError(f"{root}: no training_set/NNN_HC.png images found")


def _load_row(row: Any, img_dir: Path, table: Path, filled_edge_offset_px: float,
              ) -> tuple[str, np.ndarray, tuple[tuple[float, float], tuple[float, float], float]]:
    """(subject, image uint8 [h, w], annotated ellipse) of one table row; a DataError names
    the file at fault (the table, the image or its annotation)."""
    ann_path = img_dir / (Path(row.filename).stem + "_Annotation.png")
    subject = subject_id(row.filename)
    if not (np.isfinite(row.pixel_size_mm) and np.isfinite(row.hc_mm)):
        raise DataError(f"{table}: row {row.filename}: pixel size or HC is not a number")
    img = load_grey(img_dir / row.filename)
    ann = load_grey(ann_path)
    if ann.shape != img.shape:
        raise DataError(f"{ann_path}: size {ann.shape} differs from image {img.shape}")
    try:
        ellipse = annotated_ellipse(ann, filled_edge_offset_px)
    except DataError as err:
        raise DataError(f"{ann_path}: {err}") from None
    return subject, img, ellipse


def find_root(src: str | os.PathLike) -> Path:
    return find_release_root(src, lambda d: (d / CSV_NAME).is_file(), f"HC18 ({CSV_NAME})")


def prepare_hc18(src: str | os.PathLike, out: str | os.PathLike, config: HC18Config | None = None) -> Path:
    """Prepare the HC18 training set at ``config.size``; returns ``out``.

    Manifest extras: ``filename, pixel_size_mm`` (original), ``orig_height, orig_width``,
    ``pixel_size_y_mm, pixel_size_x_mm`` (at the prepared size), ``hc_mm``. Rows whose image
    or annotation is missing or unreadable, duplicate rows, or rows whose pixel size / HC is not a
    number are skipped, counted and warned about.
    """
    cfg = config or HC18Config()
    root = find_root(src)
    table = _read_table(root)
    img_dir = _image_dir(root)
    if cfg.limit is not None:
        table = table.head(cfg.limit)
    H, W = cfg.size
    seen: set[str] = set()
    with DatasetWriter(out, size=cfg.size, source="hc18") as w:
        for row in table.itertuples(index=False):
            img_path = img_dir / row.filename
            if row.filename in seen:
                w.skip(img_path, f"{root / CSV_NAME}: duplicate row {row.filename}")
                continue
            seen.add(row.filename)
            try:
                subject, img, ellipse = _load_row(row, img_dir, root / CSV_NAME, cfg.filled_edge_offset_px)
            except DataError as err:
                w.skip(img_path, str(err))
                continue
            h0, w0 = img.shape
            w.add(
                resize(img, (H, W)),
                video_id=Path(row.filename).stem,
                patient_id=f"hc18-{subject}",
                frame_index=0,
                coarse_label="head",
                mask=rasterize_ellipse(ellipse, (h0, w0), (H, W)),
                filename=row.filename,
                pixel_size_mm=float(row.pixel_size_mm),
                orig_height=h0,
                orig_width=w0,
                pixel_size_y_mm=float(row.pixel_size_mm) * h0 / H,
                pixel_size_x_mm=float(row.pixel_size_mm) * w0 / W,
                hc_mm=float(row.hc_mm),
            )
        w.meta["mask_classes"] = {str(k): v for k, v in MASK_CLASSES.items()}
        w.meta["recipe"] = {"name": "hc18", "root": str(root), "size": [H, W]}
        skipped = w.skipped
        n = len(w.rows)
    report("hc18", Path(out), n, skipped)
    return Path(out)


def _cli(args: argparse.Namespace) -> int:
    src = source_from_args(args, RELEASE)
    prepare_hc18(src, args.out, HC18Config(size=args.size, limit=args.limit))
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hc18", help="HC18 fetal head images, filled head masks, pixel size and HC")
    add_common_args(p, "hc18")
    p.set_defaults(func=_cli)
