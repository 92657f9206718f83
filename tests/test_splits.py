"""Grouped splits never leak a patient; leaking fixed splits are refused."""

from __future__ import annotations

import numpy as np
import pytest

from awcl.errors import AwclError
from awcl.evaluate.splits import carve_validation, check_classes, fixed_split, kfold_splits


@pytest.mark.parametrize("seed", range(12))
def test_kfold_grouped_never_leaks(seed):
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(9, 40))
    k = int(rng.integers(2, 5))
    sizes = rng.integers(1, 8, n_groups)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    glabel = rng.integers(0, 3, n_groups)
    y = np.repeat(glabel, sizes)
    folds = kfold_splits(y, groups, k=k, seed=seed)
    assert len(folds) == k
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(len(y)))  # every row tested exactly once
    for f in folds:
        parts = [set(groups[f.train]), set(groups[f.val]), set(groups[f.test])]
        assert all(parts)
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(f.train) + len(f.val) + len(f.test) == len(y)


def test_kfold_seeded_reproducible():
    groups = np.repeat(np.arange(12).astype(str), 3)
    y = np.repeat(np.arange(12) % 2, 3)
    a = kfold_splits(y, groups, 3, seed=5)
    b = kfold_splits(y, groups, 3, seed=5)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.test, fb.test)
        np.testing.assert_array_equal(fa.val, fb.val)


def test_fixed_split_leak_refused():
    groups = np.array(["a", "a", "b", "c", "c", "d"])
    split = np.array(["train", "test", "train", "train", "train", "test"])
    with pytest.raises(AwclError, match=r"leaking split.*'a'"):
        fixed_split(split, np.zeros(6, int), groups)


def test_fixed_split_carves_grouped_val():
    groups = np.array(["a", "a", "b", "c", "c", "d", "e", "f"])
    split = np.array(["train"] * 5 + ["test", "train", "train"])
    (f,) = fixed_split(split, np.zeros(8, int), groups, val_fraction=0.3)
    assert set(groups[f.test]) == {"d"}
    assert not set(groups[f.train]) & set(groups[f.val])
    assert len(f.val) > 0


def test_too_few_groups_and_missing_class():
    with pytest.raises(AwclError, match=r"fewer --folds"):
        kfold_splits(np.zeros(4, int), np.array(["a", "a", "b", "b"]), k=3)
    groups = np.repeat(np.arange(9).astype(str), 2)
    y = np.repeat([0] * 8 + [1], 2)  # class 1: a single patient -> some training part lacks it
    folds = kfold_splits(y, groups, k=3, seed=0)
    with pytest.raises(AwclError, match=r"train part has no samples of class"):
        check_classes(folds, y, ["a", "b"])


def test_validation_capped_at_fraction_with_a_rare_class():
    # 10 patients; class 1 has only two of them. Before, the split used 2 folds for such a
    # class and validation took about half of the training part.
    groups = np.repeat([f"p{i}" for i in range(10)], 4)
    y = np.repeat([0] * 8 + [1, 1], 4)
    train = np.arange(len(y))
    for seed in range(6):
        fit, val = carve_validation(train, y, groups, 0.2, seed)
        assert len(np.unique(groups[val])) <= 2  # floor(0.2 * 10) groups at most
        assert set(y[fit]) == {0, 1}  # fit keeps every class
        assert not set(groups[fit]) & set(groups[val])
        assert len(fit) + len(val) == len(y)


@pytest.mark.parametrize("seed", range(8))
def test_validation_groups_never_exceed_fraction(seed):
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(3, 30))
    sizes = rng.integers(1, 6, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    y = np.repeat(rng.integers(0, 3, n_groups), sizes)
    frac = float(rng.choice([0.1, 0.2, 0.25, 0.34]))
    fit, val = carve_validation(np.arange(len(y)), y, groups, frac, seed)
    nv = len(np.unique(groups[val]))
    assert 1 <= nv <= max(1, int(frac * n_groups + 1e-9))
    assert not set(groups[fit]) & set(groups[val])
    assert set(y[fit]) == set(y)  # no class lost from fit when another group could go


def test_validation_swaps_out_the_last_group_of_a_class():
    groups = np.array(["a", "b", "c", "d", "e"])
    y = np.array([0, 0, 0, 0, 1])  # class 1: one patient, must stay in fit
    for seed in range(10):
        fit, val = carve_validation(np.arange(5), y, groups, 0.2, seed)
        assert 4 in fit and len(val) == 1
