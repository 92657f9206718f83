"""``awcl prepare phantom``: the command line over :func:`make_phantom` / :func:`make_phantom_videos`."""

from __future__ import annotations

import argparse
import time

from awcl.data.phantom.config import PhantomConfig
from awcl.data.phantom.video import make_phantom_videos
from awcl.data.phantom.writing import make_phantom
from awcl.options import cli_type, parse_size


# ---------------------------------------------------------------------------- CLI
def _handler(args: argparse.Namespace) -> int:
    cfg = PhantomConfig(
        seed=args.seed,
        scans=args.scans,
        frames_per_scan=args.frames_per_scan,
        size=args.size,
        labelled_fraction=args.labelled_fraction,
        second_scan_fraction=args.second_scan_fraction,
        masks=args.masks,
        text=not args.no_text,
        prepare="videos" if args.via_videos else "direct",
    )
    t0 = time.perf_counter()
    if args.videos:
        paths = make_phantom_videos(args.out, cfg)
        print(f"phantom: wrote {len(paths)} raw sweep videos to {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    from awcl.data.store import open_dataset, summarize

    out = make_phantom(args.out, cfg)
    print(f"phantom: built in {time.perf_counter() - t0:.1f} s")
    print(summarize(open_dataset(out)))
    return 0


def register_prepare(subparsers: argparse._SubParsersAction) -> None:
    d = PhantomConfig()
    p = subparsers.add_parser(
        "phantom",
        help="generate the built-in synthetic ultrasound corpus (sweeps, few labels, head masks)",
        description="Generate a deterministic synthetic second-trimester-like ultrasound corpus "
        "as a prepared dataset (or, with --videos, as raw uncropped .mp4 sweeps).",
    )
    p.add_argument("--out", required=True, help="output directory (prepared dataset, or videos with --videos)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--scans", type=int, default=d.scans, help=f"number of scans/videos (default {d.scans})")
    p.add_argument("--frames-per-scan", type=int, default=d.frames_per_scan, help=f"frames per sweep (default {d.frames_per_scan})")
    p.add_argument("--size", type=cli_type(parse_size, minimum=8), default=d.size, help="frame size HxW (default 224x288)")
    p.add_argument("--labelled-fraction", type=float, default=d.labelled_fraction, help=f"share of labelled frames (default {d.labelled_fraction})")
    p.add_argument("--second-scan-fraction", type=float, default=d.second_scan_fraction, help=f"share of scans that are a patient's second scan (default {d.second_scan_fraction})")
    p.add_argument("--masks", choices=["all", "brain", "none"], default=d.masks, help="head masks for every frame (all-zero without a head), brain frames only, or none (default all)")
    p.add_argument("--no-text", action="store_true", help="leave out the burned-in scanner text/UI")
    p.add_argument("--via-videos", action="store_true", help="build the dataset through the user's path: raw scanner-screen videos -> prepare videos with auto-crop (no burned-in text left)")
    p.add_argument("--videos", action="store_true", help="write raw uncropped sweeps as .mp4 into --out instead of a prepared dataset")
    p.set_defaults(func=_handler)
