"""The folds a downstream run splits its data into, computed without running it.

Per-fold pretraining (a study's ``pretrain_per_fold``) pretrains each fold's encoder without
that fold's test groups; the groups come from here, i.e. from the very selection and split
``finetune(cfg)`` makes (``select_classification`` / ``select_segmentation`` ->
``make_folds``: same labels, classes, per-video cap, group column, fold count and seed).
"""

from __future__ import annotations

import numpy as np

from awcl.data.store import PreparedDataset, open_dataset
from awcl.errors import DataError
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.segment import select_segmentation
from awcl.evaluate.selection import select_classification
from awcl.evaluate.splits import Fold

# The FinetuneConfig fields that decide which groups land in which test fold (protocol,
# epochs, head, train_patients and the optimiser do not).
SPLIT_FIELDS = ("task", "label", "classes", "folds", "split", "group", "val_fraction",
                "max_per_video", "seed")  # fmt: skip


def task_folds(cfg: FinetuneConfig, ds: PreparedDataset | None = None) -> tuple[list[Fold], np.ndarray]:
    """``(folds, groups)`` of the downstream run ``cfg``: row indices into its selection and
    the group (``cfg.group``) of each selected row."""
    ds = ds if ds is not None else open_dataset(cfg.data)
    if cfg.group not in ds.manifest.columns:
        raise DataError(f"{ds.root}: manifest has no grouping column {cfg.group!r}")
    if cfg.task == "classify":
        sel = select_classification(cfg, ds)
        return sel.folds, sel.groups
    _, _, _, groups, folds = select_segmentation(cfg, ds)
    return folds, groups


def fold_test_groups(cfg: FinetuneConfig, ds: PreparedDataset | None = None) -> list[list[str]]:
    """Per fold (in fold order), the sorted groups of its test part."""
    folds, groups = task_folds(cfg, ds)
    return [sorted({str(g) for g in groups[f.test]}) for f in folds]
