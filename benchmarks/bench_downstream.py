"""Calibration of awcl's downstream protocol against a fair, independent plain reference.

Trains, on the same prepared dataset, two things and prints their validation and test figures
side by side:

(a) awcl's protocol: ``awcl.evaluate.finetune.finetune`` with the task's preset (Task III for
    ``segment``, Task I for ``classify``), random init, exactly as ``awcl finetune`` runs it;
(b) a plain reference written here with no awcl training, model or metric code: torchvision
    ResNet-18 (one grey input channel), ``torch.optim.Adam``, its own loop, its own
    augmentation (torchvision ``transforms.v2``), its own Dice / macro-F1 (numpy; the unit
    test checks them against scikit-learn) and its own bootstrap.

What both sides share (so the comparison is fair):
- the frames: awcl is used only to *read* the prepared dataset and to get the selection and
  the folds (``select_segmentation`` / ``select_classification``), so both sides see the same
  rows, the same ``--max-per-video`` cap, the same frame size, the same grouped folds (same
  patients/videos per fold) and the same validation part carved from each training part;
- the budget: epochs, batch size and the number of optimiser steps (batches of one sample are
  skipped by both);
- the learning-rate schedule: the preset's (linear warmup over 5 % of the steps, at most 500,
  from lr/(w+1); then Task III: a half cosine to zero; Task I: x0.1 at 3/7 and 11/14 of the
  steps), re-implemented here from the preset's numbers;
- the augmentation: the preset's settings (Task III: horizontal flip, +-15 deg rotation,
  scale 0.9-1.1, shifts +-10 %; Task I: horizontal flip, +-10 deg rotation, gamma 0.8-1.25,
  brightness +-0.1), applied per sample with torchvision (``RandomHorizontalFlip``,
  ``RandomAffine`` bilinear for the frame and nearest for the mask, zero fill,
  ``adjust_gamma``, ``GaussianNoise``); torchvision has no additive brightness, so that one
  line is the reference's own (its ``ColorJitter`` brightness is multiplicative);
- the selection rule: after every epoch the model is scored on the fold's validation part
  (never the test part) and the best epoch's weights (first maximum) predict the test part
  once. The reference scores validation with the headline metric
  (``awcl.evaluate.tasks.headline_metric``: per-image Dice for segmentation, macro-F1 for
  classification).

Stated differences (the reference is plain on purpose):
- model: the reference's decoder is shallower than awcl's U-Net (one conv-BN-ReLU per stage,
  awcl has two); its classifier is torchvision's own average pool + linear layer, awcl's Task I
  head is the SonoNet-style adaptation head;
- optimiser: Adam at ``--ref-lr`` (1e-3) without weight decay for every task; awcl uses its
  preset's (Task III: Adam 1e-3 with L2 1e-3 on conv/linear weights; Task I: SGD 0.01,
  momentum 0.9, weight decay 5e-4);
- selection metric: none now. Both sides keep the epoch with the best validation headline:
  per-image Dice for segmentation (awcl's engine selected on pooled mIoU before 2026-12-04;
  ``--ref-select miou`` makes the reference use that older rule) and macro-F1 for
  classification;
- precision: ``--ref-precision auto`` trains the reference at the precision awcl's engine
  chooses on this machine (bf16 autocast + channels_last where the CPU has native bf16), so
  neither side gets a speed advantage; this is the only awcl call the reference's training
  depends on, and it decides no numbers.

Validation and test are reported separately, and nothing is decided on test:
- "validation" = every fold's validation part scored by that fold's selected model, pooled
  over the folds (a frame can sit in several folds' validation parts). awcl's validation
  predictions are recomputed from its kept best-epoch checkpoints; the script checks that
  they reproduce the validation score awcl's engine recorded;
- ``--candidates`` compares presets (e.g. Task III's Adam + cosine against TF-semantics
  RMSprop or a constant lr) on validation only; the winner on validation is awcl's row of the
  final table, and the candidates' test figures are printed for the record, never used;
- the calibration check, awcl's test headline >= the reference's - 0.01, is printed, not tuned
  toward. Intervals are 95 % bootstrap intervals over the groups (``--group``: patients, or
  videos for POCUS), computed here by the same code for both sides.

Sizing (both sides together, 2 CPU cores, goal <= 25 min). ``--estimate`` prints the estimate
for the options given and exits; every run prints it before training and warns when it is over
``--budget-min``. The estimate times 3 training steps (after 1 untimed) of each side's model at
the run's frame size, batch and precision, with its augmentation (images/s, as
``benchmarks/bench_pretrain.py`` reports throughput), and divides the images the run processes
by it: per fold, epochs x (fitting part + validation part at forward cost, taken as 1/3 of a
training step) + the test part at forward cost, plus ~3 s per awcl fold (Lightning trainer,
logs, checkpoint files). Images per side (training-step equivalents):
- HC18 (999 frames, 5 folds by subject, 3 epochs): 9,633 training + 3,354 forward images;
- POCUS (covid/pneumonia/regular: 118 videos, folds by video, every 8th frame): the default
  ``--max-per-video 4`` keeps ~470 frames (4 from every video but a few of 3); 5 folds and
  6 epochs: 9,120 training + 2,680 forward images. (The unfinished earlier run had 6 frames per
  video and 5 epochs: ~685 frames, 11,400 + 3,468.)
Measured (``--estimate``, 1 thread, with other processes on the 2 cores) on this project's
Intel Xeon with AMX, both sides at bf16 autocast + channels_last, 112x144:
- segment, HC18: awcl 36 img/s, reference 37 img/s -> ~5.2 + ~4.8 = ~10 min;
- classify, POCUS-sized (a synthetic stand-in with the real per-class video counts): awcl
  64 img/s, reference 64 img/s -> ~2.9 + ~2.6 = ~5.5 min with the defaults (~7 min at 6 frames
  per video and 5 epochs).
Two threads run ~1.5-1.8x faster, so both calibrations fit in 25 min with a margin of 2.5x (HC18)
and 4x (POCUS) for a slower CPU (the AMD EPYC of docs/results.md ran HC18's reference at about
half this speed). Checked against real wall times of small runs (1 thread): HC18 at 56x72, 2
folds, 1 epoch: estimated awcl 24 s / reference 18 s, measured 19.8 s / 17.3 s; POCUS-sized at
112x144, 3 folds, 2 epochs, 2 frames per video: estimated 24 s / 18 s, measured 14.2 s / 13.6 s
(the estimate errs long). ``--candidates`` multiplies awcl's share by their number. On a CPU
without native bf16, both sides train in fp32 and the estimate says how long; lower
``--max-per-video``, ``--epochs``, ``--size`` or ``--folds`` until it fits.

    # HC18 calibration (prepare once: awcl prepare hc18 ../shared/data/hc18 --out hc18-112 --size 112x144)
    python benchmarks/bench_downstream.py segment --data hc18-112
    # POCUS calibration (prepare once: awcl prepare pocus ../shared/data/pocus --out pocus-112 \\
    #   --size 112x144 --every 8 --no-images)
    python benchmarks/bench_downstream.py classify --data pocus-112 \\
        --classes covid,pneumonia,regular --group video_id
    # Task III's optimiser and schedule, decided on validation (awcl only):
    python benchmarks/bench_downstream.py segment --data hc18-112 --skip-reference \\
        --candidates preset optimizer=rmsprop_tf cosine=false
    python benchmarks/bench_downstream.py classify --data pocus-112 --group video_id --estimate
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import awcl  # noqa: F401  (torchvision op-schema shim before torchvision)
from awcl.data.store import open_dataset
from awcl.evaluate.config import PRESETS, FinetuneConfig, Preset
from awcl.evaluate.heads import HEADS
from awcl.evaluate.segment import load_masks, select_segmentation
from awcl.evaluate.selection import load_frames, select_classification
from awcl.evaluate.tasks import headline_metric

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import steps_per_second  # benchmarks/_timing.py

# Per-task defaults of the sizing options (None: the prepared dataset's own value).
TASK_DEFAULTS: dict[str, dict] = {
    "segment": {"epochs": 3, "folds": 5, "max_per_video": None, "size": None},
    "classify": {"epochs": 6, "folds": 5, "max_per_video": 4, "size": None},
}
AWCL_FOLD_OVERHEAD_S = 3.0  # Lightning trainer, loggers and checkpoint files per fold (estimate)
FORWARD_COST = 1 / 3  # a forward pass costs about a third of a training step


# ================================================================== data (read through awcl)
@dataclass
class Data:
    """The frames both sides train on: awcl's selection and folds, read once."""

    task: str
    x: torch.Tensor  # uint8 [N, H, W]
    y: torch.Tensor  # classify: int64 [N]; segment: uint8 masks [N, H, W]
    groups: np.ndarray  # [N] the --group value of each row
    folds: list  # awcl Fold objects: .index, .train (fitting part), .val, .test (rows of x)
    names: list[str]  # class names (segmentation: mask classes, background first)
    frame_ids: np.ndarray  # [N] the manifest's frame_id of each row (pairs awcl's predictions.csv)

    @property
    def num_classes(self) -> int:
        return len(self.names)


