"""Planning the scans: who is scanned when (the roster) and what each sweep passes through,
shot by shot (``_plan_scan``); no pixels here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from awcl.data.phantom.config import BACKGROUND, VIEWS, PhantomConfig
from awcl.data.phantom.drawing import _Probe


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
    """One sweep, planned: its anatomies and shots (frame ranges, drifting poses), the truth
    per frame, transition fading, labelled frames, TGC, gain and the burned-in text.

    Every draw comes from the scan's own stream in a fixed order (the helpers are called in
    that order), so a scan is the same whatever else is rendered.
    """
    rng = np.random.default_rng([cfg.seed, index, 0x9A11])
    n = cfg.frames_per_scan
    probe = _Probe.build(cfg.size, rng)
    depth_cm = float(rng.uniform(10.0, 16.0))
    views = _sweep_views(cfg, rng)
    gap_len, lens = _frame_budget(views, n, rng)
    shots, truth = _place_shots(views, gap_len, lens, n, cfg.size, fetus, depth_cm, rng)
    alpha, nearest = _transition_fading(truth, shots)
    labelled = _labelled_frames(cfg, truth, rng)
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


def _sweep_views(cfg: PhantomConfig, rng: np.random.Generator) -> list[list[str]]:
    """The coarse anatomies of this sweep, in sweep order, each as a run of its fine views."""
    k = int(rng.integers(min(cfg.min_anatomies, len(cfg.anatomies)), min(cfg.max_anatomies, len(cfg.anatomies)) + 1))
    coarse = list(rng.permutation(list(cfg.anatomies))[:k])
    views: list[list[str]] = []
    for c in coarse:
        fs = VIEWS[c]
        m = int(rng.integers(1, min(3, len(fs)) + 1))
        first = int(rng.integers(0, len(fs) - m + 1))
        seq = list(fs[first : first + m])
        views.append(seq[::-1] if rng.random() < 0.5 else seq)
    return views


def _frame_budget(views: list[list[str]], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames per gap ``[len(views) + 1]`` (lead-in, between anatomies, lead-out) and per shot
    ``[shots]``: ~20% transitions (at least one frame between anatomies), >= 3 frames a shot.
    Drops views from the end of ``views`` (in place) until the shots fit."""
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
    return gap_len, lens


def _place_shots(views: list[list[str]], gap_len: np.ndarray, lens: np.ndarray, n: int, size: tuple[int, int],
                 fetus: dict, depth_cm: float, rng: np.random.Generator) -> tuple[list[_Shot], list[str]]:
    """The shots laid out along the sweep with their poses, and the fine truth per frame
    (BACKGROUND in the gaps). The fetus lies at a per-scan orientation; each shot drifts
    smoothly."""
    h, w = size
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
    return shots, truth


def _transition_fading(truth: list[str], shots: list[_Shot]) -> tuple[np.ndarray, list[int]]:
    """alpha: float32 [F] and the nearest shot per frame (-1: none). Transition frames next to
    a shot show it faintly (fading in/out); others show none."""
    n = len(truth)
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
    return alpha, nearest


def _labelled_frames(cfg: PhantomConfig, truth: list[str], rng: np.random.Generator) -> np.ndarray:
    """bool [F]: which frames carry labels, a fixed count per scan, transitions less likely."""
    n = len(truth)
    n_lab = round(cfg.labelled_fraction * n)
    weight = np.array([cfg.background_label_weight if f == BACKGROUND else 1.0 for f in truth])
    labelled = np.zeros(n, bool)
    if n_lab > 0 and weight.sum() > 0:
        n_lab = min(n_lab, int((weight > 0).sum()))
        labelled[rng.choice(n, n_lab, replace=False, p=weight / weight.sum())] = True
    return labelled


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
