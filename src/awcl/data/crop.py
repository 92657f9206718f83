"""Finding the ultrasound region in a scan and cropping away the scanner's interface.

Scanner screens carry the image sector plus static text, logos, scales and black borders.
Over a video the sector changes (speckle, motion, breathing) while the interface does not,
so the per-pixel temporal spread separates them; for a still image, where there is no time,
the sector is found as the largest bright region once thin text-like strokes are removed.

>>> box = detect_region(frames)          # frames: uint8 [T, h, w]
>>> crop(frames[0], box)                 # -> uint8 [box.height, box.width]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from awcl.errors import AwclError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Box:
    """Half-open pixel box: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return max(self.height, 0) * max(self.width, 0)

    def clip(self, h: int, w: int) -> Box:
        """This box limited to an [h, w] frame (at least 1 pixel each way)."""
        y0 = min(max(self.y0, 0), h - 1)
        x0 = min(max(self.x0, 0), w - 1)
        return Box(y0, min(max(self.y1, y0 + 1), h), x0, min(max(self.x1, x0 + 1), w))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.y0, self.y1, self.x0, self.x1)

    def __str__(self) -> str:
        return f"{self.y0},{self.y1},{self.x0},{self.x1}"

    @classmethod
    def full(cls, h: int, w: int) -> Box:
        return cls(0, h, 0, w)

    @classmethod
    def parse(cls, text: str) -> Box:
        """``"y0,y1,x0,x1"`` (the ``--crop`` syntax) -> Box."""
        try:
            y0, y1, x0, x1 = (int(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            raise AwclError(f"--crop {text!r}: expected four integers y0,y1,x0,x1") from None
        if y1 <= y0 or x1 <= x0 or min(y0, x0) < 0:
            raise AwclError(f"--crop {text!r}: need 0 <= y0 < y1 and 0 <= x0 < x1")
        return cls(y0, y1, x0, x1)


@dataclass
class CropConfig:
    """Knobs of :func:`detect_region` (defaults work on scanner videos of 100-2000 px)."""

    max_frames: int = 48  # frames sampled for the temporal statistics
    min_active_fraction: float = 0.03  # below this the video is treated as static
    dark_level: int = 12  # grey level under which a pixel counts as background
    min_area_fraction: float = 0.05  # a smaller region is not trusted -> full frame
    work_size: int = 360  # longest side the statistics are computed at
    # A moving part beside the largest one (not within its columns) is kept only if at least
    # this share of its area: sector pieces split by a shadow are; live counters are far smaller.
    min_part_fraction: float = 0.01


def crop(frame: np.ndarray, box: Box | None) -> np.ndarray:
    """frame: [h, w] -> [box.height, box.width] (the box is clipped to the frame)."""
    if box is None:
        return frame
    b = box.clip(*frame.shape[:2])
    return frame[b.y0 : b.y1, b.x0 : b.x1]


def detect_region(frames: np.ndarray, config: CropConfig | None = None) -> Box:
    """Bounding box of the ultrasound region of a video (or a single image).

    frames: uint8 [T, h, w] (or [h, w] for one image). With several frames that differ,
    the region is where the image changes over time (static text, overlays and borders
    have ~zero temporal spread); otherwise a spatial method is used. Falls back to the full
    frame when no convincing region is found.
    """
    cfg = config or CropConfig()
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"frames must be [T, h, w], got shape {np.asarray(frames).shape}")
    t, h, w = arr.shape
    if t > cfg.max_frames:
        arr = arr[np.linspace(0, t - 1, cfg.max_frames).round().astype(int)]
    # The region is a coarse structure: find it on a small copy (fast for 1080p video).
    scale = max(h, w) / cfg.work_size
    if scale > 1.25:
        small = (max(1, round(w / scale)), max(1, round(h / scale)))
        arr = np.stack([cv2.resize(f, small, interpolation=cv2.INTER_AREA) for f in arr])
    else:
        scale = 1.0
    brightest = arr.max(axis=0)
    content = _spatial_mask(brightest, cfg)  # everything non-dark, thin strokes removed
    active = _temporal_mask(arr, cfg) if arr.shape[0] >= 3 else None
    if active is None:
        box = _largest_component_box(content)
    else:
        box = _box_of(_moving_region(content, active, cfg))
    if scale != 1.0 and box is not None:
        box = Box(
            int(np.floor(box.y0 * scale)),
            int(np.ceil(box.y1 * scale)),
            int(np.floor(box.x0 * scale)),
            int(np.ceil(box.x1 * scale)),
        ).clip(h, w)
    if box is None or box.area < cfg.min_area_fraction * h * w:
        log.debug("no convincing ultrasound region found; using the full frame")
        return Box.full(h, w)
    return box


def _kernel(size: int) -> np.ndarray:
    size = max(3, int(size) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _temporal_mask(arr: np.ndarray, cfg: CropConfig) -> np.ndarray | None:
    """Pixels that change over time and are not black; None if the video is ~static.

    arr: uint8 [T, h, w] -> bool [h, w]
    """
    _, h, w = arr.shape
    spread = arr.astype(np.float32).std(axis=0)
    brightest = arr.max(axis=0)
    # Compression noise gives static areas a spread of ~1 grey level; speckle under a moving
    # probe is an order of magnitude above that. Scale with the video's own dynamics.
    hi = float(np.percentile(spread, 99))
    thr = max(2.0, 0.08 * hi)
    active = (spread > thr) & (brightest > cfg.dark_level)
    if active.mean() < cfg.min_active_fraction:
        return None
    m = active.astype(np.uint8)
    d = min(h, w)
    m = cv2.medianBlur(m * 255, 5) > 0  # drop isolated flickering pixels
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, _kernel(d / 15))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(d / 40))
    return m > 0


