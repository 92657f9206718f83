"""Ingestion speed on the real POCUS videos: ``awcl prepare videos`` end to end.

Decodes every frame of every video (decoding is the cost), keeps every 8th, detects the
ultrasound region, resizes to 224x288 and writes a prepared dataset into a temporary folder.

    .venv/bin/python benchmarks/bench_ingest.py            # all 124 videos
    .venv/bin/python benchmarks/bench_ingest.py --limit 5  # a quick check
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from awcl.data.ingest import PrepareStats, parse_crop, prepare_videos
from awcl.options import cli_type, parse_size

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus" / "pocus_videos"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"video folder (default {DEFAULT_SRC})")
    ap.add_argument("--limit", type=int, default=None, help="only the first N videos (sorted)")
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--size", type=cli_type(parse_size, minimum=8), default=(224, 288))
    ap.add_argument("--crop", type=cli_type(parse_crop), default="auto")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"bench_ingest: {args.src} not found (needs ../shared/data/pocus)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stats = PrepareStats()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        t0 = time.perf_counter()
        prepare_videos(
            args.src, Path(tmp) / "out", every=args.every, size=args.size, crop=args.crop,
            limit=args.limit, stats=stats,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    print(
        f"videos: {stats.videos} prepared, {stats.skipped} skipped (every={args.every}, "
        f"size={args.size[0]}x{args.size[1]}, crop={args.crop})"
    )
    print(f"frames: {stats.frames_decoded} decoded, {stats.frames_kept} kept")
    print(f"seconds: {seconds:.2f}")
    print(
        f"throughput: {stats.frames_decoded / seconds:.1f} decoded frames/s, "
        f"{stats.frames_kept / seconds:.1f} kept frames/s, {stats.videos / seconds:.2f} videos/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
