"""A synthetic second-trimester-like ultrasound corpus with the structure AWCL is about.

``make_phantom(out, PhantomConfig())`` writes a prepared dataset (see ``awcl.data.store``) of
many scans (one sweep video each; a few patients have two scans). Each sweep passes through
several anatomies in sequence, with transition frames (amniotic fluid, cord, limbs) between
them; the anatomies are shared across scans and each coarse anatomy has visually distinct fine
views::

    brain   : brain-tv (trans-ventricular), brain-tc (trans-cerebellar)
    heart   : heart-4ch, heart-lvot, heart-rvot, heart-3vt
    spine   : spine-cor (coronal, three rows of ossification centres), spine-sag (two rows)
    abdomen : abdomen-ac (round abdomen, stomach bubble, umbilical vein)
    femur   : femur (bright bar with an acoustic shadow)

Frames are rendered like a convex-probe B-mode image: the scene's echogenicity is resampled
into the probe's polar grid, multiplied by temporally correlated Rayleigh speckle, attenuated
with depth and compensated by a per-scan TGC curve, shadowed behind bone, log-compressed and
scan-converted back into a fan. Outside the fan the frame carries burned-in scanner text, a
grey bar and depth ticks, as an uncropped scan would.

Only a small share of frames carries labels (coarse and fine); the hidden truth of every frame
is kept in the manifest columns ``true_coarse`` / ``true_fine`` for analyses. Training code
must never read them. Masks: class 1 = head (inside the skull) on brain frames, all-zero
elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from awcl.data.ingest import cli_type
from awcl.data.ingest import parse_size as _parse_hw
from awcl.data.store import DatasetWriter
from awcl.errors import AwclError

log = logging.getLogger(__name__)

SOURCE = "phantom"
BACKGROUND = "background"
# Coarse anatomy -> its fine views, in the order a sonographer sweeps through them.
VIEWS: dict[str, tuple[str, ...]] = {
    "brain": ("brain-tv", "brain-tc"),
    "heart": ("heart-4ch", "heart-lvot", "heart-rvot", "heart-3vt"),
    "spine": ("spine-cor", "spine-sag"),
    "abdomen": ("abdomen-ac",),
    "femur": ("femur",),
}
HIERARCHY: dict[str, str] = {f: c for c, fs in VIEWS.items() for f in fs} | {BACKGROUND: BACKGROUND}
MASK_CLASSES = {0: "background", 1: "head"}

# Echogenicity levels of the scene (linear scale, 1 = ordinary soft tissue).
FLUID, SOFT, BONE = 0.05, 0.75, 2.8


@dataclass
class PhantomConfig:
    """What to generate. Everything is a deterministic function of these fields."""

    seed: int = 0
    scans: int = 24  # videos; a few of them are second scans of an earlier patient
    frames_per_scan: int = 60
    size: tuple[int, int] = (224, 288)  # (H, W) of the written frames
    labelled_fraction: float = 0.15  # share of frames that carry coarse + fine labels
    background_label_weight: float = 0.5  # relative chance that a transition frame is labelled
    second_scan_fraction: float = 0.1  # share of scans that are a patient's second scan
    min_anatomies: int = 3  # coarse anatomies visited per sweep (drawn in [min, max])
    max_anatomies: int = 5
    masks: str = "all"  # "all": a mask for every frame; "brain": only brain frames; "none"
    text: bool = True  # burned-in scanner text / UI outside the fan ("direct" only)
    # "direct": frames written as rendered (fan plus, with ``text``, burned-in UI);
    # "videos": the user's path - sweeps written as raw scanner-screen videos (panels, text,
    # a live cine counter), then ``prepare_videos`` with auto-crop; labels re-attached.
    prepare: str = "direct"
    source: str = SOURCE
    anatomies: tuple[str, ...] = field(default_factory=lambda: tuple(VIEWS))

    def validate(self) -> None:
        h, w = self.size
        problems = []
        if h < 32 or w < 32:
            problems.append(f"size {h}x{w} is too small (at least 32x32)")
        if self.scans < 1:
            problems.append("scans must be >= 1")
        if self.frames_per_scan < 4:
            problems.append("frames-per-scan must be >= 4")
        if not 0.0 <= self.labelled_fraction <= 1.0:
            problems.append("labelled-fraction must be in [0, 1]")
        if not 0.0 <= self.second_scan_fraction < 1.0:
            problems.append("second-scan-fraction must be in [0, 1)")
        unknown = [a for a in self.anatomies if a not in VIEWS]
        if unknown or not self.anatomies:
            problems.append(f"anatomies must be a non-empty subset of {list(VIEWS)} (got {unknown})")
        if not 1 <= self.min_anatomies <= self.max_anatomies:
            problems.append("need 1 <= min_anatomies <= max_anatomies")
        if self.masks not in ("all", "brain", "none"):
            problems.append("masks must be 'all', 'brain' or 'none'")
        if self.prepare not in ("direct", "videos"):
            problems.append("prepare must be 'direct' or 'videos'")
        if problems:
            raise AwclError("phantom: " + "; ".join(problems))


# ---------------------------------------------------------------------------- probe geometry
@dataclass
class _Probe:
    """Convex-probe geometry of one scan and the polar <-> Cartesian resampling maps."""

    hw: tuple[int, int]
    apex: tuple[float, float]  # (x, y) pixels, above the image
    r0: float  # radius of the probe face (pixels)
    r1: float  # radius of the far end of the field of view
    half_angle: float  # radians
    tilt: float  # radians, steering of the sector axis
    n_r: int
    n_a: int
    cart_to_polar: tuple[np.ndarray, np.ndarray]  # maps sampling the scene on the polar grid
    polar_to_cart: tuple[np.ndarray, np.ndarray]  # maps sampling the polar grid per pixel
    sector: np.ndarray  # bool [H, W], inside the fan
    depth_norm: np.ndarray  # float32 [n_r, 1], 0 at the face, 1 at the far end

    @classmethod
    def build(cls, hw: tuple[int, int], rng: np.random.Generator) -> _Probe:
        h, w = hw
        r_face = h * rng.uniform(0.22, 0.34)
        top = h * rng.uniform(0.07, 0.1)  # face of the probe, leaves the corners for text
        apex = (w / 2 + rng.uniform(-0.02, 0.02) * w, top - r_face)
        r1 = r_face + h * rng.uniform(0.86, 0.9) - 1
        # The fan must fit the width with room for the depth ticks at the right edge.
        half = min(math.radians(rng.uniform(30, 38)), math.asin(min(1.0, 0.43 * w / r1)))
        tilt = math.radians(rng.uniform(-3, 3))
        n_r, n_a = h, max(32, int(w * 0.6))
        # Polar grid -> Cartesian coordinates (to sample the scene).
        rr = np.linspace(r_face, r1, n_r, dtype=np.float32)[:, None]
        aa = np.linspace(-half, half, n_a, dtype=np.float32)[None, :] + tilt
        px = (apex[0] + rr * np.sin(aa)).astype(np.float32)
        py = (apex[1] + rr * np.cos(aa)).astype(np.float32)
        # Cartesian pixel -> polar grid indices (to scan-convert the image).
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - apex[0], yy - apex[1]
        r = np.hypot(dx, dy)
        a = np.arctan2(dx, dy) - tilt
        ri = (r - r_face) / (r1 - r_face) * (n_r - 1)
        ai = (a + half) / (2 * half) * (n_a - 1)
        sector = (ri >= 0) & (ri <= n_r - 1) & (ai >= 0) & (ai <= n_a - 1)
        depth = np.linspace(0, 1, n_r, dtype=np.float32)[:, None]
        return cls(
            hw, apex, r_face, r1, half, tilt, n_r, n_a,
            (px, py), (ai.astype(np.float32), ri.astype(np.float32)), sector, depth,
        )


# ---------------------------------------------------------------------------- drawing helpers
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions give smooth motion
_ONE = 1 << _SHIFT


class _Pen:
    """Draws in a structure's local frame: p_pixel = centre + unit * R(angle) @ p_local."""

    def __init__(self, img: np.ndarray, centre: tuple[float, float], unit: float, angle: float):
        self.img, self.c, self.u, self.ang = img, centre, unit, angle
        self._cos, self._sin = math.cos(angle), math.sin(angle)

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return (
            self.c[0] + self.u * (self._cos * x - self._sin * y),
            self.c[1] + self.u * (self._sin * x + self._cos * y),
        )

    def _fix(self, x: float, y: float) -> tuple[int, int]:
        px, py = self._xy(x, y)
        return round(px * _ONE), round(py * _ONE)

    def _t(self, t: float) -> int:
        return -1 if t < 0 else max(1, round(t * self.u))

    def ellipse(self, x, y, ax, ay, val, t=-1.0, rot=0.0, a0=0, a1=360) -> None:
        cv2.ellipse(
            self.img, self._fix(x, y), (max(1, round(ax * self.u * _ONE)), max(1, round(ay * self.u * _ONE))),
            math.degrees(self.ang) + rot, a0, a1, float(val), self._t(t), cv2.LINE_8, _SHIFT,
        )

    def circle(self, x, y, r, val, t=-1.0) -> None:
        cv2.circle(self.img, self._fix(x, y), max(1, round(r * self.u * _ONE)), float(val), self._t(t), cv2.LINE_8, _SHIFT)

    def line(self, pts, val, t) -> None:
        p = np.array([self._fix(x, y) for x, y in pts], np.int32)
        cv2.polylines(self.img, [p], False, float(val), self._t(t), cv2.LINE_8, _SHIFT)

    def poly(self, pts, val) -> None:
        p = np.array([self._fix(x, y) for x, y in pts], np.int32)
        cv2.fillPoly(self.img, [p], float(val), cv2.LINE_8, _SHIFT)


