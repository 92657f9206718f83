"""BUSI breast ultrasound (Al-Dhabyani et al. 2020): 780 images, benign/malignant/normal.

Release layout::

    Dataset_BUSI_with_GT/{benign,malignant,normal}/
        benign (1).png
        benign (1)_mask.png      # lesion mask
        benign (1)_mask_1.png    # further lesions of the same image (merged with OR)

coarse label = the class folder; masks {0: background, 1: lesion} (normal images have empty
masks). BUSI publishes no patient ids, so each image is its own ``patient_id``: splits are
per image.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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

ROOT_NAME = "Dataset_BUSI_with_GT"
CLASSES = ("benign", "malignant", "normal")
# The authors' page (Cairo University); no checksum is published and none is pinned.
RELEASE = (ReleaseFile("https://scholar.cu.edu.eg/Dataset_BUSI.zip"),)
MASK_CLASSES = {0: "background", 1: "lesion"}
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class BusiConfig:
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W)
    limit: int | None = None  # first N images only (quick runs)


def find_root(src: str | os.PathLike) -> Path:
    """The ``Dataset_BUSI_with_GT`` folder (or any folder with the three class folders)."""

    def is_root(d: Path) -> bool:
        return sum((d / c).is_dir() for c in CLASSES) >= 2 and not (d / ROOT_NAME).is_dir()

    return find_release_root(src, is_root, f"{ROOT_NAME}/{{benign,malignant,normal}}")


def list_images(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """(class, image, [mask files]) sorted by class and image name."""
    items = []
    for cls in CLASSES:
        d = root / cls
        if not d.is_dir():
            continue
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = defaultdict(list)
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.suffix.lower() not in _IMAGE_EXT:
                continue
            m = _MASK.match(p.stem)
            if m:
                masks[m.group("stem")].append(p)
            else:
                images[p.stem] = p
        for stem in sorted(images, key=_natural):
            items.append((cls, images[stem], masks.pop(stem, [])))
        for files in masks.values():
            log.warning("%s: mask without an image, ignored", files[0])
    return items


def _natural(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def merge_masks(files: list[Path], shape: tuple[int, int]) -> np.ndarray:
    """OR of all lesion masks of one image -> uint8 {0,1} [h, w] at the image's shape."""
    out = np.zeros(shape, np.uint8)
    for f in files:
        m = load_grey(f) > 127
        if m.shape != shape:  # a few releases carry masks off by a pixel or two
            log.warning("%s: mask size %s differs from image %s; resized", f, m.shape, shape)
            m = resize(m.astype(np.uint8), shape, cv2.INTER_NEAREST) > 0
        out |= m.astype(np.uint8)
    return out


def prepare_busi(src: str | os.PathLike, out: str | os.PathLike, config: BusiConfig | None = None) -> Path:
    """Prepare BUSI at ``config.size``; returns ``out``. Manifest extras: ``filename``,
    ``num_masks`` (mask files merged). Unreadable images or masks are skipped and counted."""
    cfg = config or BusiConfig()
    root = find_root(src)
    items = list_images(root)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    with DatasetWriter(out, size=cfg.size, source="busi") as w:
        for cls, img_path, mask_files in items:
            try:
                img = load_grey(img_path)
                mask = merge_masks(mask_files, img.shape) if mask_files else None
            except DataError as err:
                w.skip(img_path, str(err))
                continue
            if mask is None:
                w.note(img_path, "no mask file; kept without a mask")
            vid = f"{cls}/{img_path.stem}"
            w.add(
                resize(img, cfg.size),
                video_id=vid,
                patient_id=vid,  # BUSI has no patient ids
                frame_index=0,
                coarse_label=cls,
                mask=None if mask is None else resize(mask, cfg.size, cv2.INTER_NEAREST),
                filename=f"{cls}/{img_path.name}",
                num_masks=len(mask_files),
            )
        w.meta["mask_classes"] = {str(k): v for k, v in MASK_CLASSES.items()}
        w.meta["recipe"] = {"name": "busi", "root": str(root), "size": list(cfg.size)}
        skipped, n = w.skipped, len(w.rows)
    report("busi", Path(out), n, skipped)
    return Path(out)


def _cli(args: argparse.Namespace) -> int:
    src = source_from_args(args, RELEASE)
    prepare_busi(src, args.out, BusiConfig(size=args.size, limit=args.limit))
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("busi", help="BUSI breast ultrasound: class labels and merged lesion masks")
    add_common_args(p, "busi")
    p.set_defaults(func=_cli)
