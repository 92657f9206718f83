"""Writing the phantom as a prepared dataset: directly from the renderer, or through the
video-ingestion path (sweeps written as videos, then ingested)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from awcl.data.phantom.config import BACKGROUND, HIERARCHY, MASK_CLASSES, PhantomConfig
from awcl.data.phantom.planning import _plan_scan, _Scan, _scan_roster
from awcl.data.phantom.rendering import _Renderer, _screen_geometry
from awcl.data.phantom.video import make_phantom_videos
from awcl.data.store import DatasetWriter, PreparedDataset
from awcl.errors import AwclError

log = logging.getLogger(__name__)

def make_phantom(out: str | Path, cfg: PhantomConfig | None = None) -> Path:
    """Generate the phantom corpus as a prepared dataset at ``out`` (written atomically).

    Frames: uint8 [scans * frames_per_scan, H, W]; masks (``cfg.masks``): uint8 [M, H, W] with
    classes {0: background, 1: head}. Manifest extras: ``true_coarse``, ``true_fine`` (hidden
    truth for analyses only), ``depth_cm``.
    """
    cfg = cfg or PhantomConfig()
    cfg.validate()
    out = Path(out)
    if cfg.prepare == "videos":
        return _make_via_videos(out, cfg)
    t0 = time.perf_counter()
    with DatasetWriter(out, size=cfg.size, source=cfg.source) as writer:
        for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
            scan = _plan_scan(cfg, index, patient, visit, fetus)
            renderer = _Renderer(scan, cfg)
            for i in range(cfg.frames_per_scan):
                frame, mask = renderer.render(i)
                if cfg.masks == "all" and mask is None:
                    mask = np.zeros(cfg.size, np.uint8)
                elif cfg.masks == "none":
                    mask = None
                writer.add(frame, mask=mask, **_frame_row(scan, i))
        writer.meta.update(_meta(cfg))
    log.info("phantom: %d frames written to %s in %.1f s", cfg.scans * cfg.frames_per_scan, out, time.perf_counter() - t0)
    return out


def _frame_row(scan: _Scan, i: int) -> dict:
    """Manifest fields of frame ``i`` of ``scan``: ids, its labels where the plan labels it,
    and the hidden truth (``true_coarse``, ``true_fine``) for analyses."""
    fine = scan.truth[i]
    coarse = HIERARCHY[fine]
    lab = bool(scan.labelled[i])
    return {"video_id": scan.video_id, "patient_id": scan.patient_id, "frame_index": i,
            "coarse_label": coarse if lab else None, "fine_label": fine if lab else None,
            "true_coarse": coarse, "true_fine": fine, "depth_cm": round(scan.depth_cm, 2)}  # fmt: skip


def _meta(cfg: PhantomConfig) -> dict:
    return {
        "hierarchy": dict(HIERARCHY),
        "ignore_labels": [BACKGROUND],
        "mask_classes": {str(k): v for k, v in MASK_CLASSES.items()},
        "hidden_truth_columns": ["true_coarse", "true_fine"],
        "phantom": {
            "seed": cfg.seed, "scans": cfg.scans, "frames_per_scan": cfg.frames_per_scan,
            "labelled_fraction": cfg.labelled_fraction, "masks": cfg.masks,
            "anatomies": list(cfg.anatomies), "prepare": cfg.prepare,
        },
    }  # fmt: skip


def _make_via_videos(out: Path, cfg: PhantomConfig) -> Path:
    """The phantom through the path a user's scans take: raw scanner-screen videos (text,
    panels, a live cine counter around the fan) -> ``prepare_videos`` (every frame, auto-crop,
    resize to ``cfg.size``) -> the phantom's frame labels and hidden truth re-attached by
    (video, frame index). Patients keep their ids (a second scan shares its patient's). Head
    masks follow the frames: placed in the screen, cropped with the video's detected box and
    resized (nearest) like the frame."""
    import shutil
    import tempfile

    from awcl.data.ingest import prepare_videos
    from awcl.data.store import open_dataset

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.videos-", dir=out.parent))
    try:
        masks: dict[str, list[np.ndarray | None]] = {}
        make_phantom_videos(work / "videos", replace(cfg, prepare="direct"), screen=True,
                            masks_out=masks if cfg.masks != "none" else None)  # fmt: skip
        prepared = prepare_videos(
            work / "videos", work / "prepared", every=1, size=cfg.size, crop="auto", source=cfg.source,
            keep_names=True,  # synthetic names; the labels are re-attached by video id
        )
        ds = open_dataset(prepared)
        _write_relabelled(out, cfg, ds, _plans_by_video(cfg, ds.manifest), masks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("phantom (via videos + auto-crop): %d frames written to %s in %.1f s",
             cfg.scans * cfg.frames_per_scan, out, time.perf_counter() - t0)  # fmt: skip
    return out


def _plans_by_video(cfg: PhantomConfig, m: pd.DataFrame) -> dict[str, _Scan]:
    """video id -> its scan plan; every video must have decoded to all its frames."""
    plans = {}
    for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
        plan = _plan_scan(cfg, index, patient, visit, fetus)
        plans[plan.video_id] = plan
    counts = m.groupby("video_id").size()
    short = {v: int(counts.get(v, 0)) for v in plans if counts.get(v, 0) != cfg.frames_per_scan}
    if short:
        v, n = next(iter(short.items()))
        raise AwclError(f"phantom: video {v} decoded to {n} frames, expected {cfg.frames_per_scan}")
    return plans


def _write_relabelled(out: Path, cfg: PhantomConfig, ds: PreparedDataset, plans: dict[str, _Scan],
                      masks: dict[str, list[np.ndarray | None]]) -> None:
    """The ingested frames with the plans' labels, hidden truth and head masks, to ``out``."""
    m = ds.manifest
    frames = ds.frames
    with DatasetWriter(out, size=cfg.size, source=cfg.source) as writer:
        for i, row in enumerate(m.itertuples(index=False)):
            plan, fi = plans[row.video_id], int(row.frame_index)
            mask = masks[row.video_id][fi] if cfg.masks != "none" else None
            if mask is not None:
                mask = _crop_screen_mask(mask, str(row.crop_box), cfg.size)
            elif cfg.masks == "all":
                mask = np.zeros(cfg.size, np.uint8)
            writer.add(np.asarray(frames[i]), mask=mask, **_frame_row(plan, fi), crop_box=row.crop_box)
        writer.meta.update(_meta(cfg))
        writer.meta["prepare"] = ds.meta.get("prepare", {})


def _crop_screen_mask(mask: np.ndarray, crop_box: str, size: tuple[int, int]) -> np.ndarray:
    """mask: uint8 [H, W] of the image -> placed in the screen -> the video's crop box
    ``"y0,y1,x0,x1"`` -> resized (nearest) to ``size``, as the frame was."""
    top, left, hs, ws = _screen_geometry(*size)
    screen = np.zeros((hs, ws), np.uint8)
    screen[top : top + size[0], left : left + size[1]] = mask
    y0, y1, x0, x1 = (int(v) for v in crop_box.split(","))
    return cv2.resize(screen[y0:y1, x0:x1], (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
