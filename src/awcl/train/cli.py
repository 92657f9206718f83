"""``awcl pretrain``: a thin layer over ``awcl.train.pretrain.pretrain``.

Every flag is generated from a :class:`~awcl.train.pretrain.PretrainConfig` field
(awcl.config). Precedence: built-in defaults < ``--config YAML`` < the run's own
config.yaml (with ``--resume``) < ``--set key=value`` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from awcl.config import add_flags, compose, flag_values, read_yaml
from awcl.errors import AwclError
from awcl.methods import METHODS
from awcl.train.pretrain import PretrainConfig

_SPECIAL = ("resume",)  # flags with their own handling below


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """defaults < ``--config`` < the run's own config.yaml (``--resume``) < ``--set`` < flags."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if args.config:
        layers.append((args.config, read_yaml(args.config)))
    saved = Path(args.out) / "config.yaml" if args.out else None
    if args.resume and saved is not None and saved.is_file():
        layers.append((str(saved), read_yaml(saved)))
    flags = flag_values(args, PretrainConfig, skip=_SPECIAL)
    if len(flags.get("data", [])) == 1:
        flags["data"] = flags["data"][0]
    if "ignore_labels" in flags:  # adds to the config's own
        given = [v for _, d in layers for v in d.get("ignore_labels", [])]
        flags["ignore_labels"] = [*given, *flags["ignore_labels"]]
    flags["resume"] = bool(args.resume)
    cfg = compose(PretrainConfig, layers, overrides=args.set, flags=flags)
    if not cfg.data:
        raise AwclError("--data is required (a prepared dataset directory)")
    if not args.out and not any("out" in d for _, d in layers) and not any(
        o.startswith("out=") for o in args.set
    ):
        raise AwclError("--out is required (the run directory)")
    return cfg


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
    add_flags(p, PretrainConfig, skip=_SPECIAL)
    p.add_argument("--config", help="YAML file of PretrainConfig keys (${key} interpolation; flags override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. --set lr=3e-4; after --config, before flags")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.set_defaults(func=_run)
