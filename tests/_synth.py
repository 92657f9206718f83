"""Tiny synthetic prepared datasets for the downstream tests (32x40 frames)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from awcl.data.store import DatasetWriter

H, W = 32, 40


def class_frame(c: int, rng: np.random.Generator) -> np.ndarray:
    """Class 0: bright disc, 1: horizontal stripes, 2: dark frame with a bright square."""
    img = (rng.random((H, W)) * 40).astype(np.uint8)
    if c == 0:
        cv2.circle(img, (int(rng.integers(14, 26)), int(rng.integers(12, 20))), 8, 220, -1)
    elif c == 1:
        img[::4] = 200
    else:
        x, y = int(rng.integers(4, 24)), int(rng.integers(4, 16))
        img[y : y + 10, x : x + 10] = 250
    return img


def make_class_dataset(out: Path, patients_per_class: int = 5, frames: int = 4, seed: int = 0,
                       names=("covid", "pneumonia", "regular")) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, size=(H, W), source="synth") as w:
        for c, name in enumerate(names):
            for p in range(patients_per_class):
                pid = f"{name}-{p}"
                for f in range(frames):
                    w.add(class_frame(c, rng), video_id=pid, patient_id=pid, frame_index=f,
                          coarse_label=name, fine_label=f"{name}_fine")
    return out


def ellipse_mask(rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    a, b = float(rng.uniform(8, 14)), float(rng.uniform(6, 10))
    cx, cy = int(rng.integers(16, 24)), int(rng.integers(13, 19))
    t = math.radians(float(rng.uniform(0, 180)))
    # exact rasterisation (pixel centre inside), so the ellipse is the mask's edge; cv2.ellipse
    # draws it ~0.4 px larger
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
    v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    m = ((u / int(a)) ** 2 + (v / int(b)) ** 2 <= 1).astype(np.uint8)
    return m, int(a), int(b)


def make_seg_dataset(out: Path, n: int = 24, seed: int = 0, bad_value: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, size=(H, W), source="synth-hc") as w:
        for i in range(n):
            m, a, b = ellipse_mask(rng)
            img = (rng.random((H, W)) * 60).astype(np.uint8)
            img[m > 0] += 120
            if bad_value and i == 3:
                m[0, 0] = 7
            px = 0.5
            hc = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b))) * px
            w.add(img, video_id=f"s{i}", patient_id=f"s{i // 2}", mask=m, pixel_size_mm=px,
                  pixel_size_y_mm=px, pixel_size_x_mm=px, hc_mm=hc)
        w.meta["mask_classes"] = {"0": "background", "1": "head"}
    return out
