"""Planning: a study config expanded into its grid of runs (data, pretraining, downstream,
embedding), each keyed by a hash of its settings and of the runs it depends on.

The encoders compared come from :mod:`awcl.study.encoders` (per seed, backbone and method,
and per init); every encoder is fine-tuned / probed on every task and protocol, the swept
anatomy ratios only on the sweep tasks' sweep protocol, and a task's ``pretrain_per_fold``
turns one pretraining into one per outer fold (:func:`_fold_encoders`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from awcl.study.config import (
    LABEL_METHODS,
    PRETRAIN_DATASET,
    PROBES,
    DatasetSpec,
    StudyConfig,
    TaskSpec,
)
from awcl.study.encoders import (
    EncoderSpec,
    abs_path,
    add_note,
    init_encoders,
    method_encoders,
    pretrain_weight,
)
from awcl.study.overlap import overlap_notes
from awcl.study.records import DataLabels, EmbedLabels, FinetuneLabels
from awcl.study.runs import FOLD_TRAIN, MERGE, Run

KIND_ORDER = {"data": 0, "pretrain": 1, "finetune": 2, "embed": 3}
# The task settings (finetune config keys, ``extra`` included) that decide its folds; a fold's
# pretraining data is cut with exactly these (awcl.evaluate.folds.SPLIT_FIELDS, by study name).
SPLIT_KEYS = ("task", "folds", "classes", "granularity", "seed", "label", "group", "split",
              "val_fraction", "max_per_video")  # fmt: skip


@dataclass
class Plan:
    runs: list[Run]
    notes: list[str]


def _data_run(spec: DatasetSpec) -> Run | str:
    """A prepared dataset path (str) or the run that prepares it."""
    if spec.path:
        return abs_path(spec.path)  # type: ignore[return-value]
    cfg = {"recipe": spec.recipe, "src": abs_path(spec.src), "params": spec.params}
    return Run("data", str(spec.recipe), cfg, labels=DataLabels(recipe=spec.recipe), weight=2.0)


def _sweep_protocol(task: TaskSpec) -> str:
    return "full" if "full" in task.protocols else task.protocols[0]


def _link(config: dict[str, Any], **refs: Any) -> dict[str, Run]:
    """Each ref that is a Run becomes a dependency; a plain value goes into ``config``."""
    deps: dict[str, Run] = {}
    for name, ref in refs.items():
        if isinstance(ref, Run):
            deps[name] = ref
        else:
            config[name] = ref
    return deps


def _finetune_run(task: TaskSpec, protocol: str, enc: EncoderSpec, ft_seed: int, n: int | None, main: bool,
                  data: Run | str, init: Run | str | list[Run], per_seed: bool) -> Run:
    """One downstream run: ``task``/``protocol`` on the encoder ``init`` (a list: one encoder per
    fold, ``init0``, ``init1``, ...), downstream seed ``ft_seed``, fitted on ``n`` training
    patients per fold (None: all)."""
    tcfg: dict[str, Any] = {
        "task": task.task,
        "protocol": protocol,
        "head": task.head,
        "preset": task.preset,
        "epochs": task.epochs,
        "folds": task.folds,
        "classes": task.classes,
        "granularity": task.granularity,
        "seed": ft_seed,
        **task.extra,
        **enc.config,
    }
    if n is not None:  # absent for "all", so existing runs keep their cache keys
        tcfg["train_patients"] = n
    if isinstance(init, list):  # per-fold pretraining: fold k's encoder is dependency init<k>
        tcfg["fold_inits"] = len(init)
        deps = _link(tcfg, data=data, **{f"init{k}": r for k, r in enumerate(init)})
    else:
        deps = _link(tcfg, data=data, init=init)
    labels = FinetuneLabels(method=enc.label, ratio=enc.ratio, seed=enc.seed, ft_seed=ft_seed, task=task.name,
                            task_kind=task.task, protocol=protocol, main=main, train_patients=n, **enc.labels)  # fmt: skip
    probe = protocol in PROBES
    cost = 0.3 * task.folds if probe else (task.epochs or 50) * task.folds * (1.0 if protocol == "full" else 0.4)
    cost *= 1.5 if task.task == "segment" else 1.0
    if n is not None and not probe:
        cost *= 0.6  # fewer training frames per epoch
    name = f"{enc.label}{'' if enc.ratio is None else f'-r{enc.ratio:g}'}-{task.name}-{protocol}"
    name += f"-n{n}" if n is not None else ""
    name += f"-s{ft_seed}" if per_seed else ""
    return Run("finetune", name, tcfg, labels, deps, cost)


@dataclass
class _Grid:
    """The runs planned so far, keyed by config hash: a run that several others need (a
    dataset, an encoder) is planned once."""

    out: Path
    runs: dict[str, Run] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pre_data: Run | str | None = None  # the pretraining dataset, once resolved

    def add(self, run: Run) -> Run:
        if run.key not in self.runs:
            run.dir = self.out / "runs" / run.dirname
            self.runs[run.key] = run
        return self.runs[run.key]

    def data_ref(self, spec: DatasetSpec | str) -> Run | str:
        """A dataset as a path or the (planned) run that prepares it."""
        if spec == PRETRAIN_DATASET:
            return self.pre_data  # type: ignore[return-value]
        if isinstance(spec, DatasetSpec) and spec.sources:  # union of several sources
            parts = [self.data_ref(s) for s in spec.sources]
            mcfg = {"recipe": MERGE, "names": [s.label for s in spec.sources],
                    "paths": [None if isinstance(p, Run) else p for p in parts]}  # fmt: skip
            deps = {f"source{i}": p for i, p in enumerate(parts) if isinstance(p, Run)}
            return self.add(Run("data", MERGE, mcfg, DataLabels(recipe=MERGE), deps, weight=1.0))
        ref = _data_run(spec)  # type: ignore[arg-type]
        return self.add(ref) if isinstance(ref, Run) else ref


def plan_study(cfg: StudyConfig, out: Path) -> Plan:
    """Expand ``cfg`` into runs in dependency order (data, pretrain, then downstream)."""
    grid = _Grid(out)
    grid.pre_data = grid.data_ref(cfg.pretrain_data)
    encoders: list[EncoderSpec] = []
    for seed in cfg.seeds:
        for backbone in cfg.backbones:
            for method in cfg.methods:
                encoders += method_encoders(cfg, grid.pre_data, grid.notes, method, seed, backbone)
        encoders += init_encoders(cfg, grid.notes, seed)
    for note in overlap_notes(cfg, {e.method for e in encoders}):
        add_note(grid.notes, note)
    _plan_finetunes(cfg, grid, encoders)
    if cfg.embed.enabled:
        _plan_embeds(cfg, grid, encoders)
    ordered = sorted(grid.runs.values(), key=lambda r: KIND_ORDER[r.kind])  # stable within a kind
    return Plan(ordered, grid.notes)


def _fold_count(task: TaskSpec) -> int:
    return 1 if task.extra.get("split") == "fixed" else task.folds


def _fold_encoders(cfg: StudyConfig, grid: _Grid, task: TaskSpec, ft_seed: int, per_seed: bool,
                   enc: EncoderSpec) -> list[Run]:
    """Per-fold pretraining: for each outer fold k of ``task`` (downstream seed ``ft_seed``), a
    data run keeping only the groups outside fold k's test part (the split the fine-tuning
    run makes, computed by the same code) and ``enc``'s pretraining on it."""
    init = enc.init
    assert isinstance(init, Run)
    split = {k: v for k, v in {**task.extra, "task": task.task, "folds": task.folds,
                                "classes": task.classes, "granularity": task.granularity,
                                "seed": ft_seed}.items() if k in SPLIT_KEYS}  # fmt: skip
    base = grid.pre_data
    n = _fold_count(task)
    tag = f"-s{ft_seed}" if per_seed else ""
    runs = []
    for k in range(n):
        scfg: dict[str, Any] = {"recipe": FOLD_TRAIN, "split": split, "fold": k}
        deps = _link(scfg, data=base)
        labels = DataLabels(recipe=FOLD_TRAIN, task=task.name, fold=k, ft_seed=ft_seed)
        sub = grid.add(Run("data", f"{task.name}-f{k}{tag}", scfg, labels, deps, weight=0.5))
        mcfg = {k2: v for k2, v in init.config.items() if k2 != "data"}
        plabels = replace(init.labels, fold=k, fold_of=task.name, ft_seed=ft_seed)
        name = f"{init.name}-{task.name}-f{k}{tag}"
        runs.append(grid.add(Run("pretrain", name, mcfg, plabels, {"data": sub},
                                 pretrain_weight(enc.method, cfg, (n - 1) / n if n > 1 else 0.8))))
    return runs


