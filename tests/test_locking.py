"""Directory locks: a second study on a locked --out is refused; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from awcl.cli import main
from awcl.errors import AwclError
from awcl.locking import LockedError, dir_lock
from awcl.study.config import parse_config
from awcl.study.runner import run_study
from test_launch import STAND_INS
from test_study import base_raw

HOLD = """
import sys, time
from awcl.locking import dir_lock
with dir_lock(sys.argv[1], "study directory"):
    open(sys.argv[2], "w").close()  # tell the test the lock is held
    time.sleep(120)
"""


@pytest.fixture()
def holder(tmp_path):
    """A subprocess holding the study lock of tmp_path/'study' until the test ends."""
    out = tmp_path / "study"
    yield from _hold(HOLD, out / ".awcl-study.lock", tmp_path / "ready", out)


def _hold(script: str, target, ready, out):
    """Run ``script`` holding a lock on ``target`` until the test ends; yields (out, pid)."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(target), str(ready)])
    try:
        for _ in range(600):  # until the child says it holds the lock (no timing assumption)
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "lock holder did not start"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_second_study_on_a_locked_out_is_refused(holder, tmp_path, capsys):
    out, pid = holder
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(base_raw()))
    (out / "runs" / "unfinished").mkdir(parents=True)  # the first study's run in progress
    assert main(["study", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("awcl: error:") and "\n" not in err and "Traceback" not in err
    assert f"pid {pid}" in err and socket.gethostname() in err
    assert (out / "runs" / "unfinished").is_dir()  # nothing of the first study was deleted
    with pytest.raises(LockedError):
        run_study(parse_config(base_raw()), out, STAND_INS, progress=False, echo=lambda s: None)


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is no longer alive
    out = tmp_path / "study"
    out.mkdir()
    lock = out / ".awcl-study.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
    res = run_study(parse_config(base_raw()), out, STAND_INS, progress=False, echo=lambda s: None)
    assert len(res.computed) == len(res.plan.runs) and not lock.exists()  # released after use


def test_lock_of_another_host_is_not_broken(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": 0}))
    with pytest.raises(AwclError, match=r"in use by pid 1 on host elsewhere\.example"):
        with dir_lock(lock, "run folder"):
            pass
    with dir_lock(tmp_path / "y.lock", "run folder") as held:
        assert json.loads(held.read_text())["pid"] > 0
    assert not (tmp_path / "y.lock").exists()


# ------------------------------------------------------------- every command that writes
HOLD_OUT = """
import sys, time
from awcl.locking import out_lock
with out_lock(sys.argv[1], "held"):
    open(sys.argv[2], "w").close()
    time.sleep(120)
"""


@pytest.fixture()
def out_holder(tmp_path):
    """A subprocess holding the output lock of tmp_path/'out' until the test ends."""
    out = tmp_path / "out"
    yield from _hold(HOLD_OUT, out, tmp_path / "ready", out)


def _commands(tmp_path, out):
    from test_pretrain import make_tiny

    data = make_tiny(tmp_path / "tiny")
    run = tmp_path / "run"
    (run).mkdir()
    (run / "encoder.pt").write_bytes(b"")
    return {
        "pretrain": ["pretrain", "--data", str(data), "--out", str(out), "--max-steps", "1"],
        "finetune": ["finetune", "--data", str(data), "--out", str(out), "--task", "classify",
                     "--protocol", "knn", "--classes", "a,b"],
        "embed": ["embed", "--data", str(data), "--out", str(out)],
        "prepare": ["prepare", "phantom", "--out", str(out), "--scans", "2", "--size", "32x40"],
        "export": ["export", str(run), "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["pretrain", "finetune", "embed", "prepare", "export"])
def test_a_second_writer_of_an_output_is_refused_in_one_line(out_holder, tmp_path, capsys, command):
    out, pid = out_holder
    argv = _commands(tmp_path, out)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("awcl: error:") and "\n" not in err and "Traceback" not in err, err
    assert f"pid {pid}" in err and socket.gethostname() in err and str(out) in err
    assert not out.exists()  # the holder's output is untouched (it had not written yet)


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    from awcl.locking import out_lock, out_lock_path

    with out_lock(tmp_path / "x", "a"), out_lock(tmp_path / "x", "b"):
        assert out_lock_path(tmp_path / "x").exists()
    assert not out_lock_path(tmp_path / "x").exists()


def test_a_dead_writers_temporaries_are_swept_a_live_ones_kept(tmp_path):
    from awcl.atomic import sweep_temps, temp_sibling

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temp_sibling(tmp_path / "ds")
    mine.mkdir()
    left = Path(str(mine).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    left.mkdir()
    (left / "frames.npy").write_bytes(b"half")
    other = tmp_path / ".other.tmp-abcdef-1-0123abcd"  # another host's: never touched
    other.mkdir()
    assert sweep_temps(tmp_path) == [left]
    assert mine.is_dir() and other.is_dir() and not left.exists()
