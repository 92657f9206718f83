"""download.fetch/extract against a local HTTP server, and one recipe's --download path."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from awcl.cli import main
from awcl.data import download
from awcl.data.store import open_dataset
from awcl.errors import DataError


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): http.server on 127.0.0.1 in a thread."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _zip(path: Path, files: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path.read_bytes()


def test_fetch_verifies_checksum_and_caches(server, tmp_path):
    base, www = server
    data = _zip(www / "release.zip", {"top/a.txt": b"hello", "top/sub/b.txt": b"world"})
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    path = download.fetch(f"{base}/release.zip", cache, sha256=digest, expected_size=len(data))
    assert path == cache / "release.zip" and path.read_bytes() == data
    assert not list(cache.glob(".*.part"))
    # Cached: a second call does not touch the network (the server copy is gone).
    (www / "release.zip").unlink()
    assert download.fetch(f"{base}/release.zip", cache, sha256=digest) == path
    out = download.extract(path, cache / "release")
    assert (out / "top" / "a.txt").read_bytes() == b"hello"
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"world"


def test_fetch_checksum_mismatch_removes_file(server, tmp_path):
    base, www = server
    _zip(www / "release.zip", {"a.txt": b"x"})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        download.fetch(f"{base}/release.zip", cache, sha256="0" * 64)
    assert list(cache.iterdir()) == []  # no partial or wrong file left behind
    with pytest.raises(DataError, match="expected 3;"):
        download.fetch(f"{base}/release.zip", cache, expected_size=3)
    assert list(cache.iterdir()) == []


def test_fetch_404_is_a_clear_error(server, tmp_path):
    base, _ = server
    with pytest.raises(DataError, match=r"HTTP 404"):
        download.fetch(f"{base}/missing.zip", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_refetches_a_corrupt_cached_copy(server, tmp_path):
    base, www = server
    data = _zip(www / "r.zip", {"a.txt": b"abc"})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "r.zip").write_bytes(b"truncated")
    path = download.fetch(f"{base}/r.zip", cache, sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data


def test_extract_rejects_path_traversal(tmp_path):
    bad = tmp_path / "bad.zip"
    _zip(bad, {"ok.txt": b"1", "../evil.txt": b"2"})
    with pytest.raises(DataError, match="unsafe path"):
        download.extract(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()

    tar_path = tmp_path / "bad.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        info = tarfile.TarInfo("/etc/evil")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="unsafe path"):
        download.extract(tar_path, tmp_path / "out2")
    link_tar = tmp_path / "link.tar"
    with tarfile.open(link_tar, "w") as tf:
        info = tarfile.TarInfo("inner/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside"
        tf.addfile(info)
    with pytest.raises(DataError, match="refusing link member"):
        download.extract(link_tar, tmp_path / "out3")


def test_extract_tar_and_not_an_archive(tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("data")
    tar_path = tmp_path / "good.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(src, arcname="pkg/f.txt")
    assert (download.extract(tar_path, tmp_path / "good") / "pkg" / "f.txt").read_text() == "data"
    with pytest.raises(DataError, match="not a zip or tar"):
        download.extract(src, tmp_path / "nope")


def test_resolve_url_mirror(monkeypatch):
    url = "https://zenodo.org/records/1/files/FETAL_PLANES_ZENODO.zip"
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    assert download.resolve_url(url) == url
    monkeypatch.setenv(download.MIRROR_ENV, "http://127.0.0.1:9/m/")
    assert download.resolve_url(url) == "http://127.0.0.1:9/m/FETAL_PLANES_ZENODO.zip"


def _fetal_release_zip(path: Path) -> None:
    """A tiny FETAL_PLANES_ZENODO.zip with the release's quirks (';', 'Train ' + space)."""
    rows = [
        ("Patient00001_Plane1_1_of_2", 1, "Other", "Not A Brain", 1),
        ("Patient00001_Plane3_1_of_2", 1, "Fetal brain", "Trans-thalamic", 1),
        ("Patient00002_Plane3_1_of_1", 2, "Fetal brain", "Trans-cerebellum", 0),
    ]
    lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    lines += [f"{n};{p};{pl};{bp};Op. 1;Voluson E6;{t} " for n, p, pl, bp, t in rows]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("FETAL_PLANES_ZENODO/FETAL_PLANES_DB_data.csv", "\n".join(lines) + "\n")
        for n, *_ in rows:
            _, png = cv2.imencode(".png", np.full((30, 40), 99, np.uint8))
            zf.writestr(f"FETAL_PLANES_ZENODO/Images/{n}.png", png.tobytes())


def test_recipe_download_end_to_end(server, tmp_path, monkeypatch):
    base, www = server
    _fetal_release_zip(www / "FETAL_PLANES_ZENODO.zip")
    monkeypatch.setenv(download.MIRROR_ENV, base)
    out, cache = tmp_path / "fp", tmp_path / "cache"
    rc = main(["prepare", "fetal-planes", "--download", "--cache", str(cache), "--out", str(out), "--size", "16x20"])
    assert rc == 0
    ds = open_dataset(out)
    assert len(ds) == 3 and ds.size == (16, 20)
    assert list(ds.manifest["split"]) == ["train", "train", "test"]
    # A second run uses the cache: it works with the server copy gone.
    (www / "FETAL_PLANES_ZENODO.zip").unlink()
    assert main(["prepare", "fetal-planes", "--download", "--cache", str(cache), "--out", str(out)]) == 0


