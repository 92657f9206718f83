"""``awcl study CONFIG --plan``: every run a study would make, each with its estimated time on
this machine, and the total, without running anything.

The estimate is work / throughput:

* **throughput**: images per second of one ResNet-18 training step (forward + backward +
  update) at the run's frame size and thread count, as the precision probe measured it on this
  CPU (``awcl.runtime.precision``, cached in ``precision.json``), for the precision the run will
  use. A size the probe has not timed is scaled by pixel count from the nearest timed size on
  the same CPU and thread count (said so), or reported as *not timed yet* (``--time`` times it
  once, a few seconds per size, and caches it like any run would).
* **work**, in training-step images: a pretraining run's steps (its method's real batch sampler
  on the prepared data, epochs and ``max_steps``) x batch x views, plus its kNN monitor's
  forward passes; a fine-tuning run's epochs (or iterations) x fitting frames per fold x folds,
  plus one forward pass per validation frame and epoch and per test frame; a probe or the
  frozen features of ``partial``: one forward pass per frame. A forward pass counts as
  ``FORWARD`` (1/3) of a training-step image. Frame counts come from the prepared datasets
  (``--prepare`` runs the data runs first when they are not cached yet); the selection and
  folds are those the fine-tuning run makes (awcl.evaluate.folds).
* ``FACTOR`` (data loading, augmentation, heads, the U-Net decoder), ``START_S`` (start-up per
  run) and ``FOLD_S`` (per fold of full fine-tuning) are rough constants on top; preparing a
  dataset from a recipe is a constant ``RECIPE_S`` (it decodes videos or images, which the
  probe does not time). For finished runs the plan prints the time they took beside the
  estimate, and the ratio of the sums: the estimate's check on this machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awcl.errors import AwclError
from awcl.study.config import StudyConfig
from awcl.study.runs import FOLD_TRAIN, MERGE, Run

FORWARD = 1 / 3  # a forward pass (no backward, no update) in training-step images
# on top of the encoder step; segment measured: HC18 112x144 full fine-tuning took 5.1-5.4 min
# where 1.6 estimated 3.7 (2026-12-04, Xeon AMX), so the U-Net decoder costs ~2.3x the encoder step
FACTOR = {"pretrain": 1.2, "classify": 1.2, "segment": 2.3}
HEAD_ONLY = 0.02  # training a head on frozen features, per training-step image
START_S = {"data": 0.5, "pretrain": 4.0, "finetune": 1.0, "embed": 2.0}  # start-up per run
FOLD_S = 2.0  # start-up per fold of full fine-tuning (a trainer per fold)
RECIPE_S = {"phantom": 10.0}  # preparing a dataset from a recipe (not timed: decoding
RECIPE_DEFAULT_S = 60.0  # videos or images); the phantom is drawn, not decoded
COPY_S = 2e-4  # seconds per frame copied (merge, fold subsets)
TSNE_S = 10.0  # an embedding's t-SNE


@dataclass
class Estimate:
    run: Run
    seconds: float | None  # None: not estimated (see ``why``)
    work: str  # what was counted, e.g. "120 steps x 32 x 2 views"
    why: str = ""  # why not estimated, or where the throughput came from
    took: float | None = None  # a cached run: the seconds its DONE record says it took


@dataclass
class PlanEstimate:
    name: str
    estimates: list[Estimate]
    notes: list[str]
    machine: str
    rates: dict[str, str] = field(default_factory=dict)  # "HxW, N threads" -> "x img/s (source)"

    @property
    def todo(self) -> list[Estimate]:
        return [e for e in self.estimates if not e.run.done]

    @property
    def total_s(self) -> float:
        return sum(e.seconds or 0.0 for e in self.todo)

    @property
    def missing(self) -> list[Estimate]:
        return [e for e in self.todo if e.seconds is None]

    def cached_pairs(self) -> list[tuple[float, float]]:
        """(estimate, seconds taken) of each cached run that has both: the estimate's check."""
        return [(e.seconds, e.took) for e in self.estimates
                if e.run.done and e.seconds is not None and e.took is not None]  # fmt: skip


