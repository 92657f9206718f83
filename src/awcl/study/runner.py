"""Expand a study config into a grid of runs, run each once, cache by config hash, resume.

Every run (preparing a dataset, a pretraining, a downstream fine-tuning, an embedding) lives
in ``DIR/runs/<kind>-<name>-<hash>/``; the hash covers the run's resolved config and the
hashes of the runs it depends on, so changing a setting re-runs exactly what it affects. The
run writes into ``<run dir>/run/``; a ``DONE`` file (JSON record, written atomically last)
marks it finished. A run dir without ``DONE`` is a leftover of an interrupted study and is
cleared and redone.

The work itself is done by an :class:`Executors` bundle (the real one calls
``awcl.data``/``awcl.train``/``awcl.evaluate``; tests inject fast stand-ins).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from awcl.atomic import sweep_temps, write_atomic, write_json_atomic
from awcl.evaluate.tasks import TASKS, headline_metric
from awcl.locking import dir_lock
from awcl.study.backends import real_executors
from awcl.study.config import (
    LABEL_METHODS,
    PRETRAIN_DATASET,
    PROBES,
    DatasetSpec,
    StudyConfig,
    TaskSpec,
)
from awcl.study.launch import Serial
from awcl.study.runs import DONE, FOLD_TRAIN, MERGE, RUN_SUBDIR, Executors, Run, RunFn, execute

__all__ = [
    "DONE", "INDEX", "RUN_SUBDIR", "Executors", "Plan", "Run", "RunFn", "StudyResult", "execute",
    "headline", "plan_study", "run_study", "write_index",
]  # fmt: skip

log = logging.getLogger(__name__)

INDEX = "study.json"


@dataclass
class Plan:
    runs: list[Run]
    notes: list[str]


# ------------------------------------------------------------------------ planning
def _abs(p: str | None) -> str | None:
    return str(Path(p).expanduser().resolve()) if p else None


def _data_run(spec: DatasetSpec) -> Run | str:
    """A prepared dataset path (str) or the run that prepares it."""
    if spec.path:
        return _abs(spec.path)  # type: ignore[return-value]
    cfg = {"recipe": spec.recipe, "src": _abs(spec.src), "params": spec.params}
    return Run("data", str(spec.recipe), cfg, labels={"recipe": spec.recipe}, weight=2.0)


def _method_config(method: str, ratio: float | None, seed: int, cfg: StudyConfig) -> dict[str, Any]:
    base, _, gran = method.partition("-")
    p = cfg.pretrain
    out: dict[str, Any] = {
        "method": base,
        "epochs": p.epochs,
        "batch_size": p.batch_size,
        "size": p.size,
        "lr": p.lr,
        "seed": seed,
    }
    if gran:
        out["granularity"] = gran
    if ratio is not None:
        out["anatomy_ratio"] = ratio
    out.update(p.extra)
    return out


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

def _finetune_run(task: TaskSpec, protocol: str, method: str, ratio: float | None, seed: int,
                  ft_seed: int, n: int | None, main: bool, data: Run | str, init: Run | str | list[Run],
                  per_seed: bool) -> Run:
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
    }
    if n is not None:  # absent for "all", so existing runs keep their cache keys
        tcfg["train_patients"] = n
    if isinstance(init, list):  # per-fold pretraining: fold k's encoder is dependency init<k>
        tcfg["fold_inits"] = len(init)
        deps = _link(tcfg, data=data, **{f"init{k}": r for k, r in enumerate(init)})
    else:
        deps = _link(tcfg, data=data, init=init)
    labels = {
        "method": method, "ratio": ratio, "seed": seed, "ft_seed": ft_seed, "task": task.name,
        "task_kind": task.task, "protocol": protocol, "main": main, "train_patients": n,
    }  # fmt: skip
    probe = protocol in PROBES
    cost = 0.3 * task.folds if probe else (task.epochs or 50) * task.folds * (1.0 if protocol == "full" else 0.4)
    cost *= 1.5 if task.task == "segment" else 1.0
    if n is not None and not probe:
        cost *= 0.6  # fewer training frames per epoch
    name = f"{method}{'' if ratio is None else f'-r{ratio:g}'}-{task.name}-{protocol}"
    name += f"-n{n}" if n is not None else ""
    name += f"-s{ft_seed}" if per_seed else ""
    return Run("finetune", name, tcfg, labels, deps, cost)


Encoder = tuple[str, float | None, int, Run | str]  # (method, ratio, seed, init: 'random', weights path or Run)


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
            return self.add(Run("data", MERGE, mcfg, {"recipe": MERGE}, deps, weight=1.0))
        ref = _data_run(spec)  # type: ignore[arg-type]
        return self.add(ref) if isinstance(ref, Run) else ref


def plan_study(cfg: StudyConfig, out: Path) -> Plan:
    """Expand ``cfg`` into runs in dependency order (data, pretrain, then downstream)."""
    grid = _Grid(out)
    grid.pre_data = grid.data_ref(cfg.pretrain_data)
    encoders: list[Encoder] = []
    for seed in cfg.seeds:
        for method in cfg.methods:
            encoders += _encoders(cfg, grid, method, seed)
    _plan_finetunes(cfg, grid, encoders)
    if cfg.embed.enabled:
        _plan_embeds(cfg, grid, encoders)
    order = {"data": 0, "pretrain": 1, "finetune": 2, "embed": 3}
    ordered = sorted(grid.runs.values(), key=lambda r: order[r.kind])  # stable within a kind
    return Plan(ordered, grid.notes)


def _encoders(cfg: StudyConfig, grid: _Grid, method: str, seed: int) -> list[Encoder]:
    """The encoders of one method and seed: random init, ImageNet weights (a note when the
    file is missing), or a pretraining per anatomy ratio."""
    if method == "random":
        return [(method, None, seed, "random")]
    if method == "imagenet":
        w = cfg.imagenet_weights
        if not w or not Path(w).is_file():
            note = (
                f"imagenet skipped: weights file {w!r} not found"
                if w
                else "imagenet skipped: no imagenet_weights file given in the config"
            )
            if note not in grid.notes:
                grid.notes.append(note)
            return []
        return [(method, None, seed, _abs(w))]  # type: ignore[list-item]
    swept = method.startswith("awcl") and (cfg.sweep_methods is None or method in cfg.sweep_methods)
    ratios = cfg.anatomy_ratios if swept else [None]
    if method.startswith("awcl") and not swept:
        ratios = [cfg.anatomy_ratio]
    encoders: list[Encoder] = []
    for r in ratios:
        mcfg = _method_config(method, r, seed, cfg)
        deps = {"data": grid.pre_data} if isinstance(grid.pre_data, Run) else {}
        if isinstance(grid.pre_data, str):
            mcfg["data"] = grid.pre_data
        labels = {"method": method, "seed": seed, "ratio": r}
        # planned (grid.add) only where used: a method pretrained per fold for every task that
        # reads it needs no pretraining on the whole data
        run = Run("pretrain", method if r is None else f"{method}-r{r:g}", mcfg, labels, deps,
                  _pretrain_weight(method, cfg))
        encoders.append((method, r, seed, run))
    return encoders


def _pretrain_weight(method: str, cfg: StudyConfig, share: float = 1.0) -> float:
    return cfg.pretrain.epochs * (3.0 if method != "uscl" else 2.0) * share


# The task settings (finetune config keys, ``extra`` included) that decide its folds; a fold's
# pretraining data is cut with exactly these (awcl.evaluate.folds.SPLIT_FIELDS, by study name).
SPLIT_KEYS = ("task", "folds", "classes", "granularity", "seed", "label", "group", "split",
              "val_fraction", "max_per_video")  # fmt: skip


def _fold_count(task: TaskSpec) -> int:
    return 1 if task.extra.get("split") == "fixed" else task.folds


def _fold_encoders(cfg: StudyConfig, grid: _Grid, task: TaskSpec, ft_seed: int, per_seed: bool,
                   enc: Encoder) -> list[Run]:
    """Per-fold pretraining: for each outer fold k of ``task`` (downstream seed ``ft_seed``), a
    data run keeping only the groups outside fold k's test part (the split the fine-tuning
    run makes, computed by the same code) and ``enc``'s pretraining on it."""
    method, _, _, init = enc
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
        labels = {"recipe": FOLD_TRAIN, "task": task.name, "fold": k, "ft_seed": ft_seed}
        sub = grid.add(Run("data", f"{task.name}-f{k}{tag}", scfg, labels, deps, weight=0.5))
        mcfg = {k2: v for k2, v in init.config.items() if k2 != "data"}
        plabels = {**init.labels, "fold": k, "fold_of": task.name, "ft_seed": ft_seed}
        name = f"{init.name}-{task.name}-f{k}{tag}"
        runs.append(grid.add(Run("pretrain", name, mcfg, plabels, {"data": sub},
                                 _pretrain_weight(method, cfg, (n - 1) / n if n > 1 else 0.8))))
    return runs


