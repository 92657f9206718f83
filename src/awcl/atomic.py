"""Atomic writes: every output file or directory is written under a temporary sibling name
and renamed into place, so a crash or an error never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A hidden, unique sibling of ``path`` (``.name.tag-1a2b3c4d``) on the same file system."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


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
        self.tmp = temp_sibling(self.out)
        self.tmp.mkdir()

    def commit(self) -> Path:
        return replace_dir(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
