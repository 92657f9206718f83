"""Calibration of a downstream protocol against an independent plain loop.

Trains two models on the same prepared dataset, the same grouped folds and the same budget
(epochs, batch size, frame size), and prints their quality and its ratio:

(a) awcl's protocol: ``awcl.evaluate.finetune.finetune`` with the preset (default: the
    task's paper preset, as ``awcl finetune`` runs it);
(b) a plain reference: torchvision ResNet-18 (one grey input channel) with a small U-Net
    decoder (segmentation) or a linear head (classification), Adam, no augmentation, the
    last epoch's weights. No awcl training, model or metric code: only the frames and the
    fold membership come from awcl (the folds are the ones (a) trains on).

A protocol is calibrated when (a) reaches (b): on HC18 at 112x144, random init, 5 folds by
subject, 3 epochs, awcl's per-image Dice must be >= 0.90 and >= the reference's - 0.01; on
POCUS (3 classes, folds by video) awcl's macro-F1 must be >= the reference's. Both sides are
compared on the task's headline metric (``awcl.evaluate.tasks.headline_metric``).

    python benchmarks/bench_downstream.py segment --data hc18-112 --epochs 3 --folds 5
    python benchmarks/bench_downstream.py classify --data pocus-112 --epochs 5 --folds 5 \\
        --classes covid,pneumonia,regular --group video_id --max-per-video 6
    python benchmarks/bench_downstream.py segment --data hc18-112 --optimizer rmsprop_torch   # the old preset

Prints the CPU it ran on, the wall time of each side and the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import awcl  # noqa: F401  (torchvision op-schema shim before torchvision)
from awcl.data.store import open_dataset
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.finetune import finetune
from awcl.evaluate.segment import load_masks
from awcl.evaluate.selection import load_frames, make_folds, select_classification
from awcl.evaluate.tasks import headline_metric


# ----------------------------------------------------------------- the plain reference
class PlainUNet(nn.Module):
    """torchvision ResNet-18 trunk + a four-stage upsampling decoder with skips."""

    def __init__(self, classes: int):
        super().__init__()
        import torchvision  # after awcl's op-schema shim (see DESIGN.md)

        r = torchvision.models.resnet18(weights=None)
        r.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu)
        self.pool, self.l1, self.l2, self.l3, self.l4 = r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4

        def block(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.d4, self.d3, self.d2, self.d1 = block(512 + 256, 256), block(256 + 128, 128), block(128 + 64, 64), block(64 + 64, 32)
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
    import torchvision  # after awcl's op-schema shim

    r = torchvision.models.resnet18(weights=None, num_classes=classes)
    r.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return r


def prep(x: torch.Tensor) -> torch.Tensor:
    return (x.unsqueeze(1).float() / 255.0 - 0.5) / 0.25


def plain_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: np.ndarray, epochs: int,
              batch: int, lr: float, bf16: bool, seed: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.as_tensor(train)[torch.randperm(len(train), generator=g)]
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            if len(idx) < 2:
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(prep(x[idx]))
            loss = F.cross_entropy(out.float(), y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def plain_predict(model: nn.Module, x: torch.Tensor, rows: np.ndarray, bf16: bool) -> torch.Tensor:
    out = []
    for s in range(0, len(rows), 64):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(model(prep(x[rows[s : s + 64]])).float().argmax(1))
    return torch.cat(out)


def per_image_dice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``[n, H, W]`` masks -> ``[n]`` foreground Dice (1 where both are empty)."""
    p, t = pred.reshape(len(pred), -1) > 0, true.reshape(len(true), -1) > 0
    inter, den = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0)


