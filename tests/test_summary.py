"""Headline numbers from predictions tables: pooled metrics equal scikit-learn's, bootstrap
weights equal row resampling, intervals resample patients, video votes, paired differences,
surface distances against a brute-force reference."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from awcl.errors import AwclError
from awcl.evaluate.metrics import (
    classification_metrics,
    pixel_confusion,
    segmentation_metrics,
    surface_distances,
)
from awcl.evaluate.summary import (
    bootstrap_weights,
    classification_summary,
    fold_classification_metrics,
    paired_bootstrap_diff,
    segmentation_frame_columns,
    segmentation_summary,
    video_table,
)

CLASSES = ["a", "b", "c"]


def make_table(n_patients=30, frames=(2, 9), seed=0, acc=0.7, classes=CLASSES, videos=2):
    """A classification predictions table: patients with videos with frames."""
    rng = np.random.default_rng(seed)
    rows = []
    k = len(classes)
    for p in range(n_patients):
        y = int(rng.integers(k))
        for v in range(videos):
            for f in range(int(rng.integers(*frames))):
                logits = rng.normal(size=k)
                if rng.random() < acc:
                    logits[y] += 2.0
                prob = np.exp(logits) / np.exp(logits).sum()
                prob = np.round(prob, 2)  # ties in the scores, as real runs have
                rows.append({"fold": p % 3, "frame_id": f"p{p}v{v}f{f}", "video_id": f"p{p}v{v}",
                             "patient_id": f"p{p}", "true": classes[y],
                             "pred": classes[int(prob.argmax())],
                             **{f"prob_{c}": prob[i] for i, c in enumerate(classes)}})
    return pd.DataFrame(rows)


def sk(df, classes=CLASSES):
    y = df["true"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    p = df["pred"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    prob = df[[f"prob_{c}" for c in classes]].to_numpy()
    labels = list(range(len(classes)))
    aucs = [roc_auc_score(y == k, prob[:, k]) for k in labels if 0 < (y == k).sum() < len(y)]
    return {
        "accuracy": (y == p).mean(),
        "precision": precision_score(y, p, labels=labels, average="macro", zero_division=0),
        "recall": recall_score(y, p, labels=labels, average="macro", zero_division=0),
        "f1": f1_score(y, p, labels=labels, average="macro", zero_division=0),
        "balanced_accuracy": balanced_accuracy_score(y, p),
        "auroc": np.mean(aucs),
    }


def test_pooled_metrics_equal_sklearn():
    df = make_table()
    s = classification_summary(df, CLASSES, n_boot=0)
    ref = sk(df)
    for k, v in ref.items():
        assert s["pooled"][k] == pytest.approx(v, abs=1e-12), k
    # and the frame-level helper agrees
    y = df["true"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    m = classification_metrics(y, df["pred"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy(),
                               3, df[[f"prob_{c}" for c in CLASSES]].to_numpy())
    assert m["auroc"] == pytest.approx(ref["auroc"]) and m["balanced_accuracy"] == pytest.approx(
        ref["balanced_accuracy"])
    per_fold = fold_classification_metrics(df, CLASSES)
    assert per_fold[1]["auroc"] == pytest.approx(sk(df[df.fold == 1])["auroc"])


def test_bootstrap_weights_equal_resampled_rows():
    """Weighting patients by their draw counts gives exactly the metrics of the resampled
    table (patients' rows repeated), AUROC included."""
    from awcl.evaluate.summary import _classification_engine

    df = make_table(n_patients=12, seed=3)
    g, evaluate = _classification_engine(df, CLASSES, "patient_id")
    w = next(bootstrap_weights(g, 3, seed=1))
    got = evaluate(w)
    names = sorted(df["patient_id"].unique())
    for b in range(3):
        parts = [df[df.patient_id == p] for p, c in zip(names, w[b]) for _ in range(int(c))]
        ref = sk(pd.concat(parts))
        for k, v in ref.items():
            assert got[k][b] == pytest.approx(v, abs=1e-12), (b, k)


def test_intervals_resample_patients_not_frames():
    # 20 patients of 40 frames; a patient's frames are all right or all wrong. Frame-level
    # resampling would give a +-0.03 interval around 0.5; patients make it about +-0.22.
    rows = []
    for p in range(20):
        for f in range(40):
            ok = p % 2 == 0
            rows.append({"fold": 0, "frame_id": f"{p}-{f}", "video_id": f"{p}-{f}",
                         "patient_id": f"p{p}", "true": "a", "pred": "a" if ok else "b",
                         "prob_a": 0.9 if ok else 0.1, "prob_b": 0.1 if ok else 0.9})
    df = pd.DataFrame(rows)
    s = classification_summary(df, ["a", "b"], n_boot=1000, seed=0)
    lo, hi = s["intervals"]["accuracy"]
    assert s["pooled"]["accuracy"] == 0.5
    assert lo < 0.35 and hi > 0.65
    assert s["intervals"]["auroc"] is None  # one class in the truth: AUROC undefined
    again = classification_summary(df, ["a", "b"], n_boot=1000, seed=0)
    assert again["intervals"] == s["intervals"]  # seeded
    # by video: every frame its own video -> no video level
    assert "video_level" not in s


def test_intervals_cover_and_shrink_with_more_patients():
    small = classification_summary(make_table(n_patients=15, seed=1), CLASSES, n_boot=500)
    big = classification_summary(make_table(n_patients=150, seed=1), CLASSES, n_boot=500)
    for s in (small, big):
        for k in ("accuracy", "f1", "auroc", "balanced_accuracy"):
            lo, hi = s["intervals"][k]
            assert lo <= s["pooled"][k] <= hi, k
    width = lambda s: s["intervals"]["f1"][1] - s["intervals"]["f1"][0]  # noqa: E731
    assert width(big) < 0.6 * width(small)


def test_bootstrap_is_fast():
    df = make_table(n_patients=400, frames=(5, 10), seed=2, classes=list("abcde"))  # ~6000 frames
    t = time.perf_counter()
    s = classification_summary(df, list("abcde"), n_boot=1000, seed=0)
    assert time.perf_counter() - t < 30  # a few seconds on a quiet machine
    assert len(s["video_level"]["majority"]["intervals"]) == 6


def test_per_class_sensitivity_specificity_hand_computed():
    df = pd.DataFrame({"fold": 0, "frame_id": list("123456"), "video_id": list("123456"),
                       "patient_id": list("123456"),
                       "true": ["a", "a", "a", "b", "b", "c"], "pred": ["a", "a", "b", "b", "c", "c"]})
    s = classification_summary(df, CLASSES, n_boot=0)
    assert s["per_class"]["a"] == {"sensitivity": pytest.approx(2 / 3), "specificity": 1.0}
    assert s["per_class"]["b"] == {"sensitivity": 0.5, "specificity": pytest.approx(3 / 4)}
    assert s["per_class"]["c"] == {"sensitivity": 1.0, "specificity": pytest.approx(4 / 5)}
    assert "auroc" not in s["pooled"]  # no probability columns


def test_video_votes():
    # video v1: frames predict a, a, b (b very confident); v2: a tie between a and b
    df = pd.DataFrame({
        "fold": 0, "frame_id": ["1", "2", "3", "4", "5"], "video_id": ["v1", "v1", "v1", "v2", "v2"],
        "patient_id": ["p1", "p1", "p1", "p2", "p2"], "true": ["b", "b", "b", "a", "a"],
        "pred": ["a", "a", "b", "a", "b"],
        "prob_a": [0.6, 0.6, 0.01, 0.55, 0.1], "prob_b": [0.4, 0.4, 0.99, 0.45, 0.9],
    })
    maj = video_table(df, ["a", "b"], "majority").set_index("video_id")
    mean = video_table(df, ["a", "b"], "mean_prob").set_index("video_id")
    assert maj.loc["v1", "pred"] == "a" and mean.loc["v1", "pred"] == "b"
    assert maj.loc["v1", "prob_a"] == pytest.approx(2 / 3) and maj.loc["v1", "frames"] == 3
    assert maj.loc["v2", "pred"] == "b"  # tie broken by the higher mean probability (0.675)
    assert mean.loc["v1", "prob_b"] == pytest.approx((0.4 + 0.4 + 0.99) / 3)
    s = classification_summary(df, ["a", "b"], n_boot=10)
    assert s["video_level"]["majority"]["accuracy"] == 0.0
    assert s["video_level"]["mean_prob"]["accuracy"] == 0.5
    assert s["video_level"]["mean_prob"]["n_videos"] == 2


def test_paired_bootstrap_diff():
    a = make_table(n_patients=60, seed=4, acc=0.9)
    hard = a["patient_id"].str[1:].astype(int) % 3 == 0  # a third of the patients: all wrong
    a.loc[hard, "pred"] = [next(c for c in CLASSES if c != t) for t in a.loc[hard, "true"]]
    b = a.copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(b)) < 0.15  # b is a with some more frames made wrong
    b.loc[flip, "pred"] = [next(c for c in CLASSES if c != t) for t in b.loc[flip, "true"]]
    d, lo, hi = paired_bootstrap_diff(a, b, "accuracy", "patient_id", n=1000, seed=0)
    pa = classification_summary(a, CLASSES, n_boot=0)["pooled"]["accuracy"]
    pb = classification_summary(b, CLASSES, n_boot=0)["pooled"]["accuracy"]
    assert d == pytest.approx(pa - pb) and 0 < lo < d < hi
    # pairing: patient difficulty shared by both runs cancels, so the interval of the
    # difference is far narrower than a run's own
    ia = classification_summary(a, CLASSES, n_boot=1000)["intervals"]["accuracy"]
    assert hi - lo < 0.7 * (ia[1] - ia[0])
    # row order does not matter; a run against itself differs by exactly 0
    d2, lo2, hi2 = paired_bootstrap_diff(a, b.sample(frac=1.0, random_state=1), "accuracy", n=1000)
    assert (d2, lo2, hi2) == pytest.approx((d, lo, hi))
    assert paired_bootstrap_diff(a, a, "auroc", n=200) == (0.0, 0.0, 0.0)
    with pytest.raises(AwclError, match="different frames"):
        paired_bootstrap_diff(a, b.iloc[1:], "f1")
    with pytest.raises(AwclError, match="no column"):
        paired_bootstrap_diff(a, b, "f1", "site")
    with pytest.raises(AwclError, match="unknown metric"):
        paired_bootstrap_diff(a, b, "nope")


