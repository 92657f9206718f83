"""The phantom's settings and its label vocabulary: views, hierarchy, mask classes,
echo levels. (The package docstring describes the corpus.)"""

from __future__ import annotations

from dataclasses import dataclass, field

from awcl.errors import AwclError

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
