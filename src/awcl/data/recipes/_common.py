"""Shared parts of the public-data recipes: size parsing, release lookup, --download, CLI flags."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from awcl.data import download
from awcl.data.store import DEFAULT_SIZE
from awcl.errors import DataError
from awcl.options import cli_type, parse_size, positive_int

log = logging.getLogger("awcl.data.recipes")


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a public release: where it is published and how to check it.

    ``sha256``/``size`` are None where the publisher gives no SHA-256 and we have not pinned
    one; fetch() then logs the computed digest instead of verifying it (see docs/recipes.md).
    """

    url: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = True  # archives are unpacked; plain files (a CSV) are kept as they are


# --size of every recipe: the one HxW parser, as an argparse type (usage error, exit 2).
size_arg = cli_type(parse_size, minimum=8)


def find_release_root(src: str | os.PathLike, is_root: Callable[[Path], bool], what: str) -> Path:
    """``src`` itself or the shallowest folder below it (depth <= 4) that holds the release.

    Archives unpack with varying top folders (``FETAL_PLANES_ZENODO/``, ``repo-master/data``),
    and users may point at the parent, so the recipes look a few levels down.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    frontier = [src]
    for _ in range(5):
        nxt: list[Path] = []
        for d in frontier:
            if is_root(d):
                return d
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        frontier = nxt
    raise DataError(f"{src}: does not contain {what}")


def download_release(
    files: Sequence[ReleaseFile],
    cache_dir: str | os.PathLike,
    url: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Fetch every file of a release into ``cache_dir`` and return the folder to prepare from.

    ``url`` (the ``--url`` flag) replaces the first file's URL, e.g. a local mirror; the
    $AWCL_MIRROR environment variable replaces the directory part of all of them. A pinned
    SHA-256/size is checked whatever the URL (a mirror serves the same bytes); ``sha256``
    (the ``--sha256`` flag) pins the first file where the recipe has no pin, and must agree
    with the recipe's pin where it has one.
    """
    cache = Path(cache_dir)
    for i, f in enumerate(files):
        src_url = url if (url and i == 0) else f.url
        want = f.sha256
        if i == 0 and sha256:
            given = _check_sha256(sha256)
            if want and want.lower() != given:
                raise DataError(f"--sha256 {given} differs from the pinned SHA-256 {want} of {f.url}")
            want = given
        if f.extract:
            download.fetch_and_extract(src_url, cache, want, f.size)
        else:
            download.fetch(download.resolve_url(src_url), cache, want, f.size)
    return cache


def _check_sha256(value: str) -> str:
    v = value.strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise DataError(f"--sha256 {value!r}: expected 64 hexadecimal characters")
    return v


def add_common_args(p: argparse.ArgumentParser, default_cache: str) -> None:
    p.add_argument("src", nargs="?", help="folder holding the original release (not needed with --download)")
    p.add_argument("--out", required=True, help="prepared dataset directory to write")
    p.add_argument(
        "--size", type=size_arg, default=DEFAULT_SIZE, metavar="HxW",
        help="frame size of the prepared dataset (default 224x288)",
    )
    p.add_argument(
        "--download", action="store_true",
        help="fetch the public release archive into the cache first (needs internet)",
    )
    p.add_argument(
        "--cache", default=str(download.DEFAULT_CACHE / default_cache),
        help="download cache folder (default ~/.cache/awcl/<recipe>, or $AWCL_CACHE/<recipe>)",
    )
    p.add_argument("--url", default=None, help="download from this URL instead of the public one")
    p.add_argument(
        "--sha256", default=None, metavar="HEX",
        help="expected SHA-256 of the (first) release archive; the download is refused if it differs",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="prepare only the first N items (testing)")


def source_from_args(args: argparse.Namespace, files: Sequence[ReleaseFile]) -> Path:
    if args.download:
        return download_release(files, args.cache, args.url, getattr(args, "sha256", None))
    if not args.src:
        raise DataError("give the release folder SRC, or --download to fetch it")
    return Path(args.src)


def report(kind: str, out: Path, n: int, skipped: list[dict[str, str]]) -> None:
    """One summary line for the CLI (the skips were logged, summarised per reason)."""
    where = f"; every one with its reason in {Path(out) / 'dataset.json'}, key \"skipped\""
    print(f"{kind}: wrote {n} frames to {out}" + (f" ({len(skipped)} inputs skipped{where})" if skipped else ""))