# ------------------------------------------------------------------------------ driver
def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")]
        return f"{name} ({', '.join(keep)}), {torch.get_num_threads()} threads"
    except OSError:
        return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["segment", "classify"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--size", default=None, help="HxW (default: the prepared size)")
    ap.add_argument("--classes", default=None)
    ap.add_argument("--group", default="patient_id")
    ap.add_argument("--max-per-video", type=int, default=None)
    ap.add_argument("--optimizer", default=None, help="awcl side: override the preset's optimiser")
    ap.add_argument("--lr", type=float, default=None, help="awcl side: override the preset's lr")
    ap.add_argument("--ref-lr", type=float, default=1e-3, help="reference Adam lr")
    ap.add_argument("--ref-batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-awcl", action="store_true", help="reference only")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    cfg = FinetuneConfig(data=args.data, out="", task=args.task, init="random", folds=args.folds,
                         epochs=args.epochs, group=args.group, seed=args.seed, bootstrap=0,
                         classes=args.classes.split(",") if args.classes else None,
                         max_per_video=args.max_per_video, optimizer=args.optimizer, lr=args.lr,
                         size=tuple(int(v) for v in args.size.split("x")) if args.size else None)
    ds = open_dataset(cfg.data)
    print(f"machine: {cpu_name()}; torch {torch.__version__}")
    res: dict = {"task": args.task, "data": args.data, "epochs": args.epochs, "folds": args.folds}

    # (a) awcl
    if not args.skip_awcl:
        with tempfile.TemporaryDirectory() as tmp:
            cfg.out = str(Path(tmp) / "run")
            t = time.time()
            m = finetune(cfg)
            res["awcl_s"] = round(time.time() - t, 1)
        p = m["pooled"]
        bf16 = m["environment"]["precision"].startswith("bf16")
        if args.task == "segment":
            res["awcl"] = {"dice_per_image": p["dice_per_image"], "dice_pooled": p["dice"],
                           "fg_iou": p.get("fg_iou"), "fold_dice_per_image": [f["dice_per_image"] for f in m["folds"]]}
        else:
            res["awcl"] = {"accuracy": p["accuracy"], "f1": p["f1"],
                           "fold_accuracy": [f["accuracy"] for f in m["folds"]],
                           "fold_f1": [f["f1"] for f in m["folds"]]}
        res["awcl_precision"] = m["environment"]["precision"]
    else:
        bf16 = False

    # (b) plain reference on the same folds
    t = time.time()
    if args.task == "segment":
        rows = np.flatnonzero(ds.manifest["mask_index"].to_numpy() >= 0)
        sub = ds.manifest.iloc[rows].reset_index(drop=True)
        folds = make_folds(cfg, sub, np.zeros(len(rows), np.int64), sub[cfg.group].astype(str).to_numpy(), "")
        size = tuple(cfg.size) if cfg.size else ds.size
        x, y = load_frames(ds, rows, size), load_masks(ds, rows, size, 2).clamp_max(1)
        dice, fold_d = [], []
        for f in folds:
            torch.manual_seed(args.seed + f.index)
            model = plain_fit(PlainUNet(2), x, y, f.train, args.epochs, args.ref_batch, args.ref_lr, bf16,
                              args.seed + f.index)
            d = per_image_dice(plain_predict(model, x, f.test, bf16).numpy(), y[f.test].numpy())
            dice.append(d)
            fold_d.append(float(d.mean()))
        res["reference"] = {"dice_per_image": float(np.concatenate(dice).mean()), "fold_dice_per_image": fold_d}
        key = headline_metric("segment")
    else:
        sel = select_classification(cfg, ds)
        x, y = load_frames(ds, sel.rows, cfg.size), torch.from_numpy(sel.y)
        from sklearn.metrics import f1_score  # independent of awcl's metric code

        def macro_f1(t: np.ndarray, q: np.ndarray) -> float:
            return float(f1_score(t, q, labels=range(len(sel.names)), average="macro", zero_division=0))

        trues, preds, fold_a, fold_f = [], [], [], []
        for f in sel.folds:
            torch.manual_seed(args.seed + f.index)
            model = plain_fit(plain_classifier(len(sel.names)), x, y, f.train, args.epochs, args.ref_batch,
                              args.ref_lr, bf16, args.seed + f.index)
            q, t = plain_predict(model, x, f.test, bf16).numpy(), y[f.test].numpy()
            trues.append(t)
            preds.append(q)
            fold_a.append(float((q == t).mean()))
            fold_f.append(macro_f1(t, q))
        t, q = np.concatenate(trues), np.concatenate(preds)
        res["reference"] = {"accuracy": float((q == t).mean()), "fold_accuracy": fold_a,
                            "f1": macro_f1(t, q), "fold_f1": fold_f}
        key = headline_metric("classify")
    res["reference_s"] = round(time.time() - t, 1)

    ref = res["reference"][key]
    print(f"reference (torchvision ResNet-18 + Adam {args.ref_lr:g}, {args.epochs} epochs): "
          f"{key} {ref:.4f}  folds {np.round(res['reference'][f'fold_{key}'], 3).tolist()}  ({res['reference_s']} s)")
    if "awcl" in res:
        a = res["awcl"][key]
        res["ratio"] = a / ref if ref else float("nan")
        res["difference"] = a - ref
        print(f"awcl ({args.optimizer or 'preset'} optimiser, {res['awcl_precision']}): {key} {a:.4f}  "
              f"folds {np.round(res['awcl'][f'fold_{key}'], 3).tolist()}  ({res['awcl_s']} s)")
        print(f"quality ratio awcl / reference: {res['ratio']:.3f} (difference {res['difference']:+.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
