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

The package follows the steps: ``config`` (settings, labels) -> ``planning`` (which scans,
which shots) -> ``drawing`` (anatomy of a frame) -> ``rendering`` (B-mode frames, screens) ->
``writing`` (the prepared dataset) / ``video`` (raw .mp4 sweeps); ``cli`` is ``awcl prepare
phantom``.
"""

from awcl.data.phantom.cli import register_prepare
from awcl.data.phantom.config import (
    BACKGROUND,
    HIERARCHY,
    MASK_CLASSES,
    SOURCE,
    VIEWS,
    PhantomConfig,
)
from awcl.data.phantom.planning import _plan_scan, _scan_roster
from awcl.data.phantom.rendering import _screen_geometry, render_sweep
from awcl.data.phantom.video import make_phantom_videos
from awcl.data.phantom.writing import make_phantom

__all__ = [
    "BACKGROUND", "HIERARCHY", "MASK_CLASSES", "SOURCE", "VIEWS", "PhantomConfig", "_plan_scan",
    "_scan_roster", "_screen_geometry", "make_phantom", "make_phantom_videos", "register_prepare",
    "render_sweep",
]  # fmt: skip
