"""Directory locks: one process at a time may write a study directory or a run folder.

A lock is a file created with ``O_CREAT|O_EXCL`` (atomic on local and NFSv3+ file systems)
holding the owner's pid and host. A lock left by a killed process is taken over when it was
taken on this host and its pid is no longer alive; a lock of another host is never broken
(we cannot see its processes), the error names it so the user can remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from awcl.errors import AwclError


class LockedError(AwclError):
    """Another live process holds the lock."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # torn or unreadable: treated as stale below only if its pid is known dead


def _stale(info: dict) -> bool:
    return info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", 0) or 0))


def _mine(info: dict) -> bool:
    return info.get("host") == socket.gethostname() and int(info.get("pid", 0) or 0) == os.getpid()


# A lock file is written within microseconds of its creation; one still empty (or unreadable)
# after this many seconds was torn by a kill -9 in between and is taken over.
TORN_LOCK_S = 5.0


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def dir_lock(path: str | os.PathLike, what: str, wait: float = 0.0) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block; ``what`` names the locked thing in errors.

    Re-entrant within one process (a study's run holding its folder calls ``pretrain`` into
    it). ``wait``: seconds to wait for a live holder before giving up (0: fail at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _mine(_holder(path)):
        yield path  # this process holds it already; the outer block releases it
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    deadline = time.monotonic() + wait
    for _ in range(3 + int(wait * 2)):  # a stale lock is removed and the create retried
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _holder(path)
            if info and _stale(info):
                path.unlink(missing_ok=True)  # its owner died: take it over
                continue
            if not info:  # being written right now, or unreadable: give it a moment
                time.sleep(0.1)
                info = _holder(path)
                if info and _stale(info):
                    path.unlink(missing_ok=True)
                    continue
                if not info and _age(path) > TORN_LOCK_S:  # its writer was killed between create and write
                    path.unlink(missing_ok=True)
                    continue
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise LockedError(
                f"{what} is in use by pid {info.get('pid', '?')} on host {info.get('host', '?')} "
                f"(lock {path}; remove it if that process is gone)"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me))
        break
    else:
        raise LockedError(f"{what}: could not take the lock {path}")
    try:
        yield path
    finally:
        if _holder(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def out_lock_path(out: str | os.PathLike) -> Path:
    """The lock of an output folder: a hidden sibling, so it exists before the folder does and
    never lands inside a finished output."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def out_lock(out: str | os.PathLike, what: str, wait: float = 0.0) -> contextlib.AbstractContextManager[Path]:
    """One writer at a time for the output folder ``out`` (pretrain, finetune, embed, prepare,
    export); a second gets one line naming the holder's pid and host."""
    return dir_lock(out_lock_path(out), f"{what} {out}", wait=wait)
