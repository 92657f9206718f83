"""``awcl prepare <source> ...`` and ``awcl info DIR``."""

from __future__ import annotations

import argparse
import importlib

from awcl.data.store import open_dataset, summarize

# Modules that add a ``prepare`` sub-command through ``register_prepare(subparsers)``.
PREPARE_MODULES = [
    "awcl.data.phantom",
    "awcl.data.ingest",
    "awcl.data.recipes.hc18",
    "awcl.data.recipes.pocus",
    "awcl.data.recipes.fetal_planes",
    "awcl.data.recipes.busi",
]


def _info(args: argparse.Namespace) -> int:
    print(summarize(open_dataset(args.dir)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser("prepare", help="turn a source into a prepared dataset")
    prep_sub = prep.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for module in PREPARE_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.register_prepare(prep_sub)
    info = sub.add_parser("info", help="counts per label, video and patient of a prepared dataset")
    info.add_argument("dir", help="prepared dataset directory")
    info.set_defaults(func=_info)
