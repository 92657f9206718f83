"""The suite cannot hang: a planted hang fails with a stack, and a hung worker is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _procs import run_workers

PLANTED = textwrap.dedent("""
    import time

    def test_planted_hang():
        time.sleep(600)  # far past the timeout
""")


def test_a_planted_hang_fails_with_a_stack(tmp_path: Path) -> None:
    (tmp_path / "test_planted.py").write_text(PLANTED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's settings
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=3",
         str(tmp_path / "test_planted.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # failed, not interrupted or passed
    assert "Timeout" in out and "1 failed" in out
    assert "test_planted_hang" in out and "time.sleep(600)" in out  # the stack says where


def test_the_project_sets_a_per_test_timeout(pytestconfig) -> None:
    assert float(pytestconfig.getini("timeout")) > 0


def _sleeper(rank: int, pidfile: str) -> None:
    Path(f"{pidfile}.{rank}").write_text(str(os.getpid()))
    if rank == 1:
        time.sleep(600)  # a worker that never finishes


def _failing(rank: int) -> None:
    if rank == 0:
        raise RuntimeError("planted failure")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (it only waits to be reaped)
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z"


def test_a_hung_worker_is_killed_and_fails_the_test(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "pid")
    with pytest.raises(pytest.fail.Exception, match=r"rank\(s\) \[1\] still running"):
        run_workers(_sleeper, (pidfile,), nprocs=2, timeout=10)
    pid = int(Path(f"{pidfile}.1").read_text())
    assert _gone(pid)


def test_a_failing_worker_fails_the_test() -> None:
    with pytest.raises(pytest.fail.Exception, match="failed"):
        run_workers(_failing, (), nprocs=2, timeout=60)
