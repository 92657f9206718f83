"""Reading still images into the one frame representation: grey-scale uint8 [H, W]."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from awcl.errors import DataError


def to_grey_uint8(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Any decoded image (grey, RGB, RGBA, 16-bit, float) -> uint8 [H, W]."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]  # drop alpha: ultrasound has no meaningful transparency
    if a.ndim == 3 and a.shape[2] == 3:
        a = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise DataError(f"{name}: unsupported image shape {np.asarray(arr).shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = a.astype(np.float32)
    if np.issubdtype(np.asarray(arr).dtype, np.integer) and np.asarray(arr).dtype.itemsize > 1:
        hi = float(np.iinfo(np.asarray(arr).dtype).max)
        if a.max() <= 4095 and hi > 4095:
            hi = 4095.0 if a.max() > 255 else 255.0  # 12-bit data stored in 16-bit containers
        a = a / hi * 255.0
    elif a.max() <= 1.0 + 1e-6 and a.min() >= 0.0:
        a = a * 255.0  # float images in [0, 1]
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def load_grey(path: str | os.PathLike) -> np.ndarray:
    """Load a still image (PNG/JPEG/BMP/TIFF; grey, RGB, RGBA, palette, 16-bit) as uint8 [H, W].

    Raises DataError naming the file when it is empty, truncated or not an image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                return to_grey_uint8(np.array(im, dtype=np.uint16), path)
            elif im.mode == "I":
                return to_grey_uint8(np.array(im, dtype=np.int32).clip(0, 65535).astype(np.uint16), path)
            elif im.mode not in ("L", "RGB", "RGBA", "F", "LA"):
                im = im.convert("RGB")
            if im.mode == "LA":
                im = im.convert("L")
            return to_grey_uint8(np.array(im), path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err.__class__.__name__}: {err})") from None


def resize(frame: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize uint8 [h, w] to size (H, W). Masks must pass ``cv2.INTER_NEAREST``."""
    h, w = size
    if frame.shape[:2] == (h, w):
        return np.ascontiguousarray(frame)
    if interpolation == cv2.INTER_AREA and (frame.shape[0] < h or frame.shape[1] < w):
        interpolation = cv2.INTER_LINEAR  # AREA is for shrinking
    return cv2.resize(frame, (w, h), interpolation=interpolation)