# ------------------------------------------------------------------------- throughput
class Rates:
    """Training-step img/s at a frame size, from the precision probe's cache (``probe``: time
    a size not cached yet, once, as the first run at that size would)."""

    def __init__(self, probe: bool = False):
        self.probe = probe
        self.seen: dict[str, str] = {}
        self._memo: dict[tuple, tuple[float, str] | None] = {}

    def get(self, size: tuple[int, int], threads: int, precision: str = "auto") -> tuple[float, str] | None:
        key = (tuple(size), threads, precision)
        if key not in self._memo:
            self._memo[key] = self._lookup(tuple(size), threads, precision)  # type: ignore[arg-type]
            got = self._memo[key]
            self.seen[f"{size[0]}x{size[1]}, {threads} thread(s)"] = (
                f"{got[0]:.1f} img/s ({got[1]})" if got else "not timed yet")
        return self._memo[key]

    def _lookup(self, size: tuple[int, int], threads: int, precision: str) -> tuple[float, str] | None:
        from awcl.runtime import precision as prec

        entry = prec._read_cache().get(prec._cache_key(size, threads))
        if entry is None and self.probe:
            import torch

            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                prec.choose("auto", "cpu", size, probe=True)  # times and caches this size
            finally:
                torch.set_num_threads(old)
            entry = prec._read_cache().get(prec._cache_key(size, threads))
        if entry is not None:
            return _rate(entry, precision), f"timed at {size[0]}x{size[1]}"
        return self._scaled(size, threads, precision)

    @staticmethod
    def _scaled(size: tuple[int, int], threads: int, precision: str) -> tuple[float, str] | None:
        """The nearest timed size of this CPU and thread count, scaled by pixel count."""
        from awcl.runtime import precision as prec

        cpu = prec.describe_cpu()
        same = [e for e in prec._read_cache().values()
                if isinstance(e, dict) and e.get("cpu") == cpu and e.get("threads") == threads
                and e.get("size") and e.get("rates")]  # fmt: skip
        if not same:
            return None
        pix = size[0] * size[1]
        near = min(same, key=lambda e: abs(math.log(e["size"][0] * e["size"][1] / pix)))
        h, w = near["size"]
        return _rate(near, precision) * h * w / pix, f"scaled from {h}x{w}"


def _rate(entry: dict[str, Any], precision: str) -> float:
    """img/s of the candidate a run uses: the probe's choice under ``auto``, else the named one."""
    from awcl.runtime.precision import cpu_features, decide

    rates = entry["rates"]
    if precision not in ("auto", None):
        name = ("32-true" if precision == "32" else precision) + "+channels_last"
        if name in rates:
            return float(rates[name])
    p, cl = decide(rates, cpu_features())
    return float(rates.get(f"{p}{'+channels_last' if cl else ''}", max(rates.values())))


# ------------------------------------------------------------------------- work per run
def _data_of(run: Run) -> tuple[str | None, float]:
    """The prepared dataset a run reads (None: not prepared yet) and the share of it: an
    unprepared fold subset counts as its prepared source times (folds - 1) / folds."""
    dep = run.deps.get("data")
    if dep is None:
        p = run.config.get("data")
        return (str(p), 1.0) if p and Path(str(p), "dataset.json").is_file() else (None, 1.0)
    if dep.done:
        return str(dep.output), 1.0
    if dep.config.get("recipe") == FOLD_TRAIN:
        src, share = _data_of(dep)
        split = dep.config.get("split", {})
        n = 1 if split.get("split") == "fixed" else int(split.get("folds", 3))
        return src, share * ((n - 1) / n if n > 1 else 0.8)
    return None, 1.0


def _threads(run: Run) -> int:
    import torch

    t = run.config.get("threads")
    if t:
        return int(t)
    if run.kind == "pretrain" and hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))  # pretraining's default: the cores it may use
    return torch.get_num_threads()


