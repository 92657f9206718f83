"""Frozen-feature probes (kNN, logistic regression) and label-efficiency sampling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _synth import make_class_dataset
from awcl.errors import AwclError
from awcl.evaluate import FinetuneConfig, finetune
from awcl.evaluate.probe import C_GRID, K_GRID, knn_probe, linear_probe
from awcl.evaluate.splits import kfold_splits, limit_train_patients


# ------------------------------------------------------------------ label-efficiency sampling
def _random_cohort(seed: int, multi: bool):
    """Patients with one class each, or (``multi``) frames of several classes per patient."""
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(15, 40))
    sizes = rng.integers(2, 8, n_groups)
    groups = np.repeat([f"p{i}" for i in range(n_groups)], sizes)
    if multi:
        y = rng.integers(0, 4, len(groups))
    else:
        y = np.repeat(rng.integers(0, 3, n_groups), sizes)
    return y, groups


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("multi", [False, True])
def test_limit_train_patients_keeps_classes_and_never_touches_test(seed, multi):
    y, groups = _random_cohort(seed, multi)
    for fold in kfold_splits(y, groups, k=3, seed=seed):
        train_patients = np.unique(groups[fold.train])
        classes = set(np.unique(y[fold.train]))
        for n in (len(classes), len(classes) + 1, len(train_patients)):
            lim = limit_train_patients(fold, y, groups, n, seed=seed)
            kept = np.unique(groups[lim.train])
            assert len(kept) == n
            assert set(kept) <= set(train_patients)  # drawn from the training part only
            np.testing.assert_array_equal(lim.test, fold.test)  # test fold untouched
            np.testing.assert_array_equal(lim.val, fold.val)  # model selection part untouched
            assert set(lim.train) <= set(fold.train)
            # whole patients: every frame of a kept patient stays
            assert len(lim.train) == np.isin(groups[fold.train], kept).sum()
            assert set(np.unique(y[lim.train])) == classes  # every class keeps >= 1 patient
            again = limit_train_patients(fold, y, groups, n, seed=seed)
            np.testing.assert_array_equal(again.train, lim.train)  # same patients for every method


def test_limit_train_patients_draws_differ_by_seed_and_errors():
    y, groups = _random_cohort(3, multi=False)
    fold = kfold_splits(y, groups, k=3, seed=0)[0]
    draws = {tuple(np.unique(groups[limit_train_patients(fold, y, groups, 4, seed=s).train])) for s in range(6)}
    assert len(draws) > 1
    n_avail = len(np.unique(groups[fold.train]))
    with pytest.raises(AwclError, match="only"):
        limit_train_patients(fold, y, groups, n_avail + 1, seed=0)
    with pytest.raises(AwclError, match="every one of the 3 classes"):
        limit_train_patients(fold, y, groups, 2, seed=0)  # one class per patient: 3 needed


# ------------------------------------------------------------------ probes vs references
def _features(seed: int = 0, k: int = 3, d: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (k, d))

    def draw(n):
        y = np.arange(n) % k
        return centres[y] + rng.normal(0, 1.3, (n, d)) + 3.0, y  # offset: cosine != euclidean

    return draw(90), draw(45), draw(60)


def test_knn_probe_matches_a_numpy_reference():
    (fa, ya), (fv, yv), (ft, _) = _features()
    proba, chosen, scores = knn_probe(fa, ya, fv, yv, ft, 3)

    def unit(f):
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def vote(f_query, k):  # brute-force cosine kNN, majority vote (ties: lowest class)
        sim = unit(f_query) @ unit(fa).T
        nn = np.argsort(-sim, axis=1)[:, :k]
        counts = np.stack([np.bincount(ya[row], minlength=3) for row in nn])
        return counts.argmax(1), counts / k

    def macro_f1(y, p):
        f1s = []
        for c in range(3):
            tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
            f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return float(np.mean(f1s))

    ref_scores = {k: macro_f1(yv, vote(fv, k)[0]) for k in K_GRID}
    best_k = max(K_GRID, key=lambda k: (ref_scores[k], -k))
    assert chosen["k"] == best_k
    assert [s["val_f1"] for s in scores] == pytest.approx([ref_scores[k] for k in K_GRID])
    ref_pred, ref_proba = vote(ft, best_k)
    np.testing.assert_array_equal(proba.argmax(1), ref_pred)
    np.testing.assert_allclose(proba, ref_proba)


def test_linear_probe_matches_a_sklearn_grid_search():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (fa, ya), (fv, yv), (ft, yt) = _features(1)
    proba, chosen, _ = linear_probe(fa, ya, fv, yv, ft, 3)
    # validation-only selection expressed as a predefined split (-1: always fitted)
    split = PredefinedSplit(np.r_[np.full(len(fa), -1), np.zeros(len(fv))])
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(C_GRID)}, cv=split, scoring="f1_macro", refit=False)
    search.fit(np.r_[fa, fv], np.r_[ya, yv])
    best_c = search.best_params_["logisticregression__C"]
    assert chosen["C"] == best_c
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=best_c, max_iter=2000)).fit(fa, ya)
    # the same convex optimum, reached from the previous C's solution (warm start): equal
    # within lbfgs's stopping tolerance, and the same decisions
    np.testing.assert_allclose(proba, ref.predict_proba(ft), atol=1e-2)
    assert (proba.argmax(1) == ref.predict_proba(ft).argmax(1)).all()
    assert (proba.argmax(1) == yt).mean() > 0.6  # separable enough to learn something


def test_probe_fills_absent_class_columns():
    (fa, ya), (fv, yv), (ft, _) = _features(2)
    keep = ya != 2  # class 2 never in the fitting part
    proba, _, _ = knn_probe(fa[keep], ya[keep], fv, yv, ft, 3)
    assert proba.shape == (len(ft), 3) and np.all(proba[:, 2] == 0)


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    return make_class_dataset(tmp_path_factory.mktemp("d") / "cls", patients_per_class=5, frames=3)


@pytest.mark.parametrize("protocol", ["knn", "linear-probe"])
def test_probe_protocol_end_to_end(cls_data, tmp_path, protocol):
    out = tmp_path / protocol
    m = finetune(FinetuneConfig(data=str(cls_data), out=str(out), protocol=protocol, folds=3, seed=0))
    assert {"metrics.json", "config.yaml", "predictions.csv", "selection.csv", "confusion_matrix.png"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text())["mean"] == m["mean"]
    assert m["protocol"] == protocol and m["classes"] == ["covid", "pneumonia", "regular"]
    # the classification schema: per-fold AUROC / balanced accuracy, pooled values with intervals
    assert {"auroc", "balanced_accuracy"} <= set(m["folds"][0]) and "auroc" in m["mean"]
    lo, hi = m["intervals"]["accuracy"]
    assert lo <= m["pooled"]["accuracy"] <= hi
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 45 and pred["frame_id"].is_unique  # every frame tested exactly once
    probs = pred[[c for c in pred.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    for f in m["folds"]:
        fp = pred[pred.fold == f["fold"]]
        assert f["accuracy"] == pytest.approx((fp["true"] == fp["pred"]).mean())
        assert ("k" in f) if protocol == "knn" else ("C" in f)
    sel = pd.read_csv(out / "selection.csv")
    assert set(sel.fold) == {0, 1, 2}


def test_probe_with_fewer_labelled_patients(cls_data, tmp_path):
    kw = dict(data=str(cls_data), protocol="knn", folds=2, seed=3)
    full = finetune(FinetuneConfig(out=str(tmp_path / "all"), **kw))
    few = finetune(FinetuneConfig(out=str(tmp_path / "few"), train_patients=3, **kw))
    assert [f["n_train_patients"] for f in few["folds"]] == [3, 3]
    assert all(f["n_train_patients"] > 3 for f in full["folds"])
    assert few["train_patients"] == 3
    a = pd.read_csv(tmp_path / "all" / "predictions.csv")
    b = pd.read_csv(tmp_path / "few" / "predictions.csv")
    assert a[["fold", "frame_id"]].equals(b[["fold", "frame_id"]])  # the same test frames


def test_probe_rejects_segmentation(tmp_path):
    with pytest.raises(AwclError, match="classification probe"):
        FinetuneConfig(data="x", out=str(tmp_path), task="segment", protocol="knn").validate()


def test_cli_probe(cls_data, tmp_path, capsys):
    from awcl.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--data", str(cls_data), "--out", str(out), "--protocol", "linear-probe",
                 "--folds", "2", "--train-patients", "3"]) == 0
    assert "accuracy" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert [f["n_train_patients"] for f in m["folds"]] == [3, 3]


def test_probe_features_computed_once_per_encoder(cls_data, tmp_path, monkeypatch):
    import awcl.evaluate.probe as probe

    calls = []
    real = probe.encode_frozen
    monkeypatch.setattr(probe, "encode_frozen",
                        lambda cfg, frames, runtime: calls.append(cfg.seed) or real(cfg, frames, runtime))
    probe._CACHE.clear()
    kw = dict(data=str(cls_data), folds=2, init="random")
    a = finetune(FinetuneConfig(out=str(tmp_path / "a"), protocol="knn", seed=0, **kw))
    b = finetune(FinetuneConfig(out=str(tmp_path / "b"), protocol="linear-probe", seed=0, train_patients=3, **kw))
    assert calls == [0]  # one forward pass for both probes (same random encoder, same frames)
    finetune(FinetuneConfig(out=str(tmp_path / "c"), protocol="knn", seed=1, **kw))
    assert calls == [0, 1]  # another seed is another random encoder
    probe._CACHE.clear()
    again = finetune(FinetuneConfig(out=str(tmp_path / "d"), protocol="knn", seed=0, **kw))
    assert again["folds"] == a["folds"] and b["folds"]  # cached and fresh features agree
