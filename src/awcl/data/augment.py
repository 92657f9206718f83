"""Per-sample augmentations for grey-scale ultrasound, on uint8 numpy frames with OpenCV.

Each call takes its own ``np.random.Generator`` so a view depends only on the seed the
sampler assigned to it: the same epoch gives the same views whatever the number of
DataLoader workers, which is what makes ``--resume`` exact.

SimCLR's recipe reduced to one channel: random resized crop (straight to the output size,
one ``cv2.resize`` per view), horizontal flip, brightness/contrast (one 256-entry LUT) and an
optional Gaussian blur. Frames of any stored size are cropped/resized to ``size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class ViewAugmentConfig:
    """Augmentation of the two pretraining views of a frame (numpy, per sample); the
    downstream batches have their own :class:`awcl.evaluate.augment.BatchAugmentConfig`."""

    size: tuple[int, int] = (224, 288)  # (H, W) of the output views
    crop_scale: tuple[float, float] = (0.4, 1.0)  # area fraction of the random crop
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # aspect jitter relative to the output's
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.4  # intensity factor in [1-b, 1+b] (SimCLR's colour jitter, grey)
    contrast: float = 0.4  # multiplicative factor in [1-c, 1+c] around the mean
    jitter_p: float = 0.8  # probability of applying brightness/contrast
    blur: float = 0.0  # probability of a Gaussian blur (σ in [0.1, 2.0] px)


class Augment:
    """``aug(frame: uint8 [h, w], rng) -> uint8 [H, W]`` (H, W = cfg.size)."""

    def __init__(self, cfg: ViewAugmentConfig | None = None):
        self.cfg = cfg or ViewAugmentConfig()
        self._ramp = np.arange(256, dtype=np.float32)

    def crop_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(y0, x0, ch, cw) of a random resized crop in a source of [h, w]."""
        oh, ow = self.cfg.size
        target_aspect = ow / oh
        area = h * w
        lo, hi = self.cfg.crop_scale
        rlo, rhi = self.cfg.crop_ratio
        for _ in range(10):
            a = area * rng.uniform(lo, hi)
            aspect = target_aspect * math.exp(rng.uniform(math.log(rlo), math.log(rhi)))
            cw = round(math.sqrt(a * aspect))
            ch = round(math.sqrt(a / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                y0 = int(rng.integers(0, h - ch + 1))
                x0 = int(rng.integers(0, w - cw + 1))
                return y0, x0, ch, cw
        # fallback: the largest centred box of the output aspect
        if w / h > target_aspect:
            ch, cw = h, min(w, round(h * target_aspect))
        else:
            cw, ch = w, min(h, round(w / target_aspect))
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        oh, ow = c.size
        h, w = frame.shape
        y0, x0, ch, cw = self.crop_box(h, w, rng)
        crop = frame[y0 : y0 + ch, x0 : x0 + cw]
        interp = cv2.INTER_AREA if ch > oh and cw > ow else cv2.INTER_LINEAR
        out = cv2.resize(crop, (ow, oh), interpolation=interp)
        if rng.random() < c.flip:
            out = out[:, ::-1]
        if rng.random() < c.jitter_p and (c.brightness > 0 or c.contrast > 0):
            b = rng.uniform(1 - c.brightness, 1 + c.brightness) if c.brightness > 0 else 1.0
            k = rng.uniform(1 - c.contrast, 1 + c.contrast) if c.contrast > 0 else 1.0
            mean = float(out.mean()) * b
            # brightness scales intensities, contrast stretches around the (scaled) mean
            lut = np.clip((self._ramp * b - mean) * k + mean, 0, 255).astype(np.uint8)
            out = cv2.LUT(np.ascontiguousarray(out), lut)
        if c.blur > 0 and rng.random() < c.blur:
            sigma = rng.uniform(0.1, 2.0)
            out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), sigma)
        return np.ascontiguousarray(out)


def resize_full(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Whole frame to (H, W) without augmentation (evaluation / monitor)."""
    oh, ow = size
    if frame.shape == (oh, ow):
        return np.ascontiguousarray(frame)
    interp = cv2.INTER_AREA if frame.shape[0] > oh and frame.shape[1] > ow else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (ow, oh), interpolation=interp)