def _pretrain_work(run: Run, data: str, share: float) -> tuple[float, float, tuple[int, int], str]:
    """(training-step images, forward images, size, description) of a pretraining run."""
    from awcl.config import build
    from awcl.data.pairs import FrameIndex
    from awcl.data.store import open_dataset
    from awcl.methods import build_method
    from awcl.train.pretrain import PretrainConfig, _held_out

    ds = open_dataset(data)
    values = {k: v for k, v in run.config.items() if v is not None and k != "data"}
    values.setdefault("size", ds.size)
    cfg = build(PretrainConfig, {"data": data, "out": "plan", **values}, f"pretrain {run.name}")
    index = FrameIndex.from_dataset(ds, cfg.granularity, cfg.ignore_labels, hide=_held_out(ds, cfg))
    method = build_method(cfg.method, cfg, index)
    steps = len(method.sampler(cfg.batch_size, cfg.seed, 1, 0)) * share * cfg.epochs
    if cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    images = steps * cfg.batch_size * method.views
    fwd = 0.0
    if cfg.monitor_fraction > 0:  # kNN monitor: bank + query at step 0, epoch ends, every N steps
        evals = 1 + cfg.epochs + (steps // cfg.monitor_every_n_steps if cfg.monitor_every_n_steps else 0)
        fwd = evals * min(2 * cfg.monitor_max, len(ds))
    desc = f"{steps:,.0f} steps x {cfg.batch_size} x {method.views} view(s)"
    return images, fwd, tuple(cfg.size), desc  # type: ignore[return-value]


def _finetune_work(run: Run, data: str) -> tuple[float, float, tuple[int, int], str, int]:
    """(training-step images, forward images, size, description, folds) of a downstream run."""
    from awcl.config import build
    from awcl.data.store import open_dataset
    from awcl.evaluate.finetune import FinetuneConfig
    from awcl.evaluate.folds import task_folds
    from awcl.study.backends import _finetune_values

    values = _finetune_values(run.config)
    if run.config.get("fold_inits"):
        values["fold_inits"] = ["plan"] * int(run.config["fold_inits"])
    cfg = build(FinetuneConfig, {"data": data, "out": "plan", **values}, f"task {run.name}")
    ds = open_dataset(data)
    folds, groups = task_folds(cfg, ds)
    size = tuple(cfg.size) if cfg.size else ds.size
    every = len(groups) * (len(folds) if cfg.fold_inits else 1)  # frozen features
    if cfg.protocol in ("knn", "linear-probe"):
        return 0.0, every, size, f"{len(groups):,} frames, one forward pass each", len(folds)  # type: ignore[return-value]
    p = cfg.resolved_preset()
    train = fwd = 0.0
    for f in folds:
        per_epoch = max(1, math.ceil(len(f.train) / p.batch_size))
        steps = p.iterations if p.iterations else p.epochs * per_epoch
        train += steps * p.batch_size
        fwd += steps / per_epoch * len(f.val) + len(f.test)
    fits = "+".join(str(len(f.train)) for f in folds)
    desc = (f"{p.iterations:,} iterations" if p.iterations else f"{p.epochs} epochs") + f" x {fits} frames"
    if cfg.protocol == "partial":  # frozen features once (per fold with per-fold encoders), head only
        return train * HEAD_ONLY, every, size, desc + " (head only)", len(folds)  # type: ignore[return-value]
    return train, fwd, size, desc, len(folds)  # type: ignore[return-value]


def _data_estimate(run: Run) -> Estimate:
    """A recipe: a constant; a merge or fold subset: a copy of its sources' frames."""
    from awcl.data.store import open_dataset

    recipe = run.config.get("recipe")
    if recipe not in (FOLD_TRAIN, MERGE):
        s = RECIPE_S.get(str(recipe), RECIPE_DEFAULT_S)
        return Estimate(run, START_S["data"] + s, f"recipe {recipe} (a constant, not timed)")
    if not all(d.done for d in run.deps.values()):
        return Estimate(run, None, str(recipe), "data not prepared yet")
    paths = [str(d.output) for d in run.deps.values()]
    paths += [str(p) for p in [run.config.get("data"), *(run.config.get("paths") or [])] if p]
    frames = sum(len(open_dataset(p)) for p in paths)
    return Estimate(run, START_S["data"] + COPY_S * frames, f"copy of up to {frames:,} frames")


def estimate_run(run: Run, rates: Rates) -> Estimate:
    """The time ``run`` would take on this machine (see the module docstring)."""
    try:
        return _data_estimate(run) if run.kind == "data" else _estimate_run(run, rates)
    except AwclError as err:  # e.g. a dataset that cannot be read, a task that cannot split
        return Estimate(run, None, "", f"cannot be planned: {err}")


def _estimate_run(run: Run, rates: Rates) -> Estimate:
    data, share = _data_of(run)
    if data is None:
        return Estimate(run, None, "", "data not prepared yet")
    if run.kind == "pretrain":
        images, fwd, size, work = _pretrain_work(run, data, share)
        factor, extra = FACTOR["pretrain"], START_S["pretrain"]
    elif run.kind == "finetune":
        images, fwd, size, work, nfolds = _finetune_work(run, data)
        factor = FACTOR.get(str(run.config.get("task")), 1.2)
        extra = START_S["finetune"] + (FOLD_S * nfolds if run.config.get("protocol") == "full" else 0.0)
    else:  # embed
        from awcl.data.store import open_dataset

        ds = open_dataset(data)
        n = min(int(run.config.get("max_samples", 500)), len(ds))
        images, fwd, size, work = 0.0, float(n), ds.size, f"{n} frames, one forward pass each"
        factor, extra = 1.0, START_S["embed"] + TSNE_S
    rate = rates.get(size, _threads(run), str(run.config.get("precision", "auto")))
    if rate is None:
        return Estimate(run, None, work, f"not timed yet at {size[0]}x{size[1]}")
    img_s, source = rate
    seconds = extra + factor * (images + FORWARD * fwd) / img_s
    return Estimate(run, seconds, work, f"{img_s:.1f} img/s at {size[0]}x{size[1]} ({source})")


# ------------------------------------------------------------------------- the plan
def estimate_study(cfg: StudyConfig, out: str | os.PathLike, probe: bool = False) -> PlanEstimate:
    """Every run :func:`~awcl.study.runner.plan_study` makes for ``cfg`` in ``out``, with its
    estimated seconds (finished runs are marked by ``run.done`` and not counted)."""
    from awcl.runtime.precision import describe_cpu
    from awcl.study.runner import plan_study

    plan = plan_study(cfg, Path(out))
    rates = Rates(probe)
    estimates = []
    for run in plan.runs:
        e = estimate_run(run, rates)
        if run.done:
            try:
                e.took = run.record().seconds
            except (OSError, ValueError, TypeError, KeyError, AwclError):
                pass
        estimates.append(e)
    notes = list(plan.notes)
    import torch

    if torch.cuda.is_available():
        notes.append("a GPU is available: runs with accelerator auto use it, the estimates are for this CPU")
    return PlanEstimate(cfg.name, estimates, notes, describe_cpu(), rates.seen)


def _fmt_s(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def plan_text(p: PlanEstimate) -> str:
    """The plan as printed by ``awcl study CONFIG --plan``."""
    todo, cached = p.todo, len(p.estimates) - len(p.todo)
    lines = [f"study {p.name}: {len(p.estimates)} runs, {cached} cached, {len(todo)} to run",
             f"machine: {p.machine}"]  # fmt: skip
    lines += [f"throughput: {k}: {v}" for k, v in p.rates.items()]
    lines += [f"note: {n}" for n in p.notes]
    lines.append("")
    lines.append(f"{'':9}{'kind':<9}{'run':<44}{'estimate':>10}{'took':>10}  work")
    for e in p.estimates:
        mark = "[cached]" if e.run.done else ""
        est = _fmt_s(e.seconds) if e.seconds is not None else "?"
        took = _fmt_s(e.took) if e.took is not None else ""
        why = e.why if e.seconds is None else ""
        work = "; ".join(x for x in (e.work, why) if x)
        lines.append(f"{mark:<9}{e.run.kind:<9}{e.run.name:<44}{est:>10}{took:>10}  {work}")
    lines.append("")
    pairs = p.cached_pairs()
    if pairs:
        est, took = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        ratio = f"estimate / actual = {est / took:.2f}" if took > 0 else "too fast to compare"
        lines.append(f"cached runs: estimated {_fmt_s(est)}, took {_fmt_s(took)} "
                     f"({ratio} over {len(pairs)} runs)")  # fmt: skip
    total = f"estimated total: {_fmt_s(p.total_s)} for {len(todo) - len(p.missing)} run(s) to run on this machine"
    if p.missing:
        total += f"; {len(p.missing)} not estimated (marked ?)"
        if any("not prepared" in e.why for e in p.missing):
            total += " — `--plan --prepare` prepares the datasets first (cached runs)"
        if any("not timed" in e.why for e in p.missing):
            total += " — `--plan --time` times the missing frame sizes once"
    lines.append(total)
    return "\n".join(lines)
