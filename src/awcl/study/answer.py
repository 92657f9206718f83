"""The study's answer up front: the paper's three questions (pretrained vs random, AWCL vs
SimCLR, fine vs coarse) answered from the report's paired differences, a forest plot of every
pairwise difference, and each pretraining run's compute (steps, views seen, schedule, kNN).

With several backbones each question is answered within a backbone (``simclr@convnext_atto``
against ``random@convnext_atto``); a row pretrained on a task's own data set (an init's declared
data, :mod:`awcl.study.overlap`) is said to be so.

Plain data in, plain data out (sentences, table rows, PNG bytes): ``awcl.study.report`` computes
the paired differences (:func:`awcl.study.report.pairwise_tables`, one bootstrap) and wraps
what this module returns into its sections.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from awcl.evaluate.summary import monitor_change
from awcl.methods import INITS, METHODS, STUDY_METHODS
from awcl.study.names import split_row
from awcl.study.records import PretrainLabels, PretrainResult

PROTOCOL_NAMES = {"full": "full fine-tuning", "partial": "partial fine-tuning", "knn": "kNN probe",
                  "linear-probe": "linear probe"}  # fmt: skip
FOREST_FILE = "forest.png"
FOREST_CAPTION = ("Forest plot: every pairwise difference of the headline metric with its 95% "
                  "paired-bootstrap interval over test patients (filled: the interval excludes 0)")  # fmt: skip


@dataclass
class Comparison:
    """One row of the report's pairwise tables: metric(a) − metric(b) on the same test frames."""

    task: str
    protocol: str
    metric: str  # key, e.g. "f1"
    label: str  # how the report names the metric, e.g. "macro-F1"
    lower_better: bool
    a: str
    b: str
    diff: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def a_better(self) -> bool:
        return (self.diff < 0) if self.lower_better else (self.diff > 0)

    def flipped(self) -> Comparison:
        """The same comparison read as metric(b) − metric(a)."""
        return Comparison(self.task, self.protocol, self.metric, self.label, self.lower_better,
                          self.b, self.a, -self.diff, -self.hi, -self.lo)  # fmt: skip

    def text(self) -> str:
        """``a − b = +0.131 [+0.057, +0.201], significant (a better)``."""
        verdict = (f"significant ({self.a if self.a_better else self.b} better)" if self.significant
                   else "not significant")  # fmt: skip
        return f"{self.a} − {self.b} = {self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}], {verdict}"


def _where(c: Comparison) -> str:
    return f"{c.task} ({PROTOCOL_NAMES.get(c.protocol, c.protocol)}, {c.label})"


def _groups(comps: list[Comparison]) -> dict[tuple[str, str], list[Comparison]]:
    out: dict[tuple[str, str], list[Comparison]] = {}
    for c in comps:
        out.setdefault((c.task, c.protocol), []).append(c)
    return out


def _pair(comps: list[Comparison], a: str, b: str) -> Comparison | None:
    """The comparison of ``a`` and ``b`` in one (task, protocol) group, read as a − b."""
    for c in comps:
        if (c.a, c.b) == (a, b):
            return c
        if (c.a, c.b) == (b, a):
            return c.flipped()
    return None


def _rows(comps: list[Comparison], backbones: dict[str, str] | None) -> list[dict[str, str]]:
    """The rows one group compares, per backbone: {method or init name: row name}. A row's
    backbone is ``backbones[row]`` when given (the report's, from the study's labels), else read
    from its name (``simclr@convnext_atto``; untagged: ResNet-18)."""
    out: dict[str, dict[str, str]] = {}
    for name in dict.fromkeys(m for c in comps for m in (c.a, c.b)):
        base, bb = split_row(name)
        out.setdefault((backbones or {}).get(name, bb), {})[base] = name
    return list(out.values())


def _vs_random(comps: list[Comparison], backbones: dict[str, str] | None = None) -> str | None:
    """One group's pretrained-vs-random clause: per backbone, the best pretrained encoder (study
    methods, ImageNet, inits and other names, pretrained by assumption) against random init of
    the same backbone, and the tally."""
    parts, first = [], None
    for rows in _rows(comps, backbones):
        if "random" not in rows:
            continue
        names = [m for m in (*STUDY_METHODS[len(INITS):], "imagenet") if m in rows]
        names += sorted(b for b in rows if b not in STUDY_METHODS)
        vs = [c for m in names if (c := _pair(comps, rows[m], rows["random"])) is not None]
        if not vs:
            continue
        best = min(vs, key=lambda c: c.diff) if vs[0].lower_better else max(vs, key=lambda c: c.diff)
        up = sum(c.significant and c.a_better for c in vs)
        down = sum(c.significant and not c.a_better for c in vs)
        tally = f"; best of {len(vs)} pretrained, {up} significantly better than random, {down} worse"
        parts.append(best.text() + (tally if len(vs) > 1 else ""))
        first = first or best
    return f"{_where(first)}: " + "; ".join(parts) if first else None


