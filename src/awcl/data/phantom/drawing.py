"""Drawing the anatomy of one frame: the probe geometry, a fixed-point pen, and one drawing
function per fine view (``DRAW``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from awcl.data.phantom.config import BONE, FLUID, SOFT


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
