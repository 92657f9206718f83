"""The prepared-dataset format: round trip, atomic writes, manifest dtypes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from awcl.data.store import DatasetWriter, anonymize, open_dataset, summarize
from awcl.errors import DataError


def _write(out, n=6, fail_at=None):
    rng = np.random.default_rng(0)
    with DatasetWriter(out, size=(16, 20), source="test") as w:
        for i in range(n):
            if fail_at == i:
                raise RuntimeError("boom")
            w.add(
                rng.integers(0, 256, (16, 20), dtype=np.uint8),
                video_id=f"v{i % 3}",
                patient_id=anonymize(f"Jane Doe {i % 2}"),
                frame_index=i * 8,
                coarse_label="heart" if i % 2 else None,
                fine_label="4CH" if i % 2 else None,
                mask=(np.eye(16, 20, dtype=np.uint8) if i == 1 else None),
                pixel_size_mm=0.1 * (i + 1),
            )
        w.meta["hierarchy"] = {"4CH": "heart"}
    return out


def test_round_trip(tmp_path):
    out = _write(tmp_path / "ds")
    ds = open_dataset(out)
    assert len(ds) == 6 and ds.size == (16, 20)
    assert isinstance(ds.frames, np.memmap)
    assert ds.frames.dtype == np.uint8 and ds.frames.shape == (6, 16, 20)
    m = ds.manifest
    assert list(m.columns[:8]) == [
        "frame_id", "source", "video_id", "patient_id", "frame_index",
        "coarse_label", "fine_label", "mask_index",
    ]
    assert m["coarse_label"].isna().sum() == 3  # empty = unknown
    assert ds.labels("fine").dropna().unique().tolist() == ["4CH"]
    assert m["pixel_size_mm"].dtype.kind == "f"
    assert ds.mask(1) is not None and int(ds.mask(1).sum()) == 16
    assert ds.mask(0) is None
    assert ds.hierarchy == {"4CH": "heart"}
    # the manifest opens with plain pandas, one row per frame
    assert len(pd.read_csv(out / "manifest.csv")) == 6
    # frames are exactly what was written
    rng = np.random.default_rng(0)
    assert np.array_equal(ds.frames[0], rng.integers(0, 256, (16, 20), dtype=np.uint8))
    assert "6 frames" in summarize(ds)


def test_no_names_reach_the_manifest(tmp_path):
    out = _write(tmp_path / "ds")
    text = (out / "manifest.csv").read_text() + (out / "dataset.json").read_text()
    assert "Jane" not in text and "Doe" not in text


def test_failed_write_leaves_nothing_and_keeps_old(tmp_path):
    out = _write(tmp_path / "ds")
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(RuntimeError):
        _write(tmp_path / "ds", fail_at=3)
    assert (out / "manifest.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with pytest.raises(RuntimeError):
        _write(tmp_path / "new", fail_at=2)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_empty_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="no frames"), DatasetWriter(tmp_path / "e", size=(4, 4)) as w:
        w.skip("a.png", "unreadable")
    assert not (tmp_path / "e").exists()


def test_deterministic_bytes(tmp_path):
    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    for name in ("frames.npy", "masks.npy", "manifest.csv", "dataset.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_open_rejects_inconsistent(tmp_path):
    out = _write(tmp_path / "ds")
    with pytest.raises(DataError, match="not a prepared dataset"):
        open_dataset(tmp_path)
    m = pd.read_csv(out / "manifest.csv").iloc[:4]
    m.to_csv(out / "manifest.csv", index=False)
    with pytest.raises(DataError, match="frames"):
        open_dataset(out)
    meta = json.loads((out / "dataset.json").read_text())
    meta["format"] = "other"
    (out / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format"):
        open_dataset(out)


def test_anonymize_is_stable_and_opaque():
    assert anonymize("DOE^JANE") == anonymize("DOE^JANE")
    assert anonymize("DOE^JANE") != anonymize("DOE^JOHN")
    assert "JANE" not in anonymize("DOE^JANE")