def _uses_own_labels(cfg: StudyConfig, task: TaskSpec) -> bool:
    return task.dataset == PRETRAIN_DATASET or task.dataset == cfg.pretrain_data


def _plan_finetunes(cfg: StudyConfig, grid: _Grid, encoders: list[EncoderSpec]) -> None:
    """Every task and protocol on the main encoders; the swept (non-main) ratios only on the
    sweep tasks' sweep protocol."""
    sweep = set(cfg.sweep_tasks) if cfg.sweep_tasks is not None else {t.name for t in cfg.tasks}
    for enc in encoders:
        main = enc.ratio is None or enc.ratio == cfg.anatomy_ratio
        for task in cfg.tasks:
            data = grid.data_ref(task.dataset)
            per_fold = task.per_fold(enc.method)
            if enc.method in LABEL_METHODS and not per_fold and _uses_own_labels(cfg, task):
                add_note(grid.notes, f"{enc.label} is pretrained with the labels of {task.name}'s own data, "
                         "its test folds included; set the task's pretrain_per_fold: labels")  # fmt: skip
            for protocol in task.protocols:
                if not main and not (task.name in sweep and protocol == _sweep_protocol(task)):
                    continue
                # label efficiency (train_patients) only for the main encoders
                counts = task.train_patients if main else [None]
                ft_seeds = task.finetune_seeds or cfg.finetune_seeds
                for ft_seed in ft_seeds or [enc.seed]:
                    ref: Run | str | list[Run] = enc.init
                    if per_fold:
                        ref = _fold_encoders(cfg, grid, task, ft_seed, ft_seeds is not None, enc)
                    elif isinstance(enc.init, Run):
                        ref = grid.add(enc.init)
                    for n in counts:
                        grid.add(_finetune_run(task, protocol, enc, ft_seed, n, main, data, ref,
                                               per_seed=ft_seeds is not None))


