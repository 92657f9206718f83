"""Grouped splits: k-fold or a fixed split, never with a patient on both sides.

Every split is a set of row indices into the (filtered) manifest; ``groups`` are the patient
(or scan) ids. Validation parts for model selection are carved from the training part, also
grouped, so the test fold is never looked at before the final evaluation.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from awcl.errors import AwclError

log = logging.getLogger(__name__)


@dataclass
class Fold:
    """Row indices of one fold: ``train`` (fitting), ``val`` (model selection), ``test``."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def check_no_leak(groups: np.ndarray, *parts: np.ndarray, where: str = "split") -> None:
    """Raise if any group (patient) appears in more than one of ``parts``."""
    seen: dict[str, int] = {}
    for pi, part in enumerate(parts):
        for g in np.unique(groups[part]):
            if g in seen and seen[g] != pi:
                n = sum(
                    len(set(groups[a]) & set(groups[b]))
                    for i, a in enumerate(parts)
                    for b in parts[i + 1 :]
                )
                raise AwclError(
                    f"{where}: leaking split: patient/group {g!r} is on both sides "
                    f"({n} groups shared); splits must be grouped by patient"
                )
            seen[g] = pi


def _stratified_group_split(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise AwclError(f"only {n_groups} patients/groups for {n_splits} folds; use fewer --folds")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(a, b) for a, b in cv.split(np.zeros(len(y)), y, groups)]


def _cover_classes(chosen: list[str], classes_of: dict[str, set], groups_of: dict, sizes: dict[str, int],
                   spare_ok: Callable[[str], bool]) -> None:
    """Every class in val where the data allow: a class with a group fit can spare
    (``spare_ok``) but none in ``chosen`` gets its smallest such group (macro-F1 selection
    would score a class missing from val as 0)."""
    for c in sorted(groups_of):
        if any(c in classes_of[n] for n in chosen):
            continue
        spare = [n for n in groups_of[c] if n not in chosen and spare_ok(n)]
        if spare:
            chosen.append(min(spare, key=lambda n: (sizes[n], n)))


def _cap_groups(chosen: list[str], cap: int, hard_cap: int, droppable: Callable[[str], bool]) -> None:
    """Cap the validation groups: drop first those whose classes val still has without them;
    class coverage may keep val past ``cap``, never past ``hard_cap``."""
    while len(chosen) > cap:
        drop = next((n for n in chosen if droppable(n)), None)
        if drop is None:
            if len(chosen) <= hard_cap:
                break
            drop = chosen[-1]
        chosen.remove(drop)


