"""The built-in phantom: determinism, sweep/label structure, masks, appearance, CLI."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from awcl.cli import main
from awcl.data.phantom import (
    HIERARCHY,
    VIEWS,
    PhantomConfig,
    _screen_geometry,
    make_phantom,
    make_phantom_videos,
    render_sweep,
)
from awcl.data.store import open_dataset
from awcl.errors import AwclError

SMALL = dict(scans=10, frames_per_scan=24, size=(48, 64))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "ds"
    make_phantom(out, PhantomConfig(seed=0, **SMALL))
    return open_dataset(out)


def test_deterministic_per_seed(small, tmp_path):
    again = make_phantom(tmp_path / "again", PhantomConfig(seed=0, **SMALL))
    for name in ("frames.npy", "manifest.csv", "masks.npy", "dataset.json"):
        assert (again / name).read_bytes() == (small.root / name).read_bytes(), name
    other = open_dataset(make_phantom(tmp_path / "other", PhantomConfig(seed=1, **SMALL)))
    assert other.frames.shape == small.frames.shape
    assert not np.array_equal(np.asarray(other.frames), np.asarray(small.frames))
    assert not other.manifest["true_fine"].equals(small.manifest["true_fine"])


def test_structure_and_counts(small):
    m = small.manifest
    assert len(m) == 10 * 24 and small.size == (48, 64)
    assert m["video_id"].nunique() == 10
    # One scan is a second visit of an earlier patient (second_scan_fraction 0.1).
    assert m["patient_id"].nunique() == 9
    assert (m.groupby("video_id")["frame_index"].apply(lambda s: list(s) == list(range(24)))).all()
    assert small.meta["source"] == "phantom" and small.hierarchy == HIERARCHY
    assert small.ignore_labels == ["background"]
    # Every coarse anatomy is visited in many scans; each sweep passes several anatomies.
    truth = m[m["true_coarse"] != "background"]
    per_anatomy = truth.groupby("true_coarse")["video_id"].nunique()
    assert set(per_anatomy.index) == set(VIEWS)
    assert (per_anatomy >= 4).all(), per_anatomy.to_dict()
    assert (truth.groupby("video_id")["true_coarse"].nunique() >= 3).all()
    # A sweep passes each anatomy once: one contiguous run each, background frames between.
    for _, g in m.groupby("video_id"):
        seq = g["true_coarse"].tolist()
        runs = [a for a, b in itertools.pairwise([None, *seq]) if a != b and a is not None] + [seq[-1]]
        anatomy_runs = [r for r in runs if r != "background"]
        assert len(anatomy_runs) == len(set(anatomy_runs)), seq
        assert all(a == "background" or b == "background" or a == b for a, b in itertools.pairwise(seq))
    # Fine views of one organ differ: more than one view of the heart appears.
    assert m.loc[m["true_coarse"] == "heart", "true_fine"].nunique() >= 2


def test_labels_sparse_consistent_and_hierarchical(small):
    m = small.manifest
    coarse, fine = small.labels("coarse"), small.labels("fine")
    labelled = coarse.notna()
    assert (labelled == fine.notna()).all()  # labelled frames carry both
    frac = labelled.mean()
    assert abs(frac - 0.15) < 0.03, frac
    assert (labelled.groupby(m["video_id"]).sum() > 0).all()
    lab = m[labelled]
    assert (lab["coarse_label"] == lab["true_coarse"]).all()
    assert (lab["fine_label"] == lab["true_fine"]).all()
    assert (lab["fine_label"].map(small.hierarchy) == lab["coarse_label"]).all()
    assert (m["true_fine"].map(HIERARCHY) == m["true_coarse"]).all()
    # Labels sit mostly on anatomy frames, some on background.
    assert (lab["coarse_label"] != "background").mean() > 0.6


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_labelled_fraction_configurable(tmp_path, fraction):
    ds = open_dataset(
        make_phantom(tmp_path / "d", PhantomConfig(scans=3, frames_per_scan=20, size=(32, 40), labelled_fraction=fraction, masks="none"))
    )
    assert ds.labels("coarse").notna().mean() == pytest.approx(fraction, abs=0.02)
    assert ds.masks is None


def test_head_masks_on_brain_frames_only(small):
    m = small.manifest
    assert small.mask_classes == {0: "background", 1: "head"}
    assert (m["mask_index"] >= 0).all()  # masks="all": one per frame
    brain = (m["true_coarse"] == "brain").to_numpy()
    assert brain.sum() > 10
    areas = np.array([int(small.mask(i).sum()) for i in range(len(m))])
    assert set(np.unique(np.asarray(small.masks))) <= {0, 1}
    assert (areas[brain] > 0.05 * 48 * 64).all()
    assert (areas[~brain] == 0).all()
    # The head is drawn where the mask is: the skull ring makes its border bright.
    i = int(np.flatnonzero(brain)[0])
    inside = np.asarray(small.mask(i)).astype(bool)
    assert float(small.frames[i][inside].mean()) > 20


def test_brain_only_masks(tmp_path):
    ds = open_dataset(make_phantom(tmp_path / "d", PhantomConfig(scans=4, frames_per_scan=16, size=(32, 40), masks="brain")))
    has = ds.manifest["mask_index"] >= 0
    assert (has == (ds.manifest["true_coarse"] == "brain")).all()


def test_fan_and_burned_in_text(small, tmp_path):
    f = np.asarray(small.frames).astype(np.float32)
    h, w = small.size
    centre = f[:, h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4]
    assert centre.mean() > 25  # image content inside the fan
    corners = np.concatenate([f[:, : h // 6, : w // 5].reshape(len(f), -1), f[:, : h // 6, -w // 5 :].reshape(len(f), -1)], 1)
    assert ((corners > 100).sum(1) > 3).all()  # scanner text in the top corners of every frame
    plain = open_dataset(make_phantom(tmp_path / "nt", PhantomConfig(text=False, masks="none", **SMALL)))
    g = np.asarray(plain.frames)
    assert g[:, : h // 6, : w // 5].max() == 0 and g[:, : h // 6, -w // 5 :].max() == 0  # black outside the fan
    fan = np.asarray(small.frames)[:, h // 3 :, w // 3 : -w // 3]  # same sweep, only the UI differs
    assert np.array_equal(fan, g[:, h // 3 :, w // 3 : -w // 3])


def test_smooth_motion_within_a_sweep():
    frames, truth = render_sweep(PhantomConfig(size=(64, 80), frames_per_scan=30), scan=0)
    f = frames.astype(np.float32)
    same = [np.abs(f[i] - f[i + 1]).mean() for i in range(29) if truth[i] == truth[i + 1] != "background"]
    far = [np.abs(f[i] - f[j]).mean() for i in range(30) for j in range(30) if truth[i] != truth[j] and "background" not in (truth[i], truth[j]) and HIERARCHY[truth[i]] != HIERARCHY[truth[j]]]
    assert same and far
    assert np.mean(same) < np.mean(far)


def test_sizes_including_demo_size(tmp_path):
    for size in ((112, 144), (32, 40)):
        frames, truth = render_sweep(PhantomConfig(size=size, frames_per_scan=8, scans=1), scan=0)
        assert frames.shape == (8, *size) and frames.dtype == np.uint8 and len(truth) == 8


def test_cli_prepare_and_info(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["prepare", "phantom", "--out", str(out), "--scans", "3", "--frames-per-scan", "12", "--size", "32x40", "--seed", "3", "--labelled-fraction", "0.25"])
    assert rc == 0
    ds = open_dataset(out)
    assert len(ds) == 36 and ds.size == (32, 40)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "36 frames of 32x40" in text and "coarse_label" in text and "<unlabelled>" in text
    assert main(["prepare", "phantom", "--out", str(tmp_path / "bad"), "--scans", "0"]) == 2
    assert "scans must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["prepare", "phantom", "--out", str(tmp_path / "bad"), "--size", "big"])


def test_bad_config():
    with pytest.raises(AwclError, match="labelled-fraction"):
        make_phantom("/nonexistent/never", PhantomConfig(labelled_fraction=1.5))
    with pytest.raises(AwclError, match="anatomies"):
        PhantomConfig(anatomies=("kidney",)).validate()


def test_raw_videos(tmp_path):
    av = pytest.importorskip("av")
    cfg = PhantomConfig(scans=2, frames_per_scan=10, size=(64, 80))

    def decode(path):
        with av.open(str(path)) as c:
            return np.stack([fr.to_ndarray(format="gray") for fr in c.decode(video=0)]).astype(int)

    # Scanner-screen videos: the text-free sweep sits inside panels with text.
    paths = make_phantom_videos(tmp_path / "screen", cfg)
    assert [p.name for p in paths] == ["phantom-000-1.mp4", "phantom-001-1.mp4"]
    frames = decode(paths[0])
    top, left, hs, ws = _screen_geometry(64, 80)
    assert frames.shape == (10, hs, ws) and hs > 64 and ws > 80
    expected, _ = render_sweep(replace(cfg, text=False), scan=0)
    inner = frames[:, top : top + 64, left : left + 80]
    err = np.abs(inner - expected).mean(axis=(1, 2))
    assert (err < 4).all(), err  # lossy codec, same picture frame by frame
    assert (frames[:, top:, : left - 2] > 100).sum() > 20  # text in the left panel
    # Plain videos: the prepared frames themselves (fan plus corner text).
    plain = decode(make_phantom_videos(tmp_path / "plain", cfg, screen=False)[1])
    expected, _ = render_sweep(cfg, scan=1)
    assert plain.shape == (10, 64, 80)
    assert (np.abs(plain - expected).mean(axis=(1, 2)) < 4).all()


def _outside_fan_max(ds, cfg: PhantomConfig) -> int:
    """Brightest pixel of the prepared frames more than 2 px outside the ultrasound fan.

    The fan of each scan is known from its plan; for frames that went through a crop it is
    mapped through the recorded crop box (in screen coordinates) and the resize."""
    import cv2

    from awcl.data.phantom import _plan_scan, _scan_roster

    h, w = cfg.size
    m = ds.manifest
    frames = np.asarray(ds.frames)
    worst = 0
    for index, (patient, visit, fetus) in enumerate(_scan_roster(cfg)):
        plan = _plan_scan(cfg, index, patient, visit, fetus)
        rows = np.flatnonzero(m["video_id"].to_numpy() == plan.video_id)
        sector = plan.probe.sector.astype(np.uint8)
        box = str(m["crop_box"].iloc[rows[0]]) if "crop_box" in m.columns else ""
        if box:
            top, left, hs, ws = _screen_geometry(h, w)
            screen = np.zeros((hs, ws), np.uint8)
            screen[top : top + h, left : left + w] = sector
            y0, y1, x0, x1 = (int(v) for v in box.split(","))
            sector = cv2.resize(screen[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_NEAREST)
        far = cv2.dilate(sector, np.ones((5, 5), np.uint8)) == 0
        assert far.sum() > 0.1 * h * w  # the corners, where scanners put their text
        worst = max(worst, int(frames[rows][:, far].max()))
    return worst


def test_via_videos_user_path_leaves_no_overlay_text(tmp_path):
    pytest.importorskip("av")
    cfg = PhantomConfig(seed=2, scans=4, frames_per_scan=12, size=(48, 64), masks="none", labelled_fraction=0.5)
    via = replace(cfg, prepare="videos")
    ds = open_dataset(make_phantom(tmp_path / "via", via))
    assert len(ds) == 4 * 12 and ds.size == (48, 64)
    assert ds.meta["prepare"]["crop"] == "auto" and ds.meta["phantom"]["prepare"] == "videos"
    assert not list(tmp_path.glob(".via*"))  # the intermediate videos are cleaned up
    # Labels, hidden truth and patients are those of the directly rendered phantom.
    direct = open_dataset(make_phantom(tmp_path / "direct", cfg))
    cols = ["video_id", "patient_id", "frame_index", "coarse_label", "fine_label", "true_fine"]
    key = ["video_id", "frame_index"]
    a = ds.manifest[cols].sort_values(key).reset_index(drop=True).astype(str)
    b = direct.manifest[cols].sort_values(key).reset_index(drop=True).astype(str)
    assert a.equals(b)
    assert (ds.manifest["patient_id"] != ds.manifest["video_id"]).all()  # the phantom's, not per video
    # No burned-in text or live counter survives the crop: only compression noise outside the fan.
    assert _outside_fan_max(ds, via) < 40
    # The same check on the directly rendered frames finds their text (so it can fail).
    assert _outside_fan_max(direct, cfg) > 150
    assert _outside_fan_max(open_dataset(make_phantom(tmp_path / "nt", replace(cfg, text=False))), cfg) == 0


def test_via_videos_masks_follow_the_crop(tmp_path):
    pytest.importorskip("av")
    import cv2

    from awcl.data.imageio import resize

    cfg = PhantomConfig(seed=4, scans=3, frames_per_scan=16, size=(48, 64), masks="brain", text=False)
    via = open_dataset(make_phantom(tmp_path / "via", replace(cfg, prepare="videos")))
    direct = open_dataset(make_phantom(tmp_path / "direct", cfg))
    key = ["video_id", "frame_index"]
    a = via.manifest.sort_values(key)
    b = direct.manifest.sort_values(key)
    np.testing.assert_array_equal(a.mask_index.to_numpy() >= 0, b.mask_index.to_numpy() >= 0)  # brain frames
    assert (a.mask_index >= 0).any()
    top, left, hs, ws = _screen_geometry(48, 64)
    for (i, ra), j in zip(a.iterrows(), b.index):
        # the directly rendered frame through the recorded crop equals the decoded one ...
        screen = np.zeros((hs, ws), np.uint8)
        screen[top : top + 48, left : left + 64] = direct.frames[j]
        y0, y1, x0, x1 = (int(v) for v in ra.crop_box.split(","))
        expect = resize(np.ascontiguousarray(screen[y0:y1, x0:x1]), (48, 64)).astype(int)
        assert np.abs(expect - np.asarray(via.frames[i], dtype=int)).mean() < 4
        if ra.mask_index < 0:
            continue
        # ... and the mask went through the same geometry
        screen[:] = 0
        screen[top : top + 48, left : left + 64] = direct.mask(j)
        m = cv2.resize(screen[y0:y1, x0:x1], (64, 48), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(via.mask(i), m)
        assert via.mask(i).any()
