"""The equal-compute table and the monitor note read both label granularities of the kNN
monitor: the primary one decides "still below step 0", the other is stated beside it."""

from __future__ import annotations

import awcl  # noqa: F401  (torchvision shim)
from awcl.study.answer import Compute, below_init_note, compute_rows, run_compute
from awcl.study.records import PretrainLabels, PretrainResult


def _run(method: str, init: float, final: float, other: dict | None) -> Compute:
    result = PretrainResult(knn_acc=final, knn_acc_init=init, knn_curve=[[0, init], [600, final]],
                            knn_crossover_step=600 if final >= init else None, steps=600,
                            views_seen=38400, lr_schedule="warmup-cosine", warmup=0.1,
                            knn_granularity="fine", knn_other=other)  # fmt: skip
    return run_compute(PretrainLabels(method=method, seed=0), result, None)


def test_other_granularity_is_a_column_and_a_note_but_not_the_warning():
    runs = [_run("simclr", 0.44, 0.50, {"coarse": {"init": 0.70, "final": 0.80, "crossover_step": 300}}),
            _run("awcl-coarse", 0.44, 0.36, {"coarse": {"init": 0.70, "final": 0.85, "crossover_step": 240}}),
            _run("awcl-fine", 0.44, 0.52, {"coarse": {"init": 0.70, "final": 0.66, "crossover_step": None}})]
    header, rows = compute_rows(runs)
    assert header[4:] == ["kNN fine step 0 → final", "crossover step", "kNN coarse step 0 → final"]
    assert rows[1][4:] == ["0.440 → 0.360 ⚠", "never (still below)", "0.700 → 0.850"]
    assert rows[2][-1] == "0.700 → 0.660 ⚠"
    note = below_init_note(runs)
    warning, rest = note.split(". Pretraining stopped", 1)
    assert "awcl-coarse stopped at step 600 with kNN 0.360 < 0.440" in warning and "awcl-fine" not in warning
    assert "awcl-fine on the coarse labels (0.660 < 0.700)" in rest
    # no primary warning: the other granularity's note stands alone, without the ⚠ heading
    only = below_init_note([runs[0], runs[2]])
    assert only.startswith("On the other label granularity") and "Still below" not in only


def test_runs_without_the_second_curve_keep_the_old_table():
    runs = [_run("simclr", 0.44, 0.50, None)]
    header, _ = compute_rows(runs)
    assert header == ["method", "optimiser steps", "views seen", "lr schedule", "kNN step 0 → final", "crossover step"]
    assert below_init_note(runs) is None


def test_random_row_is_as_wide_as_the_header():
    """The random-init row had six cells whatever the header: with the second granularity's
    column the markdown table came out ragged."""
    for other in (None, {"coarse": {"init": 0.70, "final": 0.80, "crossover_step": 300}}):
        header, rows = compute_rows([_run("simclr", 0.44, 0.50, other)], with_random=True)
        assert rows[0][:3] == ["random (no pretraining)", "0", "0"]
        assert all(len(r) == len(header) for r in rows)


def test_runs_without_a_monitor_are_named_as_not_checked():
    """HC18 has no class labels, so its pretraining runs have no kNN monitor: the report said
    nothing where the others get a verdict. It now names them."""
    blind = run_compute(PretrainLabels(method="simclr", seed=0),
                        PretrainResult(steps=62, views_seen=3968, lr_schedule="warmup-cosine"), None)
    note = below_init_note([blind])
    assert note.startswith("**Not checked:** simclr had no kNN monitor")
    both = below_init_note([blind, _run("awcl-coarse", 0.44, 0.36, None)])
    assert both.startswith("⚠ **Still below step 0:** awcl-coarse") and "**Not checked:** simclr" in both
    assert below_init_note([_run("simclr", 0.44, 0.50, None)]) is None


def _hits(init: list[int], final: list[int], per: int = 5) -> dict:
    return {"queries": [per] * len(init), "init": init, "final": final}


def test_below_step_0_states_the_monitor_interval_over_patients():
    """A drop of a few queries on a handful of held-out patients is noise: the note gives the
    paired interval of (final - step 0) over the monitor's patients and says so."""
    # 6 patients x 5 queries, 3 right in each at step 0; the end loses one in two patients
    small = run_compute(PretrainLabels(method="awcl-fine", seed=0), PretrainResult(
        knn_acc=0.533, knn_acc_init=0.6, steps=600, knn_hits=_hits([3] * 6, [2, 2, 3, 3, 3, 3])), None)
    d, lo, hi, g = small.change
    assert (round(d, 6), g) == (round(-2 / 30, 6), 6) and lo < 0 <= hi
    note = below_init_note([small])
    assert "(-0.067 [" in note and "over 6 held-out patients: within the monitor's noise)" in note
    assert "For 1 of these the drop is within the monitor's noise" in note
    # every query of every patient lost: beyond the noise, and no hint sentence
    big = run_compute(PretrainLabels(method="clpi", seed=0), PretrainResult(
        knn_acc=0.0, knn_acc_init=0.6, steps=600, knn_hits=_hits([3] * 6, [0] * 6)), None)
    note = below_init_note([big])
    assert "a drop beyond the monitor's noise" in note and "For 1 of these" not in note
    # two patients: no verdict either way
    few = run_compute(PretrainLabels(method="uscl", seed=0), PretrainResult(
        knn_acc=0.0, knn_acc_init=0.6, steps=600, knn_hits=_hits([3, 3], [0, 0])), None)
    assert "over 2 held-out patients: too few for an interval" in below_init_note([few])
    # a record without the votes (older runs), or a broken one, keeps the old sentence
    assert "held-out patient" not in below_init_note([_run("simclr", 0.44, 0.36, None)])
    broken = run_compute(PretrainLabels(method="uscl", seed=0), PretrainResult(
        knn_acc=0.0, knn_acc_init=0.6, steps=600, knn_hits={"queries": [5, None], "init": [3, 3], "final": [9, 0]}), None)
    assert broken.change is None


def test_paired_accuracy_change_matches_a_plain_patient_bootstrap():
    """Per-patient counts against a per-query loop with the same patient draws."""
    import numpy as np

    from awcl.evaluate.summary import bootstrap_weights, paired_accuracy_change

    rng = np.random.default_rng(3)
    groups = np.sort(rng.integers(0, 7, 60))
    before, after = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    per = [np.bincount(groups, weights=v, minlength=7) for v in (before, after, np.ones(60))]
    d, lo, hi, g = paired_accuracy_change(per[0], per[1], per[2], n=300, seed=5)
    assert g == 7 and np.isclose(d, after.mean() - before.mean())
    ref = []
    for w in np.concatenate(list(bootstrap_weights(7, 300, 5))):
        weight = w[groups]  # each query counts as often as its patient was drawn
        ref.append((weight * after).sum() / weight.sum() - (weight * before).sum() / weight.sum())
    assert np.allclose([lo, hi], np.percentile(ref, [2.5, 97.5]))
