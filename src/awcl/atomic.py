"""Atomic writes: every output file or directory is written under a temporary sibling name
and renamed into place, so a crash or an error never leaves a half-written output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


# .NAME.TAG-HOST-PID-RANDOM: who wrote it, so a later run can tell a dead writer's leftovers
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}$")


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A hidden, unique sibling of ``path`` (``.name.tag-HOST-PID-1a2b3c4d``) on the same file
    system, named after its writer (host tag and pid) so :func:`sweep_temps` can remove it
    once that writer is dead."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def sweep_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` (of ``name`` only, when given)
    left by writers on this host that are no longer alive (a kill -9, a power cut); returns
    what was removed. A live writer's, or another host's, are never touched."""
    from awcl.locking import pid_alive

    folder, gone = Path(folder), []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return gone
    host = _host_tag()
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block succeeds and is
    removed when it fails (for writers that need a path: ``torch.save``, ``csv``, ...)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps: Any) -> None:
    """``json.dumps(obj, **dumps)`` written to ``path`` atomically."""
    write_atomic(path, json.dumps(obj, **dumps))


def replace_dir(tmp: Path, out: Path) -> Path:
    """Move the finished directory ``tmp`` to ``out``, replacing what was there."""
    if out.exists():
        old = temp_sibling(out, "old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


class RunDir:
    """Temporary run directory renamed to ``out`` on success (a failed run leaves no output)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        sweep_temps(self.out.parent, self.out.name)  # a killed earlier attempt's leftovers
        self.tmp = temp_sibling(self.out)
        self.tmp.mkdir()

    def commit(self) -> Path:
        return replace_dir(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
