"""Import-time compatibility fix that must run before anything imports torchvision.

Some torchvision wheels are built against a CUDA torch; on a CPU-only torch their compiled
ops fail to load and ``import torchvision`` raises ``operator torchvision::nms does not
exist`` (its fake-tensor registrations expect the op schemas). Defining the missing schemas
lets the pure-Python parts (models, transforms.v2) import. Compiled ops stay unavailable,
which awcl never needs: decoding goes through Pillow/OpenCV/PyAV.

On a working install the first import succeeds and nothing is patched (defining the
namespace first would clash with torchvision's own C++ registration).
"""

from __future__ import annotations

import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIB: torch.library.Library | None = None


def patch_torchvision() -> None:
    """Import torchvision, defining the op schemas a broken compiled extension left out."""
    global _LIB
    try:
        import torchvision

        return
    except RuntimeError as err:
        if "torchvision::" not in str(err) or _LIB is not None:
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop the half-imported package before the retry
    _LIB = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it unregisters
    for schema in _SCHEMAS:
        _LIB.define(schema)
    import torchvision  # noqa: F401


patch_torchvision()