def _plan_embeds(cfg: StudyConfig, grid: _Grid, encoders: list[EncoderSpec]) -> None:
    """A t-SNE embedding per main encoder of the first seed, on the embed task's data."""
    names = [t.name for t in cfg.tasks]
    etask_name = cfg.embed.task or next((t.name for t in cfg.tasks if t.task == "classify"), names[0])
    etask = cfg.tasks[names.index(etask_name)]
    data = grid.data_ref(etask.dataset)
    for enc in encoders:
        if enc.seed != cfg.seeds[0] or not (enc.ratio is None or enc.ratio == cfg.anatomy_ratio):
            continue
        init = enc.init
        if etask.per_fold(enc.method):  # the first fold's encoder (no pretraining on all the data)
            ft_seeds = etask.finetune_seeds or cfg.finetune_seeds
            init = _fold_encoders(cfg, grid, etask, (ft_seeds or [enc.seed])[0], ft_seeds is not None, enc)[0]
        elif isinstance(init, Run):
            init = grid.add(init)
        ecfg: dict[str, Any] = {
            "max_samples": cfg.embed.max_samples,
            "granularity": etask.granularity,
            "seed": enc.seed,
            **enc.config,
        }
        deps = _link(ecfg, data=data, init=init)
        labels = EmbedLabels(method=enc.label, ratio=enc.ratio, seed=enc.seed, task=etask.name, **enc.labels)
        grid.add(Run("embed", f"{enc.label}-{etask.name}", ecfg, labels, deps, 1.0))