# ---------------------------------------------------------------------------- anatomy drawings
# Local units: 1 = the structure's unit length (about the frame height at scale 1).
def _head(p: _Pen) -> None:
    p.ellipse(0, 0, 0.31, 0.245, 0.45)  # parenchyma, fairly hypoechoic
    p.ellipse(0, 0, 0.31, 0.245, BONE, t=0.02)  # skull
    p.line([(-0.29, 0), (0.29, 0)], 1.4, 0.006)  # falx / midline echo


def _brain_tv(p: _Pen) -> None:
    _head(p)
    p.poly([(-0.15, -0.025), (-0.08, -0.025), (-0.08, 0.025), (-0.15, 0.025)], FLUID)  # CSP
    p.ellipse(0.13, 0.075, 0.085, 0.03, FLUID, rot=12)  # posterior horn of the ventricle
    p.ellipse(0.145, 0.078, 0.05, 0.017, 1.7, rot=12)  # choroid plexus
    p.ellipse(0.12, -0.08, 0.07, 0.022, 0.25, rot=-12)  # near-field ventricle, blurred


def _brain_tc(p: _Pen) -> None:
    _head(p)
    p.poly([(-0.17, -0.022), (-0.11, -0.022), (-0.11, 0.022), (-0.17, 0.022)], FLUID)  # CSP
    for s in (-1, 1):
        p.ellipse(-0.02, s * 0.05, 0.06, 0.038, 0.22)  # thalami
        p.circle(0.16, s * 0.062, 0.05, 0.85)  # cerebellar hemispheres
        p.circle(0.16, s * 0.062, 0.05, 1.5, t=0.008)
    p.ellipse(0.16, 0, 0.03, 0.02, 1.8)  # vermis
    p.ellipse(0.245, 0, 0.04, 0.085, FLUID)  # cisterna magna