def _uses_own_labels(cfg: StudyConfig, task: TaskSpec) -> bool:
    return task.dataset == PRETRAIN_DATASET or task.dataset == cfg.pretrain_data


def _plan_finetunes(cfg: StudyConfig, grid: _Grid, encoders: list[Encoder]) -> None:
    """Every task and protocol on the main encoders; the swept (non-main) ratios only on the
    sweep tasks' sweep protocol."""
    sweep = set(cfg.sweep_tasks) if cfg.sweep_tasks is not None else {t.name for t in cfg.tasks}
    for enc in encoders:
        method, ratio, seed, init = enc
        main = ratio is None or ratio == cfg.anatomy_ratio
        for task in cfg.tasks:
            data = grid.data_ref(task.dataset)
            per_fold = task.per_fold(method)
            if method in LABEL_METHODS and not per_fold and _uses_own_labels(cfg, task):
                _note(grid, f"{method} is pretrained with the labels of {task.name}'s own data, its "
                      "test folds included; set the task's pretrain_per_fold: labels")  # fmt: skip
            for protocol in task.protocols:
                if not main and not (task.name in sweep and protocol == _sweep_protocol(task)):
                    continue
                # label efficiency (train_patients) only for the main encoders
                counts = task.train_patients if main else [None]
                ft_seeds = task.finetune_seeds or cfg.finetune_seeds
                for ft_seed in ft_seeds or [seed]:
                    ref: Run | str | list[Run] = init
                    if per_fold:
                        ref = _fold_encoders(cfg, grid, task, ft_seed, ft_seeds is not None, enc)
                    elif isinstance(init, Run):
                        ref = grid.add(init)
                    for n in counts:
                        grid.add(_finetune_run(task, protocol, method, ratio, seed, ft_seed, n, main,
                                               data, ref, per_seed=ft_seeds is not None))