def select_data(cfg: FinetuneConfig, ds) -> Data:
    """Rows, frames, targets and folds exactly as ``finetune(cfg)`` selects them (same
    ``max_per_video``, size, classes, groups, folds and validation parts). Masks are read with
    every class the dataset declares, so a dataset with more than two mask classes loads."""
    if cfg.task == "segment":
        rows, names, _, groups, folds = select_segmentation(cfg, ds)
        size = tuple(cfg.size) if cfg.size else tuple(ds.size)
        x = load_frames(ds, rows, size)
        y = load_masks(ds, rows, size, len(names))
        return Data("segment", x, y, groups, folds, names, _frame_ids(ds, rows))
    sel = select_classification(cfg, ds)
    x = load_frames(ds, sel.rows, cfg.size)
    return Data("classify", x, torch.from_numpy(sel.y), sel.groups, sel.folds, sel.names, _frame_ids(ds, sel.rows))


def _frame_ids(ds, rows) -> np.ndarray:
    return ds.manifest["frame_id"].astype(str).to_numpy()[np.asarray(rows)]


# ======================================================================= reference metrics
def per_image_dice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``[n, H, W]`` class masks -> ``[n]`` foreground Dice (any class > 0 is foreground;
    1 where both masks are empty, the HC18 convention)."""
    p = pred.reshape(len(pred), -1) > 0
    t = true.reshape(len(true), -1) > 0
    inter, den = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0)


def confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``[k, k]`` counts, rows true, columns predicted (works on labels or flattened masks)."""
    t = np.asarray(true, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 over all K classes of ``cm: [..., K, K]`` (rows true); a class's F1 is
    2TP / (2TP + FP + FN), 0 where it has neither true nor predicted samples (scikit-learn's
    ``f1_score(average="macro", labels=range(K), zero_division=0)``)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    den = cm.sum(-1) + cm.sum(-2)  # 2TP + FP + FN
    f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
    return f1.mean(-1)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in truth or prediction of ``cm: [K, K]``."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    ok = union > 0
    return float((tp[ok] / union[ok]).mean()) if ok.any() else float("nan")


def dice_from_confusion_columns(df: pd.DataFrame) -> np.ndarray:
    """Per-frame foreground Dice from awcl's ``cm_<t>_<p>`` pixel counts (predictions.csv),
    computed as :func:`per_image_dice` defines it."""
    cols = [c for c in df.columns if c.startswith("cm_")]
    c = math.isqrt(len(cols))
    cm = np.stack([df[f"cm_{t}_{p}"].to_numpy(np.float64) for t in range(c) for p in range(c)], 1)
    cm = cm.reshape(len(df), c, c)
    inter = cm[:, 1:, 1:].sum((1, 2))
    den = cm[:, :, 1:].sum((1, 2)) + cm[:, 1:, :].sum((1, 2))
    return np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0)


# ========================================================= per-frame tables, headline, CI
def headline_of(task: str, table: pd.DataFrame, k: int) -> float:
    """The headline of a per-frame table (all rows pooled): mean per-image Dice, or macro-F1
    of the pooled confusion."""
    if len(table) == 0:
        return float("nan")
    if task == "segment":
        return float(table["dice"].mean())
    return float(macro_f1(confusion(table["true"], table["pred"], k)))


