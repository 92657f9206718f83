"""A normal run prints no third-party warning; --verbose shows them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_pretrain import make_tiny

WORDS = ("Warning", "deprecated", "DeprecationWarning", "FutureWarning")


def _pretrain(tmp_path: Path, *extra: str) -> str:
    data = make_tiny(tmp_path / "tiny")
    r = subprocess.run(
        [sys.executable, "-m", "awcl", "pretrain", "--data", str(data), "--out", str(tmp_path / f"run{len(extra)}"),
         "--max-steps", "2", "--batch-size", "8", "--size", "32x40", "--num-workers", "0", "--threads", "1",
         "--no-progress", *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout + r.stderr


def test_pretrain_prints_no_warning_line_by_default(tmp_path: Path) -> None:
    out = _pretrain(tmp_path)
    bad = [line for line in out.splitlines() if any(w in line for w in WORDS)]
    assert not bad, bad


def test_verbose_shows_the_dependency_warnings(tmp_path: Path) -> None:
    out = _pretrain(tmp_path, "--verbose")
    assert "LeafSpec" in out  # lightning's use of torch's deprecated LeafSpec, hidden by default
