"""Frozen-feature probes: a kNN classifier and a linear probe (logistic regression).

Protocols ``knn`` and ``linear-probe`` of ``awcl finetune`` (``--protocol knn``). The encoder
is frozen and its pooled 512-d features are computed once for every used frame. In each fold
the probe's one hyper-parameter (k for kNN, C for the logistic regression) is chosen by
macro-F1 on the fold's **validation part only**, the probe is fitted on the fitting part, and
the test fold is predicted once. No gradient training, so a probe costs one forward pass per
frame: the cheap protocol for many seeds and label-efficiency points.

- ``knn``: scikit-learn ``KNeighborsClassifier`` (majority vote, Euclidean distance) on
  L2-normalised features, i.e. cosine neighbours; k from :data:`K_GRID` (at most the number of
  fitting frames).
- ``linear-probe``: features standardised with the fitting part's mean and std, then
  ``LogisticRegression`` (multinomial, L2) with C from :data:`C_GRID`.

Writes the classification schema: ``metrics.json`` (through ``finetune``; per-fold and pooled
metrics with patient-bootstrap intervals, as classification), ``predictions.csv`` (fold,
frame_id, video_id, patient_id, true, pred, prob_<class>), ``confusion_matrix.png``, and
``selection.csv`` (validation macro-F1 of every candidate in every fold).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from awcl import _compat  # noqa: F401
from awcl.data.store import PreparedDataset
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.fit import RuntimeOptions, encode
from awcl.evaluate.metrics import classification_metrics
from awcl.evaluate.plots import plot_confusion
from awcl.evaluate.records import class_fold_record, class_predictions
from awcl.evaluate.selection import load_frames, select_classification, summarize_folds
from awcl.evaluate.summary import classification_summary, fold_classification_metrics
from awcl.evaluate.tasks import CLASSIFY
from awcl.models import build_encoder, resolve_init

log = logging.getLogger(__name__)

K_GRID = (1, 3, 5, 10, 20, 50)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


# Features of recent (encoder, frames) pairs in this process: a study runs many probes of one
# encoder on one data set (protocols x downstream seeds x label-efficiency points) in a row,
# and the frozen features are the same for all of them.
_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_CACHE_SIZE = 4


def _feature_key(cfg: FinetuneConfig, ds: PreparedDataset, rows: np.ndarray) -> tuple:
    src = resolve_init(cfg.init)
    if src == "random":
        ident: tuple = ("random", cfg.seed, cfg.backbone)  # the seed makes the random encoder
    else:
        st = Path(src).stat()
        ident = (str(Path(src).resolve()), st.st_mtime_ns, st.st_size)
    frames = Path(ds.root) / "frames.npy"
    fst = frames.stat()
    data = (str(frames.resolve()), fst.st_mtime_ns, fst.st_size)
    sel = hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
    return ident, data, sel, tuple(cfg.size) if cfg.size else None


def cached_features(cfg: FinetuneConfig, ds: PreparedDataset, rows: np.ndarray,
                    runtime: RuntimeOptions) -> np.ndarray:
    """:func:`encode` of the frames ``rows`` of ``ds``, reusing this process's recent result
    for the same encoder file (path, mtime, size) or random seed, frames and size."""
    key = _feature_key(cfg, ds, rows)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    feats = encode_frozen(cfg, load_frames(ds, rows, cfg.size), runtime)
    _CACHE[key] = feats
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return feats


def encode_frozen(cfg: FinetuneConfig, frames: torch.Tensor, runtime: RuntimeOptions) -> np.ndarray:
    """Pooled features of the frozen encoder: uint8 ``[N, H, W]`` -> float32 ``[N, 512]``,
    in eval mode on the runtime's device and precision. The encoder is seeded by ``cfg.seed``
    so a random init is the same encoder for every fold (and the partial protocol's)."""
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.init, cfg.backbone, tuple(frames.shape[-2:]))
    feats = encode(encoder, frames, runtime, batch=128)
    return feats.numpy() if len(feats) else np.zeros((0, encoder.out_dim), np.float32)


