"""Several sources in one pretraining: the union of prepared datasets (``awcl prepare merge``,
``pretrain --data A --data B``, study configs with a list of datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _synth import make_class_dataset, make_seg_dataset
from awcl.cli import main
from awcl.data.store import (
    DatasetWriter,
    manifest_sha256,
    merge_datasets,
    open_dataset,
    union_dataset,
)
from awcl.errors import DataError
from awcl.study.config import parse_config
from awcl.study.runner import plan_study, run_study
from test_pretrain import make_tiny
from test_study import Calls, base_raw


@pytest.fixture()
def two(tmp_path) -> tuple[Path, Path]:
    """Two sources whose ids collide (both have patient 'p0', video 'p0v0') and whose
    hierarchies differ; the second has another frame size."""
    a = make_tiny(tmp_path / "fetal")
    b = tmp_path / "lung"
    rng = np.random.default_rng(1)
    with DatasetWriter(b, size=(48, 60), source="lung") as w:
        for p in range(3):
            for f in range(4):
                w.add((rng.random((48, 60)) * 255).astype(np.uint8), video_id=f"p{p}v0",
                      patient_id=f"p{p}", frame_index=f, coarse_label="lung" if f % 2 else None,
                      fine_label="b-lines" if f % 2 else None)  # fmt: skip
        w.meta["hierarchy"] = {"b-lines": "lung"}
    return a, b


def test_merge_qualifies_ids_and_combines_labels(two, tmp_path):
    a, b = two
    out = merge_datasets([a, b], tmp_path / "u")
    u, da, db = open_dataset(out), open_dataset(a), open_dataset(b)
    m = u.manifest
    assert len(u) == len(da) + len(db) and u.size == da.size
    # the sources share ids; the union keeps them apart
    assert set(da.manifest["patient_id"]) & set(db.manifest["patient_id"])
    assert m["patient_id"].nunique() == da.manifest["patient_id"].nunique() + db.manifest["patient_id"].nunique()
    assert m["video_id"].nunique() == da.manifest["video_id"].nunique() + db.manifest["video_id"].nunique()
    assert m["frame_id"].is_unique
    assert set(m["source"]) == {"fetal", "lung"}
    assert m.loc[m.source == "lung", "patient_id"].str.startswith("lung/").all()
    # labels as they were, hierarchies and ignored labels combined
    assert list(m["coarse_label"].fillna("")) == list(da.manifest["coarse_label"].fillna("")) + list(
        db.manifest["coarse_label"].fillna("")
    )
    assert u.hierarchy == {**da.hierarchy, "b-lines": "lung"}
    assert u.ignore_labels == ["background"]
    # frames: the first source's copied, the second resized to the union's size
    assert np.array_equal(u.frames[: len(da)], da.frames)
    assert u.frames[len(da):].shape[1:] == da.size
    src = {s["name"]: s for s in u.meta["sources"]}
    assert src["lung"]["frames"] == len(db) and src["lung"]["patients"] == 3
    assert src["fetal"]["manifest_sha256"] == manifest_sha256(a)


def test_merge_carries_masks_and_refuses_conflicts(tmp_path):
    seg = make_seg_dataset(tmp_path / "seg", n=6)
    cls = make_class_dataset(tmp_path / "cls", patients_per_class=1, frames=2)
    u = open_dataset(merge_datasets([cls, seg], tmp_path / "u", names=["c", "s"]))
    s = open_dataset(seg)
    rows = np.flatnonzero(u.manifest["mask_index"].to_numpy() >= 0)
    assert len(rows) == 6 and u.mask_classes == {0: "background", 1: "head"}
    for k, i in enumerate(rows):
        assert np.array_equal(u.mask(int(i)), s.mask(k))
    assert u.manifest.loc[rows, "hc_mm"].notna().all()  # recipe columns kept

    x = make_tiny(tmp_path / "x")
    y = make_tiny(tmp_path / "y")
    meta = json.loads((y / "dataset.json").read_text())
    meta["hierarchy"]["4CH"] = "thorax"
    (y / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"'4CH'.*'heart'.*'thorax'"):
        merge_datasets([x, y], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # the same directory name twice: names made unique
    z = make_tiny(tmp_path / "other" / "x")
    assert set(open_dataset(merge_datasets([x, z], tmp_path / "xx")).manifest["source"]) == {"x", "x-2"}


def test_cli_prepare_merge(two, tmp_path, capsys):
    a, b = two
    out = tmp_path / "u"
    assert main(["prepare", "merge", str(a), str(b), "--out", str(out), "--name", "A", "--name", "B",
                 "--size", "24x30"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "merged 2 datasets" in text and "B" in text
    u = open_dataset(out)
    assert u.size == (24, 30) and set(u.manifest["source"]) == {"A", "B"}
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "source A: 32 frames" in info and "source B: 12 frames, 3 videos, 3 patients" in info


def test_union_is_cached_until_a_source_changes(two, tmp_path):
    a, b = two
    first = union_dataset([str(a), str(b)], cache_dir=tmp_path / "cache")
    stamp = (first / "frames.npy").stat().st_mtime_ns
    assert union_dataset([a, b], cache_dir=tmp_path / "cache") == first
    assert (first / "frames.npy").stat().st_mtime_ns == stamp  # not rebuilt
    assert union_dataset(str(a)) == Path(a) and union_dataset([a]) == Path(a)
    make_tiny(a, patients=2)  # the source is re-prepared: another union
    assert union_dataset([a, b], cache_dir=tmp_path / "cache") != first


@pytest.mark.slow
def test_two_source_pretraining_end_to_end(two, tmp_path, monkeypatch, capsys):
    a, b = two
    monkeypatch.setenv("AWCL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(a), "--data", str(b), "--out", str(run), "--method", "awcl",
            "--epochs", "1", "--batch-size", "8", "--size", "32x40", "--num-workers", "0",
            "--threads", "2", "--no-progress", "--max-steps", "2", "--monitor-fraction", "0"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert [s["name"] for s in summary["data_sources"]] == ["fetal", "lung"]
    assert summary["frames"] == len(open_dataset(a)) + len(open_dataset(b))
    assert {"heart", "brain", "lung"} <= set(summary["classes"])  # labels of both sources
    assert (run / "encoder.pt").is_file()
    cfg = (run / "config.yaml").read_text()
    assert str(a) in cfg and str(b) in cfg
    # --resume finds the same union (cached) and continues
    assert main([*args, "--epochs", "2", "--max-steps", "-1", "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] > 2
    assert len(list((tmp_path / "cache" / "merged").iterdir())) == 1


def test_study_config_with_several_pretraining_sources(tmp_path):
    raw = base_raw()
    raw["pretrain_data"] = [{"recipe": "phantom", "params": {"n": 1}}, str(tmp_path / "prepared")]
    cfg = parse_config(raw)
    assert len(cfg.pretrain_data.sources) == 2
    plan = plan_study(cfg, tmp_path / "s")
    merge = [r for r in plan.runs if r.kind == "data" and r.name == "merge"]
    assert len(merge) == 1 and set(merge[0].deps) == {"source0"}
    assert merge[0].config["paths"] == [None, str((tmp_path / "prepared").resolve())]
    assert all(r.deps["data"] is merge[0] for r in plan.runs if r.kind == "pretrain")
    # one source alone keeps the plan (and its cache keys) as before
    single = plan_study(parse_config(base_raw()), tmp_path / "s")
    assert not any(r.name == "merge" for r in single.runs)
    with pytest.raises(Exception, match=r"pretrain_data.*at least two"):
        parse_config({**base_raw(), "pretrain_data": [str(tmp_path)]})


def test_study_runs_a_merge_of_real_sources(two, tmp_path):
    """The real data executor builds the union; the stand-ins do the rest."""
    from awcl.study.backends import prepare_data

    a, b = two
    raw = base_raw()
    raw["pretrain_data"] = [str(a), str(b)]
    calls = Calls()
    ex = calls.executors()
    ex.data = prepare_data
    res = run_study(parse_config(raw), tmp_path / "s", ex, progress=False, echo=lambda s: None)
    merged = next((tmp_path / "s" / "runs").glob("data-merge-*"))
    u = open_dataset(merged / "run")
    assert len(u) == len(open_dataset(a)) + len(open_dataset(b))
    assert [s["name"] for s in u.meta["sources"]] == ["fetal", "lung"]
    assert any(d.startswith("pretrain-") for d in res.computed)
