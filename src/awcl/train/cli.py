"""``awcl pretrain``: a thin layer over ``awcl.train.pretrain.pretrain``.

Every flag is generated from a :class:`~awcl.train.pretrain.PretrainConfig` field
(awcl.config). Precedence: built-in defaults < ``--config YAML`` < the run's own
config.yaml (with ``--resume``) < ``--set key=value`` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from awcl.config_flags import add_config_flags, add_flags, flag_values, from_args
from awcl.methods import METHODS
from awcl.train.pretrain import PretrainConfig


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """defaults < ``--config`` < the run's own config.yaml (``--resume``) < ``--set`` < flags."""
    saved = Path(args.out) / "config.yaml" if args.out else None
    flags = {**flag_values(args, PretrainConfig), "resume": bool(args.resume)}
    return from_args(
        PretrainConfig, args, flags=flags,
        saved=saved if args.resume and saved is not None and saved.is_file() else None,
        required={"data": "--data is required (a prepared dataset directory)",
                  "out": "--out is required (the run directory)"},
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from awcl.train.pretrain import pretrain  # torch/Lightning: imported when the command runs

    cfg = config_from_args(args)
    run = pretrain(cfg)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    print(f"run: {run}")
    print(f"encoder: {run / 'encoder.pt'}")
    if summary:
        keys = ("method", "epochs", "steps", "final_loss", "img_per_s", "knn_acc")
        print("summary: " + ", ".join(f"{k}={summary.get(k)}" for k in keys))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help=f"pretrain an encoder ({', '.join(METHODS)})",
        description="Pretrain a ResNet-18 encoder on a prepared dataset. Defaults are the paper's. "
        "Every flag is a PretrainConfig key (awcl.train.pretrain), also settable in --config YAML "
        "or with --set key=value.",
    )
    add_flags(p, PretrainConfig)
    add_config_flags(p, PretrainConfig)
    p.set_defaults(func=_run)
