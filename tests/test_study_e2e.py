"""One tiny real study end to end: phantom -> pretrain -> fine-tune -> embed -> report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from awcl.study.config import parse_config
from awcl.study.report import write_report
from awcl.study.runner import run_study

pytestmark = pytest.mark.slow

TINY = {"seed": 0, "scans": 8, "frames_per_scan": 12, "size": [32, 40], "masks": "brain"}


def tiny_config() -> dict:
    return {
        "name": "tiny",
        "pretrain_data": {"recipe": "phantom", "params": {**TINY, "labelled_fraction": 0.3}},
        "methods": ["random", "awcl-coarse"],
        "anatomy_ratios": [0.5],
        "pretrain": {"epochs": 1, "batch_size": 16,
                     "extra": {"num_workers": 0, "monitor_fraction": 0.0, "threads": 2}},
        "tasks": [
            {"name": "anatomy", "task": "classify", "protocols": ["full"], "epochs": 1, "folds": 2,
             "classes": ["brain", "other=heart+spine+abdomen+femur"],
             "dataset": {"recipe": "phantom", "params": {**TINY, "seed": 1, "labelled_fraction": 1.0}},
             "extra": {"threads": 2}},
        ],
        "embed": {"max_samples": 40},
    }  # fmt: skip


def test_tiny_real_study(tmp_path):
    cfg = parse_config(tiny_config(), source="tiny.yaml")
    res = run_study(cfg, tmp_path, progress=False, echo=lambda s: None)
    kinds = sorted(d.split("-")[0] for d in res.computed)
    assert kinds == ["data", "data", "embed", "embed", "finetune", "finetune", "pretrain"]
    pre = next((tmp_path / "runs").glob("pretrain-*"))
    assert (pre / "run" / "encoder.pt").is_file() and not (pre / "run" / "checkpoints").exists()
    rec = json.loads(next((tmp_path / "runs").glob("finetune-awcl*")).joinpath("DONE").read_text())
    assert len(rec["result"]["folds"]) == 2 and "accuracy" in rec["result"]["folds"][0]

    again = run_study(cfg, tmp_path, progress=False, echo=lambda s: None)
    assert again.computed == []

    files = write_report(tmp_path)
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") >= 3  # t-SNE grid, confusion, pretrain curve
    df = pd.read_csv(files.csv)
    assert set(df[df.kind == "finetune"].method) == {"random", "awcl-coarse"}
    # the answer up front reads the real pretraining summary (steps, views seen, schedule)
    result = json.loads((pre / "DONE").read_text())["result"]
    assert {"steps", "views_seen", "lr_schedule", "knn_crossover_step"} <= set(result)
    md = files.markdown.read_text()
    answer = md.split("\n## ")[1]
    assert answer.startswith("Answer on this data") and "awcl-coarse − random = " in answer
    assert f"| awcl-coarse | {result['steps']:,} | {result['views_seen']:,} |" in answer
    assert (tmp_path / "forest.png").is_file() and "alt='Forest plot" in html
