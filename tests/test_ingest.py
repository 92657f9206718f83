"""Ingestion: videos, DICOM cine and labelled image folders, incl. bad inputs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from awcl.cli import main as awcl_main
from awcl.data.crop import Box
from awcl.data.imageio import resize
from awcl.data.ingest import prepare_images, prepare_videos
from awcl.data.store import anonymize, open_dataset
from awcl.data.video import dicom_metadata, iter_frames, read_frames, sniff
from awcl.errors import AwclError, DataError

SIZE = (32, 40)
PATIENT_NAME = "Doe^Janeqwerty"
PATIENT_ID = "MRN-778899"


# ---------------------------------------------------------------------------- input builders
def _scene(t: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A fan-like bright region whose speckle changes over time, plus a static corner mark."""
    rng = np.random.default_rng(t)
    img = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    sector = (yy > 6) & (np.abs(xx - w / 2) < (yy - 2) * 0.6)
    img[sector] = rng.integers(40, 220, sector.sum())
    img[1:4, 1:6] = 255  # static "text"
    return img


def _write_video(path: Path, n: int = 20, codec: str = "mpeg4", fmt: str | None = None) -> None:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for t in range(n):
            frame = av.VideoFrame.from_ndarray(_scene(t), format="gray")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_gif(path: Path, n: int = 9) -> None:
    frames = [Image.fromarray(_scene(t)).convert("P") for t in range(n)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _write_dicom(
    path: Path,
    frames: np.ndarray,
    photometric: str = "MONOCHROME2",
    patient_id: str | None = PATIENT_ID,
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = frames.shape[-3:-1]
        if frames.ndim == 4:
            ds.NumberOfFrames = frames.shape[0]
        elif "NumberOfFrames" in ds:
            del ds.NumberOfFrames
    ds.PhotometricInterpretation = photometric
    bits = 16 if frames.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture()
def video_folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    _write_video(src / "a.mp4", n=20, codec="libx264")
    _write_video(src / "sub" / "b.avi", n=13, codec="mjpeg", fmt="avi")
    _write_gif(src / "c.gif", n=9)
    _write_dicom(src / "sub" / "cine.dcm", np.stack([_scene(t) for t in range(6)]))
    # Bad inputs, each to be skipped with a reason naming it.
    (src / "zero.mp4").write_bytes(b"")
    (src / "notes.avi").write_text("this is a text file, not a video\n")
    whole = (src / "a.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (src / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00garbage")
    return src


# ---------------------------------------------------------------------------- video reading
def test_iter_frames_indices_and_magic_bytes(tmp_path: Path):
    mp4 = tmp_path / "v.mp4"
    _write_video(mp4, n=10)
    got = list(iter_frames(mp4, every=3))
    assert [i for i, _ in got] == [0, 3, 6, 9]
    assert all(f.dtype == np.uint8 and f.shape == (48, 64) for _, f in got)
    # Content decides, not the extension: a GIF named .mp4 reads as the GIF it is.
    gif = tmp_path / "really_a_gif.mp4"
    _write_gif(gif, n=5)
    assert sniff(gif) == "gif"
    idx, frames = read_frames(gif, every=2)
    assert list(idx) == [0, 2, 4] and frames.shape == (3, 48, 64)
    # The decoded image is the one written (palette -> grey within quantisation error).
    assert np.abs(frames[0].astype(int) - _scene(0).astype(int)).mean() < 12


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("zero.mp4", b"", "empty"),
        ("text.avi", b"hello, I am text\n" * 10, "not a recognised"),
        ("fake.dcm", b"\0" * 128 + b"DICM" + b"\x01" * 20, "DICOM"),
    ],
)
def test_iter_frames_bad_files_name_the_file(tmp_path: Path, name: str, content: bytes, needle: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(iter_frames(path))
    assert str(path) in str(err.value) and needle in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_video_is_a_data_error(tmp_path: Path):
    good = tmp_path / "g.mp4"
    _write_video(good, n=20, codec="libx264")
    bad = tmp_path / "t.mp4"
    bad.write_bytes(good.read_bytes()[:900])
    with pytest.raises(DataError, match=r"t\.mp4"):
        read_frames(bad)


def test_dicom_multiframe_16bit_and_monochrome1(tmp_path: Path):
    cine = np.stack([_scene(t) for t in range(5)]).astype(np.uint16) * 16  # 12-bit range
    path = tmp_path / "m1.dcm"
    _write_dicom(path, cine, photometric="MONOCHROME1")
    idx, frames = read_frames(path, every=2)
    assert list(idx) == [0, 2, 4]
    # 12-bit scaled to 8 bit, then inverted (MONOCHROME1: low = white).
    expected = 255 - np.rint(cine[0].astype(np.float32) / 4095 * 255).astype(np.uint8)
    assert np.abs(frames[0].astype(int) - expected.astype(int)).max() <= 1
    single = tmp_path / "one.dcm"
    _write_dicom(single, _scene(3))
    idx, frames = read_frames(single, every=8)
    assert list(idx) == [0] and np.array_equal(frames[0], _scene(3))
    rgb = np.dstack([_scene(3), _scene(3) // 2, np.zeros((48, 64), np.uint8)])
    _write_dicom(tmp_path / "rgb.dcm", np.stack([rgb, rgb]), photometric="RGB")
    idx, frames = read_frames(tmp_path / "rgb.dcm", every=1)
    luma = 0.299 * _scene(3) + 0.587 * (_scene(3) // 2)
    assert list(idx) == [0, 1] and np.abs(frames[1] - luma).max() <= 1
    meta = dicom_metadata(single)
    assert meta["patient_id"] == anonymize(PATIENT_ID)
    assert PATIENT_NAME not in json.dumps(meta) and PATIENT_ID not in json.dumps(meta)


# ---------------------------------------------------------------------------- prepare videos
def test_prepare_videos_formats_skips_and_anonymity(video_folder: Path, tmp_path: Path):
    out = prepare_videos(video_folder, tmp_path / "out", every=4, size=SIZE, keep_names=True)
    ds = open_dataset(out)
    m = ds.manifest
    assert ds.frames.shape[1:] == SIZE
    # video_id = relative path without extension; frame_index = original index.
    per_video = m.groupby("video_id")["frame_index"].apply(list).to_dict()
    assert per_video == {
        "a": [0, 4, 8, 12, 16],
        "sub/b": [0, 4, 8, 12],
        "c": [0, 4, 8],
        "sub/cine": [0, 4],
    }
    dicom_rows = m[m["video_id"] == "sub/cine"]
    assert set(dicom_rows["patient_id"]) == {anonymize(PATIENT_ID)}
    assert set(m.loc[m["video_id"] == "a", "patient_id"]) == {"a"}
    skipped = {s["file"]: s["reason"] for s in ds.meta["skipped"]}
    assert set(skipped) == {"zero.mp4", "notes.avi", "truncated.mp4", "broken.dcm"}
    assert "empty" in skipped["zero.mp4"]
    assert "extension" in skipped["notes.avi"]
    # Auto crop removed the black margin around the fan: recorded box is inside the frame.
    box = Box.parse(m.loc[m["video_id"] == "a", "crop_box"].iloc[0])
    assert box.area < 48 * 64
    # No patient name or identifier anywhere in what was written.
    for f in out.rglob("*"):
        data = f.read_bytes()
        assert PATIENT_NAME.encode() not in data and b"Janeqwerty" not in data, f
        assert PATIENT_ID.encode() not in data, f


def test_uid_named_dicom_is_pseudonymised(tmp_path: Path):
    src = tmp_path / "pacs"
    src.mkdir()
    uid = "1.2.840.113619.2.55.3.6046"
    _write_dicom(src / uid, np.stack([_scene(t) for t in range(3)]), patient_id=None)  # no suffix
    broken = "1.2.840.113619.2.55.3.7777"  # DICOM magic, then garbage: a counted skip
    (src / f"{broken}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 8)
    ds = open_dataset(prepare_videos(src, tmp_path / "out", every=1, size=SIZE, keep_names=True))
    assert len(ds) == 3
    assert ds.manifest["video_id"].iloc[0] == ds.manifest["patient_id"].iloc[0] == anonymize(uid)
    assert [s["file"] for s in ds.meta["skipped"]] == [anonymize(f"{broken}.dcm") + ".dcm"]
    for f in (tmp_path / "out").rglob("*"):
        data = f.read_bytes()
        assert uid.encode() not in data and broken.encode() not in data and b"Janeqwerty" not in data


def test_prepare_videos_is_deterministic(video_folder: Path, tmp_path: Path):
    a = prepare_videos(video_folder, tmp_path / "a", every=3, size=SIZE, keep_names=True)
    b = prepare_videos(video_folder, tmp_path / "b", every=3, size=SIZE, keep_names=True)
    for name in ("frames.npy", "manifest.csv", "dataset.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_prepare_videos_fixed_crop_and_no_crop(video_folder: Path, tmp_path: Path):
    src = tmp_path / "one"
    src.mkdir()
    os.link(video_folder / "a.mp4", src / "a.mp4")
    fixed = open_dataset(prepare_videos(src, tmp_path / "f", every=5, crop=Box(0, 24, 0, 32), size=SIZE, keep_names=True))
    none = open_dataset(prepare_videos(src, tmp_path / "n", every=5, crop=None, size=SIZE))
    assert set(fixed.manifest["crop_box"]) == {"0,24,0,32"}
    assert set(none.manifest["crop_box"].fillna("")) == {""}
    first = read_frames(src / "a.mp4", every=5)[1][0]  # [48, 64]
    assert np.array_equal(fixed.frames[0], resize(first[0:24, 0:32], SIZE))
    assert np.array_equal(none.frames[0], resize(first, SIZE))


def test_prepare_videos_with_label_table(video_folder: Path, tmp_path: Path):
    table = tmp_path / "labels.tsv"
    table.write_text(
        "file\torgan\tview\tscan\n"
        "a.mp4\theart\t4CH\tS1\n"
        "sub/b.avi\theart\tLVOT\tS1\n"
        "c\tspine\tsagittal\tS2\n"
        "gone.mp4\theart\t4CH\tS3\n"
    )
    out = prepare_videos(
        video_folder,
        tmp_path / "out",
        every=8,
        size=SIZE,
        labels_csv=table,
        sep="\t",
        path_col="file",
        coarse_col="organ",
        fine_col="view",
        patient_col="scan",
        keep_names=True,
    )
    ds = open_dataset(out)
    m = ds.manifest.drop_duplicates("video_id").set_index("video_id")
    assert m.loc["a", "fine_label"] == "4CH" and m.loc["c", "coarse_label"] == "spine"
    assert m.loc["a", "patient_id"] == m.loc["sub/b", "patient_id"] == anonymize("S1")
    assert pd_isna(m.loc["sub/cine", "coarse_label"])
    assert ds.hierarchy == {"4CH": "heart", "LVOT": "heart", "sagittal": "spine"}
    assert any(s["file"] == "gone.mp4" for s in ds.meta["skipped"])


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_empty_or_all_bad_source_leaves_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no video"):
        prepare_videos(empty, tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"")
    (bad / "y.avi").write_text("nope")
    with pytest.raises(DataError, match="no frames were prepared"):
        prepare_videos(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "empty"]  # no out, no temp
    with pytest.raises(DataError, match="not found"):
        prepare_videos(tmp_path / "missing", tmp_path / "out")


# ---------------------------------------------------------------------------- prepare images
@pytest.fixture()
def image_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    src = tmp_path / "imgs"
    src.mkdir()
    base = _scene(1)
    Image.fromarray(base).save(src / "g8.png")
    Image.fromarray(base.astype(np.uint16) * 257).save(src / "g16.png")  # 16-bit grey
    rgba = np.dstack([base, base, base, np.full_like(base, 128)])
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(base).convert("P").save(src / "pal.png")
    Image.fromarray(base).save(src / "unlisted.png")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    table = tmp_path / "labels.csv"
    table.write_text(
        "Image_name;Patient_num;Plane;Sub_plane \n"
        "g8.png;Patient001;ignored;Trans-thalamic \n"
        "g16.png;Patient001;;Trans-cerebellum \n"
        "rgba.png;Patient002;;Femur \n"
        "pal.png;Patient003;;Femur \n"
        "pal.png;Patient003;;Femur \n"  # duplicate row
        "missing.png;Patient004;;Femur \n"  # names a missing file
        "corrupt.png;Patient004;;Femur \n"  # unreadable image
        "g8.png;Patient009;;Abdomen \n"  # conflicting duplicate
        "rgba.png;Patient005;;Kidney \n"  # label not in the mapping (and a duplicate)
    )
    mapping = tmp_path / "map.yaml"
    mapping.write_text("brain: [Trans-thalamic, Trans-cerebellum]\nfemur: [Femur]\nAbdomen: abdomen\n")
    return src, table, mapping


def _img_kwargs(table: Path, mapping: Path) -> dict:
    return dict(
        labels=table,
        sep=";",
        path_col="Image_name",
        fine_col="Sub_plane",  # header has a trailing space in the file
        patient_col="Patient_num",
        mapping=mapping,
        size=SIZE,
        crop=None,
        keep_names=True,
    )


def test_prepare_images_labels_mapping_and_skips(image_folder, tmp_path: Path):
    src, table, mapping = image_folder
    ds = open_dataset(prepare_images(src, tmp_path / "out", **_img_kwargs(table, mapping)))
    m = ds.manifest.set_index("file")
    assert sorted(m.index) == ["g16.png", "g8.png", "pal.png", "rgba.png"]
    assert m.loc["g8.png", "coarse_label"] == "brain" and m.loc["g8.png", "fine_label"] == "Trans-thalamic"
    assert m.loc["rgba.png", "coarse_label"] == "femur"
    assert m.loc["g8.png", "patient_id"] == m.loc["g16.png", "patient_id"] == anonymize("Patient001")
    assert ds.hierarchy["Trans-cerebellum"] == "brain" and ds.hierarchy["Femur"] == "femur"
    # 8-bit, 16-bit, RGBA and palette images of one scene all load to (nearly) the same frame.
    frames = {f: ds.frames[i].astype(int) for i, f in enumerate(ds.manifest["file"])}
    for name in ("g16.png", "rgba.png", "pal.png"):
        assert np.abs(frames[name] - frames["g8.png"]).mean() < 3, name
    reasons = {(s["file"], s["reason"].split(" (")[0]) for s in ds.meta["skipped"]}
    assert ("pal.png", "duplicate row") in reasons
    assert ("missing.png", "label row names a file that does not exist") in reasons
    assert ("g8.png", "duplicate row with different labels") in reasons
    assert any(f == "corrupt.png" for f, _ in reasons)
    assert any(f == "rgba.png" and "'Kidney'" in r for f, r in reasons)
    assert len(ds.meta["skipped"]) == 5
    assert "Patient00" not in (tmp_path / "out" / "manifest.csv").read_text()


def test_prepare_images_strict_mapping_and_unlabelled(image_folder, tmp_path: Path):
    src, table, mapping = image_folder
    with pytest.raises(DataError, match="'Kidney'"):
        prepare_images(src, tmp_path / "strict", strict=True, **_img_kwargs(table, mapping))
    assert not (tmp_path / "strict").exists()
    ds = open_dataset(
        prepare_images(src, tmp_path / "all", include_unlabelled=True, **_img_kwargs(table, mapping))
    )
    row = ds.manifest.set_index("file").loc["unlisted.png"]
    assert pd_isna(row["coarse_label"]) and row["patient_id"] == "unlisted"


def test_prepare_images_bad_tables(image_folder, tmp_path: Path):
    src, table, mapping = image_folder
    kw = _img_kwargs(table, mapping)
    with pytest.raises(DataError, match="no column 'Plane_x'"):
        prepare_images(src, tmp_path / "o", **{**kw, "fine_col": "Plane_x"})
    with pytest.raises(DataError, match="no column"):
        prepare_images(src, tmp_path / "o", **{**kw, "sep": ","})  # wrong separator
    latin = tmp_path / "latin.csv"  # a spreadsheet export in cp1252, not UTF-8
    latin.write_bytes("Image_name;Patient_num;Plane;Sub_plane\ng8.png;P1;;Fémur\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"latin\.csv: not UTF-8"):
        prepare_images(src, tmp_path / "o", **{**kw, "labels": latin})
    header_only = tmp_path / "header.csv"
    header_only.write_text("Image_name;Patient_num;Plane;Sub_plane\n")
    with pytest.raises(DataError, match=r"header\.csv: label table has no rows"):
        prepare_images(src, tmp_path / "o", **{**kw, "labels": header_only})
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        prepare_images(empty, tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


def test_prepare_images_table_with_byte_order_mark(image_folder, tmp_path: Path):
    """Excel's "CSV UTF-8" starts with a BOM, which must not hide the first column's name."""
    src, table, mapping = image_folder
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    ds = open_dataset(prepare_images(src, tmp_path / "o", **{**_img_kwargs(table, mapping), "labels": bom}))
    assert sorted(ds.manifest["file"]) == ["g16.png", "g8.png", "pal.png", "rgba.png"]


def test_cli_prepare_images_and_error(image_folder, tmp_path: Path, capsys):
    src, table, mapping = image_folder
    out = tmp_path / "cli"
    rc = awcl_main(
        [
            "prepare", "images", str(src), "--labels", str(table), "--sep", ";",
            "--path-col", "Image_name", "--fine-col", "Sub_plane", "--patient-col", "Patient_num",
            "--mapping", str(mapping), "--size", "32x40", "--out", str(out), "--keep-names",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "4 frames" in printed and "skipped 5" in printed
    assert open_dataset(out).size == SIZE
    rc = awcl_main(["prepare", "videos", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("awcl: error:") and "nope" in err and "Traceback" not in err
    # --out at an existing folder that is not a prepared dataset: refused, folder untouched
    rc = awcl_main(
        ["prepare", "images", str(src), "--labels", str(table), "--sep", ";",
         "--path-col", "Image_name", "--out", str(src)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "not a prepared dataset" in err and (src / "g8.png").is_file()


# ---------------------------------------------------------------------------- real POCUS
def test_real_pocus_videos(shared_data: Path, tmp_path: Path):
    folder = shared_data / "pocus" / "pocus_videos" / "convex"
    names = ["Pneu_northumbria_0409_set1_vid1.avi", "Reg_pat1Image_132943.mpeg", "Cov-Atlas+(45).gif"]
    if not all((folder / n).is_file() for n in names):
        pytest.skip("POCUS sample videos not present")
    src = tmp_path / "pocus"
    src.mkdir()
    for n in names:
        (src / n).symlink_to(folder / n)
    out = prepare_videos(src, tmp_path / "out", every=8, size=SIZE, keep_names=True)
    ds = open_dataset(out)
    m = ds.manifest
    assert m["video_id"].nunique() == 3 and not ds.meta["skipped"]
    for n in names:
        info: dict[str, int] = {}
        idx, frames = read_frames(folder / n, every=8, stats=info)
        rows = m[m["file"] == n]
        assert len(rows) == len(idx) == math.ceil(info["decoded"] / 8)
        assert list(rows["frame_index"]) == list(idx)
        box = Box.parse(rows["crop_box"].iloc[0])
        h, w = frames.shape[1:]
        assert 0 <= box.y0 < box.y1 <= h and 0 <= box.x0 < box.x1 <= w
        assert box.area >= 0.25 * h * w
    assert ds.frames.mean() > 10  # real image content, not black


# ---------------------------------------------------------------------------- pseudonyms
def _old_public_salt_id(value: str) -> str:
    """The pre-issue-18 pseudonym: SHA-256 with the fixed public salt 'awcl', 48 bits."""
    import hashlib

    return "p" + hashlib.sha256(f"awcl:{value}".encode()).hexdigest()[:12]


def test_patient_ids_are_keyed_and_cannot_be_brute_forced(monkeypatch, tmp_path: Path):
    from awcl import secret

    secret._cache.clear()
    monkeypatch.setenv("AWCL_SECRET_FILE", str(tmp_path / "cfg" / "secret"))
    pid = "004217"  # a 6-digit PatientID: a tiny id space
    ours = anonymize(pid)
    assert (tmp_path / "cfg" / "secret").stat().st_mode & 0o777 == 0o600  # created on first use
    assert anonymize(pid) == ours  # stable under one secret
    # brute force over the id space with the old public salt finds nothing
    space = (f"{i:06d}" for i in range(10**6))
    assert ours[1:] not in {_old_public_salt_id(c)[1:] for c in space}
    assert ours[1:13] != _old_public_salt_id(pid)[1:]
    # a different secret gives unrelated ids; $AWCL_SECRET overrides the file
    monkeypatch.setenv("AWCL_SECRET", "another-team-secret-0123456789")
    assert anonymize(pid) != ours
    monkeypatch.setenv("AWCL_SECRET", "short")
    with pytest.raises(AwclError, match="shorter than"):
        anonymize(pid)


def test_source_names_are_pseudonymised_by_default(video_folder: Path, tmp_path: Path, monkeypatch):
    src = tmp_path / "patients"
    (src / "DOE_JOHN").mkdir(parents=True)
    import shutil

    shutil.copy(video_folder / "a.mp4", src / "DOE_JOHN" / "scan.mp4")
    (src / "DOE_JOHN" / "empty.mp4").write_bytes(b"")
    a = prepare_videos(src, tmp_path / "a", every=4, size=SIZE)
    b = prepare_videos(src, tmp_path / "b", every=4, size=SIZE)
    for name in ("frames.npy", "manifest.csv", "dataset.json"):  # same secret, same bytes
        text = (a / name).read_bytes()
        assert text == (b / name).read_bytes(), name
        assert b"DOE" not in text and b"JOHN" not in text and b"scan" not in text, name
    m = open_dataset(a).manifest
    assert set(m["file"]) == {anonymize("DOE_JOHN/scan.mp4", "f") + ".mp4"}
    assert set(m["video_id"]) == {anonymize("DOE_JOHN/scan.mp4", "v")}
    kept = open_dataset(prepare_videos(src, tmp_path / "k", every=4, size=SIZE, keep_names=True))
    assert set(kept.manifest["video_id"]) == {"DOE_JOHN/scan"}
