"""Experiment trackers of a pretraining run: ``--logger tensorboard|csv|wandb|mlflow``.

TensorBoard and CSV write under ``<run>/logs/`` (no extra package). Weights & Biases and
MLflow are optional extras (``pip install 'awcl[wandb]'`` / ``'awcl[mlflow]'``); without the
package, asking for them is a one-line error naming the extra.

A tracker's run id is kept in ``<run>/logs/trackers.json`` when the run starts, and
``--resume`` passes it back, so a resumed run continues the same W&B / MLflow run instead of
starting a new one. W&B follows its own settings (``WANDB_MODE=offline``, ``WANDB_API_KEY``,
...); ``--tracker-project`` names the W&B project / MLflow experiment, and
``--tracker-uri`` the MLflow tracking server (default: ``$MLFLOW_TRACKING_URI``, else a local
SQLite store ``<run>/logs/mlflow.db``; view it with ``mlflow ui --backend-store-uri
sqlite:///RUN/logs/mlflow.db``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from awcl.atomic import write_json_atomic
from awcl.errors import AwclError

LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
DEFAULT_LOGGERS = ["tensorboard", "csv"]
# logger -> (module to import, the awcl extra that installs it)
_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
IDS_FILE = Path("logs") / "trackers.json"


def check_loggers(names: list[str] | str) -> list[str]:
    """Validated logger names (a comma list or a list), in the order given, no repeats."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for n in str(item).split(","):
            n = n.strip().lower()
            if not n:
                continue
            if n not in LOGGERS:
                raise AwclError(f"--logger {n!r}: expected one of {', '.join(LOGGERS)}")
            if n not in out:
                out.append(n)
    return out


def require(name: str) -> None:
    """One-line error when the package behind a logger is missing."""
    module, extra = _PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise AwclError(
            f"--logger {name} needs the {module!r} package: pip install 'awcl[{extra}]'"
        )


def read_ids(run: Path) -> dict[str, str]:
    p = Path(run) / IDS_FILE
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_ids(run: Path, ids: dict[str, str]) -> None:
    p = Path(run) / IDS_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, ids, indent=2, sort_keys=True)


class KeepTrackerIds(Callback):
    """Rank zero writes the trackers' run ids to ``logs/trackers.json`` when fitting starts."""

    def __init__(self, run: Path, loggers: dict[str, Any]):
        self.run, self.loggers = Path(run), loggers

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.loggers:
            return
        ids = read_ids(self.run)
        for name, logger in self.loggers.items():
            if name == "wandb":
                ids[name] = str(logger.experiment.id)
            elif name == "mlflow":
                ids[name] = str(logger.run_id)
        _write_ids(self.run, ids)


def build_loggers(
    names: list[str] | str,
    run: Path,
    project: str = "awcl",
    uri: str = "",
    resume: bool = False,
) -> tuple[list[Any], KeepTrackerIds]:
    """Lightning loggers for ``names`` writing into ``run``, and the callback that records the
    trackers' run ids (pass both to the Trainer). ``resume``: continue the recorded runs."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run = Path(run)
    chosen = check_loggers(names)
    for n in chosen:
        if n in _PACKAGES:
            require(n)
    ids = read_ids(run) if resume else {}
    (run / "logs").mkdir(parents=True, exist_ok=True)
    loggers: list[Any] = []
    remote: dict[str, Any] = {}
    for n in chosen:
        if n == "tensorboard":
            loggers.append(
                TensorBoardLogger(save_dir=str(run), name="logs", version="tb", default_hp_metric=False)
            )
        elif n == "csv":
            loggers.append(CSVLogger(save_dir=str(run), name="logs", version="csv"))
        elif n == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            wid = ids.get("wandb") or secrets.token_hex(6)
            remote[n] = WandbLogger(
                project=project, name=run.name, id=wid, resume="allow", save_dir=str(run / "logs")
            )
            loggers.append(remote[n])
        elif n == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            target = uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
            if not target:  # a local SQLite store in the run (MLflow 3 retired plain files)
                if importlib.util.find_spec("sqlalchemy") is None:
                    raise AwclError("--logger mlflow without --tracker-uri keeps a local SQLite "
                                    "store, which needs sqlalchemy: pip install 'awcl[mlflow]'")  # fmt: skip
                target = f"sqlite:///{(run / 'logs' / 'mlflow.db').resolve()}"
            remote[n] = MLFlowLogger(
                experiment_name=project, run_name=run.name, tracking_uri=target, run_id=ids.get("mlflow")
            )
            loggers.append(remote[n])
    return loggers, KeepTrackerIds(run, remote)
