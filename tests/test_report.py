"""Report rendering from a synthetic study directory (no training)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from awcl.errors import AwclError
from awcl.study.config import parse_config
from awcl.study.report import Results, lower_is_better, transfer_table, write_report
from awcl.study.runner import Executors, run_study
from test_study import Calls, base_raw

SECTIONS = [
    "Answer on this data",
    "Transfer table (full fine-tuning)",
    "Partial fine-tuning (encoder frozen)",
    "kNN probe (frozen features)",
    "Pairwise differences (paired bootstrap over test patients)",
    "Label efficiency",
    "kNN monitor during pretraining",
    "t-SNE of penultimate features",
    "Anatomy-ratio sweep",
    "Coarse vs fine anatomy labels",
    "Confusion matrices",
    "Pretraining curves",
    "Configuration",
    "Versions and hardware",
]


def report_raw() -> dict:
    """base_raw with a probe protocol and a label-efficiency point: every section has data."""
    raw = base_raw()
    raw["tasks"][0].update(protocols=["full", "partial", "knn"], train_patients=[2, "all"])
    return raw


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(parse_config(report_raw()), out, Calls().executors(), progress=False, echo=lambda s: None)
    write_report(out)
    return out


def test_report_has_every_section_with_inlined_images(study):
    html = (study / "report.html").read_text()
    for s in SECTIONS:
        assert f"<h2>{s}</h2>" in html, s
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    # t-SNE grid, ratio curve, confusion (cls), pretraining curves, label efficiency, kNN curves
    assert len(imgs) >= 6
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
    # main encoders (4): cls x 3 protocols x 2 patient counts + seg; sweep (r=0.2): cls-full + seg
    assert len(ft) == (4 * (3 * 2 + 1) + 2 * 2) * 2 * 2  # runs x 2 folds x 2 metrics
    assert {"method", "task", "protocol", "fold", "metric", "value", "seed", "ratio", "ft_seed",
            "train_patients", "step"} <= set(df.columns)
    assert set(ft.ratio.dropna()) == {0.2, 0.5}
    assert set(ft.train_patients.dropna()) == {2}
    pre = df[df.kind == "pretrain"]
    assert len(pre[pre.metric == "loss"]) == 5 * 2  # 5 pretrain runs x 2 epochs (step-0 loss is empty)
    assert len(pre[pre.metric == "knn_acc"]) == 5 * 3  # with the step-0 value


def test_best_in_bold_matches_numbers(study):
    from awcl.study.report import load_predictions, load_study

    preds = load_predictions(load_study(study))
    p = preds[(preds.protocol == "full") & (preds.task == "cls") & (preds.main) & preds.train_patients.isna()]
    pooled = p.groupby("method").apply(lambda g: (g.true == g.pred).mean())  # all folds pooled
    best = pooled.idxmax()
    md = (study / "report.md").read_text()
    table = md.split("## Transfer table (full fine-tuning)")[1].split("## ")[0]
    row = next(line for line in table.splitlines() if line.startswith(f"| {best} |"))
    cell = re.fullmatch(r"\*\*(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]\*\*", row.split("|")[2].strip())
    assert cell is not None, row  # value [lo, hi] from the predictions
    assert cell.group(1) == f"{pooled[best]:.3f}"
    assert float(cell.group(2)) <= pooled[best] <= float(cell.group(3))
    # segmentation stand-ins write no predictions: mean ± std over folds
    df = pd.read_csv(study / "results.csv")
    seg = df[(df.task == "seg") & (df.method == best) & (df.protocol == "full") & df.main & df.train_patients.isna()]
    mean = seg[seg.metric == "accuracy"].value
    assert f"{mean.mean():.3f} ± {mean.std(ddof=1):.3f}" in row
    html = (study / "report.html").read_text()
    assert f"<td><b>{pooled[best]:.3f} [" in html


def test_lower_is_better_bolds_minimum():
    df = pd.DataFrame({
        "kind": "finetune", "method": ["a", "a", "b", "b"], "task": "seg", "task_kind": "segment",
        "protocol": "full", "main": True, "metric": "hc_mae_mm", "value": [3.0, 5.0, 1.0, 2.0],
        "ratio": np.nan, "seed": 0, "fold": [0, 1, 0, 1],
    })  # fmt: skip
    assert lower_is_better("hc_mae_mm") and not lower_is_better("dice")
    assert lower_is_better("hd95_mm") and lower_is_better("msd_px") and not lower_is_better("auroc")
    t = transfer_table(Results(df), "full")
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
                   "No coarse/fine pair", "No confusion matrices", "No pretraining histories",
                   "No paired comparison", "No label-efficiency runs", "No kNN monitor values"):  # fmt: skip
        assert phrase in html


def test_report_of_partial_study_and_missing_dir(tmp_path):
    with pytest.raises(AwclError, match="not a study directory"):
        write_report(tmp_path)
    crash = Calls(fail_at=4)
    with pytest.raises(RuntimeError):
        run_study(parse_config(base_raw()), tmp_path, crash.executors(), progress=False, echo=lambda s: None)
    html = write_report(tmp_path).html.read_text()
    assert "not finished" in html


# ------------------------------------------------------------------ designed predictions
def designed_executors(correct: dict[str, float], collapse: set[str] = frozenset(),
                       pretrained: dict[str, dict] | None = None):
    """Stand-ins whose classification predictions are designed: method m is right on every
    frame of the first ``correct[m]`` share of each fold's test patients and wrong on the
    rest; a method in ``collapse`` predicts class 'a' everywhere. 2 folds x 10 patients x 4
    frames, classes alternating by patient. ``pretrained[m]`` is added to method m's
    pretraining result (summary.json keys: steps, views_seen, knn_acc, ...)."""
    calls = Calls()
    base = calls.executors()

    def pretrain(run, inputs):
        return {**base.pretrain(run, inputs), **(pretrained or {}).get(run.labels.method, {})}

    def finetune(run, inputs):
        run.output.mkdir(parents=True)
        m = run.labels.method
        rows = []
        for f in range(run.config["folds"]):
            for p in range(10):
                true = "ab"[p % 2]
                right = p < round(10 * correct[m])
                pred = "a" if m in collapse else (true if right else "ab"[1 - p % 2])
                rows += [{"fold": f, "frame_id": f"f{f}p{p}:{i}", "video_id": f"f{f}p{p}",
                          "patient_id": f"f{f}p{p}", "true": true, "pred": pred,
                          "prob_a": 0.9 if pred == "a" else 0.1, "prob_b": 0.1 if pred == "a" else 0.9}
                         for i in range(4)]  # fmt: skip
        pred = pd.DataFrame(rows)
        pred.to_csv(run.output / "predictions.csv", index=False)
        folds = []
        for _, g in pred.groupby("fold"):
            folds.append({"accuracy": float((g.true == g.pred).mean()), "f1": _macro_f1(g)})
        return {"folds": folds}

    return Executors(base.data, pretrain, finetune, base.embed)


def _macro_f1(g: pd.DataFrame) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(g.true, g.pred, average="macro", labels=["a", "b"], zero_division=0))


def designed_study(tmp_path, correct, collapse=frozenset(), pretrained=None):
    raw = base_raw()
    raw["methods"] = list(correct)
    raw["anatomy_ratios"] = [0.5]
    raw["tasks"] = [raw["tasks"][0]]
    raw["tasks"][0]["protocols"] = ["full"]
    raw["embed"] = {"enabled": False}
    run_study(parse_config(raw), tmp_path, designed_executors(correct, collapse, pretrained), progress=False,
              echo=lambda s: None)  # fmt: skip
    write_report(tmp_path)
    return tmp_path


def test_paired_bootstrap_in_report_on_a_known_case(tmp_path):
    from awcl.study.report import load_predictions, load_study, paired_difference

    out = designed_study(tmp_path, {"random": 0.5, "simclr": 0.5, "awcl-coarse": 1.0})
    preds = load_predictions(load_study(out))
    # awcl-coarse is right everywhere, simclr on half the patients: the exact pooled difference
    a = preds[preds.method == "awcl-coarse"]
    b = preds[preds.method == "simclr"]
    expected = _macro_f1(a) - _macro_f1(b)
    d, lo, hi, frames = paired_difference(preds, "awcl-coarse", "simclr", "f1", "classify")
    assert frames == 2 * 10 * 4
    assert d == pytest.approx(expected) and 0 < lo <= d <= hi
    # identical predictions: a difference of exactly 0, never significant
    d0, lo0, hi0, _ = paired_difference(preds, "simclr", "random", "f1", "classify")
    assert d0 == lo0 == hi0 == 0
    md = (out / "report.md").read_text()
    pair = md.split("## Pairwise differences")[1].split("\n## ")[0]
    row = next(line for line in pair.splitlines() if line.startswith("| awcl-coarse − simclr |"))
    assert f"{expected:+.3f}" in row and "yes: awcl-coarse better" in row
    row0 = next(line for line in pair.splitlines() if line.startswith("| simclr − random |"))
    assert "| no |" in row0
    assert "Significant differences" not in md  # the forest plot and the answer say it
    answer = md.split("## Answer on this data")[1].split("\n## ")[0]
    assert f"awcl-coarse − simclr = {expected:+.3f} [" in answer
    # the transfer table flags the identical rows (random and simclr predict the same)
    table = md.split("## Transfer table (full fine-tuning)")[1].split("\n## ")[0]
    assert "random, simclr: identical numbers" in table
    assert "random, simclr made the very same prediction" in table


def test_degenerate_classifier_flagged_next_to_the_numbers(tmp_path):
    from awcl.study.report import degenerate_runs, load_predictions, load_study

    out = designed_study(tmp_path, {"random": 0.5, "simclr": 0.8}, collapse={"random"})
    flags = degenerate_runs(load_predictions(load_study(out)))
    assert [(f["method"], f["class"]) for f in flags] == [("random", "a")]
    assert flags[0]["share"] == 1.0 and flags[0]["true_share"] == 0.5
    md = (out / "report.md").read_text()
    table = md.split("## Transfer table (full fine-tuning)")[1].split("\n## ")[0]
    random_row = next(line for line in table.splitlines() if line.startswith("| random |"))
    assert "degenerate" in random_row and "'a' for 100%" in random_row
    simclr_row = next(line for line in table.splitlines() if line.startswith("| simclr |"))
    assert "degenerate" not in simclr_row


def test_degenerate_rule():
    from awcl.study.report import degenerate_runs

    def preds(run, true, pred):
        return pd.DataFrame({"run": run, "task_kind": "classify", "method": run, "task": "t",
                             "protocol": "full", "train_patients": None, "main": True,
                             "true": list(true), "pred": list(pred)})  # fmt: skip

    df = pd.concat([
        preds("collapsed", "ab" * 10, "a" * 19 + "b"),  # 95% 'a' where half the truth is 'a'
        preds("honest-majority", "a" * 19 + "b", "a" * 19 + "b"),  # 95% 'a' because the truth is
        preds("good", "ab" * 10, "ab" * 10),
    ])  # fmt: skip
    assert [f["run"] for f in degenerate_runs(df)] == ["collapsed"]


def test_knn_monitor_section(study):
    md = (study / "report.md").read_text()
    sec = md.split("## kNN monitor during pretraining")[1].split("\n## ")[0]
    assert "knn_curves.png" in sec
    row = next(line for line in sec.splitlines() if line.startswith("| simclr |"))
    assert row.split("|")[2].strip() == "0.300" and row.split("|")[4].strip() == "+0.300"


def test_label_efficiency_section(study):
    md = (study / "report.md").read_text()
    sec = md.split("## Label efficiency")[1].split("\n## ")[0]
    assert "label_efficiency.png" in sec and "n=2" in sec and ", all" in sec
    overview = md.split("## Overview")[1].split("\n## ")[0]
    assert "Pretraining batch composition: random" in overview
    assert "crop of 0.08–1" in overview


# ------------------------------------------------------------------ the answer up front
def _compute(steps, views, schedule, warmup, curve, cross):
    init, final = curve[0][1], curve[-1][1]
    return {"steps": steps, "views_seen": views, "lr_schedule": schedule, "warmup": warmup,
            "knn_acc_init": init, "knn_acc": final, "knn_curve": curve, "knn_crossover_step": cross}  # fmt: skip


def test_answer_up_front_with_forest_plot_and_compute(tmp_path):
    from awcl.study.report import load_predictions, load_study, paired_difference, summary_text

    below = _compute(120, 7680, "constant", 0.0, [[0, 0.425], [60, 0.2], [120, 0.175]], None)
    past = _compute(600, 38400, "warmup-cosine", 0.1, [[0, 0.425], [180, 0.3], [360, 0.5], [600, 0.55]], 360)
    out = designed_study(tmp_path, {"random": 0.5, "simclr": 0.6, "awcl-coarse": 1.0, "awcl-fine": 0.8},
                         pretrained={"simclr": below, "awcl-coarse": past, "awcl-fine": past})  # fmt: skip
    md = (out / "report.md").read_text()
    assert re.findall(r"^## (.+)$", md, flags=re.M)[0] == "Answer on this data"  # the report opens with it
    answer = md.split("## Answer on this data")[1].split("\n## ")[0]
    paras = {p.split(".**")[0].lstrip("*"): p for p in answer.split("\n\n") if p.startswith("**")}
    assert list(paras) == ["Pretrained vs random", "AWCL vs SimCLR", "Fine vs coarse"]
    preds = load_predictions(load_study(out))

    def stated(a, b):  # the pairwise table's difference and interval, as the answer states them
        d, lo, hi, _ = paired_difference(preds, a, b, "f1", "classify")
        sig = f"significant ({a if d > 0 else b} better)" if lo > 0 or hi < 0 else "not significant"
        return f"{a} − {b} = {d:+.3f} [{lo:+.3f}, {hi:+.3f}], {sig}"

    assert "cls (full fine-tuning, macro-F1)" in paras["Pretrained vs random"]
    assert stated("awcl-coarse", "random") in paras["Pretrained vs random"]  # the best pretrained
    assert "significant (awcl-coarse better)" in paras["Pretrained vs random"]
    assert "best of 3 pretrained, 2 significantly better than random, 0 worse" in paras["Pretrained vs random"]
    assert stated("awcl-fine", "simclr") in paras["AWCL vs SimCLR"]
    assert stated("awcl-coarse", "simclr") in paras["AWCL vs SimCLR"]
    assert stated("awcl-fine", "awcl-coarse") in paras["Fine vs coarse"]
    pair = md.split("## Pairwise differences")[1].split("\n## ")[0]
    row = next(line for line in pair.splitlines() if line.startswith("| awcl-fine − awcl-coarse |"))
    d, lo, hi, _ = paired_difference(preds, "awcl-fine", "awcl-coarse", "f1", "classify")
    assert f"| {d:+.3f} | [{lo:+.3f}, {hi:+.3f}] |" in row  # the answer reads the table's numbers
    # the note: simclr stopped below its step-0 kNN value, the others past their crossover
    note = next(p for p in answer.split("\n\n") if "Still below step 0" in p)
    assert "simclr stopped at step 120 with kNN 0.175 < 0.425 at step 0" in note
    assert "awcl" not in note.split(".")[0]
    # equal compute, stated
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in answer.splitlines() if line.startswith("| ") and not line.startswith("| method")}  # fmt: skip
    assert rows["simclr"] == ["120", "7,680", "constant", "0.425 → 0.175 ⚠", "never (still below)"]
    assert rows["awcl-fine"] == ["600", "38,400", "warmup-cosine (10% warmup)", "0.425 → 0.550", "360"]
    assert rows["random (no pretraining)"][:2] == ["0", "0"]
    # one picture of every difference: forest.png beside the report, in report.md and report.html
    png = (out / "forest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (out / "report_files" / "forest.png").read_bytes() == png
    assert "](report_files/forest.png)" in answer
    html = (out / "report.html").read_text()
    head = html.split("<h2>Overview</h2>")[0]
    assert "<h2>Answer on this data</h2>" in head
    assert "<img alt='Forest plot: every pairwise difference" in head
    assert base64.b64encode(png).decode() in head
    # the console summary ends with the answer
    console = summary_text(out)
    assert console.rsplit("## ", 1)[1].startswith("Answer on this data")
    tail = console.rsplit("## ", 1)[1]
    for q in paras:
        assert f"**{q}.**" in tail
    assert stated("awcl-fine", "awcl-coarse") in tail and "Still below step 0" in tail.splitlines()[-1]


def test_answer_skips_questions_without_their_methods(tmp_path):
    out = designed_study(tmp_path, {"random": 0.5, "simclr": 0.8})
    answer = (out / "report.md").read_text().split("## Answer on this data")[1].split("\n## ")[0]
    assert "**Pretrained vs random.**" in answer and "simclr − random = " in answer
    assert "AWCL vs SimCLR" not in answer and "Fine vs coarse" not in answer
    assert "Still below step 0" not in answer  # the stand-ins' kNN rises from 0.3 to 0.6
    assert (out / "forest.png").is_file()
