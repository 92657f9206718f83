"""``awcl prepare <source> ...`` and ``awcl info DIR``."""

from __future__ import annotations

import argparse

from awcl.data.ingest_cli import register_prepare as register_ingest
from awcl.data.recipes import RECIPES
from awcl.data.store import merge_datasets, open_dataset, summarize
from awcl.options import parse_size


def _info(args: argparse.Namespace) -> int:
    print(summarize(open_dataset(args.dir)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    size = parse_size(args.size, minimum=8) if args.size else None
    out = merge_datasets(args.datasets, args.out, names=args.name or None, size=size)
    ds = open_dataset(out)
    print(f"merged {len(args.datasets)} datasets into {out}: {len(ds)} frames of "
          f"{ds.size[0]}x{ds.size[1]}")  # fmt: skip
    for s in ds.meta["sources"]:
        print(f"  {s['name']:<20} {s['frames']:>8} frames, {s['videos']:>5} videos, "
              f"{s['patients']:>5} patients  ({s['path']})")  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser("prepare", help="turn a source into a prepared dataset")
    prep_sub = prep.add_subparsers(dest="source", metavar="SOURCE", required=True)
    RECIPES["phantom"].register_prepare(prep_sub)
    register_ingest(prep_sub)  # videos, images: the generic adapters
    for name, recipe in RECIPES.items():
        if name != "phantom":
            recipe.register_prepare(prep_sub)
    merge = prep_sub.add_parser(
        "merge",
        help="the union of several prepared datasets (ids qualified by source)",
        description="Write one prepared dataset holding every frame of DATASET...: frame, video "
        "and patient ids become <name>/<id> so sources never collide; labels are kept and the "
        "fine->coarse hierarchies combined; frames are resized to the first dataset's size "
        "(or --size). `awcl pretrain --data A --data B` builds the same union by itself.",
    )
    merge.add_argument("datasets", nargs="+", metavar="DATASET", help="prepared dataset directories")
    merge.add_argument("--out", required=True, help="output dataset directory")
    merge.add_argument("--name", action="append", default=[], metavar="NAME",
                       help="name of each source, in order (default: the directory names)")  # fmt: skip
    merge.add_argument("--size", default=None, metavar="HxW",
                       help="frame size of the union (default: the first dataset's)")  # fmt: skip
    merge.set_defaults(func=_merge)
    info = sub.add_parser("info", help="counts per label, video and patient of a prepared dataset")
    info.add_argument("dir", help="prepared dataset directory")
    info.set_defaults(func=_info)
