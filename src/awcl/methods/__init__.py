"""Pretraining methods, one small module each over ``methods.base.Method``.

``METHODS`` is the registry (method name -> class): the one place a new method is added.
Every CLI choice and config check reads its names from here.
"""

from __future__ import annotations

from typing import Any

from awcl.data.pairs import FrameIndex
from awcl.errors import AwclError
from awcl.methods.awcl import AWCL
from awcl.methods.base import Method
from awcl.methods.clpi import CLPI
from awcl.methods.simclr import SimCLR
from awcl.methods.supervised import Supervised
from awcl.methods.uscl import USCL

# Paper order (baselines first); the report's rows follow it.
METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Supervised, SimCLR, CLPI, USCL, AWCL)
}
# Encoders a study compares without a pretraining run of its own.
INITS = ("random", "imagenet")
# Study names of the encoders compared: a method whose positives/classes depend on the label
# granularity (``Method.granular``) is run as ``<name>-coarse`` and ``<name>-fine``.
STUDY_METHODS: tuple[str, ...] = INITS + tuple(
    n for name, cls in METHODS.items()
    for n in ((f"{name}-coarse", f"{name}-fine") if cls.granular else (name,))
)  # fmt: skip


# Study names of the methods that train on labels (pretrained per fold where a task asks).
LABEL_METHODS: tuple[str, ...] = tuple(m for m in STUDY_METHODS if m not in INITS and METHODS[m.partition("-")[0]].reads_labels)


def build_method(name: str, cfg: Any, index: FrameIndex) -> Method:
    if name not in METHODS:
        raise AwclError(f"unknown method {name!r} (choose from {', '.join(sorted(METHODS))})")
    return METHODS[name](cfg, index)


__all__ = ["INITS", "LABEL_METHODS", "METHODS", "STUDY_METHODS", "Method", "build_method"]
