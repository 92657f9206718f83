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


def test_open_reports_damaged_files_as_data_errors(tmp_path):
    out = _write(tmp_path / "ds")
    (out / "frames.npy").write_bytes((out / "frames.npy").read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=r"frames\.npy"):
        open_dataset(out)
    (out / "frames.npy").unlink()
    with pytest.raises(DataError, match=r"frames\.npy"):
        open_dataset(out)
    (out / "manifest.csv").unlink()
    with pytest.raises(DataError, match=r"manifest\.csv"):
        open_dataset(out)
    (out / "dataset.json").write_text("{")
    with pytest.raises(DataError, match=r"dataset\.json"):
        open_dataset(out)


def test_writer_never_replaces_what_is_not_a_dataset(tmp_path):
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(DataError, match="not a prepared dataset"):
        _write(precious)
    assert (precious / "thesis.txt").read_text() == "years of work"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a prepared dataset"):
        _write(a_file)
    assert a_file.read_text() == "x"
    # an output below a plain file cannot be created: one DataError, nothing left behind
    with pytest.raises(DataError, match=r"notes\.txt"):
        _write(a_file / "ds")
    # an empty folder and an existing dataset are replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(open_dataset(_write(empty, n=2))) == 2
    assert len(open_dataset(_write(empty, n=3))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "empty", "notes.txt"]


def test_summarize_counts_per_label_video_and_patient(tmp_path):
    text = summarize(open_dataset(_write(tmp_path / "ds")))
    # 3 labelled frames (i = 1, 3, 5) from videos v1, v0, v2 and one patient (i % 2 == 1)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("heart"))
    assert line.split()[1:] == ["3", "/", "3", "/", "1"]
    assert "3 videos, 2 patients, 1 masks" in text
