"""FETAL_PLANES_DB (Burgos-Artizzu et al. 2020): 12,400 maternal-fetal plane images.

Release layout (Zenodo record 3904280, ``FETAL_PLANES_ZENODO.zip``)::

    FETAL_PLANES_DB_data.csv   # ';'-separated: Image_name;Patient_num;Plane;Brain_plane;
                               #   Operator;US_Machine;Train   <- header AND values end in a space
    Images/<Image_name>.png

Labels: coarse = ``Plane`` (Fetal abdomen, Fetal brain, Fetal femur, Fetal thorax, Maternal
cervix, Other); fine = ``Brain_plane`` for Fetal brain images (Trans-thalamic,
Trans-cerebellum, Trans-ventricular; the brain plane ``Other`` becomes ``Fetal brain: Other``
so that fine -> coarse stays a function), else the Plane itself. ``split`` is the official
one (Train 1 = train, 0 = test); patients are ``fp-<Patient_num>``.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

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

log = logging.getLogger(__name__)

CSV_NAME = "FETAL_PLANES_DB_data.csv"
# Zenodo publishes MD5 only; no SHA-256 is pinned (see docs/recipes.md).
RELEASE = (ReleaseFile("https://zenodo.org/records/3904280/files/FETAL_PLANES_ZENODO.zip"),)
BRAIN = "Fetal brain"
REQUIRED = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Train")


@dataclass
class FetalPlanesConfig:
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W)
    limit: int | None = None  # first N rows only (quick runs)


def fine_label(plane: str, brain_plane: str, planes: set[str]) -> str:
    """Brain sub-plane for brain images, else the plane; sub-plane names that clash with a
    plane name (``Other``) are qualified so each fine label has one coarse parent."""
    if plane != BRAIN or not brain_plane or brain_plane.lower() == "not a brain":
        return plane
    return f"{BRAIN}: {brain_plane}" if brain_plane in planes else brain_plane


def read_table(path: Path) -> pd.DataFrame:
    """The label table with stripped headers and values; DataError if unreadable/incomplete."""
    try:
        df = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding_errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: label table not found") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read the table ({err.__class__.__name__})") from None
    df.columns = [c.strip() for c in df.columns]  # 'Train ' -> 'Train'
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (is it ';'-separated? has {list(df.columns)})")
    for c in df.columns:
        df[c] = df[c].str.strip()  # the Train values carry the trailing space too
    if df.empty:
        raise DataError(f"{path}: table has no rows")
    return df


def find_root(src: str | os.PathLike) -> Path:
    return find_release_root(src, lambda d: (d / CSV_NAME).is_file(), f"FETAL_PLANES_DB ({CSV_NAME})")


def prepare_fetal_planes(
    src: str | os.PathLike, out: str | os.PathLike, config: FetalPlanesConfig | None = None
) -> Path:
    """Prepare FETAL_PLANES_DB at ``config.size``; returns ``out``.

    Manifest extras: ``split`` (train/test), ``operator``, ``us_machine``, ``image_name``.
    Rows naming missing or unreadable images, duplicate rows and rows with an unknown Train
    value are skipped, counted and warned about.
    """
    cfg = config or FetalPlanesConfig()
    root = find_root(src)
    table = read_table(root / CSV_NAME)
    if cfg.limit is not None:
        table = table.head(cfg.limit)
    img_dir = root / "Images" if (root / "Images").is_dir() else root
    planes = set(table["Plane"])
    hierarchy: dict[str, str] = {}
    seen: set[str] = set()
    with DatasetWriter(out, size=cfg.size, source="fetal_planes") as w:
        for row in table.itertuples(index=False):
            name = row.Image_name
            path = img_dir / (name if Path(name).suffix.lower() == ".png" else f"{name}.png")
            if name in seen:
                w.skip(path, "duplicate row in the table")
                continue
            seen.add(name)
            split = {"1": "train", "0": "test"}.get(row.Train)
            try:
                if split is None:
                    raise DataError(f"{root / CSV_NAME}: row {name}: Train is {row.Train!r}, not 0/1")
                if not row.Plane:
                    raise DataError(f"{root / CSV_NAME}: row {name}: empty Plane")
                img = load_grey(path)
            except DataError as err:
                w.skip(path, str(err))
                continue
            fine = fine_label(row.Plane, row.Brain_plane, planes)
            hierarchy[fine] = row.Plane
            w.add(
                resize(img, cfg.size),
                video_id=Path(name).stem,
                patient_id=f"fp-{row.Patient_num}",
                frame_index=0,
                coarse_label=row.Plane,
                fine_label=fine,
                split=split,
                operator=getattr(row, "Operator", ""),
                us_machine=getattr(row, "US_Machine", ""),
                image_name=name,
            )
        w.meta["hierarchy"] = hierarchy
        w.meta["recipe"] = {"name": "fetal_planes", "root": str(root), "size": list(cfg.size)}
        skipped, n = w.skipped, len(w.rows)
    report("fetal-planes", Path(out), n, skipped)
    return Path(out)


def _cli(args: argparse.Namespace) -> int:
    src = source_from_args(args, RELEASE)
    prepare_fetal_planes(src, args.out, FetalPlanesConfig(size=args.size, limit=args.limit))
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetal-planes", help="FETAL_PLANES_DB: plane (coarse), brain sub-plane (fine), official split"
    )
    add_common_args(p, "fetal_planes")
    p.set_defaults(func=_cli)
