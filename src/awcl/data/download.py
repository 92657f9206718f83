"""Fetching public release archives: streaming download, checksum, cache, safe extraction.

Used by the recipes' ``--download`` option. Nothing here runs unless the user asks for it;
tests exercise it against a local HTTP server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import IO

from awcl.atomic import replace_dir, temp_sibling
from awcl.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MIRROR_ENV = "AWCL_MIRROR"  # base URL that replaces every release URL's directory part
DEFAULT_CACHE = Path(os.environ.get("AWCL_CACHE", Path.home() / ".cache" / "awcl"))


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_url(url: str, mirror: str | None = None) -> str:
    """``url``, or the same file name under ``mirror`` (argument or $AWCL_MIRROR) when set."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if not mirror:
        return url
    name = Path(urllib.parse.urlparse(url).path).name
    return mirror.rstrip("/") + "/" + name


def _filename_for(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in (".", ".."):
        raise DataError(f"{url}: cannot derive a file name from the URL")
    return name


def _verify(path: Path, sha256: str | None, expected_size: int | None, url: str) -> None:
    """Raise DataError (and remove ``path``) when size or checksum differs."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        path.unlink(missing_ok=True)
        raise DataError(f"{url}: downloaded {size} bytes, expected {expected_size}; removed the file")
    if sha256 is not None:
        got = sha256_of(path)
        if got.lower() != sha256.lower():
            path.unlink(missing_ok=True)
            raise DataError(
                f"{url}: SHA-256 mismatch (got {got}, expected {sha256.lower()}); removed the file"
            )


def _cached_ok(path: Path, sha256: str | None, expected_size: int | None) -> bool:
    if not path.is_file():
        return False
    if expected_size is not None and path.stat().st_size != expected_size:
        return False
    return sha256 is None or sha256_of(path).lower() == sha256.lower()


def fetch(
    url: str,
    dest_dir: str | os.PathLike,
    sha256: str | None = None,
    expected_size: int | None = None,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` (a cache) and return the file's path.

    The body streams to a temporary ``.part`` file that is renamed only after the size and
    SHA-256 (when given) match, so an interrupted or corrupt download never looks complete;
    re-running starts over. A file already in the cache that passes the same checks is
    returned without a request. Without a checksum the computed SHA-256 is logged so the
    user can pin it.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (filename or _filename_for(url))
    if _cached_ok(target, sha256, expected_size):
        log.info("using cached %s", target)
        return target
    if target.exists():
        log.warning("%s: cached copy fails its checks; downloading again", target)
        target.unlink()
    part = dest_dir / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    verified = False  # any exit before verification removes the .part file
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "awcl-download"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            total = resp.headers.get("Content-Length")
            log.info("downloading %s (%s bytes) -> %s", url, total or "?", target)
            shutil.copyfileobj(resp, out, CHUNK)
        if total is not None and part.stat().st_size != int(total):
            raise DataError(
                f"{url}: connection ended after {part.stat().st_size} of {total} bytes; "
                "removed the partial file, run again"
            )
        _verify(part, sha256, expected_size, url)
        verified = True
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{url}: download failed ({reason})") from None
    finally:
        if part.exists() and not verified:
            part.unlink()
    if sha256 is None:
        # logged after success only, so a failed download still ends in one error line
        log.warning(
            "%s: NOT verified (no SHA-256 pinned or given); its SHA-256 is %s (pass --sha256 to pin it)",
            target.name, sha256_of(part),
        )
    part.replace(target)
    return target


def _unsafe_name(name: str) -> str | None:
    """Why a member name may not be extracted, or None. Names are checked as text, never
    resolved against the disk: nothing on disk (a link) may take part in the decision."""
    if not name or "\x00" in name:
        return "empty or NUL in the name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if any(part == ".." for part in norm.split("/")):
        return "'..' component"
    return None


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    """(relative name, info) of every zip member; links, devices and unsafe names raise."""
    out = []
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            what = "symlink" if kind == stat.S_IFLNK else "special file"
            raise DataError(f"{archive}: refusing {what} member {info.filename!r} (only files and folders are extracted)")
        why = _unsafe_name(info.filename)
        if why:
            raise DataError(f"{archive}: unsafe path in archive ({why}): {info.filename!r}")
        out.append((info.filename, info))
    return out


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every tar member, checked: only regular files and folders with safe names.

    Symlinks and hardlinks are refused outright, whatever they point at: a name check cannot
    decide where a chain of links resolves (CVE-2025-4517 beats even Python's ``data`` filter).
    """
    members = tf.getmembers()
    for m in members:
        if m.issym() or m.islnk():
            raise DataError(f"{archive}: refusing link member {m.name!r} (archives may hold only files and folders)")
        if not (m.isreg() or m.isdir()):
            raise DataError(f"{archive}: refusing special member {m.name!r} (device, fifo or other)")
        why = _unsafe_name(m.name)
        if why:
            raise DataError(f"{archive}: unsafe path in archive ({why}): {m.name!r}")
    return members


def _write_member(archive: Path, root: Path, name: str, is_dir: bool, data: IO[bytes] | None) -> None:
    """Create one member under ``root``. ``root`` is a fresh folder that holds no links (none
    are ever extracted), so ``root / name`` stays inside it; O_NOFOLLOW|O_EXCL make sure."""
    target = root.joinpath(*[p for p in name.replace("\\", "/").split("/") if p not in ("", ".")])
    try:
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            if data is not None:
                shutil.copyfileobj(data, out, CHUNK)
    except (NotADirectoryError, FileExistsError, IsADirectoryError):
        raise DataError(
            f"{archive}: member {name!r} clashes with another member (a file and a folder, "
            "or the same file twice, of one name)"
        ) from None


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir`` and return it.

    Only regular files and folders are extracted: a symlink, hardlink, device or fifo member,
    an absolute name or a ``..`` component raises DataError before anything is written. Each
    member is written by awcl itself (not ``extractall``) with O_EXCL|O_NOFOLLOW. Extraction
    goes to a temporary folder beside ``dest_dir`` (inside the cache) that is renamed on
    success, so a failed extraction leaves no partial tree; a complete one is reused.
    """
    archive, dest = Path(archive), Path(dest_dir)
    if dest.is_dir() and (dest / ".awcl-extracted").is_file():
        return dest
    tmp = temp_sibling(dest)
    tmp.mkdir(parents=True)
    root = tmp.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name, info in _zip_members(archive, zf):
                    with contextlib.ExitStack() as stack:
                        data = None if info.is_dir() else stack.enter_context(zf.open(info))
                        _write_member(archive, root, name, info.is_dir(), data)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for m in _tar_members(archive, tf):
                    _write_member(archive, root, m.name, m.isdir(), None if m.isdir() else tf.extractfile(m))
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
        (tmp / ".awcl-extracted").write_text(archive.name)
        replace_dir(tmp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DataError(f"{archive}: corrupt archive ({err})") from None
    except OSError as err:
        raise DataError(f"{archive}: cannot extract into {dest.parent} ({err.strerror or err})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_and_extract(
    url: str,
    cache_dir: str | os.PathLike,
    sha256: str | None = None,
    expected_size: int | None = None,
    mirror: str | None = None,
) -> Path:
    """fetch() then extract() next to the archive (``<cache>/<archive stem>/``)."""
    path = fetch(resolve_url(url, mirror), cache_dir, sha256, expected_size, filename=_filename_for(url))
    stem = path.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return extract(path, Path(cache_dir) / stem)