def _thorax(p: _Pen) -> None:
    p.circle(0, 0, 0.27, 0.8)  # lungs
    for a0 in (200, 235, 305, 340):  # rib segments
        p.ellipse(0, 0, 0.27, 0.27, BONE * 0.8, t=0.014, a0=a0, a1=a0 + 14)
    p.circle(0.05, 0.215, 0.028, BONE)  # vertebral body
    p.circle(0.02, 0.245, 0.013, BONE)
    p.circle(0.085, 0.24, 0.013, BONE)


def _heart_4ch(p: _Pen) -> None:
    _thorax(p)
    p.ellipse(-0.03, -0.04, 0.14, 0.115, 1.15, rot=-25)  # myocardium
    for sx in (-1, 1):
        for sy in (-1, 1):
            p.ellipse(-0.03 + sx * 0.055, -0.04 + sy * 0.045, 0.045, 0.037, FLUID, rot=-25)
    p.line([(-0.1, -0.06), (0.04, -0.015)], 1.9, 0.006)  # AV valve plane
    p.circle(0.08, 0.16, 0.022, FLUID)  # descending aorta
    p.circle(0.08, 0.16, 0.022, 1.3, t=0.005)


def _heart_lvot(p: _Pen) -> None:
    _thorax(p)
    p.ellipse(-0.02, -0.02, 0.13, 0.1, 1.1, rot=20)
    p.ellipse(0.0, 0.0, 0.085, 0.045, FLUID, rot=25)  # left ventricle
    p.ellipse(-0.08, -0.06, 0.04, 0.03, FLUID)  # part of the right ventricle
    path = [(0.03, -0.01), (0.09, -0.08), (0.15, -0.16)]  # aorta leaving to the right
    p.line(path, 1.6, 0.05)
    p.line(path, FLUID, 0.032)