def _note(grid: _Grid, text: str) -> None:
    if text not in grid.notes:
        grid.notes.append(text)


def _plan_embeds(cfg: StudyConfig, grid: _Grid, encoders: list[Encoder]) -> None:
    """A t-SNE embedding per main encoder of the first seed, on the embed task's data."""
    names = [t.name for t in cfg.tasks]
    etask_name = cfg.embed.task or next((t.name for t in cfg.tasks if t.task == "classify"), names[0])
    etask = cfg.tasks[names.index(etask_name)]
    data = grid.data_ref(etask.dataset)
    for enc in encoders:
        method, ratio, seed, init = enc
        if seed != cfg.seeds[0] or not (ratio is None or ratio == cfg.anatomy_ratio):
            continue
        if etask.per_fold(method):  # the first fold's encoder (no pretraining on all the data)
            ft_seeds = etask.finetune_seeds or cfg.finetune_seeds
            init = _fold_encoders(cfg, grid, etask, (ft_seeds or [seed])[0], ft_seeds is not None, enc)[0]
        elif isinstance(init, Run):
            init = grid.add(init)
        ecfg: dict[str, Any] = {
            "max_samples": cfg.embed.max_samples,
            "granularity": etask.granularity,
            "seed": seed,
        }
        deps = _link(ecfg, data=data, init=init)
        labels = {"method": method, "ratio": ratio, "seed": seed, "task": etask.name}
        grid.add(Run("embed", f"{method}-{etask.name}", ecfg, labels, deps, 1.0))


# ------------------------------------------------------------------------ running
def _describe(run: Run) -> str:
    lab = run.labels
    bits = [f"{k}={lab[k]}" for k in ("seed",) if k in lab and len(str(lab[k])) < 20]
    return f"{run.kind:<8} {run.name} ({', '.join(bits)})" if bits else f"{run.kind:<8} {run.name}"


def headline(run: Run, result: dict[str, Any]) -> str:
    """A short result summary for the per-run line."""
    if run.kind == "finetune" and result.get("folds"):
        import numpy as np

        folds = result["folds"]
        kind = run.labels.get("task_kind") or result.get("task")
        head = headline_metric(kind) if kind in TASKS else None  # the report's metric too
        metric = head if head in folds[0] else next(iter(folds[0]))
        vals = [f[metric] for f in folds if isinstance(f.get(metric), (int, float))]
        return f"{metric} {np.mean(vals):.3f} ± {np.std(vals):.3f} over {len(vals)} folds"
    if run.kind == "pretrain" and "final_loss" in result:
        text = f"final loss {result['final_loss']:.4f}"
        if result.get("knn_acc_init") is not None and result.get("knn_acc") is not None:
            text += f", kNN {result['knn_acc_init']:.3f} (step 0) -> {result['knn_acc']:.3f}"
        return text
    if run.kind == "data" and "frames" in result:
        return f"{result['frames']} frames"
    return ""


