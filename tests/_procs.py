"""Start worker processes from a test with a hard deadline: nothing a test starts can hang it.

Every worker is a fresh interpreter (``spawn``). It runs ``target(rank, *args)`` and leaves with
``os._exit`` straight away, so no interpreter teardown runs in the child: that is where gloo's
process-group and DDP-reducer destructors can block on a peer that already left (pytorch#75097,
seen here as a worker idle in ``mp.spawn``'s ``_wrap`` after its work, with the parent in
``join``). The parent waits at most ``timeout`` seconds for all of them, kills whatever is left
and fails with the ranks that did not finish.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest


def _entry(target: Callable[..., None], rank: int, args: tuple[Any, ...]) -> None:
    code = 0
    try:
        target(rank, *args)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no teardown: destructors of live gloo/DDP objects cannot block here


def run_workers(target: Callable[..., None], args: tuple[Any, ...], nprocs: int,
                timeout: float = 120.0) -> None:
    """Run ``target(rank, *args)`` for rank in 0..nprocs-1, each in its own process; fail the
    test (killing every worker) when one fails or any is still running after ``timeout`` s."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(target, r, args), daemon=True) for r in range(nprocs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        if hung:
            pytest.fail(f"worker rank(s) {hung} still running after {timeout:.0f} s; killed")
        failed = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode != 0}
        if failed:
            pytest.fail(f"worker(s) failed, rank: exit code {failed} (their traceback is on stderr)")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