def _heart_rvot(p: _Pen) -> None:
    _thorax(p)
    p.ellipse(0.0, 0.0, 0.13, 0.1, 1.1, rot=-20)
    p.ellipse(-0.01, 0.02, 0.08, 0.05, FLUID, rot=-20)  # right ventricle
    trunk = [(-0.03, -0.01), (-0.08, -0.09), (-0.1, -0.14)]  # pulmonary trunk to the left
    left, right = [(-0.1, -0.14), (-0.18, -0.19)], [(-0.1, -0.14), (-0.05, -0.22)]
    for path in (trunk, left, right):
        p.line(path, 1.6, 0.048)
    for path in (trunk, left, right):
        p.line(path, FLUID, 0.03)  # bifurcation


def _heart_3vt(p: _Pen) -> None:
    _thorax(p)
    p.line([(-0.1, -0.07), (0.03, 0.12)], FLUID, 0.04)  # ductal arch
    p.line([(-0.02, -0.05), (0.03, 0.12)], FLUID, 0.03)  # aortic arch: the "V"
    for x, y, r in ((-0.1, -0.07, 0.04), (-0.02, -0.05, 0.03), (0.055, -0.03, 0.02)):
        p.circle(x, y, r, FLUID)  # pulmonary artery, aorta, SVC
        p.circle(x, y, r, 1.4, t=0.006)
    p.circle(0.045, 0.04, 0.017, 1.8, t=0.008)  # trachea


def _body_band(p: _Pen, curve: list[tuple[float, float]]) -> None:
    p.line(curve, SOFT, 0.16)
    p.line([(x, y - 0.08) for x, y in curve], 1.5, 0.01)  # skin


def _spine_sag(p: _Pen) -> None:
    xs = np.linspace(-0.4, 0.4, 14)
    curve = [(float(x), float(0.06 * math.sin(2.5 * x))) for x in xs]
    _body_band(p, curve)
    for x, y in curve:
        taper = 1.0 - 0.5 * max(0.0, (x - 0.2) / 0.2)  # rows converge towards the sacrum
        p.circle(x, y - 0.04 * taper, 0.014, BONE)  # posterior elements
        p.ellipse(x, y + 0.035 * taper, 0.022, 0.016, BONE * 0.9)  # vertebral bodies
    p.line([(x, y + 0.06) for x, y in curve[:-3]], 1.2, 0.006)  # anterior ligament echo


def _spine_cor(p: _Pen) -> None:
    xs = np.linspace(-0.4, 0.4, 17)
    curve = [(float(x), 0.0) for x in xs]
    _body_band(p, curve)
    for x, _ in curve:
        spread = 0.055 + 0.03 * max(0.0, (x - 0.22) / 0.18)
        p.circle(x, 0, 0.016, BONE)  # vertebral bodies
        p.circle(x, -spread, 0.011, BONE * 0.85)  # laminae
        p.circle(x, spread, 0.011, BONE * 0.85)
    for s in (-1, 1):
        p.ellipse(0.36, s * 0.1, 0.07, 0.03, BONE * 0.8, t=0.01, rot=s * 25, a0=0, a1=180)  # iliac


def _abdomen_ac(p: _Pen) -> None:
    p.circle(0, 0, 0.26, 0.85)
    p.circle(0, 0, 0.26, 1.4, t=0.008)  # skin line
    p.ellipse(-0.08, -0.04, 0.07, 0.045, FLUID, rot=-20)  # stomach bubble
    p.line([(0.03, -0.25), (0.05, -0.14), (0.03, -0.04), (-0.02, 0.0)], FLUID, 0.02)  # umbilical vein
    p.circle(0.0, 0.19, 0.022, BONE)  # spine: body and two laminae
    p.circle(-0.035, 0.225, 0.012, BONE)
    p.circle(0.035, 0.225, 0.012, BONE)
    p.circle(0.03, 0.14, 0.013, FLUID)  # aorta
    for a0 in (150, 20):
        p.ellipse(0, 0, 0.24, 0.24, BONE * 0.7, t=0.012, a0=a0, a1=a0 + 12)  # short ribs