@dataclass
class StudyResult:
    out: Path
    plan: Plan
    computed: list[str]  # dirnames of runs computed in this call
    cached: list[str]  # dirnames of runs found finished


def write_index(cfg: StudyConfig, plan: Plan, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    index = {
        "name": cfg.name,
        "source": cfg.source,
        "anatomy_ratio": cfg.anatomy_ratio,
        "notes": plan.notes,
        "runs": [
            {"kind": r.kind, "name": r.name, "key": r.key, "dir": r.dirname, "labels": r.labels,
             "deps": {role: d.dirname for role, d in r.deps.items()}}
            for r in plan.runs
        ],
    }  # fmt: skip
    write_json_atomic(out / INDEX, index, indent=2, sort_keys=True, default=str)
    write_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_study(
    cfg: StudyConfig,
    out: str | os.PathLike,
    executors: Executors | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    launcher: Any = None,
    kinds: tuple[str, ...] | None = None,
) -> StudyResult:
    """Run every run of the study that is not finished yet; return what was done.

    A progress bar covers the whole grid (weighted by each run's rough cost, so its time
    remaining is meaningful); one line is printed per finished run. ``launcher`` (see
    :mod:`awcl.study.launch`) decides where runs execute: one after another here (default),
    ``--jobs N`` processes on this machine, or cluster jobs. ``kinds``: run only the runs of
    these kinds (e.g. ``("data",)``: prepare the datasets, as ``--plan --prepare`` does).
    """
    out = Path(out)
    if executors is None:
        executors = real_executors()
    # one study process per directory: a second one would delete the first one's unfinished
    # run folders as leftovers of an interrupted study
    with dir_lock(out / ".awcl-study.lock", f"study directory {out}"):
        for folder in (out, out / "report_files", out / "runs"):  # temporaries of a killed earlier study
            sweep_temps(folder)
        return _run_locked(cfg, out, executors, progress, echo, launcher, kinds)


def _run_locked(cfg: StudyConfig, out: Path, executors: Executors, progress: bool,
                echo: Callable[[str], None] | None, launcher: Any,
                kinds: tuple[str, ...] | None = None) -> StudyResult:
    plan = plan_study(cfg, out)
    write_index(cfg, plan, out)
    say = echo or tqdm.write
    for note in plan.notes:
        say(f"note: {note}")
    cached = [r for r in plan.runs if r.done]
    todo = [r for r in plan.runs if not r.done and (kinds is None or r.kind in kinds)]
    say(
        f"study {cfg.name}: {len(plan.runs)} runs, {len(cached)} already finished, "
        f"{len(todo)} to run -> {out}"
    )
    bar = _progress_bar(cfg.name, plan.runs, cached, progress)
    computed: list[str] = []
    active: list[str] = []

    def started(run: Run) -> None:
        active.append(f"{run.kind} {run.name}")
        bar.set_description_str(f"{cfg.name} | {' + '.join(active)}"[:60])

    def finished(run: Run, rec: dict[str, Any]) -> None:
        active.remove(f"{run.kind} {run.name}")
        computed.append(run.dirname)
        bar.update(min(run.weight, max(0.0, bar.total - bar.n)))  # float sums may overshoot
        line = f"done {_describe(run)}  {rec['seconds']:.1f}s"
        h = headline(run, rec.get("result", {}))
        say(f"{line}  {h}" if h else line)

    if launcher is None:
        launcher = Serial()
    try:
        launcher.run(todo, executors, started, finished)
    finally:
        bar.close()
    return StudyResult(out, plan, computed, [r.dirname for r in cached])


def _progress_bar(name: str, runs: list[Run], cached: list[Run], progress: bool) -> Any:
    """A tqdm bar over the grid's total weight, starting at what is already finished."""
    return tqdm(
        total=sum(r.weight for r in runs),
        initial=sum(r.weight for r in cached),
        disable=not progress,
        smoothing=0,  # runs differ a lot; the average rate gives a steadier ETA
        unit="w",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        desc=name,
    )
