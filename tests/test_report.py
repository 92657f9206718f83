"""Report rendering from a synthetic study directory (no training)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from awcl.errors import AwclError
from awcl.study.config import parse_config
from awcl.study.report import lower_is_better, transfer_table, write_report
from awcl.study.runner import run_study
from test_study import Calls, base_raw

SECTIONS = [
    "Transfer table (full fine-tuning)",
    "Partial fine-tuning (encoder frozen)",
    "t-SNE of penultimate features",
    "Anatomy-ratio sweep",
    "Coarse vs fine anatomy labels",
    "Confusion matrices",
    "Pretraining curves",
    "Configuration",
    "Versions and hardware",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(parse_config(base_raw()), out, Calls().executors(), progress=False, echo=lambda s: None)
    write_report(out)
    return out


def test_report_has_every_section_with_inlined_images(study):
    html = (study / "report.html").read_text()
    for s in SECTIONS:
        assert f"<h2>{s}</h2>" in html, s
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    # t-SNE grid, ratio curve, confusion (cls), pretraining curves
    assert len(imgs) >= 4
    for b in imgs:
        assert base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<link" not in html and "src='http" not in html  # self-contained
    assert "No " not in html.split("<h2>Configuration</h2>")[0]  # every data section filled
    md = (study / "report.md").read_text()
    for s in SECTIONS:
        assert f"## {s}" in md
    for img in re.findall(r"\]\((report_files/[^)]+)\)", md):
        assert (study / img).is_file()


def test_results_csv_holds_every_fold(study):
    df = pd.read_csv(study / "results.csv")
    ft = df[df.kind == "finetune"]
    # 16 finetune runs x 2 folds x 2 metrics
    assert len(ft) == 16 * 2 * 2
    assert {"method", "task", "protocol", "fold", "metric", "value", "seed", "ratio"} <= set(df.columns)
    assert set(ft.ratio.dropna()) == {0.2, 0.5}
    pre = df[df.kind == "pretrain"]
    assert len(pre[pre.metric == "loss"]) == 5 * 2  # 5 pretrain runs x 2 epochs


def test_best_in_bold_matches_numbers(study):
    df = pd.read_csv(study / "results.csv")
    main = df[(df.kind == "finetune") & (df.protocol == "full") & (df.main)]
    means = main[(main.task == "cls") & (main.metric == "accuracy")].groupby("method").value.mean()
    best = means.idxmax()
    md = (study / "report.md").read_text()
    table = md.split("## Transfer table (full fine-tuning)")[1].split("## ")[0]
    row = next(line for line in table.splitlines() if line.startswith(f"| {best} |"))
    assert row.split("|")[2].strip() == f"**{means[best]:.3f} ± {main[(main.method == best) & (main.task == 'cls') & (main.metric == 'accuracy')].value.std(ddof=1):.3f}**"
    html = (study / "report.html").read_text()
    assert f"<td><b>{means[best]:.3f}" in html


def test_lower_is_better_bolds_minimum():
    df = pd.DataFrame({
        "kind": "finetune", "method": ["a", "a", "b", "b"], "task": "seg", "task_kind": "segment",
        "protocol": "full", "main": True, "metric": "hc_mae_mm", "value": [3.0, 5.0, 1.0, 2.0],
        "ratio": np.nan, "seed": 0, "fold": [0, 1, 0, 1],
    })  # fmt: skip
    assert lower_is_better("hc_mae_mm") and not lower_is_better("dice")
    t = transfer_table(df, "full", ["seg"])
    assert t is not None and t.bold == {(1, 1)}
    assert t.rows[1][1] == "1.500 ± 0.707"


def test_empty_sections_say_so(tmp_path):
    raw = base_raw()
    raw["methods"] = ["random"]
    raw["tasks"] = [raw["tasks"][1]]  # segmentation only: no confusion matrices
    raw["embed"] = {"enabled": False}
    run_study(parse_config(raw), tmp_path, Calls().executors(), progress=False, echo=lambda s: None)
    html = write_report(tmp_path).html.read_text()
    for phrase in ("No partial fine-tuning runs", "No t-SNE embeddings", "No anatomy-ratio sweep",
                   "No coarse/fine pair", "No confusion matrices", "No pretraining histories"):  # fmt: skip
        assert phrase in html


def test_report_of_partial_study_and_missing_dir(tmp_path):
    with pytest.raises(AwclError, match="not a study directory"):
        write_report(tmp_path)
    crash = Calls(fail_at=4)
    with pytest.raises(RuntimeError):
        run_study(parse_config(base_raw()), tmp_path, crash.executors(), progress=False, echo=lambda s: None)
    html = write_report(tmp_path).html.read_text()
    assert "not finished" in html