def _pairs_clause(comps: list[Comparison], pairs: list[tuple[str, str]],
                  backbones: dict[str, str] | None = None) -> str | None:
    """``a − b`` for each pair of names, within each backbone."""
    found = [c for rows in _rows(comps, backbones) for a, b in pairs
             if a in rows and b in rows and (c := _pair(comps, rows[a], rows[b])) is not None]  # fmt: skip
    if not found:
        return None
    return f"{_where(found[0])}: " + "; ".join(c.text() for c in found)


def _with_overlap(text: str, task: str, overlap: dict[tuple[str, str], str]) -> str:
    """A clause naming a row pretrained on this task's data set, with that said."""
    for (row, t), note in overlap.items():
        if t == task and (f"{row} − " in text or f"− {row} =" in text):
            text += f" — {note}"
    return text


def overlap_paragraph(comps: list[Comparison], overlap: dict[tuple[str, str], str]) -> str | None:
    """**Data overlap.** Each compared row that was pretrained on a task's own data set
    (:func:`awcl.study.overlap.overlap_marks`), or None."""
    names = {m for c in comps for m in (c.a, c.b)}
    tasks = list(dict.fromkeys(c.task for c in comps))
    flagged = [f"{note} of task {t}" for t in tasks for (row, tt), note in overlap.items() if tt == t and row in names]
    if not flagged:
        return None
    return ("**Data overlap.** " + "; ".join(flagged) + ": those rows are not transfer to unseen data, "
            "and their differences above overstate it.")


def answer_paragraphs(comps: list[Comparison], overlap: dict[tuple[str, str], str] | None = None,
                      backbones: dict[str, str] | None = None) -> list[str]:
    """The answer, one paragraph per question with a clause per task and protocol (per backbone
    within it); a question whose methods the study lacks is left out.

    ``overlap``: (row, task) -> note, for rows pretrained on a task's own data set
    (:func:`awcl.study.overlap.overlap_marks`): said in the clauses that name them and in a last
    paragraph. ``backbones``: row -> backbone (:func:`awcl.study.names.row_backbones`), so an
    init is compared with random init of its own backbone; without it, names are read."""
    granular = [b for b, cls in METHODS.items() if cls.granular]
    fine_coarse = [(f"{b}-fine", f"{b}-coarse") for b in sorted(granular, key=lambda b: b != "awcl")]
    awcl_simclr = [("awcl-fine", "simclr"), ("awcl-coarse", "simclr")]
    questions = [
        ("Pretrained vs random", lambda g: _vs_random(g, backbones)),
        ("AWCL vs SimCLR", lambda g: _pairs_clause(g, awcl_simclr, backbones)),
        ("Fine vs coarse", lambda g: (_pairs_clause(g, fine_coarse[:1], backbones)
                                      or _pairs_clause(g, fine_coarse[1:], backbones))),
    ]  # fmt: skip
    out = []
    groups = _groups(comps)
    for title, clause in questions:
        parts = [_with_overlap(p, task, overlap or {}) for (task, _), g in groups.items()
                 if (p := clause(g)) is not None]  # fmt: skip
        if parts:
            out.append(f"**{title}.** " + ". ".join(parts) + ".")
    note = overlap_paragraph(comps, overlap or {})
    if note:
        out.append(note)
    return out


# --------------------------------------------------------------------------- compute
@dataclass
class Compute:
    """What one pretraining run cost and where its kNN monitor ended."""

    method: str
    ratio: float | None
    seed: Any
    steps: int | None
    views_seen: int | None
    lr_schedule: str | None
    warmup: float | None
    knn_init: float | None
    knn_final: float | None
    crossover: int | None
    granularity: str | None = None  # the labels the monitor scores
    # the other granularity on the same frames: name -> (step-0 value, final value)
    other: dict[str, tuple[float, float]] = field(default_factory=dict)
    # final - step 0 with its 95% interval over the monitor's held-out patients, and their number
    change: tuple[float, float, float, int] | None = None

    @property
    def below_init(self) -> bool:
        return self.knn_init is not None and self.knn_final is not None and self.knn_final < self.knn_init

    def other_below_init(self) -> list[tuple[str, float, float]]:
        """(granularity, final, step-0) of each other label set that ended below its step 0."""
        return [(g, b, a) for g, (a, b) in self.other.items() if b < a]


