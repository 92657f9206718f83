"""``awcl demo``: the shipped demo study on the synthetic phantom, end to end, with a report.

It builds two phantoms through the video-ingestion path (a pretraining corpus with 15%
labelled frames and a separate, fully labelled downstream corpus with head masks), pretrains
a handful of methods, measures them with kNN and linear probes (several downstream seeds, a
label-efficiency sweep), full fine-tuning and segmentation, embeds features for t-SNE and
writes ``report.html`` with paired-bootstrap intervals. Every size is a variable of
``configs/demo.yaml`` (``overrides``: ``--set`` items); ``fast`` is a smaller smoke version.
"""

from __future__ import annotations

import os
from pathlib import Path

from awcl.study.config import builtin_config, load_config
from awcl.study.report import ReportFiles, write_report
from awcl.study.runner import Executors, run_study

DEFAULT_OUT = "awcl-demo"

# --fast: small frames and corpora, one pretraining epoch, three methods, two folds, one
# downstream seed (a minute or two; a smoke test of every part of the report, not evidence).
FAST_OVERRIDES = [
    "size=[48, 64]",
    "pre_scans=10",
    "pre_frames=24",
    "pre_epochs=1",
    "methods=[random, simclr, awcl-fine]",
    "ds_scans=24",
    "ds_frames=24",
    "folds=2",
    "probe_seeds=[0]",
    "train_patients=[4, all]",
    "ft_epochs=1",
    "embed.max_samples=120",
]


def demo_config_path() -> Path:
    path = builtin_config("demo")
    assert path is not None, "awcl/configs/demo.yaml is missing from the installation"
    return path


def demo_config(fast: bool = False, overrides: list[str] | None = None):
    """The demo's study config (``fast``: the smoke version; ``overrides``: ``--set`` items)."""
    cfg = load_config(demo_config_path(), [*(FAST_OVERRIDES if fast else []), *(overrides or [])])
    if fast:
        cfg.name = "demo-fast"
    return cfg


def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    fast: bool = False,
    overrides: list[str] | None = None,
    executors: Executors | None = None,
    progress: bool = True,
) -> ReportFiles:
    """Run (or resume) the demo study in ``out`` and write its report."""
    cfg = demo_config(fast, overrides)
    run_study(cfg, out, executors=executors, progress=progress)
    return write_report(out)
