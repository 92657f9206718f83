"""Pair samplers and augmentations (no training): who is paired with whom, which key, and
whether batches really hold anatomy positives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from awcl.data.augment import Augment, ViewAugmentConfig
from awcl.data.pairs import (
    AnatomySampler,
    FrameIndex,
    InstanceSampler,
    LabelledSampler,
    PairViews,
    ScanSampler,
    VideoMixSampler,
    collate_views,
    frame_labels,
    video_labels,
)
from awcl.data.store import DatasetWriter, open_dataset
from awcl.errors import AwclError
from awcl.options import parse_size


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """6 patients x 2 videos x 10 frames; 40% labelled (4CH/3VT -> heart, TV -> brain, bg)."""
    out = tmp_path_factory.mktemp("s") / "ds"
    rng = np.random.default_rng(0)
    fines = ["4CH", "3VT", "TV", None, "bg", None, None, None, None, None]
    with DatasetWriter(out, size=(30, 40)) as w:
        for p in range(6):
            for v in range(2):
                for f in range(10):
                    fine = fines[(f + p) % 10]
                    coarse = {"4CH": "heart", "3VT": "heart", "TV": "brain", "bg": "bg"}.get(fine)
                    # some frames carry only the fine label: coarse must come from the hierarchy
                    w.add((rng.random((30, 40)) * 255).astype(np.uint8), video_id=f"p{p}v{v}",
                          patient_id=f"p{p}", frame_index=f,
                          coarse_label=coarse if f % 3 else None, fine_label=fine)
        w.meta["hierarchy"] = {"4CH": "heart", "3VT": "heart", "TV": "brain"}
        w.meta["ignore_labels"] = ["bg"]
    return open_dataset(out)


def test_labels_granularity_hierarchy_ignore(ds) -> None:
    coarse = frame_labels(ds, "coarse")
    fine = frame_labels(ds, "fine")
    m = ds.manifest
    for i in range(len(ds)):
        f = m["fine_label"].iat[i]
        if pd.isna(f) or f == "bg":
            assert coarse[i] is None and fine[i] is None
        else:
            assert fine[i] == f and coarse[i] == ds.hierarchy[f]
    assert set(filter(None, coarse)) == {"heart", "brain"}
    assert frame_labels(ds, "coarse", ignore=["brain"]).count("brain") == 0


def test_awcl_pairs_keys_and_batches(ds) -> None:
    idx = FrameIndex.from_dataset(ds, "coarse")
    s = AnatomySampler(idx, batch_size=16, ratio=1.0, group=4, seed=3)
    batches = s.epoch_batches(0)
    assert len(batches) == len(s) == 120 // 16
    met = total = 0
    for batch in batches:
        keys = Counter(it[3] for it in batch if it[3] >= 0)
        for a, b, c, key, _, _ in batch:
            assert c == -1
            if idx.label[a] >= 0:
                assert key == idx.label[a] and b != a and idx.label[b] == key  # another frame, same anatomy
                total += 1
                met += keys[key] > 1
            else:
                assert key == -1 and b == a  # unlabelled: second augmentation of itself
    # grouping: labelled anchors meet other samples of their class far more often than chance
    assert total > 0 and met / total > 0.9
    # partners come from other scans too
    other_scan = [idx.video[a] != idx.video[b] for bt in batches for a, b, _, k, _, _ in bt if k >= 0]
    assert any(other_scan)


def test_anatomy_ratio_and_fine(ds) -> None:
    idx = FrameIndex.from_dataset(ds, "fine")
    n_lab = int((idx.label >= 0).sum())
    assert idx.classes == ["3VT", "4CH", "TV"]
    kept = [
        sum(it[3] >= 0 for bt in AnatomySampler(idx, 8, ratio=r, seed=1).epoch_batches(e) for it in bt)
        for r in (0.0, 0.5)
        for e in range(4)
    ]
    assert kept[:4] == [0, 0, 0, 0]
    assert 0.3 * n_lab < np.mean(kept[4:]) < 0.7 * n_lab
    with pytest.raises(AwclError):
        AnatomySampler(idx, 8, ratio=1.5)


def test_epoch_seeded_and_sharded(ds) -> None:
    idx = FrameIndex.from_dataset(ds)
    one = AnatomySampler(idx, 16, ratio=0.5, seed=5)
    assert one.epoch_batches(2) == one.epoch_batches(2)
    assert one.epoch_batches(2) != one.epoch_batches(3)
    r0 = AnatomySampler(idx, 8, ratio=0.5, seed=5, world_size=2, rank=0).epoch_batches(2)
    r1 = AnatomySampler(idx, 8, ratio=0.5, seed=5, world_size=2, rank=1).epoch_batches(2)
    assert [a + b for a, b in zip(r0, r1)] == one.epoch_batches(2)
    with pytest.raises(AwclError, match="fewer than one batch"):
        InstanceSampler(idx, 200)


def test_clpi_uscl_supervised(ds) -> None:
    idx = FrameIndex.from_dataset(ds)
    for bt in ScanSampler(idx, 16, by="video", seed=0).epoch_batches(0):
        for a, b, _, key, _, _ in bt:
            assert idx.video[a] == idx.video[b] == key and a != b
    for bt in ScanSampler(idx, 16, by="patient", seed=0).epoch_batches(0):
        for a, b, _, key, _, _ in bt:
            assert idx.patient[a] == idx.patient[b] == key
    vlabel, _ = video_labels(idx)
    for bt in VideoMixSampler(idx, 8, seed=0).epoch_batches(0):
        for a, b, c, key, label, _ in bt:
            assert idx.video[a] == idx.video[b] == idx.video[c] and key == -1
            assert len({a, b, c}) == 3  # three distinct frames
            assert label == vlabel[idx.video[a]]  # the video's label, whatever the frames carry
    sup = LabelledSampler(idx, 4, seed=0).epoch_batches(0)
    assert all(idx.label[it[0]] >= 0 and it[4] == idx.label[it[0]] for bt in sup for it in bt)


def test_augment_shapes_determinism_and_views(ds) -> None:
    aug = Augment(ViewAugmentConfig(size=(24, 32), blur=0.5))
    f = np.asarray(ds.frames[0])
    a = aug(f, np.random.default_rng(1))
    assert a.shape == (24, 32) and a.dtype == np.uint8
    assert np.array_equal(a, aug(f, np.random.default_rng(1)))
    big = Augment(ViewAugmentConfig(size=(64, 80)))(f, np.random.default_rng(2))  # upsizing works
    assert big.shape == (64, 80)
    views = PairViews(str(Path(ds.root) / "frames.npy"), aug)
    batch = collate_views([views[(0, 5, -1, 1, 1, 7)], views[(2, 1, 3, -1, -1, 8)]])
    assert batch["x1"].shape == batch["x2"].shape == (2, 24, 32)
    assert batch["key"].tolist() == [1, -1]
    assert parse_size("112x144") == (112, 144)
    with pytest.raises(ValueError):
        parse_size("112")


def test_default_batches_are_random_as_in_the_paper(ds) -> None:
    """Default: no class grouping (the paper's random batches); grouping is an option."""
    from awcl.methods import build_method
    from awcl.train.pretrain import PretrainConfig

    idx = FrameIndex.from_dataset(ds)
    cfg = PretrainConfig(anatomy_ratio=0.5)
    assert cfg.class_group <= 1
    for name in ("awcl", "clpi"):
        method = build_method(name, cfg, idx)
        units = method.sampler(16, 0, 1, 0).units(np.random.default_rng(0))
        assert all(len(u) == 1 for u in units), name  # every sample placed independently
        assert method.batch_composition() == "random"
    grouped = build_method("awcl", PretrainConfig(class_group=4), idx)
    units = grouped.sampler(16, 0, 1, 0).units(np.random.default_rng(0))
    assert max(len(u) for u in units) == 4
    assert "groups of 4" in grouped.batch_composition()


def test_uscl_batch_never_holds_two_samples_of_one_video(ds) -> None:
    idx = FrameIndex.from_dataset(ds)  # 12 videos of 10 frames
    s = VideoMixSampler(idx, 4, seed=1)
    assert s.rounds == 10 and len(s) == 10 * 3  # auto: ~frames/videos passes of 3 batches
    for e in range(3):
        batches = s.epoch_batches(e)
        assert len(batches) == len(s)
        for bt in batches:
            assert len({int(idx.video[it[0]]) for it in bt}) == len(bt) == 4
        # every video is drawn once per pass (12 videos, 3 batches of 4: none left over)
        counts = Counter(int(idx.video[it[0]]) for bt in batches for it in bt)
        assert set(counts.values()) == {10}
    # under DDP the *global* batch (both ranks' slices) has distinct videos
    r0 = VideoMixSampler(idx, 3, seed=1, world_size=2, rank=0).epoch_batches(0)
    r1 = VideoMixSampler(idx, 3, seed=1, world_size=2, rank=1).epoch_batches(0)
    for a, b in zip(r0, r1):
        assert len({int(idx.video[it[0]]) for it in a + b}) == 6
    assert VideoMixSampler(idx, 4, rounds=1, seed=1).__len__() == 3  # the official epoch
    with pytest.raises(AwclError, match="only 12 videos"):
        VideoMixSampler(idx, 16)


def test_uscl_frames_distinct_uniform_and_short_videos() -> None:
    # videos of 1, 2, 3 and 5 frames
    video = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3])
    idx = FrameIndex(video=video, patient=video.copy(), label=np.full(11, -1), classes=[])
    s = VideoMixSampler(idx, 4, rounds=50, seed=0)
    for bt in s.epoch_batches(0):
        for a, b, c, _, _, _ in bt:
            v = int(video[a])
            if v == 0:
                assert a == b and c == -1  # one frame: two augmentations of it
            elif v == 1:
                assert {a, b} == {1, 2} and c == -1  # two frames: one view each
            else:
                assert len({a, b, c}) == 3 and video[b] == video[c] == v
    # the 5-frame video: all 5*4*3 ordered triples, each about 1/60 of the draws
    seen = Counter(it[:3] for it in s.draw(np.full(60_000, 3), np.random.default_rng(0)))
    assert len(seen) == 60 and all(6 <= a <= 10 for t in seen for a in t)
    assert 850 < min(seen.values()) and max(seen.values()) < 1150


