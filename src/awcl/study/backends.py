"""The real executors of a study: prepare data, pretrain, fine-tune and embed through the
public APIs of ``awcl.data``, ``awcl.train`` and ``awcl.evaluate``.

Each function has the :data:`awcl.study.runs.RunFn` shape ``fn(run, inputs) -> result``: it
writes into ``run.output`` and returns its kind's typed result (:mod:`awcl.study.records`),
which :func:`awcl.study.runs.execute` stores in the run's DONE record.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from awcl.config import build
from awcl.errors import AwclError
from awcl.study.records import DataResult, EmbedResult, FinetuneResult, PretrainResult, declared
from awcl.study.runs import FOLD_TRAIN, MERGE, Executors, Run

TRAINED_ON = "trained_on.json"  # written by a pretrain run: the data (ids) it was given


def prepare_data(run: Run, inputs: dict[str, Path | str]) -> DataResult:
    from awcl.data.store import open_dataset

    c = run.config
    from awcl.data.recipes import RECIPES

    recipe, params = c["recipe"], dict(c.get("params") or {})
    if recipe == FOLD_TRAIN:  # per-fold pretraining: the data without one fold's test groups
        return _fold_train_data(run, inputs)
    if recipe == MERGE:  # the union of several sources (pretraining on several datasets)
        from awcl.data.store import merge_datasets

        paths = [p or inputs[f"source{i}"] for i, p in enumerate(c["paths"])]
        merge_datasets(paths, run.output, names=c["names"])
    elif recipe in RECIPES:
        r = RECIPES[recipe]
        r.prepare(c.get("src"), run.output, build(r.config, params, f"{recipe} params"))
    else:  # config validation lists the recipes; this is a guard for new ones
        raise AwclError(f"unknown recipe {recipe!r}")
    return DataResult(frames=len(open_dataset(run.output)))


def _data_path(run: Run, inputs: dict[str, Path | str]) -> str:
    return str(inputs["data"]) if "data" in inputs else str(run.config["data"])


def _init(run: Run, inputs: dict[str, Path | str]) -> str:
    """The encoder to start from; an init's weights file is first checked against the layout
    its study config declares (``inits.NAME.layout``)."""
    if "init" in inputs:
        return str(inputs["init"])
    init = str(run.config.get("init", "random"))
    layout = run.labels.layout  # finetune and embed runs
    if init != "random" and layout not in (None, "auto"):
        from awcl.study.inits import check_layout

        check_layout(init, str(layout), str(run.labels.init or run.name))
    return init


def _finetune_values(c: dict[str, Any]) -> dict[str, Any]:
    """A study task's run config -> FinetuneConfig values (no data, out, init)."""
    known = {"task", "protocol", "head", "preset", "epochs", "folds", "classes", "seed", "train_patients"}
    values: dict[str, Any] = {k: c[k] for k in known if c.get(k) is not None}
    values["label"] = c.get("granularity", "coarse")
    for k, v in c.items():  # task ``extra:`` settings (size, max_per_video, label, ...)
        if k not in known | {"granularity", "data", "init", "fold_inits"}:
            values[k] = v
    return values


def _fold_train_data(run: Run, inputs: dict[str, Path | str]) -> DataResult:
    """Keep every frame whose group is outside fold ``k``'s test part, as the task's
    fine-tuning run splits it (awcl.evaluate.folds: the same selection and split code)."""
    import numpy as np

    from awcl.data.store import open_dataset
    from awcl.data.subset import write_subset
    from awcl.evaluate.finetune import FinetuneConfig
    from awcl.evaluate.folds import fold_test_groups

    c = run.config
    data = _data_path(run, inputs)
    cfg = build(FinetuneConfig, {"data": data, "out": str(run.output), **_finetune_values(c["split"])},
                f"folds of {run.name}")  # fmt: skip
    cfg.validate()
    ds = open_dataset(data)
    tests = fold_test_groups(cfg, ds)
    k = int(c["fold"])
    if k >= len(tests):
        raise AwclError(f"fold {k}: the task splits into {len(tests)} fold(s)")
    held = set(tests[k])
    keep = ~ds.manifest[cfg.group].astype(str).isin(held).to_numpy()
    write_subset(data, run.output, keep, {"fold": k, "group": cfg.group, "excluded_groups": sorted(held)})
    return DataResult(frames=int(np.count_nonzero(keep)), excluded_frames=int(np.count_nonzero(~keep)),
                      excluded_groups=len(held), group=cfg.group)  # fmt: skip


