"""Data overlap: was an init (a foundation model's weights, ``inits:``) pretrained on the data
set a downstream task tests on? Then its numbers on that task are not transfer to unseen data.

An init declares the data sets it was pretrained on (``pretrained_on: [HC18, ...]``); without
one, the public models' declarations below apply (by the init's ``model:``, else its name,
compared without case, ``-`` or ``_``: ``USF-MAE`` = ``usf_mae``). A declared name matches a
task's data set by recipe name (``hc18``, ``pocus``, ``busi``, ``fetal_planes``: the
publications' ``FETAL_PLANES_DB`` is that recipe); free text such as ``multi-organ`` never
matches a recipe, and a model whose pretraining data is not stated can be neither cleared nor
flagged (``None``).

Plain data in, plain data out: :func:`overlap_table` answers per (init, task),
:func:`overlap_index` is what ``study.json`` stores under ``overlap``, :func:`overlap_marks`
gives the report one sentence per flagged (row, task), from a config or from ``study.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from awcl.study.config import PRETRAIN_DATASET, DatasetSpec, StudyConfig, TaskSpec
from awcl.study.inits import InitSpec

# What each public model's publication says it was pretrained on (None: not stated).
DECLARED: dict[str, list[str] | None] = {
    "usfm": None,
    "fetalclip": ["fetal ultrasound image-text pairs"],
    "ultrafedfm": ["multi-organ ultrasound"],
    "usfmae": ["HC18", "FETAL_PLANES_DB", "POCUS"],
    "openus": ["BUSI", "HC18", "FETAL_PLANES_DB"],
}
ALIASES = {"fetal_planes_db": "fetal_planes", "fetal_planes_zenodo": "fetal_planes"}
OVERLAP_NOTE = "{init} was pretrained on this data set ({datasets})"


def model_id(name: str) -> str:
    """``USF-MAE`` -> ``usfmae``: the key of :data:`DECLARED`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def dataset_id(name: str) -> str:
    """A data set's name as a recipe name: ``HC18`` -> ``hc18``, ``FETAL_PLANES_DB`` ->
    ``fetal_planes``; other text lower-cased."""
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    return ALIASES.get(key, key)


def declared(init: InitSpec) -> list[str] | None:
    """The data sets ``init`` was pretrained on: its own ``pretrained_on``, else its model's
    built-in declaration; None when not stated."""
    if init.pretrained_on is not None:
        return list(init.pretrained_on)
    found = DECLARED.get(model_id(init.model or init.name))
    return None if found is None else list(found)


def dataset_names(spec: DatasetSpec) -> list[str]:
    """The data sets a spec holds, as recipe names: its recipe, each source's, or a prepared
    directory's recorded ``source`` (``dataset.json``; a merge's ``a+b``), else its folder name."""
    if spec.sources:
        return [n for s in spec.sources for n in dataset_names(s)]
    if spec.recipe:
        return [dataset_id(spec.recipe)]
    path = Path(str(spec.path)).expanduser()
    try:
        source = json.loads((path / "dataset.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    names = str(source).split("+") if source else [path.name]
    return [dataset_id(n) for n in names]


def task_datasets(cfg: StudyConfig, task: TaskSpec) -> list[str]:
    spec = cfg.pretrain_data if task.dataset == PRETRAIN_DATASET else task.dataset
    return dataset_names(spec)  # type: ignore[arg-type]


def overlap_index(cfg: StudyConfig) -> list[dict[str, Any]]:
    """One row per (init, task): the task's data sets, the init's declaration, the data sets in
    both and ``overlap`` (True, False, or None: the init's pretraining data is not stated)."""
    rows = []
    for init in cfg.inits.values():
        said = declared(init)
        ids = None if said is None else {dataset_id(n) for n in said}
        for task in cfg.tasks:
            data = task_datasets(cfg, task)
            both = [] if ids is None else sorted(set(data) & ids)
            rows.append({"init": init.name, "task": task.name, "datasets": data, "pretrained_on": said,
                         "matched": both, "overlap": None if ids is None else bool(both)})  # fmt: skip
    return rows


def overlap_table(cfg: StudyConfig) -> dict[tuple[str, str], bool | None]:
    """(init name, task name) -> is the task's data set among those the init was pretrained on
    (None: not stated)."""
    return {(r["init"], r["task"]): r["overlap"] for r in overlap_index(cfg)}


def overlap_marks(source: StudyConfig | dict[str, Any]) -> dict[tuple[str, str], str]:
    """(row name, task name) -> ``"usf-mae was pretrained on this data set (hc18)"`` for every
    flagged pair; ``source`` is a config or a study index (``study.json``, key ``overlap``).
    An init's row name is its init name. ``{}`` for a study without inits."""
    rows = overlap_index(source) if isinstance(source, StudyConfig) else source.get("overlap") or []
    return {(r["init"], r["task"]): OVERLAP_NOTE.format(init=r["init"], datasets=", ".join(r["matched"]))
            for r in rows if r.get("overlap")}  # fmt: skip


def overlap_notes(cfg: StudyConfig, planned: set[str] | None = None) -> list[str]:
    """The study's notes on its inits' data: a flagged overlap, or pretraining data not stated
    (only for the inits in ``planned``, when given: a skipped init has no rows)."""
    flagged: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    for r in overlap_index(cfg):
        if planned is not None and r["init"] not in planned:
            continue
        if r["overlap"]:
            flagged.setdefault(r["init"], []).append(f"{r['task']} ({', '.join(r['matched'])})")
        elif r["overlap"] is None:
            unknown.setdefault(r["init"], []).append(r["task"])
    notes = [f"{name} was pretrained on the data set of {', '.join(tasks)}: its results there are not "
             "transfer to unseen data" for name, tasks in flagged.items()]  # fmt: skip
    notes += [f"{name}: the data it was pretrained on is not stated, so overlap with the data of "
              f"{', '.join(tasks)} cannot be ruled out (declare it: inits.{name}.pretrained_on)"
              for name, tasks in unknown.items()]  # fmt: skip
    return notes