def test_video_labels_majority_and_ties() -> None:
    video = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    label = np.array([1, 1, 0, 0, 1, -1, -1, 2])
    idx = FrameIndex(video=video, patient=video.copy(), label=label, classes=["a", "b", "c"])
    vl, n = video_labels(idx)
    assert vl.tolist() == [1, -1, -1, 2]  # majority; tie -> none; unlabelled -> none
    assert n.tolist() == [3, 2, 2, 1]


def test_uscl_sampler_resume_mid_epoch(ds) -> None:
    idx = FrameIndex.from_dataset(ds)
    full = list(VideoMixSampler(idx, 4, seed=2).__iter__())
    a = VideoMixSampler(idx, 4, seed=2)
    it = iter(a)
    first = [next(it) for _ in range(7)]
    a.done = 7
    b = VideoMixSampler(idx, 4, seed=2)
    b.load_state_dict(a.state_dict())
    assert first + list(b) == full


def test_uscl_views_augment_each_frame_then_mix(ds) -> None:
    aug = Augment(ViewAugmentConfig(size=(24, 32)))
    views = PairViews(str(Path(ds.root) / "frames.npy"), aug)
    v1, v2, key, label = views[(0, 1, 2, -1, 3, 11)]
    rng = np.random.default_rng(11)
    lam = rng.beta(0.5, 0.5)
    a1, a2, a3 = (aug(np.asarray(ds.frames[i]), rng).astype(np.float32) for i in (0, 1, 2))
    np.testing.assert_array_equal(v1, np.rint(lam * a1 + (1 - lam) * a2).astype(np.uint8))
    np.testing.assert_array_equal(v2, np.rint(lam * a3 + (1 - lam) * a2).astype(np.uint8))
    assert (key, label) == (-1, 3)


