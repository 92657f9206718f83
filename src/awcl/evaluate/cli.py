"""``awcl finetune``, ``awcl embed`` and ``awcl weights imagenet`` (thin wrappers)."""

from __future__ import annotations

import argparse
import json
import logging

from awcl.errors import AwclError
from awcl.options import cli_type, parse_size

log = logging.getLogger(__name__)


def _finetune(args: argparse.Namespace) -> int:
    from awcl.evaluate.finetune import FinetuneConfig, finetune

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    cfg = FinetuneConfig(
        data=args.data, out=args.out, init=args.init, task=args.task, protocol=args.protocol,
        head=args.head, preset=args.preset, label=args.label, classes=classes, folds=args.folds,
        split=args.split, group=args.group, val_fraction=args.val_fraction, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, size=args.size, max_per_video=args.max_per_video,
        dice_loss=args.dice_loss, seed=args.seed, threads=args.threads,
        precision="32-true" if args.fp32 else args.precision, accelerator=args.accelerator,
        devices=args.devices, strategy=args.strategy, progress=not args.no_progress,
        keep_checkpoints=args.keep_checkpoints,
        bootstrap=args.bootstrap, train_patients=args.train_patients,
    )
    m = finetune(cfg)
    from awcl.train.trainer import is_global_zero

    if not is_global_zero():
        return 0  # DDP: rank zero reports
    keys = ["accuracy", "precision", "recall", "f1"] if cfg.task == "classify" else [
        "gaa", "ma", "miou", "dice", "hc_mae_mm"]
    parts = [f"{k} {m['mean'][k]:.4f} ± {m['std'][k]:.4f}" for k in keys if k in m["mean"]]
    print(f"{args.out}: " + ", ".join(parts))
    return 0


def _embed(args: argparse.Namespace) -> int:
    from awcl.evaluate.embed import EmbedConfig, embed

    cfg = EmbedConfig(
        data=args.data, out=args.out, init=args.init, label=args.label, color_by=args.color_by,
        size=args.size, max_per_video=args.max_per_video, max_frames=args.max_frames,
        perplexity=args.perplexity, seed=args.seed, threads=args.threads,
        precision=args.precision, accelerator=args.accelerator,
    )
    s = embed(cfg)
    print(json.dumps({k: s[k] for k in ("num_frames", "dim", "plots")}))
    return 0


def _weights(args: argparse.Namespace) -> int:
    from awcl.evaluate.weights import IMAGENET_RESNET18_URL, download_weights

    if args.which != "imagenet":
        raise AwclError(f"unknown weights {args.which!r}")
    path = download_weights(args.out, url=args.url or IMAGENET_RESNET18_URL, sha256=args.sha256)
    print(f"wrote {path} (use it with --init {path})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from awcl.evaluate.finetune import PRESETS
    from awcl.evaluate.heads import HEADS

    p = sub.add_parser("finetune", help="downstream classification/segmentation with k-fold CV")
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--init", default="random",
                   help="'random', an awcl pretrain run dir / encoder.pt, or a torchvision resnet18 .pth")
    p.add_argument("--task", choices=["classify", "segment"], default="classify")
    p.add_argument("--protocol", choices=["full", "partial", "knn", "linear-probe"], default="full",
                   help="full: train encoder + head; partial: encoder frozen; knn / linear-probe: "
                   "scikit-learn kNN or logistic regression on frozen features")
    p.add_argument("--head", choices=list(HEADS), default=None,
                   help="classification head (default: the preset's, task1 sononet, task2 fc2)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="paper protocol (default task1 for classify, task3 for segment)")
    p.add_argument("--label", default="coarse", help="coarse | fine | a manifest column")
    p.add_argument("--classes", default=None,
                   help="comma list of classes to use, merges as new=a+b (e.g. covid,pneumonia=pneumonia+viral,regular)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--split", choices=["kfold", "fixed"], default="kfold",
                   help="fixed: use the manifest's split column (train/val/test)")
    p.add_argument("--group", default="patient_id", help="grouping column (never on both sides)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=None, help="override the preset (milestones scale)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--size", type=cli_type(parse_size), default=None, help="HxW to resize frames to, e.g. 112x144")
    p.add_argument("--max-per-video", type=int, default=None, help="at most N frames per video")
    p.add_argument("--train-patients", type=int, default=None,
                   help="label efficiency: fit on N patients of each training part (seeded, every class kept)")
    p.add_argument("--dice-loss", action="store_true", help="segmentation: add soft Dice to CE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="auto",
                   help="auto (fastest safe for this hardware) | 32-true | bf16-mixed | 16-mixed")
    p.add_argument("--fp32", action="store_true", help="same as --precision 32-true")
    p.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    p.add_argument("--devices", default="1", help="devices to train on (>1: DDP)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy (ddp with --devices > 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoints/fold<k>/best.ckpt (the best validation epoch)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="patient-level bootstrap resamples for the 95%% intervals (0: none)")
    p.set_defaults(func=_finetune)

    e = sub.add_parser("embed", help="penultimate features + t-SNE plot of a prepared dataset")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--init", default="random")
    e.add_argument("--label", default="coarse", help="colour of the main plot")
    e.add_argument("--color-by", action="append", default=None,
                   help="further plot coloured by a column (scan = video_id); repeatable")
    e.add_argument("--size", type=cli_type(parse_size), default=None)
    e.add_argument("--max-per-video", type=int, default=None)
    e.add_argument("--max-frames", type=int, default=5000)
    e.add_argument("--perplexity", type=float, default=30.0)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--precision", default="auto", help="auto | 32-true | bf16-mixed | 16-mixed")
    e.add_argument("--accelerator", default="auto", help="auto | cpu | gpu")
    e.set_defaults(func=_embed)

    w = sub.add_parser("weights", help="download published weights (ImageNet ResNet-18)")
    w.add_argument("which", choices=["imagenet"])
    w.add_argument("--out", required=True, help="file to write (e.g. resnet18-imagenet.pth)")
    w.add_argument("--url", default=None, help="override the download URL (mirror)")
    w.add_argument("--sha256", default=None, help="expected SHA-256 of the file")
    w.set_defaults(func=_weights)
