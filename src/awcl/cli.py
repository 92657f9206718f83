"""The ``awcl`` command. Every sub-command is a thin call into the Python API.

Each step package registers its own sub-commands (``register(subparsers)``), so the command
line follows the data flow: prepare/info -> pretrain -> finetune/embed -> study/demo.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from awcl import __version__
from awcl.errors import AwclError

# (module, function) pairs, in the order of the flow; each adds its sub-commands.
_REGISTRARS = [
    ("awcl.data.cli", "register"),
    ("awcl.train.cli", "register"),
    ("awcl.evaluate.cli", "register"),
    ("awcl.study.cli", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awcl",
        description="Anatomy-aware contrastive pretraining for ultrasound, baselines and transfer studies.",
    )
    parser.add_argument("--version", action="version", version=f"awcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module, func in _REGISTRARS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue  # step not installed in this build
        getattr(mod, func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        rc = args.func(args)
    except AwclError as err:
        print(f"awcl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("awcl: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
