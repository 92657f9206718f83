"""The report's building blocks (:class:`Section` of paragraphs, :class:`Table`, :class:`Image`)
and how it names and orders things: metric titles (``DISPLAY``), lower-is-better metrics,
the method order of every table and figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from awcl.methods import STUDY_METHODS

LOWER_IS_BETTER = ("error", "loss", "mae", "rmse", "hd95", "msd", "fail")
METHOD_ORDER = STUDY_METHODS  # table rows in the order of awcl.methods.STUDY_METHODS
# Column titles for metric keys whose meaning is not obvious from the key alone.
DISPLAY = {"f1": "macro-F1", "precision": "macro-precision", "recall": "macro-recall",
           "hc_mae_mm": "HC error (mm)", "miou": "mIoU", "gaa": "GAA", "ma": "MA", "auroc": "AUROC",
           "balanced_accuracy": "balanced acc.", "hd95_mm": "HD95 (mm)", "dice": "Dice (pooled)",
           "dice_per_image": "Dice (per image)", "fg_iou": "IoU (foreground)",
           "hc_fail_rate": "HC no fit"}  # fmt: skip


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, col)
    caption: str = ""  # a line above the table


@dataclass
class Image:
    png: bytes
    name: str
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (paragraph) | Table | Image | ("pre", str)
    key: str = ""  # its name in awcl.study.report.sections.REGISTRY (set by build_sections)


def lower_is_better(metric: str) -> bool:
    return any(s in metric.lower() for s in LOWER_IS_BETTER)


def display(metric: str) -> str:
    """A metric's column title: ``DISPLAY``'s, else the key itself."""
    return DISPLAY.get(metric, metric)


def is_none(v: Any) -> bool:
    """A missing label value: None or NaN (as pandas reads an empty cell)."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def methods_in_order(methods: list[str]) -> list[str]:
    """``methods`` in ``METHOD_ORDER``, unknown names after them, sorted."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def order_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def safe_name(s: str) -> str:
    """``s`` usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)
