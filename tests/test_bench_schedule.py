"""benchmarks/bench_schedule.py's variant names and monitor reading (no training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_schedule.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_schedule", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_variant_takes_the_ratio_after_at(bench) -> None:
    assert bench.variant("awcl-coarse@0.5") == {"method": "awcl", "granularity": "coarse",
                                                "anatomy_ratio": 0.5}
    assert bench.variant("awcl-fine")["anatomy_ratio"] == 0.75  # the old default stays
    assert bench.variant("simclr") == {"method": "simclr"}


@pytest.mark.parametrize("spec", ["simclr@0.5", "byol", "awcl@0.5"])
def test_variant_refuses_what_it_cannot_run(bench, spec: str) -> None:
    with pytest.raises(SystemExit, match="--methods"):
        bench.variant(spec)


def test_read_monitor_splits_the_two_granularities(bench, tmp_path: Path) -> None:
    p = tmp_path / "monitor.csv"
    p.write_text("step,knn_acc,knn_acc_coarse\n0,0.4,0.6\n60,0.3,\n120,0.5,0.7\n")
    fine, coarse = bench.read_monitor(p)
    assert fine == [(0, 0.4), (60, 0.3), (120, 0.5)]
    assert coarse == [(0, 0.6), (120, 0.7)]


def test_change_interval_reads_the_votes(bench, tmp_path: Path) -> None:
    p = tmp_path / "summary.json"
    p.write_text('{"knn_hits": {"queries": [10, 10, 10, 10, 10], "init": [5, 5, 5, 5, 5], '
                 '"final": [7, 7, 7, 7, 7]}}')
    d, lo, hi, g = bench.change_interval(p)
    assert (d, g) == (0.2, 5)
    assert lo == hi == 0.2  # every patient gained the same: no spread to resample
    p.write_text('{"knn_hits": null}')
    assert bench.change_interval(p) is None
    assert bench.change_interval(tmp_path / "absent.json") is None
