"""Recipes for public ultrasound data sets, each reading the original release layout.

``hc18`` (fetal head, masks, pixel size, HC), ``pocus`` (lung videos and images),
``fetal_planes`` (FETAL_PLANES_DB planes and brain sub-planes), ``busi`` (breast lesions),
and the synthetic ``phantom``. Each module has ``prepare_<name>(src, out, config)`` and
``register_prepare(subparsers)`` for ``awcl prepare <name> SRC --out DIR`` (``--download``
fetches the public release).

``RECIPES`` is the registry (name -> :class:`Recipe`): the one place a recipe is added.
``awcl prepare``, the study config check and the study's data runs read it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awcl.data import phantom
from awcl.data.recipes import busi, fetal_planes, hc18, pocus


@dataclass(frozen=True)
class Recipe:
    """How a study or the CLI prepares one source: ``prepare(src, out, config(**params))``."""

    config: type
    prepare: Callable[[str | os.PathLike | None, str | os.PathLike, Any], Path]
    register_prepare: Callable[[argparse._SubParsersAction], None]
    needs_src: bool = True  # False: generated (no downloaded data folder)


def _phantom(src: str | os.PathLike | None, out: str | os.PathLike, cfg: Any) -> Path:
    return phantom.make_phantom(out, cfg)


RECIPES: dict[str, Recipe] = {
    "phantom": Recipe(phantom.PhantomConfig, _phantom, phantom.register_prepare, needs_src=False),
    "hc18": Recipe(hc18.HC18Config, hc18.prepare_hc18, hc18.register_prepare),
    "pocus": Recipe(pocus.PocusConfig, pocus.prepare_pocus, pocus.register_prepare),
    "fetal_planes": Recipe(fetal_planes.FetalPlanesConfig, fetal_planes.prepare_fetal_planes,
                           fetal_planes.register_prepare),
    "busi": Recipe(busi.BusiConfig, busi.prepare_busi, busi.register_prepare),
}  # fmt: skip

__all__ = ["RECIPES", "Recipe"]