def _brute_surface(p, t, sp):
    def bnd(m):
        pad = np.pad(m, 1)
        inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        return np.argwhere(m & ~inner) * np.array(sp)

    bp, bt = bnd(p), bnd(t)
    d1 = np.sqrt(((bp[:, None] - bt[None]) ** 2).sum(-1)).min(1)
    d2 = np.sqrt(((bt[:, None] - bp[None]) ** 2).sum(-1)).min(1)
    d = np.concatenate([d1, d2])
    return np.percentile(d, 95), d.mean()


def test_surface_distances_match_brute_force():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:40]
    for _ in range(5):
        t = ((xx - 20) ** 2 / 100 + (yy - 15) ** 2 / 49) <= 1
        p = ((xx - 20 - rng.integers(-3, 4)) ** 2 / rng.uniform(60, 140) + (yy - 15) ** 2 / 49) <= 1
        sp = (0.7, 0.3)
        got = surface_distances(p, t, sp)
        assert got == pytest.approx(_brute_surface(p, t, sp), rel=1e-9)
    assert surface_distances(np.zeros((5, 5)), np.zeros((5, 5))) == (0.0, 0.0)
    assert surface_distances(np.ones((5, 5)), np.zeros((5, 5))) is None
    sq = np.zeros((20, 20), bool)
    sq[5:15, 5:15] = True
    shifted = np.roll(sq, 2, axis=1)
    hd, _ = surface_distances(shifted, sq, (1.0, 0.5))  # 2 px at 0.5 mm
    assert hd == pytest.approx(1.0)