def crossover(curve: list[tuple[int, float]]) -> int | None:
    """The first monitored step from which kNN accuracy stays at or above its step-0 value;
    None when the last point is below it or there is no step-0 point (as
    ``awcl.train.pretrain.crossover_step``; used for runs whose summary lacks it)."""
    pts = sorted(curve)
    if not pts or pts[0][0] != 0:
        return None
    cross = None
    for st, a in pts[1:]:
        if a < pts[0][1]:
            cross = None
        elif cross is None:
            cross = st
    return cross


def run_compute(labels: PretrainLabels, result: PretrainResult,
                curve: list[tuple[int, float]] | None) -> Compute:
    """A pretraining run's :class:`Compute` from its DONE ``result`` (summary.json's numbers);
    ``curve`` (step, kNN accuracy) from its history fills what an older result lacks."""
    curve = [tuple(p) for p in (result.knn_curve or curve or [])]  # type: ignore[misc]
    init, final = result.knn_acc_init, result.knn_acc
    if init is None and curve and curve[0][0] == 0:
        init = curve[0][1]
    if final is None and curve:
        final = curve[-1][1]
    steps = result.steps if result.steps is not None else (curve[-1][0] if curve else None)
    # a run that never crossed has None: recomputed from its curve, the same answer
    cross = result.knn_crossover_step if result.knn_crossover_step is not None else crossover(curve)  # type: ignore[arg-type]
    method = str(labels.method)
    if labels.fold is not None:  # per-fold pretraining: one run per fold of a task
        method += f" ({labels.fold_of} fold {labels.fold})"
    other = {g: (float(o["init"]), float(o["final"])) for g, o in (result.knn_other or {}).items()
             if o.get("init") is not None and o.get("final") is not None}  # fmt: skip
    return Compute(method, labels.ratio, labels.seed, steps, result.views_seen, result.lr_schedule,
                   result.warmup, None if init is None else float(init), None if final is None else float(final),
                   cross, result.knn_granularity, other, monitor_change(result.knn_hits))  # fmt: skip


def _name(c: Compute, ratios: bool, seeds: bool) -> str:
    return c.method + (f" r={c.ratio:g}" if ratios and c.ratio is not None else "") + (f" seed {c.seed}" if seeds else "")


def compute_rows(runs: list[Compute], with_random: bool = False) -> tuple[list[str], list[list[str]]]:
    """The equal-compute table: method, steps, views seen, lr schedule, kNN 0 → final, crossover
    (and the other granularity's kNN, when recorded). ``with_random``: a first row for the
    random-init encoder (no steps), as wide as the header."""
    ratios = len({c.ratio for c in runs if c.ratio is not None}) > 1
    seeds = len({str(c.seed) for c in runs}) > 1
    rows = []
    for c in runs:
        sched = c.lr_schedule or "—"
        if c.lr_schedule == "warmup-cosine" and c.warmup:
            sched += f" ({c.warmup:.0%} warmup)"
        knn = "—" if c.knn_final is None else (f"{c.knn_init:.3f} → " if c.knn_init is not None else "") + f"{c.knn_final:.3f}"
        if c.below_init:
            knn += " ⚠"
        cross = str(c.crossover) if c.crossover is not None else ("never (still below)" if c.below_init else "—")
        rows.append([_name(c, ratios, seeds), "—" if c.steps is None else f"{int(c.steps):,}",
                     "—" if c.views_seen is None else f"{int(c.views_seen):,}", sched, knn, cross])  # fmt: skip
    header = ["method", "optimiser steps", "views seen", "lr schedule", "kNN step 0 → final", "crossover step"]
    grans = sorted({g for c in runs for g in c.other})
    prim = sorted({c.granularity for c in runs if c.granularity})
    if grans:  # the other granularity, scored on the same frames and features
        if len(prim) == 1:
            header[4] = f"kNN {prim[0]} step 0 → final"
        for g in grans:
            header.append(f"kNN {g} step 0 → final")
            for c, row in zip(runs, rows):
                a, b = c.other.get(g, (None, None))
                row.append("—" if b is None else f"{a:.3f} → {b:.3f}" + (" ⚠" if b < a else ""))
    if with_random:
        rows.insert(0, ["random (no pretraining)", "0", "0"] + ["—"] * (len(header) - 3))
    return header, rows


def below_init_note(runs: list[Compute]) -> str | None:
    """A warning naming every run whose kNN monitor ended below its own step-0 value (and a
    note on each run that did so on the other granularity's labels only); runs that had no
    monitor at all are named too: nobody checked them."""
    low = [c for c in runs if c.below_init]
    ratios = len({c.ratio for c in runs if c.ratio is not None}) > 1
    seeds = len({str(c.seed) for c in runs}) > 1
    blind = [_name(c, ratios, seeds) for c in runs if c.knn_final is None]
    blind_note = (f"**Not checked:** {', '.join(blind)} had no kNN monitor (the pretraining data carry "
                  "no class labels for it, or it was turned off), so whether pretraining went past the "
                  "step where it beats its own initial encoder is unknown; read "
                  f"{'its' if len(blind) == 1 else 'their'} downstream numbers with that in mind.") if blind else ""
    note = _below_note(runs, low, ratios, seeds)
    return " ".join(t for t in (note, blind_note) if t) or None


