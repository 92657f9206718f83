"""``awcl demo``: the shipped demo study on the synthetic phantom, end to end, with a report.

It builds two phantoms (a pretraining corpus with 15% labelled frames and a separate, fully
labelled downstream corpus with head masks), pretrains a handful of methods with short
schedules, runs classification (full + partial) and segmentation, embeds features for t-SNE
and writes ``report.html``. Sized for a 2-core CPU; ``fast`` is a smaller smoke version.
"""

from __future__ import annotations

import os
from pathlib import Path

from awcl.study.config import builtin_config, load_config
from awcl.study.report import ReportFiles, write_report
from awcl.study.runner import Executors, run_study

DEFAULT_OUT = "awcl-demo"

# --fast: tiny frames, one epoch, three methods, two folds (a minute or two; a smoke test).
FAST_OVERRIDES = [
    "pretrain_data.params.size=[64, 80]",
    "pretrain_data.params.scans=8",
    "pretrain_data.params.frames_per_scan=24",
    "tasks.0.dataset.params.size=[64, 80]",
    "tasks.1.dataset.params.size=[64, 80]",
    "methods=[random, simclr, awcl-coarse]",
    "pretrain.epochs=1",
    "tasks.0.epochs=1",
    "tasks.1.epochs=1",
    "tasks.0.folds=2",
    "tasks.1.folds=2",
    "embed.max_samples=120",
]


def demo_config_path() -> Path:
    path = builtin_config("demo")
    assert path is not None, "awcl/configs/demo.yaml is missing from the installation"
    return path


def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    fast: bool = False,
    overrides: list[str] | None = None,
    executors: Executors | None = None,
    progress: bool = True,
) -> ReportFiles:
    """Run (or resume) the demo study in ``out`` and write its report."""
    cfg = load_config(demo_config_path(), [*(FAST_OVERRIDES if fast else []), *(overrides or [])])
    if fast:
        cfg.name = "demo-fast"
    run_study(cfg, out, executors=executors, progress=progress)
    return write_report(out)
