"""A study's ``backbones:`` and ``inits:`` axes: planning (a default study unchanged, ResNet-18
runs re-used when a backbone is added), config checks, the declared-layout check, data overlap
(overlap.py, the study's notes, the answer paragraph) and results with every backbone and init
(stand-in runs; one tiny real study, marked slow)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

import awcl  # noqa: F401  (torchvision shim, before timm)
from awcl.errors import AwclError
from awcl.study.answer import Comparison, answer_paragraphs
from awcl.study.config import parse_config
from awcl.study.inits import check_layout, detect_layout
from awcl.study.names import backbone_tag, row_backbones, split_row, with_backbone
from awcl.study.overlap import overlap_index, overlap_marks, overlap_table
from awcl.study.runner import plan_study, run_study
from test_study import Calls, base_raw

timm = pytest.importorskip("timm")

CONVNEXT, VIT = "timm:convnext_atto", "timm:vit_tiny_patch16_224"


def mae_checkpoint(path: Path) -> Path:
    """A synthetic MAE / USF-MAE-layout file: {'model': timm ViT keys + decoder_* + mask_token,
    'args': Namespace} (random values)."""
    torch.manual_seed(0)
    vit = timm.create_model(VIT[5:], pretrained=False, num_classes=0)
    sd = dict(vit.state_dict())
    sd["mask_token"] = torch.zeros(1, 1, 192)
    sd["decoder_embed.weight"] = torch.zeros(16, 192)
    sd["decoder_pred.weight"] = torch.zeros(768, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd, "epoch": 1, "args": argparse.Namespace(model="mae_vit_tiny")}, path)
    return path


def axes_raw(weights: Path, pretrained_on: list[str] | None = None) -> dict:
    """base_raw (phantom recipe, tasks cls + seg on it) on two backbones with one init."""
    raw = base_raw()
    raw["methods"] = ["random", "simclr"]
    raw["backbones"] = ["resnet18", CONVNEXT]
    init = {"backbone": VIT, "weights": str(weights), "layout": "mae"}
    if pretrained_on is not None:
        init["pretrained_on"] = pretrained_on
    raw["inits"] = {"mae": init}
    return raw


# ------------------------------------------------------------------ planning
def _plan_view(plan) -> list[tuple]:
    return [(r.dirname, json.dumps(asdict(r.labels), sort_keys=True, default=str)) for r in plan.runs]


def test_default_study_unchanged(tmp_path):
    """No axis, or ``backbones: [resnet18]``: the same runs, names, keys and labels; no
    backbone label, no overlap in study.json, no new keys in config.yaml."""
    plain = parse_config(base_raw())
    explicit = parse_config({**base_raw(), "backbones": ["resnet18"], "inits": {}})
    assert plain.backbones == ["resnet18"] and plain.default_encoders and explicit.default_encoders
    assert _plan_view(plan_study(plain, tmp_path)) == _plan_view(plan_study(explicit, tmp_path))
    assert not any(getattr(r.labels, "backbone", None) is not None or "backbone" in r.config for r in plan_study(plain, tmp_path).runs)
    assert "backbones" not in plain.to_dict() and "inits" not in plain.to_dict()
    run_study(plain, tmp_path / "s", Calls().executors(), progress=False, echo=lambda s: None)
    index = json.loads((tmp_path / "s" / "study.json").read_text())
    assert "overlap" not in index and row_backbones(index) == {}
    df = pd.DataFrame({"method": ["simclr"], "run": [index["runs"][-1]["dir"]], "value": [1.0]})
    assert with_backbone(df, index) is df  # results.csv of a default study: as before


def test_two_backbones_and_an_init_plan(tmp_path):
    w = mae_checkpoint(tmp_path / "w" / "checkpoint.pth")
    raw = axes_raw(w)
    raw["inits"]["gone"] = {"backbone": "resnet50", "weights": str(tmp_path / "missing.pth")}
    cfg = parse_config(raw)
    plan = plan_study(cfg, tmp_path)
    assert any(n.startswith("gone skipped: weights file") and "missing.pth" in n for n in plan.notes)
    pre = {r.name: r for r in plan.runs if r.kind == "pretrain"}
    assert set(pre) == {"simclr", "simclr@convnext_atto"}
    assert "backbone" not in pre["simclr"].config and pre["simclr@convnext_atto"].config["backbone"] == CONVNEXT
    ft = [r for r in plan.runs if r.kind == "finetune"]
    rows = {r.labels.method for r in ft}
    assert rows == {"random", "simclr", "random@convnext_atto", "simclr@convnext_atto", "mae"}
    assert len(ft) == 5 * 3  # each encoder: cls full + partial, seg full
    by = {(r.labels.method, r.labels.task, r.labels.protocol): r for r in ft}
    assert by[("random@convnext_atto", "seg", "full")].config["backbone"] == CONVNEXT
    assert "backbone" not in by[("simclr@convnext_atto", "seg", "full")].config  # its encoder.pt says
    init_run = by[("mae", "cls", "full")]
    assert init_run.config["init"] == str(w.resolve()) and init_run.config["backbone"] == VIT
    assert (init_run.labels.backbone, init_run.labels.init, init_run.labels.layout) == (VIT, "mae", "mae")
    assert {r.labels.backbone for r in ft} == {"resnet18", CONVNEXT, VIT}
    emb = {r.labels.method: r for r in plan.runs if r.kind == "embed"}
    assert set(emb) == rows and emb["random@convnext_atto"].config["backbone"] == CONVNEXT
    # adding a backbone re-uses every ResNet-18 run of the default study (same dirs)
    default = {r.dirname for r in plan_study(parse_config({**base_raw(), "methods": ["random", "simclr"]}), tmp_path).runs}
    assert default <= {r.dirname for r in plan.runs}


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda r: r.update(backbones=["resnet18", "vgg16"]), ["backbones[1]", "vgg16"]),
        (lambda r: r.update(backbones=["timm:nope_net"]), ["backbones[0]", "nope_net"]),
        (lambda r: r.update(backbones=["resnet18", "resnet18"]), ["backbones", "duplicates"]),
        (lambda r: r["pretrain"].update(extra={"backbone": "resnet50"}), ["pretrain.extra.backbone", "backbones"]),
        (lambda r: r["inits"]["mae"].pop("weights"), ["inits.mae.weights", "missing"]),
        (lambda r: r["inits"]["mae"].update(layout="onnx"), ["inits.mae.layout", "onnx"]),
        (lambda r: r["inits"]["mae"].update(pretrained_on=3), ["inits.mae.pretrained_on", "3"]),
        (lambda r: r["inits"]["mae"].update(arch="vit"), ["inits.mae.arch", "unknown key"]),
        (lambda r: r["inits"].update(simclr=r["inits"]["mae"]), ["inits.simclr", "method name"]),
        (lambda r: r["inits"].update({"a@b": r["inits"]["mae"]}), ["inits.a@b", "letters"]),
    ],
)
def test_axis_config_errors_are_one_line(mutate, words):
    raw = axes_raw(Path("w.pth"))
    mutate(raw)
    with pytest.raises(AwclError) as exc:
        parse_config(raw, source="my.yaml")
    msg = str(exc.value)
    assert msg.startswith("my.yaml: ") and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_row_names():
    assert backbone_tag("resnet18") == "" and backbone_tag(CONVNEXT) == "@convnext_atto"
    assert backbone_tag("resnet50") == "@resnet50" and backbone_tag("timm:resnet50") == "@timm:resnet50"
    for b in ("resnet18", "resnet50", CONVNEXT, "timm:resnet50", "timm:vit_base_patch16_224.mae"):
        assert split_row("simclr" + backbone_tag(b)) == ("simclr", b)


# ------------------------------------------------------------------ layout check
def test_declared_layout_is_checked(tmp_path):
    w = mae_checkpoint(tmp_path / "checkpoint.pth")
    assert check_layout(str(w), "mae", "x") == "mae" and check_layout(str(w), "timm", "x") == "mae"
    with pytest.raises(AwclError, match=r"init usf: .*checkpoint\.pth has the keys of a mae checkpoint, "
                                        r"not the declared layout open_clip") as err:  # fmt: skip
        check_layout(str(w), "open_clip", "usf")
    assert "\n" not in str(err.value)
    assert detect_layout(["visual.class_embedding", "visual.conv1.weight"]) == "open_clip"
    assert detect_layout(["blocks.0.attn.q_bias", "lm_head.weight"]) == "beit"
    assert detect_layout(["conv1.weight", "layer1.0.conv1.weight"]) == "torchvision"
    assert detect_layout(["stem.0.weight"]) == "timm" and detect_layout([], recorded=True) == "awcl"


# ------------------------------------------------------------------ data overlap
def _overlap_cfg(inits: dict, tasks: list[dict]) -> object:
    raw = base_raw()
    raw["tasks"] = [{"name": t["name"], "dataset": t["dataset"], "epochs": 1, "folds": 2} for t in tasks]
    raw["inits"] = {n: {"backbone": VIT, "weights": "w.pth", **v} for n, v in inits.items()}
    return parse_config(raw)


def test_overlap_builtin_declarations_and_overrides(tmp_path):
    prepared = tmp_path / "planes"
    prepared.mkdir()
    (prepared / "dataset.json").write_text(json.dumps({"source": "fetal_planes"}))
    tasks = [{"name": "hc", "dataset": {"recipe": "hc18", "src": "/x"}},
             {"name": "lung", "dataset": {"recipe": "pocus", "src": "/x"}},
             {"name": "breast", "dataset": {"recipe": "busi", "src": "/x"}},
             {"name": "planes", "dataset": str(prepared)}]  # fmt: skip
    inits = {"USF-MAE": {}, "openus": {}, "usfm": {}, "fetalclip": {}, "ultrafedfm": {},
             "mine": {"model": "usf_mae", "pretrained_on": []}, "own": {"pretrained_on": ["POCUS"]}}  # fmt: skip
    got = overlap_table(_overlap_cfg(inits, tasks))
    assert [got[("USF-MAE", t)] for t in ("hc", "lung", "breast", "planes")] == [True, True, False, True]
    assert [got[("openus", t)] for t in ("hc", "lung", "breast", "planes")] == [True, False, True, True]
    assert {got[("usfm", t)] for t in ("hc", "lung", "breast", "planes")} == {None}  # not stated
    assert not any(got[(n, t)] for n in ("fetalclip", "ultrafedfm", "mine") for t in ("hc", "lung", "breast", "planes"))
    assert [got[("own", t)] for t in ("hc", "lung")] == [False, True]  # a declaration overrides


def test_planted_overlap_is_flagged_everywhere(tmp_path):
    """An init declaring the downstream data set (the phantom recipe): overlap.py, the study's
    notes, study.json, and the answer paragraph (from the report's own paired differences)."""
    from awcl.study.report import (
        load_results,
        load_study,
        pairwise_tables,
        results_table,
        write_report,
    )

    w = mae_checkpoint(tmp_path / "w" / "checkpoint.pth")
    cfg = parse_config(axes_raw(w, pretrained_on=["Phantom"]))
    assert overlap_table(cfg) == {("mae", "cls"): True, ("mae", "seg"): True}
    out = tmp_path / "study"
    res = run_study(cfg, out, Calls().executors(), progress=False, echo=lambda s: None)
    assert any(n.startswith("mae was pretrained on the data set of cls (phantom), seg (phantom)") for n in res.plan.notes)
    index = json.loads((out / "study.json").read_text())
    assert index["overlap"] == overlap_index(cfg)
    marks = overlap_marks(index)
    assert marks == overlap_marks(cfg) == {("mae", "cls"): "mae was pretrained on this data set (phantom)",
                                           ("mae", "seg"): "mae was pretrained on this data set (phantom)"}  # fmt: skip

    # results with every backbone and the init; the backbone column from study.json
    files = write_report(out)
    df = pd.read_csv(files.csv)
    rows = {"random", "simclr", "random@convnext_atto", "simclr@convnext_atto", "mae"}
    assert set(df[df.kind == "finetune"].method) == rows
    data = load_study(out)
    table = results_table(data)  # the report's table carries the column (results.csv too)
    assert "backbone" in df.columns and list(table.columns) == list(df.columns)
    assert list(table.columns[:3]) == ["kind", "method", "backbone"]
    pairs = set(zip(table[table.kind == "finetune"].method, table[table.kind == "finetune"].backbone))
    assert pairs == {("random", "resnet18"), ("simclr", "resnet18"), ("random@convnext_atto", CONVNEXT),
                     ("simclr@convnext_atto", CONVNEXT), ("mae", VIT)}  # fmt: skip
    report = (out / "report.md").read_text()
    assert "mae was pretrained on the data set of cls" in report  # a study note
    # the report's own answer and the transfer tables' notes column flag the overlap
    assert "**Data overlap.** mae was pretrained on this data set (phantom)" in report
    assert "cls: pretrained on this data set" in report

    found: list[Comparison] = []
    pairwise_tables(load_results(data), found)
    paras = answer_paragraphs(found, marks)  # names only: mae counts as a ResNet-18 row
    text = "\n".join(paras)
    assert "simclr@convnext_atto − random@convnext_atto" in text or "random@convnext_atto − simclr" in text
    # a clause that names mae says so (mae is named where it is the best of its group)
    assert ("mae − random = " in text) == ("— mae was pretrained on this data set (phantom)" in text)
    assert paras[-1].startswith("**Data overlap.** mae was pretrained on this data set (phantom) of task cls")
    # with the study's backbones, mae (a ViT) has no random init of its own to be compared with
    paras = answer_paragraphs(found, marks, row_backbones(data.index))
    assert "mae − random" not in "\n".join(paras[:-1]) and paras[-1].startswith("**Data overlap.**")
    assert all("Data overlap" not in p for p in answer_paragraphs(found))


def test_answer_pairs_within_a_backbone():
    def c(a: str, b: str, d: float) -> Comparison:
        return Comparison("t", "full", "f1", "macro-F1", False, a, b, d, d - 0.1, d + 0.1)

    comps = [c("simclr", "random", 0.2), c("awcl-fine", "simclr", 0.3),
             c("simclr@convnext_atto", "random@convnext_atto", -0.2),
             c("awcl-fine@convnext_atto", "simclr@convnext_atto", 0.05),
             c("simclr@convnext_atto", "random", 0.9)]  # across backbones: never an answer  # fmt: skip
    paras = answer_paragraphs(comps)
    assert paras[0] == ("**Pretrained vs random.** t (full fine-tuning, macro-F1): simclr − random = +0.200 "
                        "[+0.100, +0.300], significant (simclr better); simclr@convnext_atto − "
                        "random@convnext_atto = -0.200 [-0.300, -0.100], significant "
                        "(random@convnext_atto better).")  # fmt: skip
    assert "awcl-fine − simclr = +0.300" in paras[1] and "awcl-fine@convnext_atto − simclr@convnext_atto" in paras[1]
    assert "+0.900" not in "".join(paras)
    # an init pretrained on the task's data set: said where it is named, and in a last paragraph
    note = {("mae", "t"): "mae was pretrained on this data set (x)"}
    paras = answer_paragraphs([*comps, c("mae", "random", 0.5)], note)
    assert paras[0].startswith("**Pretrained vs random.** t (full fine-tuning, macro-F1): mae − random = +0.500")
    assert "best of 2 pretrained, 2 significantly better than random, 0 worse; simclr@" in paras[0]
    assert paras[0].endswith("significant (random@convnext_atto better) — mae was pretrained on this data set (x).")
    assert paras[-1] == ("**Data overlap.** mae was pretrained on this data set (x) of task t: those rows are "
                         "not transfer to unseen data, and their differences above overstate it.")  # fmt: skip
    # with the backbones known, mae (a ViT without a random init of its own) is not compared
    paras = answer_paragraphs([*comps, c("mae", "random", 0.5)], note, {"mae": VIT})
    assert "mae − random" not in paras[0] and paras[-1].startswith("**Data overlap.**")


# ------------------------------------------------------------------ a tiny real study
TINY = {"seed": 0, "scans": 8, "frames_per_scan": 12, "size": [32, 32], "masks": "brain"}


@pytest.mark.slow
def test_tiny_real_study_two_backbones_and_a_file_init(tmp_path):
    w = mae_checkpoint(tmp_path / "usf" / "checkpoint.pth")
    raw = {
        "name": "axes",
        "pretrain_data": {"recipe": "phantom", "params": {**TINY, "labelled_fraction": 0.3}},
        "methods": ["random", "simclr"],
        "backbones": ["resnet18", CONVNEXT],
        "inits": {"usf-mae": {"backbone": VIT, "weights": str(w), "layout": "mae"}},
        "pretrain": {"epochs": 1, "batch_size": 8,
                     "extra": {"num_workers": 0, "monitor_fraction": 0.0, "threads": 1, "max_steps": 2,
                               "precision": "32-true"}},
        "tasks": [{"name": "anatomy", "task": "classify", "protocols": ["knn"], "folds": 2,
                   "classes": ["brain", "other=heart+spine+abdomen+femur"],
                   "dataset": {"recipe": "phantom", "params": {**TINY, "seed": 1, "labelled_fraction": 1.0}},
                   "extra": {"threads": 1, "precision": "32-true"}}],
        "embed": {"max_samples": 20},
    }  # fmt: skip
    cfg = parse_config(raw, source="axes.yaml")
    # the built-in declaration of USF-MAE (HC18, FETAL_PLANES_DB, POCUS): not the phantom
    assert overlap_table(cfg) == {("usf-mae", "anatomy"): False}
    res = run_study(cfg, tmp_path / "s", progress=False, echo=lambda s: None)
    kinds = sorted(d.split("-")[0] for d in res.computed)
    assert kinds == ["data"] * 2 + ["embed"] * 5 + ["finetune"] * 5 + ["pretrain"] * 2
    runs = tmp_path / "s" / "runs"
    meta = torch.load(next(runs.glob("pretrain-simclr_convnext_atto-*")) / "run" / "encoder.pt", weights_only=True)
    assert meta["awcl_backbone"] == CONVNEXT
    from awcl.study.report import load_study, results_table, write_report

    df = pd.read_csv(write_report(tmp_path / "s").csv)
    rows = {"random", "simclr", "random@convnext_atto", "simclr@convnext_atto", "usf-mae"}
    assert set(df[df.kind == "finetune"].method) == rows
    data = load_study(tmp_path / "s")
    table = results_table(data)  # the report's table carries the column (results.csv too)
    assert "backbone" in df.columns and list(table.columns) == list(df.columns)
    got = dict(zip(table[table.kind == "finetune"].method, table[table.kind == "finetune"].backbone))
    assert got == {"random": "resnet18", "simclr": "resnet18", "random@convnext_atto": CONVNEXT,
                   "simclr@convnext_atto": CONVNEXT, "usf-mae": VIT}  # fmt: skip
    rec = json.loads(next(runs.glob("finetune-usf-mae-*")).joinpath("DONE").read_text())
    assert len(rec["result"]["folds"]) == 2 and rec["labels"]["layout"] == "mae"
