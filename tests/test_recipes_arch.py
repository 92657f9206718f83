"""The "Where to add something" recipes of docs/architecture.md are true.

Each recipe is followed literally — the files it names, edited as it says — on a copy of
``src/awcl``: a throwaway pretraining method (a module over ``Method`` and one entry in
``METHODS``), a throwaway metric (a formula in ``evaluate/scores.py``, its key in the task
kind's metrics and table metrics, its title in ``DISPLAY``) and a throwaway downstream task
(a ``TaskKind`` in ``evaluate/tasks.py``, a ``run_<task>`` module, its dispatch in
``finetune()``). A tiny study with the report tests' stand-in executors then runs on the
copy in a fresh interpreter, and each addition must show up in its report.

Why a copy and not monkeypatched registries: the registries are read when the modules that
use them are imported (``STUDY_METHODS`` from ``METHODS``, the configs' choices from
``TASKS``...), so an entry patched into a running process reaches only some of them. A
recipe is an edit of the source; the copy is the source, edited.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

METHOD_MODULE = '''"""A throwaway pretraining method (tests/test_recipes_arch.py)."""

from awcl.methods.simclr import SimCLR


class Tossed(SimCLR):
    name = "tossed"
'''

TASK_MODULE = '''"""A throwaway downstream task (tests/test_recipes_arch.py)."""


def run_tossed(cfg, ds, out, get_runtime):
    raise NotImplementedError("the recipe test runs stand-in executors")
'''

TASK_KIND = '''TOSSED = TaskKind("tossedkind", metrics=("tossed_score", "tossed_extra"), table=("tossed_score",),
                  headline="tossed_score", selection="tossed_score", monitor=("tossed_score",))
'''

# Run on the copy: the study of the report tests (a classification and a segmentation task)
# plus the throwaway method and task; the classification stand-in scores its folds with the
# copy's own metric code, as run_classification does.
STUDY = r'''
import json, sys
from pathlib import Path
import awcl
assert awcl.__file__.startswith(sys.argv[2]), awcl.__file__
import numpy as np
import pandas as pd
from awcl.evaluate.metrics import classification_metrics
from awcl.study.config import parse_config
from awcl.study.report import write_report
from awcl.study.runner import Executors, run_study
from test_study import Calls, base_raw

raw = base_raw()
raw["methods"] = ["random", "simclr", "tossed"]
raw["anatomy_ratios"] = [0.5]
raw["embed"] = {"enabled": False}
raw["tasks"] = [dict(raw["tasks"][0], protocols=["full"]),
                {"name": "tk", "dataset": "pretrain", "task": "tossedkind", "protocols": ["full"], "epochs": 1,
                 "folds": 2}]
base = Calls().executors()
SHARE = {"random": 0.5, "simclr": 0.7, "tossed": 0.9}  # of each fold's test patients classified right

def finetune(run, inputs):
    run.output.mkdir(parents=True)
    if run.config["task"] == "tossedkind":
        return {"folds": [{"tossed_score": 0.25 + 0.1 * f, "tossed_extra": 1.0} for f in range(run.config["folds"])]}
    right = SHARE[run.labels.method]
    pred = pd.DataFrame([{"fold": f, "frame_id": f"f{f}p{p}:{i}", "video_id": f"f{f}p{p}", "patient_id": f"f{f}p{p}",
                          "true": "ab"[p % 2], "pred": "ab"[(p % 2) ^ (p >= round(10 * right))]}
                         for f in range(run.config["folds"]) for p in range(10) for i in range(3)])
    pred.to_csv(run.output / "predictions.csv", index=False)
    return {"folds": [classification_metrics(g.true.map({"a": 0, "b": 1}).to_numpy(),
                                             g.pred.map({"a": 0, "b": 1}).to_numpy(), 2)
                      for _, g in pred.groupby("fold")]}

out = Path(sys.argv[1])
run_study(parse_config(raw), out, Executors(base.data, base.pretrain, finetune, base.embed), progress=False,
          echo=lambda s: None)
write_report(out)

from dataclasses import fields
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.sanity import check_metrics
from awcl.evaluate.tasks import headline_metric
from awcl.methods import STUDY_METHODS
from awcl.train.config import PretrainConfig
choices = lambda cls, name: next(f.metadata["choices"] for f in fields(cls) if f.name == name)
m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
print(json.dumps({"pretrain_choices": list(choices(PretrainConfig, "method")), "study_methods": list(STUDY_METHODS),
                  "task_choices": list(choices(FinetuneConfig, "task")), "headline": headline_metric("tossedkind"),
                  "error_rate": m["error_rate"], "accuracy": m["accuracy"],
                  "checked": check_metrics({"task": "tossedkind", "folds": [{"tossed_score": 0.3}]})}))
'''


def edit(path: Path, pattern: str, repl: str, step: str) -> None:
    """Apply one recipe step to ``path``: ``pattern`` must match exactly once."""
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, flags=re.S)
    assert n == 1, f"recipe step '{step}': {path.name} no longer reads as the recipe expects ({n} matches)"
    path.write_text(new)


def follow_recipes(pkg: Path) -> None:
    # A pretraining method: a module with a Method subclass, then one entry in METHODS.
    (pkg / "methods" / "tossed.py").write_text(METHOD_MODULE)
    init = pkg / "methods" / "__init__.py"
    edit(init, r"(\nfrom awcl\.methods\.uscl import USCL\n)", r"\1from awcl.methods.tossed import Tossed\n",
         "method: import")
    edit(init, r"(METHODS: dict\[str, type\[Method\]\] = \{\s*cls\.name: cls for cls in \([^)]*)\)",
         r"\1, Tossed)", "method: METHODS entry")
    # A metric: its formula in evaluate/scores.py, its key in the task kind's metrics and
    # table metrics (evaluate/tasks.py), its column title in DISPLAY.
    edit(pkg / "evaluate" / "scores.py", r"(CLASSIFICATION: dict\[str, Formula\] = \{\n)",
         r'\1    "error_rate": lambda c: 1 - accuracy(c),\n', "metric: formula")
    tasks = pkg / "evaluate" / "tasks.py"
    edit(tasks, r'(CLASSIFY = TaskKind\(\s*"classify",\s*metrics=\()', r'\1"error_rate", ', "metric: METRICS")
    edit(tasks, r'(CLASSIFY = TaskKind\((?:(?!\n\)).)*?table=\()', r'\1"error_rate", ', "metric: table")
    edit(pkg / "study" / "report" / "document.py", r"(\nDISPLAY = \{)", r'\1"error_rate": "error rate", ',
         "metric: DISPLAY")
    # A downstream task: its TaskKind, a run_<task> module, its dispatch in finetune().
    edit(tasks, r"(\nKINDS: dict\[str, TaskKind\] = \{k\.name: k for k in \()([^)]*)\)",
         "\n" + TASK_KIND.replace("\\", "\\\\") + r"\1\2, TOSSED)", "task: TaskKind")
    (pkg / "evaluate" / "tossed.py").write_text(TASK_MODULE)
    fin = pkg / "evaluate" / "finetune.py"
    edit(fin, r"(\n(\s*)elif cfg\.task == \"classify\":\n)",
         r'\n\2elif cfg.task == "tossedkind":\n\2    from awcl.evaluate.tossed import run_tossed\n'
         r"\2    metrics = run_tossed(cfg, ds, run.tmp, get_runtime)\1", "task: dispatch")


def table(md: str, title: str) -> list[list[str]]:
    """Rows (cells, header first) of the first table of section ``title`` in report.md."""
    section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


@pytest.fixture(scope="module")
def recipe_study(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("recipes")
    pkg = tmp / "src" / "awcl"
    shutil.copytree(ROOT / "src" / "awcl", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    follow_recipes(pkg)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg.parent), str(TESTS)]), OMP_NUM_THREADS="1")
    out = tmp / "study"
    proc = subprocess.run([sys.executable, "-c", STUDY, str(out), str(pkg)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_new_method_is_a_study_method_and_a_report_row(recipe_study):
    out, facts = recipe_study
    assert "tossed" in facts["pretrain_choices"] and facts["study_methods"][-1] == "tossed"
    rows = table((out / "report.md").read_text(), "Transfer table (full fine-tuning)")
    methods = [r[0] for r in rows[1:]]
    assert methods == ["random", "simclr", "tossed"]  # the METHODS order: appended last
    assert all(c != "—" for c in rows[-1][1:3])  # pretrained, fine-tuned, reported


def test_a_new_metric_is_computed_and_tabled(recipe_study):
    out, facts = recipe_study
    assert facts["error_rate"] == pytest.approx(1 - facts["accuracy"])
    rows = table((out / "report.md").read_text(), "Transfer table (full fine-tuning)")
    header = rows[0]
    assert "cls: error rate" in header
    j, a = header.index("cls: error rate"), header.index("cls: accuracy")
    values = []
    for r in rows[1:]:
        err, acc = (float(r[i].strip("*").split()[0]) for i in (j, a))
        assert err == pytest.approx(1 - acc, abs=1.5e-3), r[0]  # pooled, with its interval
        assert "[" in r[j]
        values.append((err, r[j].startswith("**")))
    # 50%, 70%, 90% right; lower is better ("error" in LOWER_IS_BETTER): the minimum in bold
    assert [e for e, _ in values] == pytest.approx([0.5, 0.3, 0.1]) and [b for _, b in values] == [False, False, True]
    results = (out / "results.csv").read_text()
    assert ",error_rate," in results


def test_a_new_task_kind_is_a_study_task_and_tabled(recipe_study):
    out, facts = recipe_study
    assert "tossedkind" in facts["task_choices"] and facts["headline"] == "tossed_score"
    rows = table((out / "report.md").read_text(), "Transfer table (full fine-tuning)")
    j = rows[0].index("tk: tossed_score")
    assert all(r[j].strip("*").startswith("0.300 ± ") for r in rows[1:])  # mean ± std of its 2 folds
    # its own table metrics (before: any kind but classify got segmentation's preferences and,
    # none of those present, every metric it wrote)
    assert "tk: tossed_extra" not in rows[0] and ",tossed_extra," in (out / "results.csv").read_text()
    # no trivial-baseline check for it (before: checked as a classifier, "did not learn")
    assert facts["checked"]["learned"] is True and "no trivial-baseline check" in facts["checked"]["reason"]
