"""Public-data recipes: hc18 and pocus on the real copies, fetal-planes and busi on synthetic
releases with the originals' quirks, and bad input for each."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from awcl.cli import main
from awcl.data.recipes import busi, fetal_planes, hc18, pocus
from awcl.data.store import open_dataset
from awcl.errors import DataError


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def _ellipse_mask(h: int, w: int, center, axes, angle=0.0, filled=True) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (center, axes, angle), 255, -1 if filled else 2)
    return m


# ============================================================================ HC18 (real)
@pytest.fixture(scope="module")
def hc18_full(shared_data, tmp_path_factory):
    """All 999 HC18 images at 64x80 (prepared once for the module)."""
    out = tmp_path_factory.mktemp("hc18") / "ds"
    hc18.prepare_hc18(shared_data / "hc18", out, hc18.HC18Config(size=(64, 80)))
    return open_dataset(out)


def test_hc18_real_counts_and_columns(hc18_full):
    ds = hc18_full
    m = ds.manifest
    assert len(m) == 999 and ds.masks is not None and len(ds.masks) == 999
    assert (m["mask_index"] >= 0).all() and m["hc_mm"].notna().all() and (m["hc_mm"] > 0).all()
    assert set(m["coarse_label"]) == {"head"} and ds.mask_classes == {0: "background", 1: "head"}
    assert m["frame_id"].is_unique and not ds.meta["skipped"]
    # Pixel size per axis at the prepared scale follows the resize factor of each axis.
    np.testing.assert_allclose(m["pixel_size_y_mm"] * 64, m["pixel_size_mm"] * m["orig_height"], rtol=1e-9)
    np.testing.assert_allclose(m["pixel_size_x_mm"] * 80, m["pixel_size_mm"] * m["orig_width"], rtol=1e-9)
    assert (m["orig_width"] == 800).mean() > 0.9  # "mostly 800x540"
    # 010_2HC is a further image of the subject of 010_HC.
    pid = dict(zip(m["filename"], m["patient_id"]))
    assert pid["010_HC.png"] == pid["010_2HC.png"] != pid["011_HC.png"]
    assert m["patient_id"].nunique() < 999
    # Masks are filled heads of plausible size, not thin outlines.
    frac = np.asarray(ds.masks).reshape(999, -1).mean(axis=1)
    assert 0.02 < np.median(frac) < 0.6 and frac.min() > 0.005


def test_hc18_hc_recovered_from_prepared_masks(hc18_full):
    ds, m = hc18_full, hc18_full.manifest
    err = [
        abs(hc18.hc_from_mask(ds.mask(i), m["pixel_size_y_mm"].iat[i], m["pixel_size_x_mm"].iat[i]) - h) / h
        for i, h in enumerate(m["hc_mm"])
    ]
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.1


def test_hc18_full_resolution_ellipse_matches_table(shared_data):
    root = shared_data / "hc18"
    table = pd.read_csv(root / hc18.CSV_NAME).iloc[::10]
    err = []
    for name, px, hc in table.itertuples(index=False):
        ann = cv2.imread(str(root / "training_set" / name.replace(".png", "_Annotation.png")), 0)
        err.append(abs(hc18.hc_from_mask(hc18.fill_annotation(ann), px, px) - hc) / hc)
    assert np.median(err) < 0.02


def test_hc18_outline_annotation_is_filled(shared_data):
    ann = cv2.imread(str(shared_data / "hc18" / "training_set" / "000_HC_Annotation.png"), 0)
    filled_ref = hc18.fill_annotation(ann)
    contours, _ = cv2.findContours(filled_ref, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = np.zeros_like(ann)
    cv2.drawContours(outline, contours, -1, 255, 2)  # the official release's look
    assert outline.mean() / 255 < 0.3 * filled_ref.mean()
    got = hc18.fill_annotation(outline)
    iou = (got & filled_ref).sum() / (got | filled_ref).sum()
    assert iou > 0.97
    # An outline with a gap (open ring) falls back to a fitted ellipse.
    gapped = outline.copy()
    xs = np.nonzero(filled_ref)[1]
    gapped[:, xs.min() + (xs.max() - xs.min()) // 2 - 15 : xs.min() + (xs.max() - xs.min()) // 2 + 15] = 0
    got = hc18.fill_annotation(gapped)
    assert (got & filled_ref).sum() / (got | filled_ref).sum() > 0.9


def test_hc18_subject_ids():
    assert hc18.subject_id("010_HC.png") == hc18.subject_id("010_2HC.png") == "010"
    assert hc18.subject_id("123_3HC.png") == "123"
    with pytest.raises(DataError, match="not an HC18 image name"):
        hc18.subject_id("foo.png")


def _hc18_release(root: Path, n: int = 3, outline: bool = True) -> Path:
    rows = []
    for i in range(n):
        name = f"{i:03d}_HC.png"
        _png(root / "training_set" / name, np.random.default_rng(i).integers(0, 255, (54, 80), np.uint8))
        _png(
            root / "training_set" / name.replace(".png", "_Annotation.png"),
            _ellipse_mask(54, 80, (40, 27), (40, 24), 10, filled=not outline),
        )
        rows.append(f"{name},0.1,{100 + i}")
    (root / hc18.CSV_NAME).write_text("filename,pixel size(mm),head circumference (mm)\n" + "\n".join(rows) + "\n")
    return root


def test_hc18_bad_input_counted_skips(tmp_path):
    src = _hc18_release(tmp_path / "rel", n=3)
    with open(src / hc18.CSV_NAME, "a") as fh:
        fh.write("777_HC.png,0.1,120\n")  # names a missing file
    (src / "training_set" / "001_HC.png").write_bytes(b"")  # unreadable
    out = tmp_path / "ds"
    hc18.prepare_hc18(src, out, hc18.HC18Config(size=(27, 40)))
    ds = open_dataset(out)
    assert list(ds.manifest["filename"]) == ["000_HC.png", "002_HC.png"]
    skipped = json.loads((out / "dataset.json").read_text())["skipped"]
    assert len(skipped) == 2 and any("777_HC.png" in s["file"] for s in skipped)
    # Outline annotations were filled: the ellipse (axes 40x24) covers pi*20*12/(80*54) = 0.17
    # of the frame, the 2-pixel outline alone 0.07.
    assert 0.15 < ds.masks[0].mean() < 0.25


def test_hc18_missing_csv_and_empty_result(tmp_path):
    with pytest.raises(DataError, match=r"training_set_pixel_size_and_HC\.csv"):
        hc18.prepare_hc18(tmp_path, tmp_path / "out")
    src = _hc18_release(tmp_path / "rel", n=2)
    for p in (src / "training_set").glob("*_HC.png"):
        p.unlink()
    with pytest.raises(DataError, match="no training_set"):
        hc18.prepare_hc18(src, tmp_path / "out")
    _png(src / "training_set" / "000_HC.png", np.zeros((54, 80), np.uint8))
    (src / "training_set" / "000_HC_Annotation.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="no frames were prepared"):
        hc18.prepare_hc18(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_hc18_cli_limit(tmp_path, capsys):
    src = _hc18_release(tmp_path / "rel", n=3, outline=False)
    assert main(["prepare", "hc18", str(src), "--out", str(tmp_path / "o"), "--size", "16x24", "--limit", "2"]) == 0
    assert len(open_dataset(tmp_path / "o")) == 2
    assert main(["prepare", "hc18", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "source folder not found" in capsys.readouterr().err
    # a negative --limit would silently drop the last rows (head(-3)): a usage error instead
    for bad in (["--limit", "-3"], ["--size", "2x2"], ["--size", "big"]):
        with pytest.raises(SystemExit) as exc:
            main(["prepare", "hc18", str(src), "--out", str(tmp_path / "o3"), *bad])
        assert exc.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


# ============================================================================ POCUS (real)
@pytest.fixture(scope="module")
def pocus_real(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pocus") / "ds"
    pocus.prepare_pocus(shared_data / "pocus", out, pocus.PocusConfig(size=(32, 40), every=32))
    return open_dataset(out)


def test_pocus_real_every_video_with_class(pocus_real, shared_data):
    m = pocus_real.manifest
    per_file = m.drop_duplicates("filename").set_index("filename")
    videos = per_file[per_file["kind"] == "video"]
    on_disk = {
        p.relative_to(shared_data / "pocus").as_posix()
        for p in (shared_data / "pocus" / "pocus_videos").rglob("*")
        if p.is_file()
    }
    assert len(on_disk) == 124 and set(videos.index) == on_disk
    assert videos["coarse_label"].value_counts().to_dict() == {
        "regular": 59, "pneumonia": 37, "covid": 22, "viral": 6,
    }
    assert videos["video_id"].is_unique and (videos["video_id"] == videos["patient_id"]).all()
    assert (per_file["kind"] == "image").sum() == 31
    assert set(per_file["probe"]) == {"convex", "linear"}
    assert (per_file["label_source"] == "metadata").all() and pocus_real.meta["label_conflicts"] == []
    assert not pocus_real.meta["skipped"]
    # Video frames are every 32nd frame; a video contributes several frames.
    assert (m.loc[m["kind"] == "video", "frame_index"] % 32 == 0).all()
    assert m.groupby("video_id").size().max() > 3


def test_pocus_never_writes_patient_names(pocus_real, shared_data):
    meta = pd.read_csv(shared_data / "pocus" / "dataset_metadata.csv", dtype=str)
    names = {v for v in meta["Patient ID / Name"].dropna() if len(v) > 3}
    text = (pocus_real.root / "manifest.csv").read_text()
    assert not any(f",{n}," in text for n in names)
    assert not any("patient" in c.lower() and c != "patient_id" for c in pocus_real.manifest.columns)


def test_pocus_labels():
    assert pocus.class_from_name("Cov-Atlas+(44).gif") == "covid"
    assert pocus.class_from_name("pneu-radiopaeda.mp4") == "pneumonia"
    assert pocus.class_from_name("Reg_Image_181206_crop.mp4") == "regular"
    assert pocus.class_from_name("Vir_or_Pneu_file4.mp4") == "viral"
    assert pocus.class_from_name("Regular.mp4") is None and pocus.class_from_name("x.mp4") is None
    assert pocus.class_from_label("Bacterial pneumonia") == "pneumonia"
    assert pocus.class_from_label("Viral pneumonia") == "viral"
    assert pocus.class_from_label("COVID-19") == "covid"
    assert pocus.class_from_label("Regular") == "regular"


def _gif(path: Path, n: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 48), np.uint8)) for _ in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)


def test_pocus_synthetic_bad_input_and_fallback(tmp_path):
    root = tmp_path / "data"
    _gif(root / "pocus_videos" / "convex" / "Cov_a.gif")
    _gif(root / "pocus_videos" / "linear" / "Reg_b.gif")
    _gif(root / "pocus_videos" / "convex" / "Reg_meta_says_covid.gif")
    _gif(root / "pocus_videos" / "convex" / "nolabel.gif")  # no row, no prefix -> skipped
    (root / "pocus_videos" / "convex" / "Pneu_broken.mp4").write_text("not a video")
    _png(root / "pocus_images" / "linear" / "Vir_c.png", np.full((30, 30), 80, np.uint8))
    pd.DataFrame(
        {"Filename": ["Cov_a", "Reg_meta_says_covid"], "Label": ["COVID-19", "COVID-19"],
         "Probe": ["convex", "convex"], "Patient ID / Name": ["Jane Doe", "John Roe"]}
    ).to_csv(root / "dataset_metadata.csv", index=False)
    out = tmp_path / "ds"
    pocus.prepare_pocus(tmp_path, out, pocus.PocusConfig(size=(16, 20), every=2))
    ds = open_dataset(out)
    per_file = ds.manifest.drop_duplicates("filename").set_index("filename")
    assert per_file["coarse_label"].to_dict() == {
        "pocus_videos/convex/Cov_a.gif": "covid",
        "pocus_videos/convex/Reg_meta_says_covid.gif": "covid",
        "pocus_videos/linear/Reg_b.gif": "regular",
        "pocus_images/linear/Vir_c.png": "viral",
    }
    assert per_file.loc["pocus_videos/linear/Reg_b.gif", "label_source"] == "prefix"
    assert ds.meta["label_conflicts"] == ["pocus_videos/convex/Reg_meta_says_covid.gif"]
    assert sorted(Path(s["file"]).name for s in ds.meta["skipped"]) == ["Pneu_broken.mp4", "nolabel.gif"]
    assert list(ds.manifest.loc[ds.manifest["video_id"] == "convex/Cov_a", "frame_index"]) == [0, 2, 4]
    assert "Jane Doe" not in (out / "manifest.csv").read_text()
    # Without the metadata table, prefixes alone give the classes.
    (root / "dataset_metadata.csv").unlink()
    assert main(["prepare", "pocus", str(root), "--out", str(tmp_path / "d2"), "--size", "16x20", "--every", "3"]) == 0
    m2 = open_dataset(tmp_path / "d2").manifest
    assert set(m2["label_source"]) == {"prefix"} and m2["video_id"].nunique() == 4


def test_pocus_missing_layout(tmp_path):
    with pytest.raises(DataError, match="pocus_videos"):
        pocus.prepare_pocus(tmp_path, tmp_path / "out")


# ============================================================================ FETAL_PLANES_DB
FP_ROWS = [
    # Image_name, Patient_num, Plane, Brain_plane, Train
    ("Patient00001_Plane1_1_of_3", 1, "Other", "Not A Brain", 1),
    ("Patient00001_Plane2_1_of_3", 1, "Fetal abdomen", "Not A Brain", 1),
    ("Patient00001_Plane3_1_of_3", 1, "Fetal brain", "Trans-thalamic", 1),
    ("Patient00002_Plane3_1_of_2", 2, "Fetal brain", "Trans-cerebellum", 0),
    ("Patient00002_Plane3_2_of_2", 2, "Fetal brain", "Other", 0),
    ("Patient00003_Plane6_1_of_1", 3, "Maternal cervix", "Not A Brain", 0),
]


def _fetal_release(root: Path, rows=FP_ROWS, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    lines += [f"{n};{p};{pl};{bp};Op. 1;Voluson E6;{t} " for n, p, pl, bp, t in rows]
    lines += list(extra_lines)
    root.mkdir(parents=True, exist_ok=True)
    (root / fetal_planes.CSV_NAME).write_text("\n".join(lines) + "\n")
    for i, (n, *_) in enumerate(rows):
        _png(root / "Images" / f"{n}.png", np.full((60, 80), 20 * i, np.uint8))
    return root


def test_fetal_planes_synthetic_release(tmp_path):
    src = _fetal_release(tmp_path / "FETAL_PLANES_ZENODO")
    out = tmp_path / "ds"
    fetal_planes.prepare_fetal_planes(tmp_path, out, fetal_planes.FetalPlanesConfig(size=(24, 32)))
    ds = open_dataset(out)
    m = ds.manifest
    assert len(m) == 6 and ds.size == (24, 32)
    assert list(m["coarse_label"]) == [r[2] for r in FP_ROWS]
    assert list(m["fine_label"]) == [
        "Other", "Fetal abdomen", "Trans-thalamic", "Trans-cerebellum", "Fetal brain: Other", "Maternal cervix",
    ]
    assert list(m["split"]) == ["train"] * 3 + ["test"] * 3
    assert list(m["patient_id"]) == ["fp-1"] * 3 + ["fp-2"] * 2 + ["fp-3"]
    assert ds.hierarchy["Trans-thalamic"] == "Fetal brain" and ds.hierarchy["Other"] == "Other"
    assert ds.hierarchy["Fetal brain: Other"] == "Fetal brain"
    # Every fine label has exactly one coarse parent.
    assert m.groupby("fine_label")["coarse_label"].nunique().max() == 1
    assert int(ds.frames[5].mean()) == 100  # row i <-> image i
    assert (src / "Images").is_dir()


def test_fetal_planes_bad_rows(tmp_path):
    src = _fetal_release(
        tmp_path / "rel",
        extra_lines=(
            "Patient00009_Plane1_1_of_1;9;Other;Not A Brain;Op. 1;Voluson E6;1 ",  # file missing
            "Patient00001_Plane1_1_of_3;1;Other;Not A Brain;Op. 1;Voluson E6;1 ",  # duplicate
        ),
    )
    (src / "Images" / "Patient00003_Plane6_1_of_1.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "ds"
    fetal_planes.prepare_fetal_planes(src, out, fetal_planes.FetalPlanesConfig(size=(24, 32)))
    ds = open_dataset(out)
    assert len(ds) == 5
    reasons = [s["reason"] for s in ds.meta["skipped"]]
    assert len(reasons) == 3
    assert any("file not found" in r for r in reasons) and any("duplicate" in r for r in reasons)
    assert any("not a readable image" in r for r in reasons)


def test_fetal_planes_wrong_separator_and_missing_csv(tmp_path):
    with pytest.raises(DataError, match=r"FETAL_PLANES_DB_data\.csv"):
        fetal_planes.prepare_fetal_planes(tmp_path, tmp_path / "o")
    src = _fetal_release(tmp_path / "rel")
    text = (src / fetal_planes.CSV_NAME).read_text().replace(";", ",")
    (src / fetal_planes.CSV_NAME).write_text(text)
    with pytest.raises(DataError, match="';'-separated"):
        fetal_planes.prepare_fetal_planes(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ============================================================================ BUSI
def _busi_release(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    _png(base / "benign" / "benign (1).png", np.full((50, 60), 90, np.uint8))
    left = np.zeros((50, 60), np.uint8)
    left[10:20, 5:15] = 255
    right = np.zeros((50, 60), np.uint8)
    right[30:40, 40:55] = 255
    _png(base / "benign" / "benign (1)_mask.png", left)
    _png(base / "benign" / "benign (1)_mask_1.png", right)
    _png(base / "benign" / "benign (2).png", np.full((50, 60), 10, np.uint8))
    _png(base / "benign" / "benign (2)_mask.png", left)
    _png(base / "benign" / "benign (10).png", np.full((50, 60), 10, np.uint8))
    _png(base / "benign" / "benign (10)_mask.png", right)
    rgb = np.zeros((50, 60, 3), np.uint8)
    rgb[5:45, 5:30] = 255
    _png(base / "malignant" / "malignant (1).png", np.full((40, 40, 3), 200, np.uint8))
    _png(base / "malignant" / "malignant (1)_mask.png", rgb[:40, :40])
    _png(base / "normal" / "normal (1).png", np.full((50, 60), 60, np.uint8))
    _png(base / "normal" / "normal (1)_mask.png", np.zeros((50, 60), np.uint8))
    return root


def test_busi_synthetic_release(tmp_path):
    src = _busi_release(tmp_path / "rel")
    out = tmp_path / "ds"
    busi.prepare_busi(src, out, busi.BusiConfig(size=(50, 60)))
    ds = open_dataset(out)
    m = ds.manifest
    assert list(m["filename"]) == [
        "benign/benign (1).png", "benign/benign (2).png", "benign/benign (10).png",
        "malignant/malignant (1).png", "normal/normal (1).png",
    ]
    assert list(m["coarse_label"]) == ["benign"] * 3 + ["malignant", "normal"]
    assert list(m["num_masks"]) == [2, 1, 1, 1, 1]
    merged = ds.mask(0)
    assert merged[15, 10] == 1 and merged[35, 45] == 1 and merged.sum() == 100 + 150  # OR of both
    assert ds.mask(4).sum() == 0 and ds.mask_classes == {0: "background", 1: "lesion"}
    assert m["patient_id"].is_unique


def test_busi_bad_input(tmp_path):
    src = _busi_release(tmp_path / "rel")
    base = src / "Dataset_BUSI_with_GT"
    (base / "benign" / "benign (2)_mask.png").write_bytes(b"")  # unreadable mask
    out = tmp_path / "ds"
    assert main(["prepare", "busi", str(src), "--out", str(out), "--size", "25x30"]) == 0
    ds = open_dataset(out)
    assert len(ds) == 4 and len(ds.meta["skipped"]) == 1
    assert "benign (2)" in ds.meta["skipped"][0]["file"]
    empty = tmp_path / "empty" / "Dataset_BUSI_with_GT"
    for c in busi.CLASSES:
        (empty / c).mkdir(parents=True)
    with pytest.raises(DataError, match="no frames were prepared"):
        busi.prepare_busi(empty.parent, tmp_path / "o2")
    with pytest.raises(DataError, match="Dataset_BUSI_with_GT"):
        busi.prepare_busi(tmp_path / "rel" / "Dataset_BUSI_with_GT" / "benign", tmp_path / "o3")