def test_recipe_download_error_is_one_line(server, tmp_path, capsys):
    base, _ = server
    rc = main(
        ["prepare", "busi", "--download", "--url", f"{base}/Dataset_BUSI.zip",
         "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("awcl: error:") and "HTTP 404" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes, sends 10, then closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_fetch_truncated_download_leaves_nothing(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/r.zip"
        with pytest.raises(DataError, match=r"download failed|connection ended"):
            download.fetch(url, tmp_path / "cache", timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert list((tmp_path / "cache").iterdir()) == []


def _path_max_escape_tar(path: Path, canary: Path) -> None:
    """The CVE-2025-4517 archive: a symlink chain that resolves past PATH_MAX, so name-based
    checks (and Python 3.11.7's ``data`` filter) pass it, then a file under it that lands at
    the absolute path ``canary``."""

    def add(tf: tarfile.TarFile, name: str, kind: bytes, link: str = "", data: bytes = b"") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, len(data)
        tf.addfile(info, io.BytesIO(data) if data else None)

    comp, steps, here = "d" * 247, "abcdefghijklmnop", ""
    with tarfile.open(path, "w:gz") as tf:
        for step in steps:  # 16 nested folders, each reached through a one-letter symlink
            add(tf, f"{here}{comp}", tarfile.DIRTYPE)
            add(tf, f"{here}{step}", tarfile.SYMTYPE, comp)
            here += f"{comp}/"
        link = "/".join(steps) + "/" + "l" * 254  # inside the deepest folder
        add(tf, link, tarfile.SYMTYPE, "../" * len(steps))
        add(tf, "escape", tarfile.SYMTYPE, link + "/.." * 17)
        add(tf, "escape/" + str(canary).lstrip("/"), tarfile.REGTYPE, data=b"pwned")


def test_path_max_symlink_chain_writes_nothing_outside(tmp_path):
    canary = tmp_path / "outside" / "canary.txt"
    archive = tmp_path / "release.tar.gz"
    _path_max_escape_tar(archive, canary)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="refusing link member"):
        download.extract(archive, cache / "release")
    assert not canary.exists() and not canary.parent.exists()
    assert list(cache.iterdir()) == []  # no partial extraction left in the cache


def test_path_max_archive_via_cli_is_one_line(tmp_path, capsys):
    canary = tmp_path / "outside" / "canary.txt"
    archive = tmp_path / "www" / "master.zip"
    archive.parent.mkdir()
    _path_max_escape_tar(archive, canary)
    rc = main(["prepare", "pocus", "--download", "--url", archive.as_uri(),
               "--cache", str(tmp_path / "new-cache"), "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("awcl: error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1] == errors[0] and "refusing link member" in errors[0]
    assert not canary.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind,name,link,match",
    [
        (tarfile.SYMTYPE, "top/inside", "a.txt", "refusing link member"),  # even a harmless link
        (tarfile.LNKTYPE, "top/hard", "top/a.txt", "refusing link member"),
        (tarfile.FIFOTYPE, "top/fifo", "", "refusing special member"),
        (tarfile.CHRTYPE, "top/null", "", "refusing special member"),
        (tarfile.REGTYPE, "top/../../x", "", r"'\.\.' component"),
        (tarfile.REGTYPE, "/abs/x", "", "absolute path"),
    ],
)
def test_extract_tar_refuses_links_specials_and_bad_names(tmp_path, kind, name, link, match):
    archive = tmp_path / "r.tar"
    with tarfile.open(archive, "w") as tf:
        ok = tarfile.TarInfo("top/a.txt")
        ok.size = 1
        tf.addfile(ok, io.BytesIO(b"1"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tf.addfile(info)
    with pytest.raises(DataError, match=match):
        download.extract(archive, tmp_path / "cache" / "r")
    assert list((tmp_path / "cache").iterdir()) == []


def test_extract_zip_refuses_symlink_and_clash_is_one_line(tmp_path):
    link_zip = tmp_path / "link.zip"
    with zipfile.ZipFile(link_zip, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (0o120777) << 16  # S_IFLNK: the member is a symlink
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="refusing symlink member"):
        download.extract(link_zip, tmp_path / "c" / "link")
    clash = tmp_path / "clash.zip"
    _zip(clash, {"top/a": b"file", "top/a/b.txt": b"under a file"})  # a file and a folder 'a'
    with pytest.raises(DataError, match="clashes with another member"):
        download.extract(clash, tmp_path / "c" / "clash")
    assert list((tmp_path / "c").iterdir()) == []


def test_pinned_and_user_sha256_are_verified(server, tmp_path, monkeypatch, capsys):
    from awcl.data.recipes import _common, fetal_planes

    base, www = server
    _fetal_release_zip(www / "FETAL_PLANES_ZENODO.zip")
    digest = download.sha256_of(www / "FETAL_PLANES_ZENODO.zip")
    monkeypatch.setenv(download.MIRROR_ENV, base)
    args = ["prepare", "fetal-planes", "--download", "--out", str(tmp_path / "fp")]
    # a user-given --sha256 that the mirror's file does not match: refused, nothing kept
    assert main([*args, "--cache", str(tmp_path / "c1"), "--sha256", "0" * 64]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "fp").exists() and list((tmp_path / "c1").iterdir()) == []
    assert main([*args, "--cache", str(tmp_path / "c2"), "--sha256", digest]) == 0
    # a pin in the recipe is checked for a mirror too (a swapped mirror is refused)
    pinned = (_common.ReleaseFile(fetal_planes.RELEASE[0].url, sha256="1" * 64),)
    monkeypatch.setattr(fetal_planes, "RELEASE", pinned)
    assert main([*args, "--cache", str(tmp_path / "c3")]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
