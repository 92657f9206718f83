"""Ultrasound-region detection: synthetic scanner screens and real POCUS videos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from awcl.data.crop import Box, crop, detect_region
from awcl.errors import AwclError

H, W = 180, 200
APEX = (20, 100)  # (y, x) of the fan apex
R0, R1 = 20, 130  # fan radii
HALF_ANGLE = np.deg2rad(35)


def _sector_mask() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    dy, dx = yy - APEX[0], xx - APEX[1]
    r = np.hypot(dy, dx)
    ang = np.arctan2(dx, dy)
    return (r >= R0) & (r <= R1) & (np.abs(ang) <= HALF_ANGLE)


def _sector_box() -> Box:
    ys, xs = np.nonzero(_sector_mask())
    return Box(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)


def _screen(t: int, rng: np.random.Generator, moving: bool = True) -> np.ndarray:
    """One scanner screen: speckled fan (changing over time), static text and a logo."""
    img = np.zeros((H, W), np.uint8)
    sector = _sector_mask()
    speckle = rng.rayleigh(40.0, (H, W)) if moving or t == 0 else None
    if speckle is None:
        speckle = np.random.default_rng(0).rayleigh(40.0, (H, W))
    img[sector] = np.clip(speckle[sector] + 20, 0, 255).astype(np.uint8)
    # Static interface: a text line top-left, a bold depth label bottom-right, a small logo.
    cv2.putText(img, "GA 20w3d MI 0.9", (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, 255, 1)
    cv2.putText(img, "12", (150, 175), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 230, 2)
    img[2:12, 185:196] = 200
    return img


def _contains(outer: Box, inner: Box, tol: int = 3) -> bool:
    return (
        outer.y0 <= inner.y0 + tol
        and outer.y1 >= inner.y1 - tol
        and outer.x0 <= inner.x0 + tol
        and outer.x1 >= inner.x1 - tol
    )


def _excludes(box: Box, y0: int, y1: int, x0: int, x1: int) -> bool:
    """True when ``box`` does not overlap the rectangle."""
    return box.y1 <= y0 or box.y0 >= y1 or box.x1 <= x0 or box.x0 >= x1


def test_video_region_contains_sector_and_excludes_text():
    rng = np.random.default_rng(1)
    frames = np.stack([_screen(t, rng) for t in range(12)])
    # A black border around the screen (the recorded window was larger than the scanner's).
    frames = np.pad(frames, ((0, 0), (15, 15), (25, 25)))
    box = detect_region(frames)
    sector = _sector_box()
    shifted = Box(sector.y0 + 15, sector.y1 + 15, sector.x0 + 25, sector.x1 + 25)
    assert _contains(box, shifted), (box, shifted)
    assert box.area < 1.3 * shifted.area  # tight: border is gone
    assert _excludes(box, 15, 15 + 12, 25, 25 + 80)  # text line top-left
    assert _excludes(box, 15 + 162, 15 + 178, 25 + 148, 25 + 175)  # bold "12"
    assert _excludes(box, 15 + 2, 15 + 12, 25 + 185, 25 + 196)  # logo


def test_still_image_spatial_fallback():
    rng = np.random.default_rng(2)
    still = _screen(0, rng)
    box = detect_region(still)  # [h, w]: no time axis
    assert _contains(box, _sector_box()), box
    assert _excludes(box, 0, 12, 0, 80)  # thin text removed
    # A static video (all frames equal) takes the same spatial path.
    assert detect_region(np.stack([still] * 5)) == box


def test_blank_input_falls_back_to_full_frame():
    assert detect_region(np.zeros((4, 30, 40), np.uint8)) == Box.full(30, 40)


def test_box_parse_clip_and_crop():
    b = Box.parse("10, 50,5,45")
    assert b == Box(10, 50, 5, 45) and str(b) == "10,50,5,45"
    frame = np.arange(60 * 40, dtype=np.uint8).reshape(60, 40)
    out = crop(frame, b)
    assert out.shape == (40, 35)  # x1 clipped to the frame width
    assert crop(frame, None) is frame
    for bad in ("1,2,3", "5,1,0,4", "a,b,c,d"):
        with pytest.raises(AwclError):
            Box.parse(bad)


def _edges_close(found: Box, true: Box, h: int, w: int, frac: float = 0.03) -> bool:
    """Each edge of ``found`` within ``frac`` of the frame size of the same edge of ``true``."""
    dy, dx = frac * h, frac * w
    return (
        abs(found.y0 - true.y0) <= dy
        and abs(found.y1 - true.y1) <= dy
        and abs(found.x0 - true.x0) <= dx
        and abs(found.x1 - true.x1) <= dx
    )


def test_scanner_screen_videos_crop_to_the_fan(tmp_path: Path):
    """Phantom sweeps inside a scanner screen: side panels, static text, a live cine counter.

    The counter changes every frame, so it moves like image content; it must not pull the
    panel beside it into the box. 360x480 is the smallest size at which the counter is large
    enough to survive the motion mask's clean-up (the case that used to fail).
    """
    from awcl.data.phantom import PhantomConfig, _screen_geometry, make_phantom_videos, render_sweep
    from awcl.data.video import read_frames

    cfg = PhantomConfig(scans=2, frames_per_scan=12, size=(360, 480))
    paths = make_phantom_videos(tmp_path, cfg, screen=True)
    top, left, hs, ws = _screen_geometry(*cfg.size)
    assert len(paths) == 2
    for scan, path in enumerate(paths):
        # The true fan: where the text-free sweep is ever non-black, placed in the screen.
        plain, _ = render_sweep(replace(cfg, text=False), scan)
        ys, xs = np.nonzero(plain.max(axis=0))
        fan = Box(int(ys.min()) + top, int(ys.max()) + 1 + top, int(xs.min()) + left, int(xs.max()) + 1 + left)
        _, frames = read_frames(path, every=2)
        assert frames.shape[1:] == (hs, ws)
        box = detect_region(frames)
        assert _edges_close(box, fan, hs, ws), (path.name, box, fan)
        assert _excludes(box, hs - 20, hs, 0, left)  # the cine counter, bottom-left
        assert _excludes(box, top, top + 120, 0, left // 2)  # the settings text, left panel


def test_real_pocus_videos(shared_data: Path):
    from awcl.data.video import read_frames

    folder = shared_data / "pocus" / "pocus_videos" / "convex"
    names = [
        "Pneu_northumbria_0409_set1_vid2.avi",
        "Reg_pat4Image_140606.mpeg",
        "Reg_Avi_Video_004.mp4",
    ]
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        pytest.skip("POCUS sample videos not present")
    for path in paths:
        _, frames = read_frames(path, every=8)
        _, h, w = frames.shape
        box = detect_region(frames)
        assert 0 <= box.y0 < box.y1 <= h and 0 <= box.x0 < box.x1 <= w
        assert 0.25 * h * w <= box.area <= h * w, (path.name, box)
        # The crop keeps the bright image content: almost all of the frame's signal.
        mean = frames.astype(np.float32).mean(axis=0)
        inside = mean[box.y0 : box.y1, box.x0 : box.x1].sum()
        assert inside >= 0.9 * mean.sum(), (path.name, box)
