"""The report of a fixed stand-in study, byte for byte: ``results.csv``, ``report.md`` and the
console summary (``report_files/summary.md``) against the files in ``tests/golden/``.

The stand-in executors train nothing: every number comes from a random generator seeded by
the run's name (``zlib.crc32``, the same on every machine and Python), so the study's output
depends only on the code that turns DONE records and run files into the report. A refactor
of that code (the run records, the results table, the report's modules) must leave these
files as they are; a change that is meant to alter the report regenerates them, with the
reason in its commit:

    AWCL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_report.py

What depends on the machine or the clock is masked, and only that (:func:`normalise`):

- the study directory's absolute path (none is written today; masked as ``<STUDY>``);
- the seconds column of the "Run times" table (each run's wall time): ``<s>``;
- the body of "Versions and hardware" (library versions, CPU, cores, memory, the report's
  date): ``<machine>``.

``results.csv`` holds no time, path or version, and is compared unmasked.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from awcl.study.config import parse_config
from awcl.study.report import write_report
from awcl.study.runner import Executors, run_study

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("AWCL_UPDATE_GOLDEN") == "1"
FILES = ("results.csv", "report.md", "summary.md")

# how often each method's encoder gets a frame right (the stand-ins' "quality")
SKILL = {"random": 0.55, "simclr": 0.7, "awcl-coarse": 0.8, "awcl-fine": 0.85}


def golden_raw() -> dict:
    """Every section with data: two classification tasks (different class sets, one grouped by
    video), a segmentation task, probes, label efficiency, the ratio sweep, coarse/fine, t-SNE."""
    return {
        "name": "golden",
        "vars": {"data_root": "/nowhere"},
        "pretrain_data": {"recipe": "phantom", "params": {"n": 3}},
        "methods": list(SKILL),
        "anatomy_ratios": [0.2, 0.5],
        "anatomy_ratio": 0.5,
        "pretrain": {"epochs": 3, "batch_size": 8},
        "tasks": [
            {"name": "cls", "dataset": "pretrain", "task": "classify", "protocols": ["full", "partial", "knn"],
             "epochs": 1, "folds": 2, "train_patients": [2, "all"]},
            {"name": "view", "dataset": "pretrain", "task": "classify", "protocols": ["full"],
             "epochs": 1, "folds": 2, "extra": {"group": "video_id"}},
            {"name": "seg", "dataset": "pretrain", "task": "segment", "protocols": ["full"],
             "epochs": 1, "folds": 2},
        ],
        "seeds": [0],
    }  # fmt: skip


# ------------------------------------------------------------------ stand-in executors
def _rng(run) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(run.name.encode()))


def _skill(run) -> float:
    lab = run.labels
    s = SKILL[lab.method] - (0.1 if lab.train_patients is not None else 0.0)
    return s - (0.05 if lab.ratio is not None and lab.ratio != 0.5 else 0.0)


def _data(run, inputs):
    run.output.mkdir(parents=True)
    (run.output / "dataset.json").write_text("{}")
    return {"frames": 24}


def _pretrain(run, inputs):
    run.output.mkdir(parents=True)
    rng = _rng(run)
    epochs = run.config["epochs"]
    loss = np.round(np.linspace(2.0, 1.0, epochs) + rng.uniform(0, 0.05, epochs), 4)
    knn = np.round(np.linspace(0.4, 0.7, epochs + 1) + rng.uniform(0, 0.05, epochs + 1), 4)
    rows = "".join(f"{i + 1},{10 * (i + 1)},{v},50,{knn[i + 1]}\n" for i, v in enumerate(loss))
    (run.output / "history.csv").write_text("epoch,step,loss,img_per_s,knn_acc\n0,0,nan,nan,"
                                            f"{knn[0]}\n" + rows)  # fmt: skip
    return {"final_loss": float(loss[-1]), "class_group": 1, "crop_scale": [0.08, 1.0], "blur": 0.0,
            "steps": 10 * epochs, "views_seen": 160 * epochs, "lr_schedule": "warmup-cosine", "warmup": 0.1,
            "knn_acc_init": float(knn[0]), "knn_acc": float(knn[-1])}  # fmt: skip


def _macro_f1(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> float:
    f1 = []
    for c in classes:
        tp = np.sum((pred == c) & (true == c))
        fp, fn = np.sum((pred == c) & (true != c)), np.sum((pred != c) & (true == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def _classify(run, rng: np.random.Generator) -> dict:
    """8 test patients x 2 videos x 2 frames per fold; ``cls`` labels patients a/b, ``view``
    labels videos x/y/z (grouped by video)."""
    by_video = run.labels.task == "view"
    classes = ["x", "y", "z"] if by_video else ["a", "b"]
    rows = []
    for f in range(run.config["folds"]):
        for p in range(8):
            for v in range(2):
                true = classes[(2 * p + v) % 3] if by_video else classes[p % 2]
                for i in range(2):
                    right = rng.uniform() < _skill(run)
                    pred = true if right else classes[(classes.index(true) + 1) % len(classes)]
                    row = {"fold": f, "frame_id": f"f{f}p{p}v{v}:{i}", "video_id": f"f{f}p{p}v{v}",
                           "patient_id": f"f{f}p{p}", "true": true, "pred": pred}  # fmt: skip
                    row.update({f"prob_{c}": 0.7 if c == pred else round(0.3 / (len(classes) - 1), 4)
                                for c in classes})  # fmt: skip
                    rows.append(row)
    pred = pd.DataFrame(rows)
    pred.to_csv(run.output / "predictions.csv", index=False)
    folds = [{"accuracy": float((g.true == g.pred).mean()), "f1": _macro_f1(g.true.to_numpy(), g.pred.to_numpy(), classes)}
             for _, g in pred.groupby("fold")]  # fmt: skip
    return {"task": "classify", "protocol": run.labels.protocol, "classes": classes, "num_frames": len(pred),
            "folds": folds, "group": "video_id" if by_video else "patient_id", "learned": True}  # fmt: skip


def _segment(run, rng: np.random.Generator) -> dict:
    """6 test patients x 2 frames per fold, 100 pixels each: per-frame pixel confusion counts."""
    rows = []
    for f in range(run.config["folds"]):
        for p in range(6):
            for i in range(2):
                fg = int(rng.integers(20, 40))
                tp = round(fg * min(1.0, _skill(run) + rng.uniform(-0.1, 0.1)))
                fp = int(rng.integers(0, 8))
                cm = {"cm_0_0": 100 - fg - fp, "cm_0_1": fp, "cm_1_0": fg - tp, "cm_1_1": tp}
                rows.append({"fold": f, "frame_id": f"f{f}p{p}:{i}", "video_id": f"f{f}p{p}",
                             "patient_id": f"f{f}p{p}", **cm, "dice": round(2 * tp / (2 * tp + fp + fg - tp), 6)})  # fmt: skip
    pred = pd.DataFrame(rows)
    pred.to_csv(run.output / "predictions.csv", index=False)
    folds = []
    for _, g in pred.groupby("fold"):
        tp, fp, fn = g.cm_1_1.sum(), g.cm_0_1.sum(), g.cm_1_0.sum()
        folds.append({"dice_per_image": float(g.dice.mean()), "dice": float(2 * tp / (2 * tp + fp + fn))})
    return {"task": "segment", "protocol": run.labels.protocol, "num_frames": len(pred), "folds": folds,
            "group": "patient_id", "learned": True}  # fmt: skip


def _finetune(run, inputs):
    run.output.mkdir(parents=True)
    cv2.imwrite(str(run.output / "confusion_fold0.png"), np.zeros((20, 20, 3), np.uint8))
    return (_classify if run.config["task"] == "classify" else _segment)(run, _rng(run))


def _embed(run, inputs):
    run.output.mkdir(parents=True)
    cv2.imwrite(str(run.output / "tsne.png"), np.full((20, 20, 3), 128, np.uint8))
    return {"num_frames": 24, "plots": ["tsne.png"]}


EXECUTORS = Executors(_data, _pretrain, _finetune, _embed)


# ------------------------------------------------------------------ masking and comparing
def normalise(text: str, study: Path) -> str:
    """``text`` with exactly the machine- and time-dependent parts masked (module docstring)."""
    text = text.replace(str(study), "<STUDY>")
    parts = re.split(r"(?m)^(## .+\n)", text)
    for i in range(1, len(parts) - 1, 2):
        if parts[i] == "## Run times\n":
            parts[i + 1] = re.sub(r"(?m)^(\| [^|]* \| [^|]* \| )[0-9.]+( \|)$", r"\1<s>\2", parts[i + 1])
        elif parts[i] == "## Versions and hardware\n":
            parts[i + 1] = "\n<machine>\n\n"
    return "".join(parts)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("golden-study")
    run_study(parse_config(golden_raw()), out, EXECUTORS, progress=False, echo=lambda s: None)
    write_report(out)
    paths = {"results.csv": out / "results.csv", "report.md": out / "report.md",
             "summary.md": out / "report_files" / "summary.md"}  # fmt: skip
    return {name: normalise(p.read_text(encoding="utf-8"), out) for name, p in paths.items()}


@pytest.mark.parametrize("name", FILES)
def test_report_matches_golden_files(outputs, name):
    golden = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_bytes(outputs[name].encode("utf-8"))
    assert golden.is_file(), f"{golden} missing: regenerate with AWCL_UPDATE_GOLDEN=1"
    want = golden.read_bytes().decode("utf-8")
    if outputs[name] != want:  # the first differing line, for a readable failure
        got_lines, want_lines = outputs[name].splitlines(), want.splitlines()
        diff = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                    min(len(got_lines), len(want_lines)))  # fmt: skip
        pytest.fail(f"{name} differs from {golden} at line {diff + 1}:\n"
                    f"  got:  {got_lines[diff] if diff < len(got_lines) else '<end>'}\n"
                    f"  want: {want_lines[diff] if diff < len(want_lines) else '<end>'}")  # fmt: skip


def test_normalise_masks_only_times_and_machine(tmp_path):
    md = ("## Run times\n\n| kind | run | seconds |\n|---|---|---|\n| data | phantom | 1.5 |\n| total |  | 1.5 |\n\n"
          f"## Configuration\n\nat {tmp_path} 2.5\n\n## Versions and hardware\n\n| CPU | x |\n\nReport written now.\n")
    assert normalise(md, tmp_path) == (
        "## Run times\n\n| kind | run | seconds |\n|---|---|---|\n| data | phantom | <s> |\n| total |  | <s> |\n\n"
        "## Configuration\n\nat <STUDY> 2.5\n\n## Versions and hardware\n\n<machine>\n\n")  # fmt: skip