def bootstrap_interval(task: str, table: pd.DataFrame, k: int, n: int, seed: int
                       ) -> tuple[float, float] | None:
    """95 % interval of the headline when the groups (``table["group"]``) are resampled with
    replacement ``n`` times; rows of one group (every fold it appears in) stay together."""
    if n <= 0 or len(table) == 0:
        return None
    codes, uniq = pd.factorize(table["group"].astype(str), sort=True)
    g = len(uniq)
    w = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n).astype(np.float64)
    if task == "segment":
        s = np.bincount(codes, weights=table["dice"].to_numpy(np.float64), minlength=g)
        c = np.bincount(codes, minlength=g).astype(np.float64)
        vals = (w @ s) / np.maximum(w @ c, 1e-12)
    else:
        per = np.zeros((g, k, k))
        np.add.at(per, (codes, table["true"].to_numpy(np.int64), table["pred"].to_numpy(np.int64)), 1.0)
        vals = macro_f1(np.einsum("bg,gkl->bkl", w, per))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference_interval(task: str, a: pd.DataFrame, b: pd.DataFrame, k: int, n: int, seed: int
                               ) -> tuple[float, float] | None:
    """95 % interval of headline(a) − headline(b) over the same frames (rows matched on
    ``fold, row``), the groups resampled together for both sides: a paired group bootstrap."""
    if n <= 0 or len(a) == 0:
        return None
    m = a.merge(b, on=["fold", "row", "group"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(m) != len(a) or len(m) != len(b):
        raise SystemExit("paired interval: the two sides' test frames differ")
    codes, uniq = pd.factorize(m["group"].astype(str), sort=True)
    g = len(uniq)
    w = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n).astype(np.float64)
    if task == "segment":
        c = np.bincount(codes, minlength=g).astype(np.float64)
        sa = np.bincount(codes, weights=m["dice_a"].to_numpy(np.float64), minlength=g)
        sb = np.bincount(codes, weights=m["dice_b"].to_numpy(np.float64), minlength=g)
        vals = ((w @ sa) - (w @ sb)) / np.maximum(w @ c, 1e-12)
    else:
        def per(side: str) -> np.ndarray:
            cm = np.zeros((g, k, k))
            np.add.at(cm, (codes, m[f"true_{side}"].to_numpy(np.int64), m[f"pred_{side}"].to_numpy(np.int64)), 1.0)
            return np.einsum("bg,gkl->bkl", w, cm)
        vals = macro_f1(per("a")) - macro_f1(per("b"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def save_tables(where: str | None, name: str, side: Side) -> None:
    """Write a side's per-frame validation and test tables as ``NAME-val.csv`` / ``NAME-test.csv``
    (through a temporary file, then renamed), so a later run can pair against them."""
    if not where:
        return
    d = Path(where)
    d.mkdir(parents=True, exist_ok=True)
    for part, table in (("val", side.val), ("test", side.test)):
        tmp = d / f".{name}-{part}.csv.tmp"
        table.to_csv(tmp, index=False)
        tmp.replace(d / f"{name}-{part}.csv")
    (d / f".{name}-info.json.tmp").write_text(json.dumps({"best_epochs": side.best_epochs, "wall_s": side.wall_s}))
    (d / f".{name}-info.json.tmp").replace(d / f"{name}-info.json")


def load_reference_tables(where: str, data: Data) -> Side:
    """The reference side of an earlier run of this benchmark (``--tables``), checked to hold
    exactly this run's validation and test frames, fold by fold."""
    d = Path(where)
    try:
        val = pd.read_csv(d / "reference-val.csv", dtype={"group": str})
        test = pd.read_csv(d / "reference-test.csv", dtype={"group": str})
        info = json.loads((d / "reference-info.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--reference-tables {where}: cannot read the reference tables ({e})") from None
    for f in data.folds:
        for part, table, rows in (("val", val, f.val), ("test", test, f.test)):
            have = np.sort(table.loc[table["fold"] == f.index, "row"].to_numpy())
            if not np.array_equal(have, np.sort(np.asarray(rows))):
                raise SystemExit(f"--reference-tables {where}: fold {f.index}'s {part} frames differ from "
                                 "this run's (other data, folds, frames per video or seed)")
    return Side("reference", val, test, list(info["best_epochs"]), float(info["wall_s"]),
                {"reused_from": str(d.resolve())})


def fold_headlines(task: str, table: pd.DataFrame, k: int) -> list[float]:
    return [headline_of(task, t, k) for _, t in table.groupby("fold", sort=True)]


def frame_table(task: str, fold: int, rows: np.ndarray, groups: np.ndarray, true: np.ndarray,
                pred: np.ndarray) -> pd.DataFrame:
    """One fold's part as a per-frame table: ``fold, row, group`` and ``dice`` (segment,
    from masks) or ``true, pred`` (classify, class indices)."""
    t = pd.DataFrame({"fold": fold, "row": rows, "group": groups[rows].astype(str)})
    if task == "segment":
        t["dice"] = per_image_dice(pred, true)
    else:
        t["true"], t["pred"] = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    return t


# ===================================================================== the plain reference
class PlainUNet(nn.Module):
    """torchvision ResNet-18 trunk + a four-stage upsampling decoder with skips (one
    conv-BN-ReLU per stage: shallower than awcl's two), final bilinear upsampling."""

    def __init__(self, classes: int):
        super().__init__()
        import torchvision  # after awcl's op-schema shim (see DESIGN.md)

        r = torchvision.models.resnet18(weights=None)
        r.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu)
        self.pool, self.l1, self.l2, self.l3, self.l4 = r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4

        def block(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.d4, self.d3 = block(512 + 256, 256), block(256 + 128, 128)
        self.d2, self.d1 = block(128 + 64, 64), block(64 + 64, 32)
        self.head = nn.Conv2d(32, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        f1 = self.l1(self.pool(s))
        f2 = self.l2(f1)
        f3 = self.l3(f2)
        f4 = self.l4(f3)
        d = f4
        for dec, skip in ((self.d4, f3), (self.d3, f2), (self.d2, f1), (self.d1, s)):
            d = F.interpolate(d, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            d = dec(torch.cat([d, skip], 1))
        return F.interpolate(self.head(d), size=x.shape[-2:], mode="bilinear", align_corners=False)


def plain_classifier(classes: int) -> nn.Module:
    """torchvision ResNet-18, grey ``conv1``, its own average pool + linear layer."""
    import torchvision  # after awcl's op-schema shim

    r = torchvision.models.resnet18(weights=None, num_classes=classes)
    r.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return r


def reference_model(task: str, classes: int) -> nn.Module:
    return PlainUNet(classes) if task == "segment" else plain_classifier(classes)


@dataclass
class RefSettings:
    """The reference's training settings: the budget, schedule and augmentation numbers come
    from awcl's preset (see :func:`reference_settings`), the optimiser is plain Adam."""

    epochs: int
    batch: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # share of the steps with a linear ramp
    warmup_max: int = 500
    cosine: bool = False
    milestones: tuple[float, ...] = ()  # fractions of the steps where lr *= lr_gamma
    lr_gamma: float = 0.1
    hflip: bool = False
    vflip: bool = False
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0  # fraction of the frame size
    shear: float = 0.0  # shear coefficient (tan of the angle)
    gamma: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0  # additive, +-
    noise_std: float = 0.0
    bf16: bool = False
    channels_last: bool = False
    select: str = "headline"  # "headline" | "miou" (segmentation: pooled val mIoU, the old rule)


def reference_settings(p: Preset, ref_lr: float, weight_decay: float, bf16: bool,
                       channels_last: bool, select: str) -> RefSettings:
    """The preset's numbers (budget, schedule, augmentation), with Adam at ``ref_lr``."""
    a = p.augment
    return RefSettings(
        epochs=p.epochs, batch=p.batch_size, lr=ref_lr, weight_decay=weight_decay,
        warmup=p.warmup, warmup_max=500, cosine=p.cosine, milestones=tuple(p.milestones),
        lr_gamma=p.lr_gamma, hflip=a.hflip, vflip=a.vflip, rotate_deg=a.rotate_deg,
        scale=tuple(a.scale), shift=a.shift, shear=a.shear, gamma=tuple(a.gamma),
        brightness=a.brightness, noise_std=a.noise_std, bf16=bf16, channels_last=channels_last,
        select=select,
    )  # fmt: skip


def lr_lambda(s: RefSettings, total_steps: int) -> Callable[[int], float]:
    """``step -> factor`` of the peak lr: a linear ramp from 1/(w+1) over w = ceil(warmup x
    total) steps (at most ``warmup_max``), then a half cosine to zero at ``total_steps`` (or
    constant), times ``lr_gamma`` at each milestone (at least one step after the ramp)."""
    total = max(1, int(total_steps))
    w = 0 if s.warmup <= 0 else min(s.warmup_max, max(1, math.ceil(s.warmup * total)))
    marks = sorted(max(w + 1, round(f * total)) for f in s.milestones if 0 < f < 1)

    def factor(step: int) -> float:
        if w and step < w:
            base = (step + 1) / (w + 1)
        elif s.cosine:
            base = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))
        else:
            base = 1.0
        return base * s.lr_gamma ** sum(step >= m for m in marks)

    return factor


class ReferenceAugment:
    """Per-sample augmentation with torchvision ``transforms.v2``: frame ``[1, H, W]`` in
    [0, 1] and mask ``[H, W]`` transformed jointly (bilinear / nearest, zero fill), then gamma,
    additive brightness and Gaussian noise on the frame, clamped to [0, 1]. Random draws come
    from torch's global generator (seeded per fold)."""

    def __init__(self, s: RefSettings):
        from torchvision.transforms import v2

        self.v2, self.s = v2, s
        geo: list = []
        if s.hflip:
            geo.append(v2.RandomHorizontalFlip(0.5))
        if s.vflip:
            geo.append(v2.RandomVerticalFlip(0.5))
        if s.rotate_deg or s.shift or s.shear or tuple(s.scale) != (1.0, 1.0):
            shear = math.degrees(math.atan(s.shear))
            geo.append(v2.RandomAffine(
                degrees=s.rotate_deg, translate=(s.shift, s.shift) if s.shift else None,
                scale=tuple(s.scale) if tuple(s.scale) != (1.0, 1.0) else None,
                shear=(-shear, shear) if s.shear else None,
                interpolation=v2.InterpolationMode.BILINEAR, fill=0))  # fmt: skip
        self.geometric = v2.Compose(geo) if geo else None
        self.noise = v2.GaussianNoise(mean=0.0, sigma=s.noise_std, clip=False) if s.noise_std else None

    @property
    def active(self) -> bool:
        s = self.s
        return bool(self.geometric or self.noise or s.brightness or tuple(s.gamma) != (1.0, 1.0))

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: [B, 1, H, W]`` float in [0, 1], ``mask: [B, H, W]`` or None."""
        from torchvision import tv_tensors

        v2, s = self.v2, self.s
        xs, ms = [], []
        for i in range(len(x)):
            xi: torch.Tensor = tv_tensors.Image(x[i])
            mi = tv_tensors.Mask(mask[i]) if mask is not None else None
            if self.geometric is not None:
                if mi is not None:
                    xi, mi = self.geometric(xi, mi)
                else:
                    xi = self.geometric(xi)
            if tuple(s.gamma) != (1.0, 1.0):
                g = float(torch.empty(()).uniform_(*s.gamma))
                xi = v2.functional.adjust_gamma(xi, g)
            xi = xi.as_subclass(torch.Tensor)
            if s.brightness:  # additive: torchvision's brightness jitter is multiplicative
                xi = xi + float(torch.empty(()).uniform_(-s.brightness, s.brightness))
            if self.noise is not None:
                xi = self.noise(tv_tensors.Image(xi)).as_subclass(torch.Tensor)
            xs.append(xi.clamp(0, 1))
            if mi is not None:
                ms.append(mi.as_subclass(torch.Tensor))
        return torch.stack(xs), (torch.stack(ms) if mask is not None else None)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W]`` -> float ``[B, 1, H, W]`` in [0, 1]."""
    return x.unsqueeze(1).float() / 255.0


def normalise(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = (x - 0.5) / 0.25
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def reference_predict(model: nn.Module, x: torch.Tensor, rows: np.ndarray, s: RefSettings) -> np.ndarray:
    """Argmax predictions for ``x[rows]``: labels ``[n]`` int64, or masks ``[n, H, W]`` uint8."""
    model.eval()
    out = []
    for s0 in range(0, len(rows), 64):
        xb = normalise(to_float(x[rows[s0 : s0 + 64]]), s.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
            out.append(model(xb).float().argmax(1))
    pred = torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
    return pred.to(torch.uint8).numpy() if pred.dim() == 3 else pred.numpy()  # masks: uint8


@dataclass
class RefFold:
    val_pred: np.ndarray
    test_pred: np.ndarray
    best_epoch: int
    val_curve: list[float]


def selection_score(task: str, select: str, true: np.ndarray, pred: np.ndarray, k: int) -> float:
    """The reference's validation score of one epoch (the headline, or awcl's engine metric)."""
    if task == "segment":
        if select == "miou":
            return mean_iou(confusion(true, pred, k))
        return float(per_image_dice(pred, true).mean())
    return float(macro_f1(confusion(true, pred, k)))


def reference_fold(data: Data, fold, s: RefSettings, seed: int,
                   log_fn: Callable[[str], None] | None = None) -> RefFold:
    """Train the reference on ``fold.train``, score ``fold.val`` after every epoch, keep the
    best epoch's weights (first maximum) and predict ``fold.test`` once with them."""
    torch.manual_seed(seed)
    seg = data.task == "segment"
    model = reference_model(data.task, data.num_classes)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    per_epoch = -(-len(fold.train) // s.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s, per_epoch * s.epochs))
    aug = ReferenceAugment(s)
    gen = torch.Generator().manual_seed(seed)
    train = torch.as_tensor(np.asarray(fold.train), dtype=torch.long)
    best, best_state, best_epoch, best_val, curve = -math.inf, None, 0, None, []
    val_true = data.y[fold.val].numpy()
    for epoch in range(s.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for b in range(0, len(order), s.batch):
            idx = order[b : b + s.batch]
            if len(idx) < 2:  # BatchNorm cannot train on one sample (awcl skips it too)
                continue
            xb, yb = to_float(data.x[idx]), data.y[idx].long()
            if aug.active:
                xb, m = aug(xb, yb if seg else None)
                yb = m.long() if m is not None else yb
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
                out = model(normalise(xb, s.channels_last))
            loss = F.cross_entropy(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val_pred = reference_predict(model, data.x, np.asarray(fold.val), s)
        score = selection_score(data.task, s.select, val_true, val_pred, data.num_classes)
        curve.append(score)
        if log_fn:
            log_fn(f"  reference fold {fold.index} epoch {epoch + 1}: val {score:.4f}")
        if score > best:
            best, best_epoch, best_val = score, epoch + 1, val_pred
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    test_pred = reference_predict(model, data.x, np.asarray(fold.test), s)
    if best_val is None:
        best_val = np.zeros((0,), np.int64)
    return RefFold(best_val, test_pred, best_epoch, curve)


# ================================================================================= sides
@dataclass
class Side:
    """One trained protocol: per-frame validation and test tables, and its record."""

    name: str
    val: pd.DataFrame
    test: pd.DataFrame
    best_epochs: list[int]
    wall_s: float
    info: dict = field(default_factory=dict)


def run_reference(data: Data, s: RefSettings, seed: int, verbose: bool = False) -> Side:
    t0 = time.time()
    vals, tests, epochs = [], [], []
    for f in data.folds:
        r = reference_fold(data, f, s, seed + f.index, print if verbose else None)
        vals.append(frame_table(data.task, f.index, np.asarray(f.val), data.groups,
                                data.y[f.val].numpy(), r.val_pred))
        tests.append(frame_table(data.task, f.index, np.asarray(f.test), data.groups,
                                 data.y[f.test].numpy(), r.test_pred))
        epochs.append(r.best_epoch)
        print(f"  reference fold {f.index}: best epoch {r.best_epoch}, val curve "
              f"{np.round(r.val_curve, 4).tolist()}", flush=True)
    return Side("reference", pd.concat(vals, ignore_index=True), pd.concat(tests, ignore_index=True),
                epochs, round(time.time() - t0, 1))


@contextlib.contextmanager
def preset_overrides(name: str, overrides: dict) -> Iterator[None]:
    """Temporarily replace fields of awcl's preset ``name`` (a candidate's schedule/optimiser
    settings that ``FinetuneConfig`` has no flag for, e.g. ``cosine``)."""
    old = PRESETS[name]
    PRESETS[name] = dataclasses.replace(old, **overrides)
    try:
        yield
    finally:
        PRESETS[name] = old


CFG_KEYS = {"optimizer": str, "lr": float, "batch_size": int, "dice_loss": None, "head": str}
PRESET_KEYS = {"cosine": None, "warmup": float, "momentum": float, "weight_decay": float}


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def parse_candidate(spec: str) -> tuple[dict, dict]:
    """``"preset"`` or ``"key=value,key=value"`` -> (FinetuneConfig overrides, preset overrides)."""
    cfg_o: dict = {}
    pre_o: dict = {}
    if spec.strip() in ("", "preset"):
        return cfg_o, pre_o
    for item in spec.split(","):
        k, sep, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or (k not in CFG_KEYS and k not in PRESET_KEYS):
            raise SystemExit(f"--candidates: {item!r} is not key=value with key one of "
                             f"{', '.join([*CFG_KEYS, *PRESET_KEYS])}")
        conv = CFG_KEYS.get(k) or PRESET_KEYS.get(k) or _bool
        (cfg_o if k in CFG_KEYS else pre_o)[k] = conv(v)
    if cfg_o.get("head") is not None and cfg_o["head"] not in HEADS:  # before any candidate trains
        raise SystemExit(f"--candidates: head={cfg_o['head']!r} is not one of {', '.join(HEADS)}")
    return cfg_o, pre_o


def preset_name(cfg: FinetuneConfig) -> str:
    return cfg.preset or ("task3" if cfg.task == "segment" else "task1")


def awcl_val_predictions(cfg: FinetuneConfig, data: Data, run: Path, metrics: dict
                         ) -> tuple[pd.DataFrame, list[float]]:
    """Each fold's validation part predicted by awcl's kept best-epoch checkpoint (awcl's own
    model code, at awcl's precision), as a per-frame table; and per fold the difference between
    the score recomputed here and the one awcl's engine recorded (its selection metric)."""
    from awcl.evaluate.heads import Classifier, make_head, make_segmenter
    from awcl.models import build_encoder, encoder_dim
    from awcl.runtime.inputs import to_input

    env = metrics.get("environment", {})
    bf16 = str(env.get("precision", "")).startswith("bf16")
    cl = bool(env.get("channels_last", False))
    size = tuple(data.x.shape[-2:])
    k = data.num_classes
    records = {r["fold"]: r for r in metrics["folds"]}
    tables, diffs = [], []
    for f in data.folds:
        ckpt = run / "checkpoints" / f"fold{f.index}" / "best.ckpt"
        if not ckpt.is_file():
            print(f"  awcl fold {f.index}: no best-epoch checkpoint; validation figures left out")
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        state = {n.removeprefix("model."): v for n, v in state.items() if n.startswith("model.")}
        enc = build_encoder(cfg.init, cfg.backbone, size)
        if data.task == "segment":
            model = make_segmenter(enc, k)
        else:
            model = Classifier(enc, make_head(cfg.resolved_head, k, encoder_dim(cfg.init, cfg.backbone, size)))
        model.load_state_dict(state)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        preds = []
        with torch.no_grad():
            for s0 in range(0, len(f.val), 64):
                xb = to_input(data.x[f.val[s0 : s0 + 64]], cl)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(xb).float().argmax(1)
                preds.append(out.to(torch.uint8 if data.task == "segment" else torch.int64))
        pred = torch.cat(preds).numpy()
        true = data.y[f.val].numpy()
        table = frame_table(data.task, f.index, np.asarray(f.val), data.groups, true, pred)
        tables.append(table)
        rec = records.get(f.index, {})
        if data.task == "segment" and rec.get("val_dice_per_image") is not None:
            diffs.append(abs(float(table["dice"].mean()) - rec["val_dice_per_image"]))
        elif data.task == "classify" and rec.get("val_f1") is not None:
            diffs.append(abs(float(macro_f1(confusion(true, pred, k))) - rec["val_f1"]))
    val = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return val, diffs


def awcl_test_table(cfg: FinetuneConfig, data: Data, pred: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """awcl's predictions.csv as a per-frame table (Dice recomputed here from the per-frame
    pixel counts) and the largest difference from awcl's own per-frame Dice (0 for classify)."""
    # the row of each predicted frame in the shared selection, so the paired interval can
    # match awcl's test frames with the reference's
    found = pred["frame_id"].astype(str).map({f: i for i, f in enumerate(data.frame_ids)})
    if found.isna().any():
        raise SystemExit(f"awcl predicted {int(found.isna().sum())} frame(s) outside the shared selection")
    t = pd.DataFrame({"fold": pred["fold"].to_numpy(), "row": found.to_numpy(np.int64),
                      "group": pred[cfg.group].astype(str).to_numpy()})
    if data.task == "segment":
        t["dice"] = dice_from_confusion_columns(pred)
        return t, float(np.max(np.abs(t["dice"].to_numpy() - pred["dice"].to_numpy()))) if len(t) else 0.0
    index = {n: i for i, n in enumerate(data.names)}
    t["true"] = pred["true"].astype(str).map(index).to_numpy(np.int64)
    t["pred"] = pred["pred"].astype(str).map(index).to_numpy(np.int64)
    return t, 0.0


def run_awcl(cfg: FinetuneConfig, data: Data, label: str, cfg_o: dict, pre_o: dict) -> Side:
    from awcl.evaluate.finetune import finetune

    c = copy.deepcopy(cfg)
    for k, v in cfg_o.items():
        setattr(c, k, v)
    with tempfile.TemporaryDirectory(prefix="bench_awcl_") as tmp:
        c.out = str(Path(tmp) / "run")
        c.keep_checkpoints, c.bootstrap = True, 0
        t0 = time.time()
        with preset_overrides(preset_name(c), pre_o):
            m = finetune(c)
        wall = round(time.time() - t0, 1)
        run = Path(c.out)
        test, dice_diff = awcl_test_table(c, data, pd.read_csv(run / "predictions.csv"))
        val, val_diffs = awcl_val_predictions(c, data, run, m)
    sizes_ok = all(
        (r["n_train"], r["n_val"], r["n_test"]) == (len(f.train), len(f.val), len(f.test))
        for r, f in zip(sorted(m["folds"], key=lambda r: r["fold"]), data.folds, strict=True)
    )
    key = headline_metric(data.task)
    info = {
        "preset": asdict_preset(c, pre_o), "precision": m["environment"].get("precision"),
        "channels_last": m["environment"].get("channels_last"),
        "reported_test_headline": (m.get("pooled") or {}).get(key),
        "folds_match_reference": bool(sizes_ok),
        "max_val_score_recomputation_diff": max(val_diffs) if val_diffs else None,
        "max_test_dice_recomputation_diff": dice_diff if data.task == "segment" else None,
        "selection_metric": "val_dice_per_image" if data.task == "segment" else "val_f1",
        "learned": m.get("learned"),
    }  # fmt: skip
    return Side(label, val, test, [r["best_epoch"] for r in sorted(m["folds"], key=lambda r: r["fold"])],
                wall, info)


def asdict_preset(cfg: FinetuneConfig, pre_o: dict) -> dict:
    with preset_overrides(preset_name(cfg), pre_o):
        p = cfg.resolved_preset()
    d = dataclasses.asdict(p)
    return json.loads(json.dumps(d, default=str))


# ============================================================================== estimate
def _images(data: Data, epochs: int) -> tuple[float, float]:
    """(training images, forward-only images) the run processes, over all folds."""
    train = sum(epochs * len(f.train) for f in data.folds)
    fwd = sum(epochs * len(f.val) + len(f.test) for f in data.folds)
    return float(train), float(fwd)


def _timed_rate(step: Callable[[], None], batch: int, steps: int) -> float:
    return steps_per_second(step, 1, steps) * batch


def estimate(data: Data, cfg: FinetuneConfig, s: RefSettings, choice, skip_awcl: bool,
             skip_ref: bool, candidates: int, steps: int = 3) -> dict:
    """Seconds each side will take: images the run processes / images/s of a few timed
    training steps (forward passes at ``FORWARD_COST`` of a step), plus fixed overheads."""
    size = tuple(data.x.shape[-2:])
    b = s.batch
    xb = data.x[:b] if len(data.x) >= b else data.x[torch.arange(b) % len(data.x)]
    yb = data.y[:b] if len(data.y) >= b else data.y[torch.arange(b) % len(data.y)]
    seg = data.task == "segment"
    train_imgs, fwd_imgs = _images(data, s.epochs)
    out: dict = {"train_images": train_imgs, "forward_images": fwd_imgs, "size": list(size)}
    if not skip_ref:
        torch.manual_seed(0)
        model = reference_model(data.task, data.num_classes)
        if s.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        aug = ReferenceAugment(s)

        def ref_step() -> None:
            model.train()
            x, m = aug(to_float(xb), yb if seg else None) if aug.active else (to_float(xb), None)
            y = m.long() if m is not None else yb.long()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
                loss = F.cross_entropy(model(normalise(x, s.channels_last)).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        rate = _timed_rate(ref_step, b, steps)
        out["reference_img_s"] = round(rate, 1)
        out["reference_s"] = round((train_imgs + FORWARD_COST * fwd_imgs) / rate, 0)
    if not skip_awcl:
        from awcl.evaluate.augment import augment
        from awcl.evaluate.heads import Classifier, make_head, make_segmenter
        from awcl.models import build_encoder, encoder_dim
        from awcl.runtime.inputs import to_input

        torch.manual_seed(0)
        enc = build_encoder(cfg.init, cfg.backbone, size)
        if seg:
            amodel = make_segmenter(enc, data.num_classes)
        else:
            amodel = Classifier(enc, make_head(cfg.resolved_head, data.num_classes,
                                               encoder_dim(cfg.init, cfg.backbone, size)))
        cl = choice.channels_last
        if cl:
            amodel = amodel.to(memory_format=torch.channels_last)
        aopt = torch.optim.Adam(amodel.parameters(), lr=1e-4)
        bf16 = choice.precision.startswith("bf16")
        g = torch.Generator().manual_seed(0)
        acfg = cfg.resolved_preset().augment

        def awcl_step() -> None:
            amodel.train()
            x, m = augment(to_input(xb, cl), acfg, g, yb.long() if seg else None)
            y = m if m is not None else yb.long()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(amodel(x).float(), y)
            aopt.zero_grad()
            loss.backward()
            aopt.step()

        rate = _timed_rate(awcl_step, b, steps)
        out["awcl_img_s"] = round(rate, 1)
        per = (train_imgs + FORWARD_COST * fwd_imgs) / rate + AWCL_FOLD_OVERHEAD_S * len(data.folds)
        out["awcl_s"] = round(candidates * per, 0)
    out["total_s"] = out.get("awcl_s", 0) + out.get("reference_s", 0)
    return out


# ================================================================================ driver
def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")]
        return f"{name} ({', '.join(keep)}), {torch.get_num_threads()} threads"
    except OSError:
        return platform.processor()


def fmt_ci(v: float, ci: tuple[float, float] | None) -> str:
    if v != v:  # NaN
        return "–"
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{v:.4f}"


def summarise(side: Side, task: str, k: int, n_boot: int, seed: int) -> dict:
    val_h = headline_of(task, side.val, k) if len(side.val) else float("nan")
    test_h = headline_of(task, side.test, k)
    return {
        "val": val_h, "val_ci": bootstrap_interval(task, side.val, k, n_boot, seed) if len(side.val) else None,
        "test": test_h, "test_ci": bootstrap_interval(task, side.test, k, n_boot, seed),
        "val_folds": fold_headlines(task, side.val, k) if len(side.val) else [],
        "test_folds": fold_headlines(task, side.test, k), "best_epochs": side.best_epochs,
        "wall_s": side.wall_s, **side.info,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["segment", "classify"])
    ap.add_argument("--data", required=True, help="prepared dataset directory")
    ap.add_argument("--epochs", type=int, default=None,
                    help="both sides (default: segment 3, classify 6)")
    ap.add_argument("--folds", type=int, default=None, help="grouped folds (default 5)")
    ap.add_argument("--max-per-video", type=int, default=None,
                    help="at most N evenly spaced frames per video, both sides (default: "
                         "segment all, classify 4); 0 = all")
    ap.add_argument("--size", default=None, help="HxW frame size (default: the prepared size)")
    ap.add_argument("--classes", default=None, help="classify: comma list, as awcl finetune")
    ap.add_argument("--label", default="coarse")
    ap.add_argument("--group", default="patient_id", help="grouping column of the folds")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS), help="awcl side's preset")
    ap.add_argument("--optimizer", default=None, help="awcl side: override the preset's optimiser")
    ap.add_argument("--lr", type=float, default=None, help="awcl side: override the preset's lr")
    ap.add_argument("--candidates", nargs="+", default=None,
                    help="awcl presets to compare on validation: 'preset' or key=value[,key=value] "
                         "with keys optimizer, lr, batch_size, dice_loss, head, cosine, warmup, momentum, "
                         "weight_decay; the winner on validation is awcl's row")
    ap.add_argument("--ref-lr", type=float, default=1e-3, help="reference Adam lr")
    ap.add_argument("--ref-weight-decay", type=float, default=0.0, help="reference Adam weight decay")
    ap.add_argument("--ref-precision", default="auto", choices=["auto", "32", "bf16"],
                    help="auto: the precision awcl's engine chooses on this machine")
    ap.add_argument("--ref-select", default="headline", choices=["headline", "miou"],
                    help="reference's validation score: the headline metric, or awcl's engine "
                         "metric before 2026-12-04 (segmentation: pooled mIoU)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="group bootstrap resamples (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-awcl", action="store_true", help="reference only")
    ap.add_argument("--skip-reference", action="store_true", help="awcl only (e.g. --candidates)")
    ap.add_argument("--tables", default=None, metavar="DIR",
                    help="also write each side's per-frame validation/test tables here (CSV)")
    ap.add_argument("--reference-tables", default=None, metavar="DIR",
                    help="reuse the reference side written by an earlier --tables run on the same "
                         "data, folds and frames (checked) instead of training it again")
    ap.add_argument("--estimate", action="store_true", help="print the estimated wall time and exit")
    ap.add_argument("--no-estimate", action="store_true", help="skip the timed estimate at start")
    ap.add_argument("--budget-min", type=float, default=25.0,
                    help="warn when the estimate exceeds this many minutes")
    ap.add_argument("--verbose", action="store_true", help="reference: print every epoch")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    d = TASK_DEFAULTS[args.task]
    epochs = args.epochs or d["epochs"]
    folds = args.folds or d["folds"]
    mpv = d["max_per_video"] if args.max_per_video is None else (args.max_per_video or None)
    size = args.size or d["size"]
    cfg = FinetuneConfig(data=args.data, out="", task=args.task, init="random", folds=folds,
                         epochs=epochs, group=args.group, seed=args.seed, bootstrap=0,
                         label=args.label, preset=args.preset,
                         classes=args.classes.split(",") if args.classes else None,
                         max_per_video=mpv, optimizer=args.optimizer, lr=args.lr,
                         size=tuple(int(v) for v in size.split("x")) if size else None)
    cfg.validate()
    ds = open_dataset(cfg.data)
    data = select_data(cfg, ds)
    task, k = data.task, data.num_classes
    key = headline_metric(task)
    hx, wx = data.x.shape[-2:]
    print(f"machine: {cpu_name()}; torch {torch.__version__}")
    print(f"{task} on {args.data}: {len(data.x)} frames ({', '.join(data.names)}), {hx}x{wx}, "
          f"{len(data.folds)} folds by {cfg.group}, max {mpv or 'all'} frames/video, {epochs} epochs; "
          f"headline {key}")
    for f in data.folds:
        print(f"  fold {f.index}: fit {len(f.train)} / val {len(f.val)} / test {len(f.test)} frames, "
              f"{len(set(data.groups[f.test]))} test groups")

    choice = None
    if not args.skip_awcl or args.ref_precision == "auto":
        choice = cfg.runtime((int(hx), int(wx))).choice  # awcl's precision for this machine
    bf16 = {"32": False, "bf16": True}.get(args.ref_precision, bool(choice and choice.precision.startswith("bf16")))
    cl = bool(choice and choice.channels_last) if args.ref_precision == "auto" else bf16
    s = reference_settings(cfg.resolved_preset(), args.ref_lr, args.ref_weight_decay, bf16, cl,
                           args.ref_select)
    specs = args.candidates or ["preset"]
    parsed = [parse_candidate(c) for c in specs]
    if task == "segment" and any("head" in c for c, _ in parsed):
        raise SystemExit("--candidates: head= is a classification setting; segmentation has the U-Net decoder")

    res: dict = {"task": task, "data": args.data, "epochs": epochs, "folds": len(data.folds),
                 "max_per_video": mpv, "size": [int(hx), int(wx)], "group": cfg.group,
                 "frames": len(data.x), "headline": key, "reference_settings": dataclasses.asdict(s)}
    if not args.no_estimate or args.estimate:
        est = estimate(data, cfg, s, choice, args.skip_awcl, args.skip_reference, len(specs))
        res["estimate"] = est
        parts = []
        if "awcl_s" in est:
            parts.append(f"awcl ~{est['awcl_s'] / 60:.1f} min ({est['awcl_img_s']} img/s"
                         f"{f', {len(specs)} candidates' if len(specs) > 1 else ''})")
        if "reference_s" in est:
            parts.append(f"reference ~{est['reference_s'] / 60:.1f} min ({est['reference_img_s']} img/s)")
        over = est["total_s"] / 60 > args.budget_min
        print(f"estimate: {'; '.join(parts)}; total ~{est['total_s'] / 60:.1f} min "
              f"({int(est['train_images'])} training + {int(est['forward_images'])} forward images per side)"
              + (f"  -- OVER the {args.budget_min:g} min budget: lower --epochs/--max-per-video/--size/--folds"
                 if over else f"  (budget {args.budget_min:g} min)"), flush=True)
        if args.estimate:
            return res

    # (a) awcl: every candidate, the winner decided on validation only
    awcl_rows: list[tuple[str, dict, Side]] = []
    winner = None
    if not args.skip_awcl:
        for spec, (cfg_o, pre_o) in zip(specs, parsed, strict=True):
            print(f"awcl [{spec}] ...", flush=True)
            side = run_awcl(cfg, data, spec, cfg_o, pre_o)
            save_tables(args.tables, "awcl-" + "".join(c if c.isalnum() or c in "-_.=" else "_" for c in spec), side)
            summ = summarise(side, task, k, args.bootstrap, args.seed)
            awcl_rows.append((spec, summ, side))
            print(f"  awcl [{spec}]: val {summ['val']:.4f}  (test held back)  best epochs "
                  f"{summ['best_epochs']}  {summ['wall_s']} s", flush=True)
        winner = max(awcl_rows, key=lambda r: (r[1]["val"] if r[1]["val"] == r[1]["val"] else -1.0))
        res["awcl_candidates"] = {spec: summ for spec, summ, _ in awcl_rows}
        res["awcl_winner_on_validation"] = winner[0]

    # (b) the plain reference on the same frames, folds and validation parts
    ref = ref_side = None
    if args.reference_tables:
        print(f"reference: reused from {args.reference_tables} (same frames and folds, checked)", flush=True)
        ref_side = load_reference_tables(args.reference_tables, data)
    elif not args.skip_reference:
        print(f"reference (torchvision ResNet-18 + Adam {s.lr:g}, {'bf16' if s.bf16 else 'fp32'}) ...",
              flush=True)
        ref_side = run_reference(data, s, args.seed, args.verbose)
        save_tables(args.tables, "reference", ref_side)
    if ref_side is not None:
        side = ref_side
        ref = summarise(side, task, k, args.bootstrap, args.seed)
        res["reference"] = ref

    # ---- validation (decides) and test (reported only), printed apart
    print()
    if len(awcl_rows) > 1:
        print(f"awcl candidates on VALIDATION ({key}, pooled over the folds' validation parts):")
        for spec, summ, _ in awcl_rows:
            print(f"  {spec:32s} val {fmt_ci(summ['val'], summ['val_ci'])}  folds "
                  f"{np.round(summ['val_folds'], 3).tolist()}")
        print(f"winner on validation: {winner[0]} (ties go to the first listed)")
        print("their TEST figures, for the record (not used to choose):")
        for spec, summ, _ in awcl_rows:
            print(f"  {spec:32s} test {fmt_ci(summ['test'], summ['test_ci'])}")
        print()
    name = {"segment": "segmentation", "classify": "classification"}[task]
    print(f"== {name}: {args.data}, {key}, {len(data.folds)} folds by {cfg.group}, {epochs} epochs, "
          f"{hx}x{wx}, {len(data.x)} frames ==")
    rows = []
    if winner is not None:
        w = winner[1]
        label = f"awcl {preset_name(cfg)} [{winner[0]}]"
        rows.append((label, w))
    if ref is not None:
        depth = "1-conv decoder" if task == "segment" else "linear head"
        rows.append((f"reference (Adam, {depth})", ref))
    wid = max([len(label) for label, _ in rows] + [10])
    print(f"{'':{wid}s}  {'validation (selection) [95% CI]':32s}  {'test (reported) [95% CI]':32s}  wall")
    for label, r in rows:
        print(f"{label:{wid}s}  {fmt_ci(r['val'], r['val_ci']):32s}  {fmt_ci(r['test'], r['test_ci']):32s}  "
              f"{r['wall_s']} s")
    for label, r in rows:
        print(f"  {label}: val folds {np.round(r['val_folds'], 3).tolist()}, test folds "
              f"{np.round(r['test_folds'], 3).tolist()}, best epochs {r['best_epochs']}")
    if winner is not None:
        w = winner[1]
        print(f"  awcl checks: precision {w['precision']}{' + channels_last' if w['channels_last'] else ''}; "
              f"awcl's own test {key} {w['reported_test_headline']}; folds as the reference's: "
              f"{'yes' if w['folds_match_reference'] else 'NO'}; validation score recomputed from its "
              f"checkpoints within {w['max_val_score_recomputation_diff']} of its engine's "
              f"({w['selection_metric']})")
    if winner is not None and ref is not None:
        print(f"  selection: awcl on validation {w['selection_metric'].removeprefix('val_')}; reference on "
              f"validation {'miou' if (task == 'segment' and s.select == 'miou') else key}")
    if winner is not None and ref is not None:
        diff = winner[1]["test"] - ref["test"]
        ok = winner[1]["test"] >= ref["test"] - 0.01
        ci = paired_difference_interval(task, winner[2].test, ref_side.test, k, args.bootstrap, args.seed)
        res["difference_test"] = diff
        res["difference_test_ci"] = ci
        res["awcl_ge_reference_minus_0.01"] = bool(ok)
        print(f"awcl ≥ reference − 0.01 on test: {'yes' if ok else 'no'} "
              f"(awcl − reference = {fmt_ci(diff, ci)}, paired bootstrap over {cfg.group}; "
              f"validation: {winner[1]['val'] - ref['val']:+.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