def _check_fold_inits(cfg: Any, inputs: dict[str, Path | str]) -> list[dict[str, Any]]:
    """Per-fold pretraining guard: fold k's test groups (as this run splits them) must be absent
    from the data fold k's encoder was pretrained on (its ``trained_on.json``)."""
    import json

    from awcl.data.store import open_dataset
    from awcl.evaluate.folds import fold_test_groups

    tests = fold_test_groups(cfg)
    out = []
    for k, test in enumerate(tests):
        rec = json.loads((Path(inputs[f"init{k}"]) / TRAINED_ON).read_text())
        seen = set(open_dataset(rec["data"]).manifest[cfg.group].astype(str))
        shared = sorted(seen & set(test))
        if shared:
            raise AwclError(f"fold {k}: {len(shared)} test group(s) of {cfg.group} (e.g. {shared[0]!r}) "
                            f"were in the pretraining data of its encoder {inputs[f'init{k}']}")  # fmt: skip
        out.append({"fold": k, "test_groups": len(test), "pretrain_frames": rec["frames"],
                    "pretrain_groups": len(seen), "shared_groups": 0})  # fmt: skip
    return out


def finetune_run(run: Run, inputs: dict[str, Path | str]) -> FinetuneResult:
    from awcl.evaluate.finetune import FinetuneConfig, finetune

    c = dict(run.config)
    values = _finetune_values(c)
    if c.get("fold_inits"):  # per-fold pretraining: fold k starts from dependency init<k>
        values["fold_inits"] = [str(inputs[f"init{k}"]) for k in range(int(c["fold_inits"]))]
    cfg = build(FinetuneConfig, {"data": _data_path(run, inputs), "out": str(run.output),
                                  "init": _init(run, inputs), **values}, f"task {run.name}")  # fmt: skip
    leak_check = None
    if cfg.fold_inits:
        cfg.validate()  # one encoder per fold
        leak_check = _check_fold_inits(cfg, inputs)
    # the fields FinetuneResult declares (group and learned among them); metrics.json keeps the rest
    metrics = declared(FinetuneResult, finetune(cfg), f"finetune {run.name}", strict=False)
    return replace(metrics, fold_pretraining=leak_check)


def _record_data(data: str, out: Path) -> dict[str, Any]:
    """Write ``trained_on.json`` (the dataset a pretraining was given: its path, frame count,
    a hash of its frame ids, its video and patient ids) and return its short form."""
    import hashlib

    from awcl.atomic import write_json_atomic
    from awcl.data.store import open_dataset

    m = open_dataset(data).manifest
    ids = "\n".join(m["frame_id"].astype(str)).encode()
    rec = {"data": str(Path(data).resolve()), "frames": len(m),
           "frame_ids_sha256": hashlib.sha256(ids).hexdigest(),
           "video_ids": sorted(set(m["video_id"].astype(str))),
           "patient_ids": sorted(set(m["patient_id"].astype(str)))}  # fmt: skip
    write_json_atomic(out / TRAINED_ON, rec, indent=1)
    return {"frames": rec["frames"], "videos": len(rec["video_ids"]), "frame_ids_sha256": rec["frame_ids_sha256"]}


def pretrain_run(run: Run, inputs: dict[str, Path | str]) -> PretrainResult:
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
    summary = out / "summary.json"
    # the fields PretrainResult declares; summary.json keeps the rest
    s = json.loads(summary.read_text()) if summary.is_file() else {}
    result = declared(PretrainResult, s, f"pretrain {run.name}", strict=False)
    # the batch composition and augmentations the run used (the report states them)
    return replace(result, class_group=cfg.class_group if result.class_group is None else result.class_group,
                   crop_scale=list(cfg.crop_scale), blur=cfg.blur, trained_on=_record_data(data, out))  # fmt: skip


def embed_run(run: Run, inputs: dict[str, Path | str]) -> EmbedResult:
    from awcl.evaluate.embed import EmbedConfig, embed

    c = run.config
    cfg = EmbedConfig(
        data=_data_path(run, inputs),
        out=str(run.output),
        init=_init(run, inputs),
        label=c.get("granularity", "coarse"),
        max_frames=c.get("max_samples", 500),
        seed=c.get("seed", 0),
        backbone=c.get("backbone"),  # a random or file init on another backbone than ResNet-18
    )
    return declared(EmbedResult, embed(cfg), f"embed {run.name}", strict=False)  # embed.json keeps the rest


def real_executors() -> Executors:
    return Executors(data=prepare_data, pretrain=pretrain_run, finetune=finetune_run, embed=embed_run)
