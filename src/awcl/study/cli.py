"""``awcl study CONFIG --out DIR``, ``awcl report DIR`` and ``awcl demo``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from collections.abc import Iterator

from awcl.errors import AwclError
from awcl.options import positive_int
from awcl.study.config import load_config
from awcl.study.demo import DEFAULT_OUT, demo_config, run_demo
from awcl.study.report import summary_text, write_report
from awcl.study.runner import run_study


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Keep per-step INFO logs of the runs out of the progress bar unless -v was given; route
    the remaining log lines through tqdm so they do not break the bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    if verbose:
        with logging_redirect_tqdm():
            yield
        return
    names = ("awcl", "lightning", "lightning.pytorch", "lightning.fabric")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # library deprecation/perf hints from inside the runs would break the bar
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", module=r"torch(\.|$)")
            with logging_redirect_tqdm():
                yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def _finish(out: str, t0: float) -> None:
    files = write_report(out)
    print(summary_text(out))
    print(f"\nreport: {files.html.resolve()}")
    print(f"        {files.markdown.resolve()}  (results: {files.csv.name})")
    print(f"total time: {time.perf_counter() - t0:.0f} s")


def _launcher(args: argparse.Namespace):
    from pathlib import Path

    from awcl.study.launch import Cluster, make_launcher

    extra: dict[str, str] = {}
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AwclError(f"--slurm-option {item!r}: expected KEY=VALUE (an sbatch option)")
        extra[key.strip()] = value
    cluster = {}
    if args.launcher != "local":
        cluster = {"timeout_min": args.slurm_time, "cpus_per_task": args.slurm_cpus,
                   "gpus_per_node": args.slurm_gpus, "mem_gb": args.slurm_mem,
                   "partition": args.slurm_partition, "setup": list(args.slurm_setup),
                   "additional": extra}  # fmt: skip
    launcher = make_launcher(args.launcher, args.jobs, folder=Path(args.out) / "jobs",
                             verbose=getattr(args, "verbose", False), **cluster)  # fmt: skip
    if isinstance(launcher, Cluster):
        launcher.executor()  # a missing submitit / unknown cluster fails before any run
    return launcher


def _plan(args: argparse.Namespace, cfg) -> int:
    """``--plan``: the runs and their estimated times; nothing runs (``--prepare``: the data
    runs do, so the estimate counts real frames)."""
    from awcl.study.plan import estimate_study, plan_text

    if args.prepare:
        with _quiet(getattr(args, "verbose", False)):
            run_study(cfg, args.out, progress=not args.no_progress, kinds=("data",))
    print(plan_text(estimate_study(cfg, args.out, probe=args.time)))
    return 0


def _study(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg = load_config(args.config, args.set)
    if args.plan:
        return _plan(args, cfg)
    if args.prepare or args.time:
        raise AwclError("--prepare and --time go with --plan")
    launcher = _launcher(args)
    with _quiet(getattr(args, "verbose", False)):
        run_study(cfg, args.out, progress=not args.no_progress, launcher=launcher)
    _finish(args.out, t0)
    return 0


def _report(args: argparse.Namespace) -> int:
    files = write_report(args.dir)
    print(f"report: {files.html.resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.plan:
        return _plan(args, demo_config(args.fast, args.set))
    if args.prepare or args.time:
        raise AwclError("--prepare and --time go with --plan")
    with _quiet(getattr(args, "verbose", False)):
        run_demo(args.out, fast=args.fast, overrides=args.set, progress=not args.no_progress)
    _finish(args.out, t0)
    return 0


def _plan_options(p: argparse.ArgumentParser) -> None:
    pl = p.add_argument_group("sizing a study first")
    pl.add_argument("--plan", action="store_true",
                    help="list every run the study would make (cached ones marked) with its estimated "
                    "time on this machine, and the total; runs nothing")
    pl.add_argument("--prepare", action="store_true",
                    help="with --plan: prepare the datasets first (the data runs, cached as in a "
                    "study) so the estimate counts their real frames")
    pl.add_argument("--time", action="store_true",
                    help="with --plan: time the training step once at each frame size not timed on "
                    "this machine yet (the precision probe, seconds per size, cached)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of pretraining + downstream runs (cached, resumable) and write a report",
        description="Run every pretraining and downstream run of a study config once (finished "
        "runs are cached under OUT/runs and skipped on a re-run), then write OUT/report.html, "
        "OUT/report.md and OUT/results.csv. CONFIG is a YAML file or a shipped name "
        "(demo, pocus, hc18, pocus2hc18).",
    )
    p.add_argument("config", help="study YAML file, or demo | pocus | hc18 | pocus2hc18")
    p.add_argument("--out", required=True, help="study directory (created; re-use it to resume)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="set a variable (data_root=../shared/data) or a key (pretrain.epochs=5, "
                   "tasks.0.epochs=70); repeatable")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _plan_options(p)
    g = p.add_argument_group("where runs execute (results and cache keys are the same)")
    g.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="runs at once: local processes, each pinned to its share of the cores "
                   "(default: 1); with a cluster launcher, jobs queued at once (default: no limit)")
    g.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: this machine; slurm: one SLURM job per run (submitit; OUT must be "
                   "on a shared file system); submitit-local: the same jobs as local processes")
    g.add_argument("--slurm-partition", default=None, help="SLURM partition")
    g.add_argument("--slurm-time", type=positive_int, default=24 * 60, metavar="MIN", help="time limit per job in minutes")
    g.add_argument("--slurm-cpus", type=positive_int, default=8, help="CPUs per job")
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job")
    g.add_argument("--slurm-mem", type=float, default=32, metavar="GB", help="memory per job")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="CMD",
                   help="shell line run before each job, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="further sbatch option, e.g. account=myproj (repeatable)")  # fmt: skip
    p.set_defaults(func=_study)

    if "export" in sub.choices:  # awcl export (awcl.train) lists a study's results through the study
        from awcl.study.downstream import encoder_results

        sub.choices["export"].set_defaults(downstream=encoder_results)

    r = sub.add_parser("report", help="(re)write the report of a study directory")
    r.add_argument("dir", help="study directory written by `awcl study` or `awcl demo`")
    r.set_defaults(func=_report)

    d = sub.add_parser(
        "demo",
        help="build the phantom, run a small study on it and write the report (minutes on a CPU)",
    )
    d.add_argument("--out", default=DEFAULT_OUT, help=f"study directory (default: {DEFAULT_OUT})")
    d.add_argument("--fast", action="store_true", help="a smaller smoke version (tiny frames, 1 epoch)")
    d.add_argument("--set", action="append", default=[], metavar="K=V", help="override a demo setting or variable (e.g. pre_epochs=8, scale=paper)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _plan_options(d)
    d.set_defaults(func=_demo)