MIN_MONITOR_PATIENTS = 5  # fewer: a bootstrap over patients is too narrow to mean anything


def _within_noise(c: Compute) -> bool | None:
    """Whether the change's interval over the monitor's patients includes 0; None when there
    is no interval (no votes kept, or too few patients for one)."""
    if c.change is None:
        return None
    _, lo, hi, g = c.change
    if g < MIN_MONITOR_PATIENTS or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return hi >= 0


def _noise(c: Compute) -> str:
    """How sure the monitor is that a run ended below its start: the paired interval over its
    held-out patients ('' when the run did not keep its votes)."""
    if c.change is None:
        return ""
    d, lo, hi, g = c.change
    within = _within_noise(c)
    if within is None:
        return f" ({d:+.3f} over {g} held-out patient{'s' if g != 1 else ''}: too few for an interval)"
    verdict = "within the monitor's noise" if within else "a drop beyond the monitor's noise"
    return f" ({d:+.3f} [{lo:+.3f}, {hi:+.3f}] over {g} held-out patients: {verdict})"


def _below_note(runs: list[Compute], low: list[Compute], ratios: bool, seeds: bool) -> str:
    other = "; ".join(f"{_name(c, ratios, seeds)} on the {g} labels ({b:.3f} < {a:.3f})"
                      for c in runs if not c.below_init for g, b, a in c.other_below_init())  # fmt: skip
    other_note = (f" On the other label granularity, scored on the same frames, these ended below their "
                  f"step-0 value: {other}. Such a method may have learned what it is trained to pull "
                  "together while losing the finer distinction.") if other else ""
    if not low:
        return other_note.strip()
    each = "; ".join(f"{_name(c, ratios, seeds)} stopped at step {c.steps if c.steps is not None else '?'} with kNN "
                     f"{c.knn_final:.3f} < {c.knn_init:.3f} at step 0{_noise(c)}" for c in low)  # fmt: skip
    return (f"⚠ **Still below step 0:** {each}. Pretraining stopped while the kNN monitor was still "
            "below its step-0 (initial-encoder) value, so these encoders' downstream numbers measure "
            "the dip early in training, not what the method learns: pretrain longer (more steps)"
            + (", with `lr_schedule: warmup-cosine`" if any(c.lr_schedule == "constant" for c in low) else "")
            + "." + _noise_hint(low) + other_note)  # fmt: skip


def _noise_hint(low: list[Compute]) -> str:
    n = sum(_within_noise(c) is True for c in low)
    if not n:
        return ""
    return (f" For {n} of these the drop is within the monitor's noise (its 95% interval over the "
            "held-out patients includes 0; seed-to-seed variation is not in it): the monitor cannot "
            "tell such a run's end from its start.")


# --------------------------------------------------------------------------- forest plot
def forest_plot(comps: list[Comparison]) -> bytes | None:
    """One row per comparison (point: difference, bar: 95% interval), a line at zero, one panel
    per task and protocol; filled markers where the interval excludes 0."""
    if not comps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(comps)
    sizes = [len(g) for g in groups.values()]
    share = not any(c.lower_better for c in comps)  # bounded scores: one x-scale reads best
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 0.9 * len(groups) + 0.3 * sum(sizes)),
                             sharex=share, squeeze=False,
                             gridspec_kw={"height_ratios": [n + 1.5 for n in sizes]})  # fmt: skip
    for ax, ((task, protocol), g) in zip(axes[:, 0], groups.items()):
        y = np.arange(len(g))[::-1]
        for yi, c in zip(y, g):
            colour = ("tab:blue" if c.a_better else "tab:red") if c.significant else "0.45"
            ax.plot([c.lo, c.hi], [yi, yi], color=colour, lw=2)
            ax.plot([c.diff], [yi], "o", color=colour, mfc=colour if c.significant else "white", ms=6)
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(y, [f"{c.a} − {c.b}" for c in g], fontsize=8)
        ax.set_ylim(-0.8, len(g) - 0.2)
        sec = ax.secondary_yaxis("right")
        sec.set_yticks(y, [f"{c.diff:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]" for c in g], fontsize=7)
        ax.set_title(f"{task} — {PROTOCOL_NAMES.get(protocol, protocol)} ({g[0].label})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelbottom=True, labelsize=8)
    axes[-1, 0].set_xlabel("difference (first − second); filled: the interval excludes 0 "
                           "(blue: first better, red: second better)")  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