def test_uscl_loss_classifier_on_projection_weight_per_view(ds) -> None:
    import torch

    from awcl.losses import masked_contrastive_loss, positive_mask
    from awcl.methods import build_method
    from awcl.train.pretrain import PretrainConfig

    cfg = PretrainConfig(method="uscl")
    assert cfg.uscl_ce_weight == 0.2  # the official default
    idx = FrameIndex.from_dataset(ds)
    idx.label[:60] = np.where(idx.label[:60] >= 0, 1, -1)  # two classes
    method = build_method("uscl", cfg, idx)
    heads = method.heads()
    assert heads["cls"].in_features == cfg.proj_dim  # on the projection output, not on h
    torch.manual_seed(0)
    h = torch.randn(8, 512)
    label = torch.tensor([0, 1, -1, 1])
    loss, _ = method.loss(heads, h, {"label": label, "key": torch.full((4,), -1)})
    z = heads["proj"](h)
    nt = masked_contrastive_loss(z, positive_mask(torch.arange(4).repeat(2), None), cfg.temperature)
    ok = label >= 0
    logits = heads["cls"](z)
    ce1 = torch.nn.functional.cross_entropy(logits[:4][ok], label[ok])
    ce2 = torch.nn.functional.cross_entropy(logits[4:][ok], label[ok])
    torch.testing.assert_close(loss, nt + 0.2 * ce1 + 0.2 * ce2)