def test_segmentation_summary_from_frame_columns():
    rng = np.random.default_rng(1)
    true = np.zeros((12, 24, 32), np.uint8)
    pred = np.zeros_like(true)
    for i in range(12):
        true[i, 5:15, 6 + i % 4 : 20] = 1
        pred[i, 6 : 15 + rng.integers(0, 3), 6:20] = 1
    pred[3] = 0  # a missed head: surface distance undefined
    cols = segmentation_frame_columns(pred, true, 2, np.full(12, 0.5), np.full(12, 0.25))
    df = pd.DataFrame({"fold": 0, "frame_id": [str(i) for i in range(12)],
                       "video_id": [str(i) for i in range(12)],
                       "patient_id": [f"p{i // 2}" for i in range(12)], **cols})
    assert np.isnan(df["hd95_mm"][3]) and not np.isnan(df["hd95_mm"]).drop(3).any()
    s = segmentation_summary(df, n_boot=300)
    ref = segmentation_metrics(pixel_confusion(true, pred, 2))
    for k in ("gaa", "ma", "miou", "dice"):
        assert s["pooled"][k] == pytest.approx(ref[k]), k
        lo, hi = s["intervals"][k]
        assert lo <= s["pooled"][k] <= hi
    assert s["pooled"]["hd95_mm"] == pytest.approx(np.nanmean(df["hd95_mm"]))
    assert set(s["intervals"]) >= {"hd95_mm", "msd_mm"}
    px = segmentation_frame_columns(pred, true, 2)
    assert "hd95_px" in px and "hd95_mm" not in px
