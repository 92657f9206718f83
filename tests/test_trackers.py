"""``--logger tensorboard|csv|wandb|mlflow``: selection, missing extras, and the tracker run id
kept across ``--resume`` (W&B offline mode, MLflow file store)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from awcl.cli import main
from awcl.errors import AwclError
from awcl.train import trackers
from awcl.train.pretrain import PretrainConfig, pretrain
from test_pretrain import cfg_for, make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("data") / "tiny")


def test_logger_selection():
    assert trackers.check_loggers(["csv", "tensorboard,csv", " MLflow "]) == ["csv", "tensorboard", "mlflow"]
    with pytest.raises(AwclError, match=r"--logger 'comet'.*tensorboard, csv, wandb, mlflow"):
        trackers.check_loggers("comet")
    assert PretrainConfig().logger == ["tensorboard", "csv"]
    with pytest.raises(AwclError, match="comet"):
        PretrainConfig(logger=["comet"])


def test_only_the_chosen_loggers_write(tiny, tmp_path):
    run = pretrain(cfg_for(tiny, tmp_path / "r", method="simclr", max_steps=2, logger=["csv"]))
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    assert not (run / "logs" / "tb").exists()


def test_missing_extra_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    rc = main(["pretrain", "--data", str(tiny), "--out", str(tmp_path / "r"), "--logger", "wandb",
               "--max-steps", "1", "--num-workers", "0", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["awcl: error: --logger wandb needs the 'wandb' package: pip install 'awcl[wandb]'"]


def _resume_cfg(tiny: Path, out: Path, logger: list[str], **kw) -> tuple[PretrainConfig, PretrainConfig]:
    first = cfg_for(tiny, out, method="simclr", epochs=1, logger=logger, monitor_fraction=0, **kw)
    second = cfg_for(tiny, out, method="simclr", epochs=2, logger=logger, monitor_fraction=0, resume=True, **kw)
    return first, second


@pytest.mark.slow
def test_wandb_offline_run_id_survives_resume(tiny, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    first, second = _resume_cfg(tiny, tmp_path / "r", ["csv", "wandb"])
    run = pretrain(first)
    wid = json.loads((run / "logs" / "trackers.json").read_text())["wandb"]
    import wandb

    wandb.finish()
    pretrain(second)
    wandb.finish()
    assert json.loads((run / "logs" / "trackers.json").read_text())["wandb"] == wid
    offline = sorted((run / "logs" / "wandb").glob(f"offline-run-*-{wid}"))
    assert len(offline) >= 1  # both phases logged under the one run id
    assert not [p for p in (run / "logs" / "wandb").glob("offline-run-*") if not p.name.endswith(wid)]


@pytest.mark.slow
def test_mlflow_run_id_survives_resume(tiny, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = _resume_cfg(tiny, tmp_path / "r", ["mlflow"], tracker_project="exp1")
    run = pretrain(first)
    rid = json.loads((run / "logs" / "trackers.json").read_text())["mlflow"]
    pretrain(second)
    assert json.loads((run / "logs" / "trackers.json").read_text())["mlflow"] == rid
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(run / 'logs' / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("exp1")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [rid]  # one run, continued
    epochs = [m.value for m in client.get_metric_history(rid, "epoch")]
    assert max(epochs) >= 1  # the resumed second epoch was logged into the same run
