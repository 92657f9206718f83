"""``awcl finetune``, ``awcl embed`` and ``awcl weights imagenet`` (thin wrappers)."""

from __future__ import annotations

import argparse
import json
import logging

from awcl.config_flags import add_config_flags, add_flags, flag_values, from_args
from awcl.errors import AwclError
from awcl.evaluate.config import DERIVED_KEYS, FinetuneConfig
from awcl.evaluate.embed import EmbedConfig
from awcl.evaluate.tasks import headline_metric

log = logging.getLogger(__name__)


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """defaults < ``--config`` YAML < ``--set key=value`` < flags (awcl.config). A run's
    config.yaml is such a file: the derived values it also records are skipped."""
    flags = flag_values(args, FinetuneConfig)
    if args.fp32:
        flags["precision"] = "32-true"
    if args.no_progress:
        flags["progress"] = False
    need = "--data and --out are required (a prepared dataset and a run directory)"
    return from_args(FinetuneConfig, args, {"data": need, "out": need}, flags=flags,
                     cli_defaults={"progress": True}, ignore=DERIVED_KEYS)  # fmt: skip


def _finetune(args: argparse.Namespace) -> int:
    from awcl.evaluate.finetune import finetune

    cfg = finetune_config(args)
    m = finetune(cfg)
    from awcl.runtime.trainer import is_global_zero

    if not is_global_zero():
        return 0  # DDP: rank zero reports
    rest = ["accuracy", "precision", "recall", "f1"] if cfg.task == "classify" else [
        "dice_per_image", "dice", "fg_iou", "miou", "hc_mae_mm", "hc_fail_rate"]
    keys = list(dict.fromkeys([headline_metric(cfg.task), *rest]))  # the headline first
    parts = [f"{k} {m['mean'][k]:.4f} ± {m['std'][k]:.4f}" for k in keys if k in m["mean"]]
    print(f"{args.out}: " + ", ".join(parts))
    return 0


def embed_config(args: argparse.Namespace) -> EmbedConfig:
    """defaults < ``--config`` YAML < ``--set key=value`` < flags (awcl.config)."""
    need = "--data and --out are required (a prepared dataset and a directory to write)"
    return from_args(EmbedConfig, args, {"data": need, "out": need})


def _embed(args: argparse.Namespace) -> int:
    from awcl.evaluate.embed import embed

    s = embed(embed_config(args))
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
    p = sub.add_parser("finetune", help="downstream classification/segmentation with k-fold CV",
                       description="Every flag is a FinetuneConfig key (awcl.evaluate.config), also "
                       "settable in --config YAML or with --set key=value.")  # fmt: skip
    add_flags(p, FinetuneConfig)
    p.add_argument("--fp32", action="store_true", help="same as --precision 32-true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p, FinetuneConfig)
    p.set_defaults(func=_finetune)

    e = sub.add_parser("embed", help="penultimate features + t-SNE plot of a prepared dataset",
                       description="Every flag is an EmbedConfig key (awcl.evaluate.embed).")
    add_flags(e, EmbedConfig)
    add_config_flags(e, EmbedConfig)
    e.set_defaults(func=_embed)

    w = sub.add_parser("weights", help="download published weights (ImageNet ResNet-18)")
    w.add_argument("which", choices=["imagenet"])
    w.add_argument("--out", required=True, help="file to write (e.g. resnet18-imagenet.pth)")
    w.add_argument("--url", default=None, help="override the download URL (mirror)")
    w.add_argument("--sha256", default=None, help="expected SHA-256 of the file")
    w.set_defaults(func=_weights)