def _full_proba(proba: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Spread ``[N, len(seen)]`` probabilities into ``[N, k]`` columns (absent classes 0)."""
    full = np.zeros((len(proba), k), dtype=np.float64)
    full[:, seen.astype(int)] = proba
    return full


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """The validation score a probe's hyper-parameter is chosen by (the classification task
    kind's selection metric, macro-F1)."""
    return classification_metrics(y, pred, k)[CLASSIFY.selection]


def knn_probe(
    f_fit: np.ndarray, y_fit: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, f_test: np.ndarray,
    num_classes: int, grid: tuple[int, ...] = K_GRID,
) -> tuple[np.ndarray, dict, list[dict]]:
    """kNN on L2-normalised features; k chosen by validation macro-F1 (ties: the smaller k).

    Returns (test probabilities ``[T, K]``, ``{"k": k, "val_f1": ..}``, every candidate's score).
    """
    def unit(f: np.ndarray) -> np.ndarray:
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    a, v, t = unit(f_fit), unit(f_val), unit(f_test)
    ks = sorted({min(k, len(a)) for k in grid})
    scores, best = [], None
    for k in ks:
        clf = KNeighborsClassifier(n_neighbors=k).fit(a, y_fit)
        f1 = _macro_f1(y_val, clf.predict(v), num_classes)
        scores.append({"k": k, CLASSIFY.selection_key: f1})
        if best is None or f1 > best[1]:
            best = (k, f1, clf)
    k, f1, clf = best  # type: ignore[misc]
    proba = _full_proba(clf.predict_proba(t), clf.classes_, num_classes)
    return proba, {"k": k, CLASSIFY.selection_key: f1}, scores


def linear_probe(
    f_fit: np.ndarray, y_fit: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, f_test: np.ndarray,
    num_classes: int, grid: tuple[float, ...] = C_GRID,
) -> tuple[np.ndarray, dict, list[dict]]:
    """Standardised features -> logistic regression; C chosen by validation macro-F1 (ties:
    the stronger regularisation). Same return shape as :func:`knn_probe`."""
    scaler = StandardScaler().fit(f_fit)
    a, v, t = scaler.transform(f_fit), scaler.transform(f_val), scaler.transform(f_test)
    scores, best = [], None
    # One regularisation path, strong to weak: each fit starts from the previous solution
    # (weakly regularised fits on separable features otherwise take minutes to converge).
    clf = LogisticRegression(max_iter=2000, warm_start=True)
    for c in sorted(grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the last iterate is still scored
            clf.set_params(C=c).fit(a, y_fit)
        f1 = _macro_f1(y_val, clf.predict(v), num_classes)
        scores.append({"C": c, CLASSIFY.selection_key: f1})
        if best is None or f1 > best[1]:
            best = (c, f1, copy.deepcopy(clf))
    c, f1, clf = best  # type: ignore[misc]
    proba = _full_proba(clf.predict_proba(t), clf.classes_, num_classes)
    return proba, {"C": c, CLASSIFY.selection_key: f1}, scores


PROBE_FNS = {"knn": knn_probe, "linear-probe": linear_probe}


def run_probe(cfg: FinetuneConfig, ds: PreparedDataset, out: Path,
              get_runtime: Callable[[], RuntimeOptions]) -> dict:
    """Run a probe protocol on every fold; write its files into ``out``; return the metrics
    dict (classification schema: ``folds``, ``mean``, ``std``, ``confusion_matrix``, ...).
    ``get_runtime`` gives the device and precision for the frozen encoder's features."""
    sel = select_classification(cfg, ds)
    rows, sub, y, groups, names, folds, warns = (
        sel.rows, sel.sub, sel.y, sel.groups, sel.names, sel.folds, sel.warnings)
    K = len(names)
    log.info("%s probe: %d frames, %d classes, %d fold(s)", cfg.protocol, len(rows), K, len(folds))
    feats = cached_features(cfg, ds, rows, get_runtime()) if cfg.fold_inits is None else None
    fit_predict = PROBE_FNS[cfg.protocol]
    per_fold, preds, selection = [], [], []
    cm_total = np.zeros((K, K), dtype=np.int64)
    for fold in folds:
        if cfg.fold_inits is not None:  # per-fold pretraining: the fold's own encoder
            feats = cached_features(cfg.for_fold(fold.index), ds, rows, get_runtime())
        proba, chosen, scores = _probe_fold(fit_predict, feats, y, fold, K)
        pred = proba.argmax(1)
        yt = y[fold.test]
        record, cm = class_fold_record(
            fold, yt, pred, K, **{"n_train_patients": len(np.unique(groups[fold.train])), **chosen})
        cm_total += cm
        per_fold.append(record)
        selection += [{"fold": fold.index, **s} for s in scores]
        preds.append(class_predictions(sub, fold.test, fold.index, cfg.group, names, yt, pred, proba))
    pred_df = pd.concat(preds)
    per_fold_extra = fold_classification_metrics(pred_df, names)  # balanced accuracy, AUROC
    for f in per_fold:
        f.update({k: per_fold_extra[f["fold"]].get(k) for k in ("balanced_accuracy", "auroc")})
    mean, std = summarize_folds(per_fold, CLASSIFY.metrics)
    pred_df.to_csv(out / "predictions.csv", index=False)
    pd.DataFrame(selection).to_csv(out / "selection.csv", index=False)
    plot_confusion(cm_total, names, out / "confusion_matrix.png")
    return {
        "task": "classify",
        "protocol": cfg.protocol,
        "head": "knn" if cfg.protocol == "knn" else "logistic-regression",
        "init": str(cfg.init),
        "data": str(cfg.data),
        "label": cfg.label,
        "classes": names,
        "seed": cfg.seed,
        "split": cfg.split,
        "group": cfg.group,
        "train_patients": cfg.train_patients,
        "num_frames": len(rows),
        "folds": per_fold,
        "mean": mean,
        "std": std,
        "confusion_matrix": cm_total.tolist(),
        **classification_summary(pred_df, names, cfg.group, cfg.bootstrap, cfg.seed),
        "warnings": warns,
    }


def _probe_fold(fit_predict: Callable, feats: np.ndarray, y: np.ndarray, fold: Any, K: int,
                ) -> tuple[np.ndarray, dict, list[dict]]:
    """The probe of one fold on ``feats: [N, 512]``: chosen on ``fold.val``, fitted on
    ``fold.train``; returns test probabilities ``[T, K]``, the choice, every candidate's score."""
    # One BLAS thread: these matrices are tiny, and threads' hand-offs made a logistic
    # regression path 10x slower on a 2-core machine (49 s instead of ~4 s per run).
    with threadpool_limits(1):
        return fit_predict(feats[fold.train], y[fold.train], feats[fold.val], y[fold.val], feats[fold.test], K)
