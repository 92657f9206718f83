"""The pretraining lr schedule's effect on the kNN monitor: its dip and its crossover.

Prepares the demo's pretraining corpus (phantom sweeps through ``prepare videos``, 15 %
labelled, 64x80 unless ``--size``), then pretrains each ``--methods`` with each
``--schedules`` for ``--steps`` optimiser steps, everything else equal (Adam peak lr 1e-3,
batch 32, crop 0.08-1), and reads the kNN monitor (held-out patients of the pretraining corpus,
fine labels) every ``--every`` steps. Prints one row per run: the curve, its lowest point, and
the crossover (the first monitored step from which the accuracy stays at or above its step-0,
random-init value). The default schedule is chosen on these curves: they never touch a
downstream test fold.

    python benchmarks/bench_schedule.py                       # 600 steps, monitor every 60
    python benchmarks/bench_schedule.py --steps 40 --every 20 --scans 8   # smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import awcl  # noqa: F401  (torchvision shim)
from awcl.data.phantom import PhantomConfig, make_phantom
from awcl.options import parse_size
from awcl.train.pretrain import PretrainConfig, crossover_step, pretrain

METHODS = {"simclr": {"method": "simclr"},
           "awcl-fine": {"method": "awcl", "granularity": "fine", "anatomy_ratio": 0.75}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--scans", type=int, default=48)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--methods", default="simclr,awcl-fine")
    ap.add_argument("--schedules", default="constant,warmup-cosine")
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args()
    size = parse_size(args.size)
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    print(f"# {cpu.strip()}; {args.steps} steps, monitor every {args.every}, {args.size}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_phantom(Path(tmp) / "corpus", PhantomConfig(
            seed=0, scans=args.scans, frames_per_scan=args.frames, size=size,
            labelled_fraction=0.15, masks="none", prepare="videos"))
        for name in args.methods.split(","):
            for sched in args.schedules.split(","):
                out = Path(tmp) / f"{name}-{sched}"
                t0 = time.perf_counter()
                pretrain(PretrainConfig(
                    data=str(data), out=str(out), size=size, epochs=1000, max_steps=args.steps,
                    lr_schedule=sched, warmup=args.warmup, seed=args.seed,
                    monitor_fraction=0.2, monitor_granularity="fine", monitor_max=256,
                    monitor_every_n_steps=args.every, logger=["csv"], progress=False,
                    **METHODS[name]))
                s = json.loads((out / "summary.json").read_text())
                curve = [(int(a), float(b)) for a, b in s["knn_curve"]]
                low = min(curve[1:], key=lambda p: p[1]) if len(curve) > 1 else curve[0]
                row = {"method": name, "schedule": sched, "seconds": round(time.perf_counter() - t0),
                       "curve": curve, "init": curve[0][1], "final": curve[-1][1],
                       "low": low, "crossover": crossover_step(curve)}
                rows.append(row)
                pts = " ".join(f"{st}:{a:.3f}" for st, a in curve)
                print(f"{name:10s} {sched:14s} init {row['init']:.3f} final {row['final']:.3f} "
                      f"low {low[1]:.3f}@{low[0]} crossover {row['crossover']} "
                      f"({row['seconds']} s)\n    {pts}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
