"""The pseudonymisation key: no config can read it, its file's mode is checked, and datasets
prepared with different keys are never merged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from awcl import secret
from awcl.cli import main
from awcl.config import compose
from awcl.data.store import DatasetWriter, merge_datasets, open_dataset
from awcl.errors import AwclError, DataError
from awcl.train.pretrain import PretrainConfig
from test_study import base_raw

KEY = "the-hmac-key-1234"


@pytest.fixture()
def env_key(monkeypatch):
    monkeypatch.setenv("AWCL_SECRET", KEY)
    secret._cache.clear()
    yield KEY
    secret._cache.clear()


@pytest.mark.parametrize("name", ["AWCL_SECRET", "AWCL_SECRET_FILE", "AWCL_CACHE_DIR"])
def test_pretrain_config_cannot_read_awcl_settings(env_key, name):
    with pytest.raises(AwclError, match="not allowed") as err:
        compose(PretrainConfig, [], [f"out=${{oc.env:{name}}}"])
    assert KEY not in str(err.value) and "\n" not in str(err.value)


def test_a_variable_holding_the_key_is_refused(env_key, monkeypatch):
    monkeypatch.setenv("AWCL_WHO", KEY)
    with pytest.raises(AwclError, match="pseudonymisation key") as err:
        compose(PretrainConfig, [], ["out=runs/${oc.env:AWCL_WHO}"])
    assert KEY not in str(err.value)
    monkeypatch.setenv("AWCL_WHO", "alice")  # any other value is fine
    assert compose(PretrainConfig, [], ["out=runs/${oc.env:AWCL_WHO}"]).out == "runs/alice"


def test_the_key_file_text_is_refused_too(monkeypatch, tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.delenv("AWCL_SECRET", raising=False)
    monkeypatch.setenv("AWCL_SECRET_FILE", str(key_file))
    monkeypatch.setenv("AWCL_COPY", "0123456789abcdef0123456789abcdef")
    with pytest.raises(AwclError, match="pseudonymisation key"):
        compose(PretrainConfig, [], ["out=${oc.env:AWCL_COPY}"])


def test_study_config_reading_the_key_is_one_line_and_writes_nothing(env_key, tmp_path, capsys):
    raw = base_raw()
    raw["vars"]["who"] = "${oc.env:AWCL_SECRET}"
    raw["tasks"][0]["name"] = "t-${who}"
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "o"
    assert main(["study", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("awcl: error:") and "\n" not in err and "not allowed" in err, err
    assert KEY not in err
    assert not out.exists()


def test_a_key_file_readable_by_others_is_warned_about(monkeypatch, tmp_path, caplog):
    key_file = tmp_path / "secret"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(key_file, 0o644)
    monkeypatch.delenv("AWCL_SECRET", raising=False)
    monkeypatch.setenv("AWCL_SECRET_FILE", str(key_file))
    secret._cache.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="awcl.data.secret"):
            secret.project_secret()
        assert any("readable by other users" in r.getMessage() and "chmod 600" in r.getMessage()
                   for r in caplog.records)
        caplog.clear()
        os.chmod(key_file, 0o600)
        secret._cache.clear()
        with caplog.at_level(logging.WARNING, logger="awcl.data.secret"):
            secret.project_secret()
        assert not caplog.records
    finally:
        secret._cache.clear()


def _tiny(out: Path) -> Path:
    with DatasetWriter(out, size=(8, 8), source="t") as w:
        for i in range(3):
            w.add(np.full((8, 8), i, np.uint8), video_id="v", patient_id="p", frame_index=i)
    return out


def test_fingerprint_recorded_and_different_keys_refuse_to_merge(monkeypatch, tmp_path):
    secret._cache.clear()
    try:
        monkeypatch.setenv("AWCL_SECRET", "a" * 32)
        a = _tiny(tmp_path / "a")
        monkeypatch.setenv("AWCL_SECRET", "b" * 32)
        b = _tiny(tmp_path / "b")
        fa = open_dataset(a).meta["key_fingerprint"]
        fb = open_dataset(b).meta["key_fingerprint"]
        assert fa and fb and fa != fb
        assert "a" * 32 not in (a / "dataset.json").read_text()
        with pytest.raises(DataError, match="different pseudonymisation keys") as err:
            merge_datasets([a, b], tmp_path / "ab")
        assert "\n" not in str(err.value) and not (tmp_path / "ab").exists()
        c = _tiny(tmp_path / "c")  # key b again: merges, and the union keeps the key's tag
        merged = merge_datasets([b, c], tmp_path / "bc")
        assert open_dataset(merged).meta["key_fingerprint"] == fb
    finally:
        secret._cache.clear()