def carve_validation(
    train: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``train`` (row indices) into (fit, val), grouped and stratified where possible.

    The validation part holds about ``max(1, floor(val_fraction · groups))`` groups (a
    class with few patients no longer makes it half of the training part), never the last
    training group of a class while other groups could go instead, and every class that has
    a group to spare (a stratified group carve); covering the classes may take it past that
    size, never past half of the groups.
    """
    g = groups[train]
    yt = y[train]
    names = np.unique(g)
    n_groups = len(names)
    if n_groups < 2 or val_fraction <= 0:
        raise AwclError(
            f"training part has {n_groups} patient(s): too few to carve a validation part"
        )
    cap = min(n_groups - 1, max(1, math.floor(val_fraction * n_groups + 1e-9)))
    n_splits = max(2, min(round(1.0 / val_fraction), n_groups))
    try:
        with warnings.catch_warnings():  # a class with fewer groups than folds is fine here
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            _, val = _stratified_group_split(yt, g, n_splits, seed)[0]
    except ValueError:  # e.g. fewer groups than folds: fall back to an unstratified split
        gss = GroupShuffleSplit(n_splits=1, test_size=cap, random_state=seed)
        _, val = next(gss.split(train, groups=g))
    rng = np.random.default_rng(seed)
    order = [str(v) for v in rng.permutation(np.unique(g[val]))]
    classes_of = {str(n): set(np.unique(yt[g == n]).tolist()) for n in names}
    groups_of = {c: {n for n, cs in classes_of.items() if c in cs} for c in np.unique(yt).tolist()}
    chosen = list(order)

    def covered_elsewhere(n: str, inside: bool) -> bool:
        """Every class of group n has another group inside val (inside) / in fit (not)."""
        for c in classes_of[n]:
            others = groups_of[c] - {n}
            rest = others & set(chosen) if inside else others - set(chosen)
            if not rest:
                return False
        return True

    # keep in fit the last group of a class (else fit would lack the class)
    for n in order:
        if len(chosen) > 1 and not covered_elsewhere(n, inside=False):
            chosen.remove(n)
    if len(chosen) == 1 and not covered_elsewhere(chosen[0], inside=False):
        # the one val group is the last of its class: swap in a group fit can spare
        spare = [str(n) for n in rng.permutation(names) if str(n) not in chosen]
        chosen = [next((n for n in spare if covered_elsewhere(n, inside=False)), chosen[0])]
    _cover_classes(chosen, classes_of, groups_of, {str(n): int((g == n).sum()) for n in names},
                   lambda n: covered_elsewhere(n, inside=False))
    _cap_groups(chosen, cap, max(cap, n_groups // 2), lambda n: covered_elsewhere(n, inside=True))
    in_val = np.isin(g.astype(str), chosen)
    return train[~in_val], train[in_val]


def kfold_splits(
    y: np.ndarray, groups: np.ndarray, k: int = 3, seed: int = 0, val_fraction: float = 0.2
) -> list[Fold]:
    """``k`` grouped, stratified folds; each training part loses a grouped validation part."""
    if k < 2:
        raise AwclError(f"--folds must be >= 2 (got {k})")
    folds = []
    for i, (train, test) in enumerate(_stratified_group_split(y, groups, k, seed)):
        fit, val = carve_validation(train, y, groups, val_fraction, seed + 1000 + i)
        check_no_leak(groups, fit, val, test, where=f"fold {i}")
        folds.append(Fold(i, np.sort(fit), np.sort(val), np.sort(test)))
    return folds


TRAIN_NAMES = {"train", "training", "trn"}
VAL_NAMES = {"val", "valid", "validation", "dev"}
TEST_NAMES = {"test", "testing", "tst", "holdout"}


def fixed_split(
    split: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0, val_fraction: float = 0.2,
    source: str = "manifest",
) -> list[Fold]:
    """One fold from a ``split`` column (train/val/test); val carved from train if absent."""
    s = np.asarray([str(v).strip().lower() for v in split])
    train = np.flatnonzero(np.isin(s, list(TRAIN_NAMES)))
    val = np.flatnonzero(np.isin(s, list(VAL_NAMES)))
    test = np.flatnonzero(np.isin(s, list(TEST_NAMES)))
    if len(train) == 0 or len(test) == 0:
        raise AwclError(
            f"{source}: split column needs 'train' and 'test' rows (found {sorted(set(s))})"
        )
    check_no_leak(groups, train, val, test, where=f"{source} split column")
    if len(val) == 0:
        train, val = carve_validation(train, y, groups, val_fraction, seed)
    return [Fold(0, np.sort(train), np.sort(val), np.sort(test))]


def check_classes(folds: list[Fold], y: np.ndarray, class_names: list[str]) -> list[str]:
    """Error if a training part lacks a class; warn (and return warnings) for val/test."""
    warnings = []
    k = len(class_names)
    for f in folds:
        for part, idx in (("train", f.train), ("val", f.val), ("test", f.test)):
            missing = [class_names[c] for c in range(k) if not np.any(y[idx] == c)]
            if not missing:
                continue
            msg = f"fold {f.index}: {part} part has no samples of class(es) {', '.join(missing)}"
            if part == "train":
                raise AwclError(msg + "; merge or drop them with --classes, or use fewer --folds")
            log.warning(msg)
            warnings.append(msg)
    return warnings


def limit_train_patients(
    fold: Fold, y: np.ndarray, groups: np.ndarray, n: int, seed: int, tries: int = 200
) -> Fold:
    """Keep ``n`` patients (groups) of ``fold.train`` for fitting: the label-efficiency setting.

    Only the fitting part changes; ``val`` (model selection) and ``test`` are returned as they
    are, so a test patient can never enter. The draw is seeded by ``seed``, the fold and ``n``
    (every method sees the same patients) and keeps every class of the training part: first
    up to ``tries`` uniform draws of ``n`` patients, the first that holds every class wins (a
    uniform draw among the covering sets); if none does, a stratified construction (one
    patient per class not yet covered, classes in random order, then the rest at random).
    Raises when the fold has fewer than ``n`` training patients or no draw covers every class.
    """
    if n < 1:
        raise AwclError(f"train_patients must be >= 1 (got {n})")
    g = groups[fold.train]
    yt = y[fold.train]
    patients = np.unique(g)
    if n > len(patients):
        raise AwclError(
            f"fold {fold.index}: train_patients={n} but the training part has only "
            f"{len(patients)} patients; use a smaller number or 'all'"
        )
    classes = np.unique(yt)
    pidx = np.searchsorted(patients, g)
    holds = np.zeros((len(patients), len(classes)), dtype=bool)  # patient x class
    holds[pidx, np.searchsorted(classes, yt)] = True
    rng = np.random.default_rng([seed, fold.index, n, 0x1E])

    def result(chosen: np.ndarray) -> Fold:
        return Fold(fold.index, fold.train[np.isin(pidx, chosen)], fold.val, fold.test)

    for _ in range(tries):  # uniform among the n-sets that cover every class
        chosen = rng.choice(len(patients), size=n, replace=False)
        if holds[chosen].any(axis=0).all():
            return result(chosen)
    smallest = len(classes)
    for _ in range(tries):  # stratified construction
        picked: list[int] = []
        covered = np.zeros(len(classes), dtype=bool)
        for c in rng.permutation(len(classes)):
            if not covered[c]:
                p = int(rng.choice(np.flatnonzero(holds[:, c])))
                picked.append(p)
                covered |= holds[p]
        smallest = min(smallest, len(picked))
        if len(picked) <= n:
            rest = rng.permutation(np.setdiff1d(np.arange(len(patients)), picked))[: n - len(picked)]
            return result(np.concatenate([np.asarray(picked, dtype=int), rest]))
    raise AwclError(
        f"fold {fold.index}: train_patients={n} cannot keep every one of the {len(classes)} "
        f"classes (the smallest covering draw had {smallest} patients); use a larger number"
    )