def _spatial_mask(image: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """Largest bright region of one image, thin text strokes removed. [h, w] -> bool [h, w]."""
    h, w = image.shape
    d = min(h, w)
    smooth = cv2.medianBlur(np.ascontiguousarray(image), 5)
    m = (smooth > cfg.dark_level).astype(np.uint8)
    # An opening wider than a text stroke removes letters, tick marks and thin lines, while the
    # sector (hundreds of pixels across) survives; the closing then fills dark tissue inside it.
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(d / 50))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _kernel(d / 30))
    return m > 0


def _moving_region(content: np.ndarray, active: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """The main moving component, its large companions and the bright parts they touch.

    content, active: bool [h, w] -> bool [h, w]. The largest moving component is the image
    sector. Another moving component is kept when it lies within the sector's columns (its
    dim far field), or when it is large relative to it and shares its rows or columns (a
    sector split by a shadow or a dark band). Small ones beside it are interface elements
    that change every frame (cine/frame counters, clocks, heart-rate readouts) and must not
    widen the box. Bright static components that mostly overlap the kept motion
    (still parts of the sector) are added; static text and logos are not.
    """
    n_act, act_labels, act_stats, _ = cv2.connectedComponentsWithStats(
        active.astype(np.uint8), connectivity=8
    )
    region = np.zeros_like(active)
    if n_act <= 1:
        return region
    areas = act_stats[1:, cv2.CC_STAT_AREA]
    main = 1 + int(np.argmax(areas))
    keep = [
        k
        for k in range(1, n_act)
        if k == main
        or _under_or_over(act_stats[k], act_stats[main])
        or (
            areas[k - 1] >= cfg.min_part_fraction * areas[main - 1]
            and _shares_span(act_stats[k], act_stats[main])
        )
    ]
    region |= np.isin(act_labels, keep)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(content.astype(np.uint8), connectivity=8)
    kept_active = max(int(region.sum()), 1)
    overlap = np.bincount(labels[region], minlength=n)
    for k in range(1, n):
        area = int(stats[k, cv2.CC_STAT_AREA])
        if overlap[k] >= 0.2 * area or overlap[k] >= 0.2 * kept_active:
            region |= labels == k
    return region


def _shares_span(part: np.ndarray, main: np.ndarray) -> bool:
    """Whether a component lies beside or above/below the main one (cv2 stats rows).

    True when its row span or its column span overlaps the main component's by at least half
    its own extent: sector pieces split by a shadow or a dark band do; corner text does not.
    """

    def overlap(a0: int, a1: int, b0: int, b1: int) -> int:
        return min(a1, b1) - max(a0, b0)

    px, py, pw, ph = (int(v) for v in part[:4])
    mx, my, mw, mh = (int(v) for v in main[:4])
    return overlap(py, py + ph, my, my + mh) >= 0.5 * ph or overlap(px, px + pw, mx, mx + mw) >= 0.5 * pw


def _under_or_over(part: np.ndarray, main: np.ndarray) -> bool:
    """Whether a component lies within the main one's columns (cv2 stats rows).

    Such small pieces are the dim far field (or near field) of the sector, whose motion only
    just clears the threshold; interface text sits in side panels and corners instead.
    """
    px, pw = int(part[cv2.CC_STAT_LEFT]), int(part[cv2.CC_STAT_WIDTH])
    mx, mw = int(main[cv2.CC_STAT_LEFT]), int(main[cv2.CC_STAT_WIDTH])
    slack = 0.05 * mw  # the fan's rim, blurred by the clean-up, can reach just past it
    return mx - slack <= px and px + pw <= mx + mw + slack


def _box_of(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return Box(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)


def _largest_component_box(mask: np.ndarray) -> Box | None:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, _ = stats[best]
    return Box(int(y), int(y + bh), int(x), int(x + bw))