def _femur(p: _Pen) -> None:
    p.ellipse(0, 0.01, 0.34, 0.09, SOFT)  # thigh
    p.line([(-0.22, 0), (0.22, 0.0)], BONE * 1.1, 0.028)
    p.circle(-0.225, 0, 0.02, BONE)  # metaphyses
    p.circle(0.225, 0, 0.02, BONE)


DRAW = {
    "brain-tv": _brain_tv, "brain-tc": _brain_tc,
    "heart-4ch": _heart_4ch, "heart-lvot": _heart_lvot, "heart-rvot": _heart_rvot, "heart-3vt": _heart_3vt,
    "spine-cor": _spine_cor, "spine-sag": _spine_sag,
    "abdomen-ac": _abdomen_ac, "femur": _femur,
}


# ---------------------------------------------------------------------------- sweep plan
@dataclass
class _Shot:
    fine: str
    start: int
    stop: int  # exclusive
    pose0: np.ndarray  # [cx, cy, unit, angle] at the first frame
    pose1: np.ndarray  # at the last frame


@dataclass
class _Scan:
    video_id: str
    patient_id: str
    rng: np.random.Generator
    depth_cm: float
    gain_db: float
    dyn_range_db: float
    tgc: np.ndarray  # float32 [n_r, 1]
    probe: _Probe
    shots: list[_Shot]
    truth: list[str]  # fine truth per frame (BACKGROUND for transitions)
    alpha: np.ndarray  # float32 [F], visibility of the current/adjacent structure
    nearest: list[int]  # index of the shot drawn faintly in transition frames (-1: none)
    labelled: np.ndarray  # bool [F]
    ui: list[str] = field(default_factory=list)  # burned-in text lines (drawn or not)


