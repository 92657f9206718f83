"""The real executors of a study: prepare data, pretrain, fine-tune and embed through the
public APIs of ``awcl.data``, ``awcl.train`` and ``awcl.evaluate``.

Each function has the :data:`awcl.study.runner.RunFn` shape ``fn(run, inputs) -> dict``: it
writes into ``run.output`` and returns a JSON-able summary stored in the run's DONE record.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from awcl.config import build
from awcl.errors import AwclError
from awcl.study.runs import MERGE, Executors, Run


def prepare_data(run: Run, inputs: dict[str, Path | str]) -> dict[str, Any]:
    from awcl.data.store import open_dataset

    c = run.config
    from awcl.data.recipes import RECIPES

    recipe, params = c["recipe"], dict(c.get("params") or {})
    if recipe == MERGE:  # the union of several sources (pretraining on several datasets)
        from awcl.data.store import merge_datasets

        paths = [p or inputs[f"source{i}"] for i, p in enumerate(c["paths"])]
        merge_datasets(paths, run.output, names=c["names"])
    elif recipe in RECIPES:
        r = RECIPES[recipe]
        r.prepare(c.get("src"), run.output, build(r.config, params, f"{recipe} params"))
    else:  # config validation lists the recipes; this is a guard for new ones
        raise AwclError(f"unknown recipe {recipe!r}")
    return {"frames": len(open_dataset(run.output))}


def _data_path(run: Run, inputs: dict[str, Path | str]) -> str:
    return str(inputs["data"]) if "data" in inputs else str(run.config["data"])


def _init(run: Run, inputs: dict[str, Path | str]) -> str:
    return str(inputs["init"]) if "init" in inputs else str(run.config.get("init", "random"))


def finetune_run(run: Run, inputs: dict[str, Path | str]) -> dict[str, Any]:
    from awcl.evaluate.finetune import FinetuneConfig, finetune

    c = dict(run.config)
    known = {"task", "protocol", "head", "preset", "epochs", "folds", "classes", "seed", "train_patients"}
    values: dict[str, Any] = {k: c[k] for k in known if c.get(k) is not None}
    values["label"] = c.get("granularity", "coarse")
    for k, v in c.items():  # task ``extra:`` settings (size, max_per_video, label, ...)
        if k not in known | {"granularity", "data", "init"}:
            values[k] = v
    cfg = build(FinetuneConfig, {"data": _data_path(run, inputs), "out": str(run.output),
                                  "init": _init(run, inputs), **values}, f"task {run.name}")  # fmt: skip
    metrics = finetune(cfg)
    keep = ("task", "protocol", "classes", "num_frames", "folds", "mean", "std", "warnings",
            "train_patients", "intervals", "pooled")  # fmt: skip
    return {k: metrics[k] for k in keep if k in metrics}


def pretrain_run(run: Run, inputs: dict[str, Path | str]) -> dict[str, Any]:
    import json

    from awcl.data.store import open_dataset
    from awcl.train.pretrain import PretrainConfig, pretrain

    data = _data_path(run, inputs)
    values = {k: v for k, v in run.config.items() if v is not None and k != "data"}
    values.setdefault("size", open_dataset(data).size)  # default: the prepared frame size
    values.setdefault("progress", False)  # the study draws its own progress bar
    cfg = build(PretrainConfig, {"data": data, "out": str(run.output), **values},
                 f"pretrain {run.name}")  # fmt: skip
    out = Path(pretrain(cfg))
    # Per-epoch Lightning checkpoints (~130 MB each with the optimiser state) are only needed
    # to resume *inside* a run; the study resumes between runs and keeps encoder.pt.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    result: dict[str, Any] = {}
    summary = out / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        keep = ("final_loss", "img_per_s", "knn_acc", "knn_acc_init", "epochs", "steps",
                "labelled_frames", "frames", "class_group", "batch_composition")  # fmt: skip
        result = {k: s[k] for k in keep if k in s}
    # the batch composition the run used (the report states it): the effective setting
    result.setdefault("class_group", cfg.class_group)
    result["crop_scale"] = list(cfg.crop_scale)
    result["blur"] = cfg.blur
    return result


def embed_run(run: Run, inputs: dict[str, Path | str]) -> dict[str, Any]:
    from awcl.evaluate.embed import EmbedConfig, embed

    c = run.config
    cfg = EmbedConfig(
        data=_data_path(run, inputs),
        out=str(run.output),
        init=_init(run, inputs),
        label=c.get("granularity", "coarse"),
        max_frames=c.get("max_samples", 500),
        seed=c.get("seed", 0),
    )
    res = embed(cfg)
    return {k: res[k] for k in ("num_frames", "plots") if k in res}


def real_executors() -> Executors:
    return Executors(data=prepare_data, pretrain=pretrain_run, finetune=finetune_run, embed=embed_run)
