"""Pretraining choices against the kNN monitor: the lr schedule, the anatomy ratio, the seed.

Prepares the demo's pretraining corpus (phantom sweeps through ``prepare videos``, 15 %
labelled, 64x80 unless ``--size``; or reads a prepared one with ``--data``), then pretrains
each ``--methods`` variant with each ``--schedules`` and each ``--seeds`` for ``--steps``
optimiser steps, everything else equal (Adam peak lr 1e-3, batch 32, crop 0.08-1), and reads
the kNN monitor (held-out patients of the pretraining corpus, fine labels; coarse labels on the
same frames beside it) every ``--every`` steps. Prints one row per run (the curve, its lowest
point, the crossover: the first monitored step from which the accuracy stays at or above its
step-0, random-init value), then one line per variant over its seeds. Every choice made from
these figures (the default schedule, the demo's anatomy ratio) is made on the monitor, which
never touches a downstream test fold.

A variant is a method name, optionally with ``@R`` for the anatomy ratio of an awcl variant:

    python benchmarks/bench_schedule.py                       # 600 steps, monitor every 60
    python benchmarks/bench_schedule.py --schedules warmup-cosine --seeds 0,1 \\
        --methods simclr,awcl-coarse@0.25,awcl-coarse@0.5,awcl-coarse@0.75   # the ratio
    python benchmarks/bench_schedule.py --steps 40 --every 20 --scans 8   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import awcl  # noqa: F401  (torchvision shim)
from awcl.data.phantom import PhantomConfig, make_phantom
from awcl.evaluate.summary import monitor_change
from awcl.options import parse_size
from awcl.train.pretrain import PretrainConfig, crossover_step, pretrain

BASE = {"simclr": {"method": "simclr"},
        "awcl-fine": {"method": "awcl", "granularity": "fine", "anatomy_ratio": 0.75},
        "awcl-coarse": {"method": "awcl", "granularity": "coarse", "anatomy_ratio": 0.75},
        "clpi": {"method": "clpi"},
        "supervised-fine": {"method": "supervised", "granularity": "fine"}}


def variant(spec: str) -> dict[str, Any]:
    """``awcl-coarse@0.5`` -> the PretrainConfig fields of that variant."""
    name, _, ratio = spec.partition("@")
    if name not in BASE:
        raise SystemExit(f"--methods: unknown {name!r} (one of {', '.join(BASE)})")
    fields = dict(BASE[name])
    if ratio:
        if fields["method"] != "awcl":
            raise SystemExit(f"--methods: {spec!r}: only awcl variants take @ratio")
        fields["anatomy_ratio"] = float(ratio)
    return fields


def machine() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    out = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    return out.split(":", 1)[-1].strip() or platform.processor()


def read_monitor(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """monitor.csv -> (fine curve, coarse curve) as [(step, accuracy)]."""
    fine, coarse = [], []
    for r in csv.DictReader(path.open()):
        if r.get("knn_acc"):
            fine.append((int(r["step"]), float(r["knn_acc"])))
        if r.get("knn_acc_coarse"):
            coarse.append((int(r["step"]), float(r["knn_acc_coarse"])))
    return fine, coarse


def change_interval(summary: Path) -> list[float] | None:
    """The run's final - step 0 kNN accuracy with its paired 95 % bootstrap over the held-out
    patients (summary.json's ``knn_hits``): [difference, lo, hi, patients]."""
    change = monitor_change(json.loads(summary.read_text()).get("knn_hits")) if summary.exists() else None
    if change is None:
        return None
    d, lo, hi, g = change
    return [round(d, 3), round(lo, 3), round(hi, 3), g]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--scans", type=int, default=48)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--data", default="", help="a prepared pretraining corpus (default: make the demo's)")
    ap.add_argument("--methods", default="simclr,awcl-fine")
    ap.add_argument("--schedules", default="constant,warmup-cosine")
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--seeds", default="0", help="pretraining seeds, comma-separated")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--monitor-fraction", type=float, default=0.2,
                    help="share of labelled patients held out for the monitor (the demo's 0.2)")
    ap.add_argument("--json", default="", help="also write the rows here (after every run)")
    args = ap.parse_args()
    size = parse_size(args.size)
    specs = [s for s in args.methods.split(",") if s]
    for s in specs:
        variant(s)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# {machine()}; {args.steps} steps, monitor every {args.every}, {args.size}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_phantom(Path(tmp) / "corpus", PhantomConfig(
            seed=0, scans=args.scans, frames_per_scan=args.frames, size=size,
            labelled_fraction=0.15, masks="none", prepare="videos"))
        for spec in specs:
            for sched in args.schedules.split(","):
                for seed in seeds:
                    out = Path(tmp) / f"{spec}-{sched}-{seed}"
                    t0 = time.perf_counter()
                    pretrain(PretrainConfig(
                        data=str(data), out=str(out), size=size, epochs=1000, max_steps=args.steps,
                        lr_schedule=sched, warmup=args.warmup, seed=seed,
                        accelerator=args.accelerator, num_workers=args.num_workers,
                        monitor_fraction=args.monitor_fraction, monitor_granularity="fine",
                        monitor_max=256,
                        monitor_every_n_steps=args.every, logger=["csv"], progress=False,
                        **variant(spec)))
                    curve, coarse = read_monitor(out / "monitor.csv")
                    low = min(curve[1:], key=lambda p: p[1]) if len(curve) > 1 else curve[0]
                    row = {"method": spec, "schedule": sched, "seed": seed,
                           "seconds": round(time.perf_counter() - t0), "curve": curve,
                           "coarse_curve": coarse, "init": curve[0][1], "final": curve[-1][1],
                           "last3": mean(a for _, a in curve[-3:]), "low": low,
                           "crossover": crossover_step(curve),
                           "coarse_init": coarse[0][1] if coarse else None,
                           "coarse_final": coarse[-1][1] if coarse else None,
                           "change_ci": change_interval(out / "summary.json")}
                    rows.append(row)
                    pts = " ".join(f"{st}:{a:.3f}" for st, a in curve)
                    print(f"{spec:16s} {sched:14s} seed {seed} init {row['init']:.3f} final "
                          f"{row['final']:.3f} last3 {row['last3']:.3f} low {low[1]:.3f}@{low[0]} "
                          f"crossover {row['crossover']} ({row['seconds']} s) final - step 0 "
                          f"95% CI {row['change_ci']}\n    {pts}", flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n# per variant over seeds: mean final - step 0 (fine views), runs above step 0 at the "
          "end, crossovers; coarse anatomies step 0 -> final")
    for spec in specs:
        for sched in args.schedules.split(","):
            rs = [r for r in rows if r["method"] == spec and r["schedule"] == sched]
            gain = mean(r["final"] - r["init"] for r in rs)
            above = sum(r["final"] > r["init"] for r in rs)
            cg = [r["coarse_final"] - r["coarse_init"] for r in rs if r["coarse_init"] is not None]
            print(f"{spec:16s} {sched:14s} fine {gain:+.3f} (last3 "
                  f"{mean(r['last3'] - r['init'] for r in rs):+.3f}), {above}/{len(rs)} above, "
                  f"crossover {[r['crossover'] for r in rs]}, coarse "
                  f"{(f'{mean(cg):+.3f}' if cg else '-')}")


if __name__ == "__main__":
    main()