def _plan_scan(cfg: PhantomConfig, index: int, patient: int, visit: int, fetus: dict) -> _Scan:
    rng = np.random.default_rng([cfg.seed, index, 0x9A11])
    h, w = cfg.size
    n = cfg.frames_per_scan
    probe = _Probe.build(cfg.size, rng)
    depth_cm = float(rng.uniform(10.0, 16.0))
    # Coarse anatomies of this sweep, in sweep order, each with its fine views.
    k = int(rng.integers(min(cfg.min_anatomies, len(cfg.anatomies)), min(cfg.max_anatomies, len(cfg.anatomies)) + 1))
    coarse = list(rng.permutation(list(cfg.anatomies))[:k])
    views: list[list[str]] = []
    for c in coarse:
        fs = VIEWS[c]
        m = int(rng.integers(1, min(3, len(fs)) + 1))
        first = int(rng.integers(0, len(fs) - m + 1))
        seq = list(fs[first : first + m])
        views.append(seq[::-1] if rng.random() < 0.5 else seq)
    # Frame budget: ~20% transitions (at least one frame between anatomies), >= 3 frames a shot.
    while True:
        n_shots = sum(len(v) for v in views)
        gaps = len(views) + 1  # lead-in, between anatomies, lead-out
        n_bg = max(len(views) - 1, round(0.2 * n))
        if n - n_bg >= 3 * n_shots or n_shots == 1:
            break
        if len(views[-1]) > 1:
            views[-1].pop()
        else:
            views.pop()
    n_bg = min(n_bg, n - n_shots)
    gap_len = np.zeros(gaps, int)
    inner = np.arange(1, gaps - 1)
    gap_len[inner] = 1
    rest = n_bg - gap_len.sum()
    if rest > 0:
        gap_len += np.bincount(rng.integers(0, gaps, rest), minlength=gaps)
    shot_frames = n - int(gap_len.sum())
    share = rng.dirichlet(np.full(n_shots, 4.0))
    lens = 3 + np.floor(share * (shot_frames - 3 * n_shots)).astype(int) if shot_frames >= 3 * n_shots else np.full(n_shots, shot_frames // n_shots)
    lens[: shot_frames - int(lens.sum())] += 1
    # Poses: the fetus lies at a per-scan orientation; each shot drifts smoothly.
    base_angle = fetus["angle"] + rng.normal(0, 0.15)
    unit0 = h * fetus["ga"] * (13.0 / depth_cm)
    shots: list[_Shot] = []
    truth = [BACKGROUND] * n
    t = int(gap_len[0])
    si = 0
    for g, seq in enumerate(views):
        for fine in seq:
            length = int(lens[si])
            c0 = np.array([w / 2 + rng.uniform(-0.06, 0.06) * w, h * rng.uniform(0.5, 0.6)])
            c1 = c0 + np.array([rng.uniform(-0.05, 0.05) * w, rng.uniform(-0.04, 0.04) * h])
            a0 = base_angle + rng.normal(0, 0.25)
            a1 = a0 + rng.normal(0, 0.12)
            s0 = unit0 * rng.uniform(0.95, 1.05)
            shots.append(_Shot(fine, t, t + length, np.array([*c0, s0, a0]), np.array([*c1, s0 * rng.uniform(0.96, 1.04), a1])))
            truth[t : t + length] = [fine] * length
            t += length
            si += 1
        t += int(gap_len[g + 1])
    # Transition frames next to a shot show it faintly (fading in/out); others show none.
    alpha = np.ones(n, np.float32)
    nearest = [-1] * n
    for i in range(n):
        if truth[i] != BACKGROUND:
            continue
        best, dist = -1, 10**9
        for j, s in enumerate(shots):
            d = s.start - i if i < s.start else i - (s.stop - 1)
            if d < dist:
                best, dist = j, d
        alpha[i] = 0.35 if dist == 1 else (0.15 if dist == 2 else 0.0)
        nearest[i] = best if alpha[i] > 0 else -1
    # Which frames carry labels: a fixed count per scan, transitions less likely.
    n_lab = round(cfg.labelled_fraction * n)
    weight = np.array([cfg.background_label_weight if f == BACKGROUND else 1.0 for f in truth])
    labelled = np.zeros(n, bool)
    if n_lab > 0 and weight.sum() > 0:
        n_lab = min(n_lab, int((weight > 0).sum()))
        labelled[rng.choice(n, n_lab, replace=False, p=weight / weight.sum())] = True
    # Per-scan TGC: slider knots around a curve that roughly cancels the attenuation.
    knots = np.linspace(0, 1, 8)
    tgc_db = 18 * knots + rng.normal(0, 1.8, 8)
    tgc = (10 ** (np.interp(probe.depth_norm[:, 0], knots, tgc_db) / 20)).astype(np.float32)[:, None]
    vid = f"phantom-{patient:03d}-{visit}"
    gain_db, dyn_range_db = float(rng.normal(0, 2.0)), float(rng.uniform(46, 56))
    # UI text is drawn from the plan's stream whether or not it is shown, so --no-text and the
    # screen videos render exactly the same sweep.
    name = ["AWCL SONO 9", "PHANTOM US-7", "ECHO-SIM E8"][int(rng.integers(0, 3))]
    probe_name = ["C5-1", "C6-2", "C1-5-D"][int(rng.integers(0, 3))]
    ui = [name, f"{probe_name} OB/2T", f"D {depth_cm:.1f}cm", f"G {60 + gain_db:.0f}", f"DR {dyn_range_db:.0f}"]
    return _Scan(
        vid, f"phantom-{patient:03d}", rng, depth_cm, gain_db, dyn_range_db,
        tgc, probe, shots, truth, alpha, nearest, labelled, ui,
    )


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


# ---------------------------------------------------------------------------- public API
def _scan_roster(cfg: PhantomConfig) -> list[tuple[int, int, dict]]:
    """(patient, visit, fetus) per scan; a few scans are second visits of an earlier patient."""
    rng = np.random.default_rng([cfg.seed, 0x5CA7])
    roster: list[tuple[int, int, dict]] = []
    fetuses: list[dict] = []
    n_repeat = min(round(cfg.second_scan_fraction * cfg.scans), cfg.scans - cfg.scans // 2) if cfg.scans > 2 else 0
    repeat_at = set(rng.choice(np.arange(cfg.scans // 2, cfg.scans), n_repeat, replace=False).tolist()) if n_repeat else set()
    for s in range(cfg.scans):
        if s in repeat_at and fetuses:
            p = int(rng.integers(0, len(fetuses)))
            earlier = [v for (pp, v, _) in roster if pp == p]
            if len(earlier) < 2:
                fetus = dict(fetuses[p])
                fetus["ga"] *= 1.08  # a later visit: the fetus has grown
                roster.append((p, len(earlier) + 1, fetus))
                continue
        fetuses.append({"ga": float(rng.uniform(0.85, 1.1)), "angle": float(rng.uniform(-0.6, 0.6))})
        roster.append((len(fetuses) - 1, 1, fetuses[-1]))
    return roster


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
                fine = scan.truth[i]
                coarse = HIERARCHY[fine]
                if cfg.masks == "all" and mask is None:
                    mask = np.zeros(cfg.size, np.uint8)
                elif cfg.masks == "none":
                    mask = None
                lab = bool(scan.labelled[i])
                writer.add(
                    frame,
                    video_id=scan.video_id,
                    patient_id=scan.patient_id,
                    frame_index=i,
                    coarse_label=coarse if lab else None,
                    fine_label=fine if lab else None,
                    mask=mask,
                    true_coarse=coarse,
                    true_fine=fine,
                    depth_cm=round(scan.depth_cm, 2),
                )
        writer.meta.update(_meta(cfg))
    log.info("phantom: %d frames written to %s in %.1f s", cfg.scans * cfg.frames_per_scan, out, time.perf_counter() - t0)
    return out


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
            work / "videos", work / "prepared", every=1, size=cfg.size, crop="auto", source=cfg.source
        )
        ds = open_dataset(prepared)
        plans = {}
        for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
            plan = _plan_scan(cfg, index, patient, visit, fetus)
            plans[plan.video_id] = plan
        m = ds.manifest
        counts = m.groupby("video_id").size()
        short = {v: int(counts.get(v, 0)) for v in plans if counts.get(v, 0) != cfg.frames_per_scan}
        if short:
            v, n = next(iter(short.items()))
            raise AwclError(f"phantom: video {v} decoded to {n} frames, expected {cfg.frames_per_scan}")
        frames = ds.frames
        top, left, hs, ws = _screen_geometry(*cfg.size)
        with DatasetWriter(out, size=cfg.size, source=cfg.source) as writer:
            for i, row in enumerate(m.itertuples(index=False)):
                plan, fi = plans[row.video_id], int(row.frame_index)
                fine = plan.truth[fi]
                coarse = HIERARCHY[fine]
                lab = bool(plan.labelled[fi])
                mask = masks[row.video_id][fi] if cfg.masks != "none" else None
                if mask is not None:  # image -> screen -> the video's crop box -> cfg.size
                    screen = np.zeros((hs, ws), np.uint8)
                    screen[top : top + cfg.size[0], left : left + cfg.size[1]] = mask
                    y0, y1, x0, x1 = (int(v) for v in str(row.crop_box).split(","))
                    mask = cv2.resize(screen[y0:y1, x0:x1], (cfg.size[1], cfg.size[0]), interpolation=cv2.INTER_NEAREST)
                elif cfg.masks == "all":
                    mask = np.zeros(cfg.size, np.uint8)
                writer.add(
                    np.asarray(frames[i]),
                    video_id=plan.video_id,
                    patient_id=plan.patient_id,
                    frame_index=fi,
                    coarse_label=coarse if lab else None,
                    fine_label=fine if lab else None,
                    mask=mask,
                    true_coarse=coarse,
                    true_fine=fine,
                    depth_cm=round(plan.depth_cm, 2),
                    crop_box=row.crop_box,
                )
            writer.meta.update(_meta(cfg))
            writer.meta["prepare"] = ds.meta.get("prepare", {})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("phantom (via videos + auto-crop): %d frames written to %s in %.1f s",
             cfg.scans * cfg.frames_per_scan, out, time.perf_counter() - t0)  # fmt: skip
    return out


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


def make_phantom_videos(
    out_dir: str | Path,
    cfg: PhantomConfig | None = None,
    fps: int = 25,
    codec: str = "mpeg4",
    screen: bool = True,
    masks_out: dict[str, list[np.ndarray | None]] | None = None,
) -> list[Path]:
    """Write each phantom sweep as a raw .mp4 for the video-ingestion path.

    With ``screen`` (default) each frame is the text-free sweep image at ``cfg.size`` embedded in
    a larger scanner screen (panels, text, TGC curve, depth ticks, a live cine counter), so that
    cropping has something real to remove; the image sits at ``_screen_geometry(*cfg.size)``.
    Without it, the frames are exactly those of ``make_phantom`` (fan plus corner text).
    Returns the written paths (``<video_id>.mp4``), sorted. Each file is written under a
    temporary name and renamed, so an interrupted run leaves no truncated video.
    ``masks_out``, when given, receives each video's head masks (``[H, W]`` at ``cfg.size``
    in image coordinates, or None on frames without a head) under its video id.
    """
    import av  # PyAV; imported here so the phantom itself needs only numpy/cv2

    cfg = cfg or PhantomConfig()
    cfg.validate()
    h, w = cfg.size
    if screen:
        _, _, h, w = _screen_geometry(h, w)
    if h % 2 or w % 2:
        raise AwclError(f"phantom: video size must be even, got {h}x{w}")
    render_cfg = replace(cfg, text=False) if screen else cfg
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AwclError(f"{out_dir}: cannot create the output folder ({err.strerror or err})") from None
    paths = []
    for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
        plan = _plan_scan(cfg, index, patient, visit, fetus)
        r = _Renderer(plan, render_cfg)
        path = out_dir / f"{plan.video_id}.mp4"
        tmp = out_dir / f".{plan.video_id}.tmp.mp4"
        try:
            with av.open(str(tmp), "w") as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"qmin": "1", "qmax": "3"} if codec == "mpeg4" else {}  # near-lossless: speckle is costly to code
                for i in range(cfg.frames_per_scan):
                    grey, mask = r.render(i)
                    if masks_out is not None:
                        masks_out.setdefault(plan.video_id, []).append(mask)
                    if screen:
                        grey = _screen(grey, plan, i, cfg.frames_per_scan)
                    frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return sorted(paths)


# ---------------------------------------------------------------------------- CLI
def _handler(args: argparse.Namespace) -> int:
    cfg = PhantomConfig(
        seed=args.seed,
        scans=args.scans,
        frames_per_scan=args.frames_per_scan,
        size=args.size,
        labelled_fraction=args.labelled_fraction,
        second_scan_fraction=args.second_scan_fraction,
        masks=args.masks,
        text=not args.no_text,
        prepare="videos" if args.via_videos else "direct",
    )
    t0 = time.perf_counter()
    if args.videos:
        paths = make_phantom_videos(args.out, cfg)
        print(f"phantom: wrote {len(paths)} raw sweep videos to {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    from awcl.data.store import open_dataset, summarize

    out = make_phantom(args.out, cfg)
    print(f"phantom: built in {time.perf_counter() - t0:.1f} s")
    print(summarize(open_dataset(out)))
    return 0


def register_prepare(subparsers: argparse._SubParsersAction) -> None:
    d = PhantomConfig()
    p = subparsers.add_parser(
        "phantom",
        help="generate the built-in synthetic ultrasound corpus (sweeps, few labels, head masks)",
        description="Generate a deterministic synthetic second-trimester-like ultrasound corpus "
        "as a prepared dataset (or, with --videos, as raw uncropped .mp4 sweeps).",
    )
    p.add_argument("--out", required=True, help="output directory (prepared dataset, or videos with --videos)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--scans", type=int, default=d.scans, help=f"number of scans/videos (default {d.scans})")
    p.add_argument("--frames-per-scan", type=int, default=d.frames_per_scan, help=f"frames per sweep (default {d.frames_per_scan})")
    p.add_argument("--size", type=cli_type(_parse_hw), default=d.size, help="frame size HxW (default 224x288)")
    p.add_argument("--labelled-fraction", type=float, default=d.labelled_fraction, help=f"share of labelled frames (default {d.labelled_fraction})")
    p.add_argument("--second-scan-fraction", type=float, default=d.second_scan_fraction, help=f"share of scans that are a patient's second scan (default {d.second_scan_fraction})")
    p.add_argument("--masks", choices=["all", "brain", "none"], default=d.masks, help="head masks for every frame (all-zero without a head), brain frames only, or none (default all)")
    p.add_argument("--no-text", action="store_true", help="leave out the burned-in scanner text/UI")
    p.add_argument("--via-videos", action="store_true", help="build the dataset through the user's path: raw scanner-screen videos -> prepare videos with auto-crop (no burned-in text left)")
    p.add_argument("--videos", action="store_true", help="write raw uncropped sweeps as .mp4 into --out instead of a prepared dataset")
    p.set_defaults(func=_handler)
