"""``awcl export``: the encoder loads into plain torchvision from safetensors and gives awcl's
features; TorchScript/ONNX graphs match; the model card holds data, settings and results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import awcl  # noqa: F401  (torchvision shim)
from awcl.cli import main
from awcl.errors import AwclError
from awcl.models import build_encoder, save_encoder
from awcl.study.config import parse_config
from awcl.study.runner import run_study
from awcl.train.export import ExportConfig, export_run
from awcl.train.pretrain import pretrain
from test_pretrain import cfg_for, make_tiny
from test_study import Calls, base_raw


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    data = make_tiny(tmp / "tiny")
    return pretrain(cfg_for(data, tmp / "run", method="awcl", epochs=2, max_steps=-1, monitor_fraction=0.5))


def _torchvision_features(state: dict[str, torch.Tensor], grey: torch.Tensor) -> torch.Tensor:
    import torchvision

    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        # the recipe of the model card: awcl's grey normalisation, replicated to RGB
        return net.eval()(((grey - 0.449) / 0.226).expand(-1, 3, -1, -1))


def test_export_loads_in_plain_torchvision(run, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "exp"
    assert main(["export", str(run), "--out", str(out), "--torchscript"]) == 0
    assert "encoder.safetensors" in capsys.readouterr().out
    grey = torch.rand(3, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = build_encoder(run).eval()(grey)  # awcl's own encoder, [3, 512]
    for state in (load_file(str(out / "encoder.safetensors")), torch.load(out / "encoder.pt", weights_only=True)):
        feats = _torchvision_features(state, grey)
        assert feats.shape == (3, 512)
        torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)
    ts = torch.jit.load(str(out / "encoder.torchscript.pt"))
    with torch.no_grad():
        torch.testing.assert_close(ts(grey), ref, atol=1e-5, rtol=1e-5)
        # traced with dynamic shapes in mind: another size runs too
        assert ts(torch.rand(1, 1, 48, 64)).shape == (1, 512)


def test_model_card_contents(run, tmp_path):
    out = export_run(ExportConfig(str(run), str(tmp_path / "exp")))
    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Model", "## Method", "## Data", "## Settings", "## Pretraining curves",
                    "## Downstream results", "## Intended use", "## Limitations"):  # fmt: skip
        assert heading in card, heading
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    from awcl.data.store import manifest_sha256, open_dataset

    ds = open_dataset(data)
    assert manifest_sha256(data) in card
    assert f"| {len(ds)} |" in card and f"| {ds.manifest['patient_id'].nunique()} |" in card
    assert "anatomy-aware" in card and "| anatomy_ratio |" in card
    hist = (run / "history.csv").read_text().splitlines()
    # header, the kNN monitor's step-0 row (epoch 0), then both epochs
    assert len(hist) == 4 and card.count("\n| 1 |") + card.count("\n| 2 |") >= 2
    assert "\n| 0 | 0 |" in card and "\n| 3 |" not in card  # epochs completed, not +1
    png = (out / "pretrain_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"config.yaml", "summary.json", "history.csv"} <= {p.name for p in out.iterdir()}
    assert "None recorded" in card  # not part of a study


def test_onnx_export_matches(run, tmp_path):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    out = export_run(ExportConfig(str(run), str(tmp_path / "exp"), onnx=True))
    grey = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = build_encoder(run).eval()(grey).numpy()
    got = ReferenceEvaluator(str(out / "encoder.onnx")).run(None, {"image": grey.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no encoder.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_export_refuses_to_replace_other_folders(run, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    with pytest.raises(AwclError, match="not an awcl export"):
        export_run(ExportConfig(str(run), str(keep)))
    assert (keep / "notes.txt").is_file()
    first = export_run(ExportConfig(str(run), str(tmp_path / "again")))
    assert export_run(ExportConfig(str(run), str(first))) == first  # an earlier export: replaced


def test_model_card_lists_the_studys_downstream_results(tmp_path):
    """The card's numbers of a study encoder are the report's: the same value and interval."""
    from awcl.study.report import write_report

    calls = Calls()
    ex = calls.executors()
    stand_in = ex.pretrain

    def pretrain_with_encoder(r, inputs):
        res = stand_in(r, inputs)
        save_encoder(build_encoder("random"), r.output / "encoder.pt")
        (r.output / "config.yaml").write_text(yaml.safe_dump({"method": r.config["method"], "size": [32, 40]}))
        return res

    ex.pretrain = pretrain_with_encoder
    study = tmp_path / "study"
    run_study(parse_config(base_raw()), study, ex, progress=False, echo=lambda s: None)
    pre = next((study / "runs").glob("pretrain-simclr-*"))
    assert main(["export", str(pre), "--out", str(tmp_path / "exp")]) == 0  # the command reads the study
    card = (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    section = card.split("## Downstream results")[1].split("## Intended use")[0]
    rows = [line for line in section.splitlines() if line.startswith("| cls") or line.startswith("| seg")]
    # cls full + partial, seg full; accuracy and macro_f1 each
    assert len(rows) == 6, section
    # cls accuracy: pooled predictions with a patient-bootstrap interval, as the report's cell
    md = write_report(study).markdown.read_text()
    table = md.split("## Transfer table (full fine-tuning)")[1].split("\n## ")[0]
    header = next(line for line in table.splitlines() if line.startswith("| method |")).split(" | ")
    cell = next(line for line in table.splitlines() if line.startswith("| simclr |")).split(" | ")[
        header.index("cls: accuracy")]
    row = next(r for r in rows if r.startswith("| cls | full | all | accuracy |")).split(" | ")
    value, (lo, hi) = float(row[4]), (float(x) for x in row[5].split(" (")[0].strip("[]").split(", "))
    assert cell == f"{value:.3f} [{lo:.3f}, {hi:.3f}]" and "(test patients)" in row[5]
    # seg (no predictions from the stand-in): mean ± std over folds, as the report's cell
    rec = json.loads(next((study / "runs").glob("finetune-simclr-seg-full-*")).joinpath("DONE").read_text())
    acc = [f["accuracy"] for f in rec["result"]["folds"]]
    seg = next(r for r in rows if r.startswith("| seg | full | all | accuracy |"))
    assert f"| {np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f} | n/a | 2 |" in seg
    # the Python API without the study's reader: no results, said so
    alone = (export_run(ExportConfig(str(pre), str(tmp_path / "exp2"))) / "MODEL_CARD.md").read_text()
    assert "None recorded" in alone.split("## Downstream results")[1]
