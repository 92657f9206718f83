"""``awcl pretrain``: a thin layer over ``awcl.train.pretrain.pretrain``.

Precedence: built-in defaults < ``--config YAML`` < the run's own config.yaml (with
``--resume``) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from awcl.errors import AwclError
from awcl.methods import METHODS

# flag -> (PretrainConfig field, type, help). Defaults come from the dataclass.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--data", "data", str, "prepared dataset directory (awcl prepare ...); repeat for several sources (their union is built once and cached)"),
    ("--out", "out", str, "run directory to create (or to continue with --resume)"),
    ("--method", "method", str, "pretraining method (awcl.methods.METHODS)"),
    ("--granularity", "granularity", str, "coarse | fine: which anatomy labels make positives/classes"),
    ("--anatomy-ratio", "anatomy_ratio", float, "awcl: probability a labelled frame keeps its label per draw"),
    ("--class-group", "class_group", int, "awcl/clpi: k>1 draws frames of one class/scan in groups of k per batch; 0 or 1 (default): random batches as in the paper"),
    ("--clpi-by", "clpi_by", str, "clpi: scan key, video | patient"),
    ("--uscl-ce-weight", "uscl_ce_weight", float, "uscl: weight of the cross-entropy head per view (official 0.2)"),
    ("--uscl-rounds", "uscl_rounds", int, "uscl: passes over the videos per epoch (0: about frames/videos; 1: the official epoch)"),
    ("--init", "init", str, "random | run dir | encoder.pt | torchvision resnet18 .pth"),
    ("--proj-hidden", "proj_hidden", int, "projection MLP hidden width"),
    ("--proj-dim", "proj_dim", int, "projection output dimension"),
    ("--temperature", "temperature", float, "contrastive temperature τ"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--max-steps", "max_steps", int, "stop after this many steps (-1: epochs decide)"),
    ("--batch-size", "batch_size", int, "samples per process and step (each gives 2 views)"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay"),
    ("--size", "size", str, "input HxW, e.g. 224x288 (frames are cropped/resized on the fly)"),
    ("--crop-scale", "crop_scale", str, "random-resized-crop area share LO,HI (SimCLR: 0.08,1)"),
    ("--flip", "flip", float, "horizontal flip probability"),
    ("--brightness", "brightness", float, "brightness jitter strength"),
    ("--contrast", "contrast", float, "contrast jitter strength"),
    ("--blur", "blur", float, "Gaussian blur probability"),
    ("--seed", "seed", int, "random seed (sampling, augmentation, init)"),
    ("--accelerator", "accelerator", str, "auto | cpu | gpu"),
    ("--devices", "devices", str, "devices per node (number or auto)"),
    ("--num-nodes", "num_nodes", int, "nodes (torchrun / SLURM)"),
    ("--strategy", "strategy", str, "Lightning strategy: auto | ddp | ddp_fork | ..."),
    ("--precision", "precision", str, "auto (the fastest safe one for this hardware: bf16 only on CPUs with native bf16, timed once per machine; bf16/fp16 mixed on GPU) | 32-true | bf16-mixed | 16-mixed"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes (0: main process)"),
    ("--threads", "threads", int, "torch CPU threads (0: all cores)"),
    ("--checkpoint-every-n-steps", "checkpoint_every_n_steps", int, "extra checkpoint every N steps"),
    ("--monitor-fraction", "monitor_fraction", float, "share of labelled patients held out for the kNN monitor (0: off)"),
    ("--monitor-max", "monitor_max", int, "cap on kNN monitor bank/query frames"),
    ("--monitor-granularity", "monitor_granularity", str, "labels the kNN monitor scores: coarse | fine (default: --granularity)"),
    ("--log-every-n-steps", "log_every_n_steps", int, "logging interval in steps"),
    ("--logger", "logger", str, "tensorboard | csv | wandb | mlflow; repeatable (wandb/mlflow: pip install 'awcl[wandb]' / 'awcl[mlflow]')"),
    ("--tracker-project", "tracker_project", str, "W&B project / MLflow experiment name"),
    ("--tracker-uri", "tracker_uri", str, "MLflow tracking URI ('': $MLFLOW_TRACKING_URI or sqlite:///RUN/logs/mlflow.db)"),
]
_REPEATABLE = ("data", "logger")  # flags given several times build a list
_CHOICES = {
    "method": list(METHODS),
    "granularity": ["coarse", "fine"],
    "clpi_by": ["video", "patient"],
}


def config_from_args(args: argparse.Namespace):
    from awcl.train.pretrain import PretrainConfig

    base: dict[str, Any] = {}
    if args.config:
        base = PretrainConfig.from_yaml(args.config).to_dict()
    if args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        base.update(yaml.safe_load((Path(args.out) / "config.yaml").read_text()) or {})
    for _, name, _, _ in _FLAGS:
        v = getattr(args, name)
        if v is not None:
            base[name] = v[0] if name == "data" and len(v) == 1 else v
    if args.ignore_label:
        base["ignore_labels"] = list(args.ignore_label)
    if args.no_progress:
        base["progress"] = False
    for name in ("channels_last", "compile"):
        if getattr(args, name, None) is not None:
            base[name] = getattr(args, name)
    base["resume"] = bool(args.resume)
    if not base.get("data"):
        raise AwclError("--data is required (a prepared dataset directory)")
    if not base.get("out"):
        raise AwclError("--out is required (the run directory)")
    return PretrainConfig.from_dict(base)


def _run(args: argparse.Namespace) -> int:
    from awcl.train.pretrain import pretrain

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
    from awcl.train.pretrain import PretrainConfig

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(PretrainConfig)}  # fmt: skip
    p = sub.add_parser(
        "pretrain",
        help=f"pretrain an encoder ({', '.join(METHODS)})",
        description="Pretrain a ResNet-18 encoder on a prepared dataset. Defaults are the paper's.",
    )
    for flag, name, typ, text in _FLAGS:
        d = defaults.get(name)
        if isinstance(d, tuple):
            d = ",".join(f"{v:g}" for v in d) if name == "crop_scale" else "x".join(str(v) for v in d)
        if isinstance(d, list):
            d = " ".join(str(v) for v in d) or "none"
        if d == "":
            d = "''"
        more = {"action": "append"} if name in _REPEATABLE else {}
        p.add_argument(flag, dest=name, type=typ, default=None, choices=_CHOICES.get(name),
                       help=f"{text} (default: {d})", **more)
    p.add_argument("--ignore-label", action="append", default=[], metavar="LABEL",
                   help="label counted as unlabelled (repeatable; adds to the dataset's own)")
    p.add_argument("--config", help="YAML file of PretrainConfig keys (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
                   default=None, help="NHWC memory format (default: with the precision choice)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the encoder (minutes of start-up; measured in benchmarks/)")
    p.set_defaults(func=_run)
