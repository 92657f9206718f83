"""Rendering a planned sweep into B-mode frames (speckle, attenuation, TGC, shadows, fan,
burned-in text) and into a full scanner screen for the video path."""

from __future__ import annotations

import math

import cv2
import numpy as np

from awcl.data.phantom.config import BACKGROUND, BONE, FLUID, HIERARCHY, SOFT, PhantomConfig
from awcl.data.phantom.drawing import DRAW, _Pen, _Probe
from awcl.data.phantom.planning import _plan_scan, _Scan, _scan_roster, _Shot
from awcl.errors import AwclError


# ---------------------------------------------------------------------------- rendering
class _Renderer:
    """Renders the frames of one scan in order (speckle is correlated frame to frame)."""

    def __init__(self, scan: _Scan, cfg: PhantomConfig):
        self.s, self.cfg = scan, cfg
        h, w = cfg.size
        rng = scan.rng
        pr = scan.probe
        self.speckle = rng.standard_normal((2, pr.n_r, pr.n_a), dtype=np.float32)
        # Lateral resolution worse than axial: wider speckle grains along the angle axis.
        self.psf = (max(0.6, 0.004 * pr.n_a) * 1.0, max(0.5, 0.0028 * pr.n_r))
        # Slow tissue texture bigger than the frame; the probe pans over it.
        big = rng.standard_normal((h // 4 + 24, w // 4 + 24)).astype(np.float32)
        big = cv2.GaussianBlur(big, (0, 0), 2.5)
        self.texture = cv2.resize(big / (big.std() + 1e-6), ((w // 4 + 24) * 4, (h // 4 + 24) * 4), interpolation=cv2.INTER_CUBIC)
        self.pan0 = rng.uniform(25, 70, 2)
        self.pan_v = rng.normal(0, 0.6, 2)
        # Maternal wall / placenta: a bright band under the probe face with a wavy lower edge.
        self.wall = (pr.apex[1] + pr.r0 + h * rng.uniform(0.06, 0.14), rng.uniform(0.01, 0.03) * h, rng.uniform(0, 6.28))
        self.placenta = rng.random() < 0.5
        # Loose fetal parts seen during transitions (limbs, cord loops).
        self.parts = [
            (rng.uniform(0.2, 0.8) * w, rng.uniform(0.35, 0.85) * h, rng.uniform(0.03, 0.08) * h, rng.uniform(0, 3.14), int(rng.integers(0, 2)))
            for _ in range(int(rng.integers(2, 5)))
        ]
        self.wobble = rng.uniform(0.5, 1.5) * h / 224  # hand/fetal motion amplitude (px)
        self.phase = rng.uniform(0, 6.28, 3)
        self.text = scan.ui if cfg.text else None

    def _pose(self, shot: _Shot, i: int) -> np.ndarray:
        span = max(1, shot.stop - shot.start - 1)
        u = min(1.0, max(0.0, (i - shot.start) / span))
        pose = (1 - u) * shot.pose0 + u * shot.pose1
        pose[0] += self.wobble * math.sin(0.6 * i + self.phase[0])
        pose[1] += self.wobble * math.sin(0.45 * i + self.phase[1])
        return pose

    def scene(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Echogenicity map float32 [H, W] of frame i, and the head mask (uint8) or None."""
        h, w = self.cfg.size
        pan = self.pan0 + self.pan_v * i
        ty, tx = (int(np.clip(v, 0, 95)) for v in (pan[1], pan[0]))
        tex = self.texture[ty : ty + h, tx : tx + w]
        e = np.full((h, w), FLUID, np.float32)
        # Maternal tissue above a wavy line.
        y0, amp, ph = self.wall
        xs = np.arange(w, dtype=np.float32)
        edge = y0 + amp * np.sin(xs / w * 6.0 + ph + 0.03 * i)
        rows = np.arange(h, dtype=np.float32)[:, None]
        above = rows < edge[None, :]
        level = 1.1 if self.placenta else 0.9
        e[above] = level
        cv2.polylines(e, [np.stack([xs, edge], 1).astype(np.int32)], False, 1.8, max(1, h // 150))
        # Loose parts drift a little.
        for k, (px, py, r, a, kind) in enumerate(self.parts):
            cx = px + 3 * math.sin(0.2 * i + k)
            cy = py + 2 * math.cos(0.17 * i + k)
            pen = _Pen(e, (cx, cy), r, a + 0.02 * i)
            if kind == 0:  # limb: soft tissue with a bone
                pen.ellipse(0, 0, 1.4, 0.5, SOFT)
                pen.line([(-0.9, 0), (0.9, 0)], BONE, 0.12)
            else:  # cord loop: three vessels
                pen.ellipse(0, 0, 0.6, 0.45, 0.7)
                for dx, dy, rr in ((-0.22, 0.0, 0.18), (0.15, -0.15, 0.12), (0.15, 0.15, 0.12)):
                    pen.circle(dx, dy, rr, FLUID)
        e *= 1.0 + 0.25 * tex  # tissue heterogeneity
        mask = None
        fine = self.s.truth[i]
        j = next((k for k, s in enumerate(self.s.shots) if s.start <= i < s.stop), self.s.nearest[i])
        if j >= 0:
            shot = self.s.shots[j]
            pose = self._pose(shot, i)
            layer = e.copy()
            pen = _Pen(layer, (pose[0], pose[1]), pose[2], pose[3])
            DRAW[shot.fine](pen)
            a = float(self.s.alpha[i])
            if a >= 1.0:
                e = layer
            else:
                e = cv2.addWeighted(layer, a, e, 1 - a, 0.0)
            if fine != BACKGROUND and HIERARCHY[fine] == "brain":
                mask = np.zeros((h, w), np.uint8)
                _Pen(mask, (pose[0], pose[1]), pose[2], pose[3]).ellipse(0, 0, 0.31, 0.245, 1)
                mask[~self.s.probe.sector] = 0
        return e, mask

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame i as uint8 [H, W] (uncropped: fan plus overlay) and its head mask or None."""
        pr = self.s.probe
        rng = self.s.rng
        e, mask = self.scene(i)
        e_pol = cv2.remap(e, *pr.cart_to_polar, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=FLUID)
        # Acoustic shadow: transmission drops after each bright (bone) sample along a beam.
        bone = np.clip(e_pol - 1.6, 0, None)
        shadow = np.maximum(np.exp(-0.12 * (np.cumsum(bone, axis=0) - bone)), 0.12)
        e_pol = cv2.GaussianBlur(e_pol, (0, 0), self.psf[0], sigmaY=self.psf[1])  # imaging PSF
        # Speckle: complex Gaussian, correlated over time (AR(1)) and space (PSF blur) -> Rayleigh.
        fresh = rng.standard_normal(self.speckle.shape, dtype=np.float32)
        self.speckle = 0.75 * self.speckle + 0.6614 * fresh
        re = cv2.GaussianBlur(self.speckle[0], (0, 0), self.psf[0], sigmaY=self.psf[1])
        im = cv2.GaussianBlur(self.speckle[1], (0, 0), self.psf[0], sigmaY=self.psf[1])
        env = np.sqrt(re * re + im * im)
        env *= 1.0 / (float(env.mean()) + 1e-6)
        atten = np.exp(-2.3 * pr.depth_norm)  # ~20 dB round trip over the field of view
        inten = e_pol * env * shadow * atten * self.s.tgc
        inten += 0.02 * np.abs(rng.standard_normal(inten.shape, dtype=np.float32))  # electronic noise
        db = 20.0 * np.log10(inten + 1e-4) + self.s.gain_db
        img_pol = np.clip((db + self.s.dyn_range_db - 19.0) * (255.0 / self.s.dyn_range_db), 0, 255)
        img = cv2.remap(img_pol.astype(np.float32), *pr.polar_to_cart, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        img[~pr.sector] = 0
        out = img.astype(np.uint8)
        if self.text is not None:
            _draw_overlay(out, self.text, i, len(self.s.truth), pr, self.s.depth_cm)
        return out, mask


def _draw_overlay(img: np.ndarray, lines: list[str], i: int, n: int, pr: _Probe, depth_cm: float) -> None:
    """Burned-in scanner UI outside the fan: corner text, frame counter, grey bar, depth ticks."""
    h, w = img.shape
    scale = 0.28 * h / 224
    lh = max(6, round(11 * h / 224))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k, text in enumerate(lines[:2]):
        cv2.putText(img, text, (2, lh * (k + 1)), font, scale, 235, 1, cv2.LINE_AA)
    for k, text in enumerate(lines[2:]):
        (tw, _), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(img, text, (w - tw - 2, lh * (k + 1)), font, scale, 220, 1, cv2.LINE_AA)
    cv2.putText(img, f"F{i + 1:03d}/{n:03d}", (2, h - 3), font, scale, 200, 1, cv2.LINE_AA)
    # Grey bar at the left edge, mid height.
    y0, y1 = int(0.35 * h), int(0.65 * h)
    img[y0:y1, 2 : max(4, w // 60) + 2] = np.linspace(255, 0, y1 - y0, dtype=np.float32)[:, None].astype(np.uint8)
    # Depth ticks every cm along the right edge.
    top = pr.apex[1] + pr.r0
    px_per_cm = (pr.r1 - pr.r0) / depth_cm
    for c in range(int(depth_cm) + 1):
        y = round(top + c * px_per_cm)
        if 0 <= y < h:
            img[y, w - (5 if c % 5 else 8) : w - 1] = 200
    # Orientation marker next to the probe face.
    cv2.circle(img, (round(pr.apex[0] - pr.r0 * math.sin(pr.half_angle) - 4), max(2, round(top))), max(1, h // 90), 255, -1)


def render_sweep(cfg: PhantomConfig, scan: int = 0) -> tuple[np.ndarray, list[str]]:
    """The frames of one scan without writing anything: (uint8 [F, H, W], fine truth per frame)."""
    cfg.validate()
    roster = _scan_roster(cfg)
    if not 0 <= scan < len(roster):
        raise AwclError(f"phantom: scan {scan} out of range (0..{len(roster) - 1})")
    patient, visit, fetus = roster[scan]
    plan = _plan_scan(cfg, scan, patient, visit, fetus)
    r = _Renderer(plan, cfg)
    return np.stack([r.render(i)[0] for i in range(cfg.frames_per_scan)]), list(plan.truth)


def _screen(image: np.ndarray, scan: _Scan, i: int, n: int) -> np.ndarray:
    """Embed a text-free frame in a scanner screen: side panels, top bar, static and live text.

    image: uint8 [H, W] -> uint8 [Hs, Ws] with Hs, Ws even; the image sits at
    ``_screen_geometry(H, W)[:2]`` (top, left).
    """
    h, w = image.shape
    top, left, hs, ws = _screen_geometry(h, w)
    out = np.zeros((hs, ws), np.uint8)
    out[top : top + h, left : left + w] = image
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * h / 360
    lh = max(8, round(16 * h / 360))
    lines = scan.ui
    cv2.putText(out, f"{lines[0]}   {lines[1]}", (left // 4, round(0.6 * top)), font, scale * 1.2, 235, 1, cv2.LINE_AA)
    cv2.line(out, (0, top - 3), (ws - 1, top - 3), 90, 1)
    for k, text in enumerate([*lines[2:], "FR 25Hz", "MI 0.8", "TIs 0.3"]):
        cv2.putText(out, text, (4, top + lh * (k + 1)), font, scale, 220, 1, cv2.LINE_AA)
    # TGC curve and grey bar in the right panel (static within a scan).
    x0 = left + w + max(8, w // 20)
    knots = np.linspace(0, 1, 8)
    tgc_db = 20 * np.log10(np.interp(knots, scan.probe.depth_norm[:, 0], scan.tgc[:, 0]))
    pts = np.stack([x0 + 4 + (tgc_db - tgc_db.min() + 2) * (ws - x0 - 20) / 30, top + 10 + knots * (h - 20)], 1)
    cv2.polylines(out, [pts.astype(np.int32)], False, 180, 1, cv2.LINE_AA)
    bar = slice(top + h // 3, top + 2 * h // 3)
    n_bar = bar.stop - bar.start  # not always h // 3: the two floors can differ by a row
    out[bar, ws - 8 : ws - 3] = np.linspace(255, 0, n_bar, dtype=np.float32)[:, None].astype(np.uint8)
    # Depth ticks next to the fan; the live frame counter in the bottom bar.
    pr = scan.probe
    px_per_cm = (pr.r1 - pr.r0) / scan.depth_cm
    for c in range(int(scan.depth_cm) + 1):
        y = round(top + pr.apex[1] + pr.r0 + c * px_per_cm)
        if top <= y < top + h:
            out[y, left + w + 2 : left + w + (8 if c % 5 == 0 else 5)] = 200
    cv2.putText(out, f"Cine {i + 1:03d}/{n:03d}", (4, hs - 6), font, scale, 200, 1, cv2.LINE_AA)
    return out


def _screen_geometry(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, screen height, screen width) of the scanner screen around an [h, w] image."""
    top, bottom, side = round(0.1 * h), round(0.08 * h), round(0.22 * w)
    hs, ws = h + top + bottom, w + 2 * side
    return top, side, hs + hs % 2, ws + ws % 2
