"""Faults and hostile values through ``awcl.cli.main``: one error line, no traceback, no torn
or leftover output (issue 18, point 4)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from awcl.cli import main
from test_pretrain import make_tiny

PRETRAIN = ["--method", "simclr", "--epochs", "1", "--batch-size", "8", "--size", "32x40",
            "--num-workers", "0", "--no-progress", "--max-steps", "2", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("data") / "tiny")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("awcl: error:")]
    assert len(errors) == 1 and "Traceback" not in err and err.splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--lr", "-1"], ["--lr", "-1", "> 0"]),
        (["--lr", "0"], ["--lr", "> 0"]),
        (["--temperature", "0"], ["--temperature"]),
        (["--anatomy-ratio", "1.5"], ["--anatomy-ratio", "<= 1"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
    ],
)
def test_pretrain_bad_numbers_are_one_line_and_write_nothing(tiny, tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), *PRETRAIN, *flags]) == 2
    line = _one_line(capsys)
    assert all(w in line for w in words), line
    assert not out.exists()


def test_finetune_bad_numbers_and_sizes_are_one_line(tiny, tmp_path, capsys):
    base = ["finetune", "--data", str(tiny), "--out", str(tmp_path / "ft"), "--epochs", "1"]
    for flags, word in ((["--lr", "-1"], "--lr"), (["--train-patients", "0"], "--train-patients"),
                        (["--batch-size", "0"], "--batch-size")):  # fmt: skip
        assert main([*base, *flags]) == 2
        assert word in _one_line(capsys)
    assert not (tmp_path / "ft").exists()


def test_size_beyond_the_bound_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse usage error: one line, exit 2
        main(["prepare", "phantom", "--out", str(tmp_path / "ph"), "--size", "100000x100000"])
    assert "at most 4096" in capsys.readouterr().err
    assert not (tmp_path / "ph").exists()


def test_folds_beyond_the_patients_gives_the_true_reason(tiny, tmp_path, capsys):
    args = ["finetune", "--data", str(tiny), "--out", str(tmp_path / "ft"), "--epochs", "1",
            "--protocol", "knn", "--folds", "50"]  # fmt: skip
    assert main(args) == 2
    line = _one_line(capsys)
    assert "--folds 50" in line and "the data has 4" in line, line


def test_full_disk_during_checkpoint_leaves_no_torn_file_or_run(tiny, tmp_path, capsys, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    def full_disk(checkpoint, path, *a, **k):  # half a file, then ENOSPC
        with open(path, "wb") as fh:
            fh.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch_io, "_atomic_save", full_disk)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), *PRETRAIN]) == 2
    assert "No space left on device" in _one_line(capsys)
    assert not out.exists()  # no torn epoch000.ckpt, no config.yaml or logs/ of a failed run


def test_bad_init_leaves_no_run_folder(tiny, tmp_path, capsys):
    bad = tmp_path / "init.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), *PRETRAIN, "--init", str(bad)]) == 2
    _one_line(capsys)
    assert not out.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_out_is_one_line(tiny, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert main(["pretrain", "--data", str(tiny), "--out", str(parent / "run"), *PRETRAIN]) == 2
        assert str(parent) in _one_line(capsys)
    finally:
        parent.chmod(0o700)


def test_read_only_out_simulated_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    """As root, permissions are not enforced: the same fault, raised where the run dir is made."""
    real_mkdir = Path.mkdir
    out = tmp_path / "ro" / "run"

    def read_only(self, *a, **k):
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), *PRETRAIN]) == 2
    line = _one_line(capsys)
    assert str(out) in line and "Permission denied" in line
