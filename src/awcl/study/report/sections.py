"""The report's sections, one builder each, and their order: :data:`REGISTRY` maps a section's
key to its builder, and :func:`build_sections` walks it in order. A builder reads the
:class:`ReportContext` (the study, its numbers, its predictions and what is derived from them
once) and returns a :class:`~awcl.study.report.document.Section`, or None to leave it out.

**A new section** is a builder here and one entry in ``REGISTRY`` where it should appear."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, NamedTuple

from awcl.evaluate.tasks import PROTOCOLS
from awcl.study.answer import (
    FOREST_CAPTION,
    FOREST_FILE,
    Comparison,
    answer_paragraphs,
    below_init_note,
    compute_rows,
    forest_plot,
)
from awcl.study.names import row_backbones
from awcl.study.overlap import overlap_marks
from awcl.study.report.checks import (
    degenerate_notes,
    degenerate_runs,
    identical_methods,
    identical_predictions,
    not_learned_runs,
)
from awcl.study.report.document import Image, Section, Table, methods_in_order, order_key, safe_name
from awcl.study.report.facts import (
    per_fold_line,
    pretrain_compute,
    pretrain_setup,
    versions_and_hardware,
)
from awcl.study.report.figures import (
    efficiency_curve,
    image_grid,
    knn_curves,
    pretrain_curves,
    ratio_curve,
)
from awcl.study.report.load import StudyData, find_image, load_results
from awcl.study.report.results import Results
from awcl.study.report.statistics import efficiency_points, table_intervals
from awcl.study.report.tables import (
    coarse_fine_table,
    efficiency_table,
    knn_table,
    pairwise_tables,
    transfer_table,
)

PROTOCOL_TITLES = {
    "full": "Transfer table (full fine-tuning)",
    "partial": "Partial fine-tuning (encoder frozen)",
    "knn": "kNN probe (frozen features)",
    "linear-probe": "Linear probe (frozen features)",
}
ANSWER_TITLE = "Answer on this data"
ANSWER_KEY = "answer"


def transfer_key(protocol: str) -> str:
    """The registry key of a protocol's transfer table, e.g. ``transfer-full``."""
    return f"transfer-{protocol}"


TRANSFER_KEYS = tuple(transfer_key(p) for p in PROTOCOLS)


class Pairwise(NamedTuple):
    tables: list[Table]
    significant: list[str]  # sentences naming the significant differences
    n_tests: int
    found: list[Comparison]  # every comparison: the answer and its forest plot read them


@dataclass
class ReportContext:
    """What the section builders read: the study (its index, records and files) and its
    :class:`~awcl.study.report.results.Results`, the one source of every number; what several
    builders need is derived once, on first use."""

    data: StudyData
    results: Results

    @property
    def tasks(self) -> list[str]:
        return self.results.tasks

    @cached_property
    def overlap(self) -> dict[tuple[str, str], str]:  # inits pretrained on a task's own data set
        return overlap_marks(self.data.index)

    @cached_property
    def flags(self) -> list[dict[str, Any]]:
        """Degenerate and not-learned runs, flagged in the transfer tables."""
        return degenerate_runs(self.results.predictions) + not_learned_runs(self.results.predictions)

    @cached_property
    def pairwise(self) -> Pairwise:
        """The pairwise tables (one bootstrap per pair): their section and the answer read them."""
        found: list[Comparison] = []
        tables, significant, n_tests = pairwise_tables(self.results, found)
        return Pairwise(tables, significant, n_tests, found)


Builder = Callable[[ReportContext], Section | None]


# --------------------------------------------------------------------------- the sections
def answer_section(ctx: ReportContext) -> Section:
    """The answer up front: the three questions from the pairwise differences, a note on runs
    stopped below their step-0 kNN value, the forest plot, and each method's compute."""
    s = Section(ANSWER_TITLE)
    found = ctx.pairwise.found
    paras = answer_paragraphs(found, ctx.overlap, row_backbones(ctx.data.index))
    if paras:
        s.blocks.append("The paper's questions on this data, read from the pairwise differences (headline "
                        "metric, all folds and seeds pooled): difference [95% paired-bootstrap interval over "
                        "test patients], significant when the interval excludes 0 (not corrected for "
                        "multiplicity).")  # fmt: skip
        s.blocks.extend(paras)
    else:
        s.blocks.append("No answer yet: it needs two or more methods with predictions on the same test frames.")
    runs = pretrain_compute(ctx.data, ctx.results.knn)
    note = below_init_note(runs)
    if note:
        s.blocks.append(note)
    png = forest_plot(found)
    if png:
        s.blocks.append(Image(png, FOREST_FILE, FOREST_CAPTION))
    header, rows = compute_rows(runs, with_random="random" in set(ctx.results.table.method.dropna()))
    if rows:
        t = Table(header, rows)
        t.caption = ("Equal compute, stated: each pretraining run's optimiser steps and views seen (steps × "
                     "batch × views per sample, all processes; supervised methods draw labelled frames only)")  # fmt: skip
        s.blocks.append(t)
    return s


def overview_section(ctx: ReportContext) -> Section:
    data = ctx.data
    over = Section("Overview")
    n_runs = len(data.planned)
    over.blocks.append(
        f"Study **{data.index.get('name', '?')}**: {len(data.records)} of {n_runs} runs finished"
        + (f", {len(data.pending)} not finished (re-run `awcl study` to complete them)." if data.pending else ".")
        + f" Main-table anatomy ratio r = {data.index.get('anatomy_ratio')}."
        + " Table cells: the metric on the test frames of all folds (and seeds) pooled, with its 95%"
        " interval by bootstrap over test patients (`value [lo, hi]`); where a run has no"
        " predictions, mean ± std over folds. Best per column in bold; every per-fold value is"
        " in results.csv."
    )
    for line in pretrain_setup(data):
        over.blocks.append(line)
    per_fold = per_fold_line(data)
    if per_fold:
        over.blocks.append(per_fold)
    for note in data.index.get("notes", []):
        over.blocks.append(f"Note: {note}.")
    return over


def _row_notes(ctx: ReportContext, protocol: str) -> dict[str, str]:
    """Method -> the notes column of a transfer table: degenerate-classifier warnings and the
    inits pretrained on a task's own data set ("pretrained on this data set")."""
    notes = dict(degenerate_notes(ctx.flags, set(ctx.results.main_runs(protocol).run)))
    for row, task in ctx.overlap:
        if task in ctx.tasks:
            text = f"{task}: pretrained on this data set"
            notes[row] = f"{notes[row]}; {text}" if notes.get(row) else text
    return notes


def transfer_section(ctx: ReportContext, protocol: str) -> Section | None:
    """One protocol's transfer table with its warnings; None for a probe the study does not run."""
    results = ctx.results
    title = PROTOCOL_TITLES[protocol]
    present = not results.main(protocol).empty
    if not present and protocol not in ("full", "partial"):
        return None  # probe sections only when the study has probes
    s = Section(title)
    t = transfer_table(results, protocol, table_intervals(results, protocol),
                       _row_notes(ctx, protocol)) if present else None  # fmt: skip
    if t is None:
        s.blocks.append("No full fine-tuning runs have finished." if protocol == "full"
                        else "No partial fine-tuning runs in this study.")  # fmt: skip
        return s
    s.blocks.append(t)
    for group in identical_methods(t):
        msg = (f"⚠ {', '.join(group)}: identical numbers in every column of this table — the table "
               "cannot tell these methods apart (look for a degenerate classifier).")  # fmt: skip
        s.blocks.append(msg)
    for task in ctx.tasks:
        for group in identical_predictions(results, task, protocol):
            s.blocks.append(f"⚠ {', '.join(group)} made the very same prediction for every test frame of {task}.")
    for m, text in degenerate_notes(ctx.flags, set(results.main_runs(protocol).run)).items():
        s.blocks.append(f"{m}: {text}.")
    return s


def pairwise_section(ctx: ReportContext) -> Section:
    """The pairwise tables (the answer and the forest plot read the same comparisons)."""
    s = Section("Pairwise differences (paired bootstrap over test patients)")
    tables, significant, n_tests, _ = ctx.pairwise
    if not tables:
        s.blocks.append("No paired comparison: it needs two or more methods with predictions on the same test frames.")
        return s
    s.blocks.append(
        "Each row: the difference of the headline metric (macro-F1 for classification, Dice for "
        "segmentation) between two methods on the same test frames — all folds pooled, and all "
        "seeds — with a 95% interval from resampling test patients (1000 resamples; the same "
        "patients for both methods). A difference is significant when its interval excludes 0. "
        f"{n_tests} comparisons, not corrected for multiplicity: about {0.05 * n_tests:.1f} could "
        "exclude 0 by chance."
    )
    s.blocks.append(f"{len(significant)} of {n_tests} differences are significant; the forest plot under "
                    "the answer at the top draws every one of them.")  # fmt: skip
    s.blocks.extend(tables)
    return s


def efficiency_section(ctx: ReportContext) -> Section:
    s = Section("Label efficiency")
    points = efficiency_points(ctx.results)
    png = efficiency_curve(points)
    if png:
        s.blocks.append(Image(png, "label_efficiency.png",
                              "headline metric vs labelled training patients per fold (all folds and seeds "
                              "pooled; bars: 95% patient-bootstrap interval, or ± std over folds where predictions are missing)"))  # fmt: skip
        s.blocks.append(efficiency_table(points))
    else:
        s.blocks.append("No label-efficiency runs: give a task `train_patients: [n, ..., all]`.")
    return s


def knn_section(ctx: ReportContext) -> Section:
    s = Section("kNN monitor during pretraining")
    knn = ctx.results.knn
    png = knn_curves(knn)
    if not png:
        s.blocks.append("No kNN monitor values (monitor off: `monitor_fraction: 0`; too few labelled patients or "
                        "classes to hold some out; or no pretrained method finished).")  # fmt: skip
        return s
    s.blocks.append(Image(png, "knn_curves.png", "kNN accuracy of held-out patients' frames vs pretraining step "
                          "(first point: the initial encoder, before any step)"))  # fmt: skip
    t = knn_table(knn)
    if t is not None:
        s.blocks.append(t)
    by = knn.groupby("labels").method.unique()
    if len(by) == 1:
        s.blocks.append(f"Monitor labels: {by.index[0]} for every run (20-NN vote on held-out patients).")
    else:
        s.blocks.append("⚠ The monitor scored different labels: " + "; ".join(
            f"{g} ({', '.join(methods_in_order(list(ms)))})" for g, ms in by.items())
            + " — curves of different label sets do not compare; set `monitor_granularity`.")  # fmt: skip
    return s


def tsne_section(ctx: ReportContext) -> Section:
    data = ctx.data
    s = Section("t-SNE of penultimate features")
    items = []
    for rec in data.of_kind("embed"):
        p = find_image(rec.dir, "tsne", "t-sne")
        if p is not None:
            items.append((rec.labels.method if rec.labels.method is not None else rec.name, p))
    grid = image_grid(sorted(items, key=lambda x: order_key(x[0])))
    if grid:
        task = data.of_kind("embed")[0].labels.task
        s.blocks.append(Image(grid, "tsne_grid.png", f"t-SNE per method ({task} data, coloured by class)"))
    else:
        s.blocks.append("No t-SNE embeddings in this study (embed disabled or not finished).")
    return s


def ratio_section(ctx: ReportContext) -> Section:
    s = Section("Anatomy-ratio sweep")
    png = ratio_curve(ctx.results)
    if png:
        s.blocks.append(Image(png, "ratio_curve.png", "downstream metric vs anatomy ratio (mean ± std over folds)"))
    else:
        s.blocks.append("No anatomy-ratio sweep: the study has no AWCL method with two or more ratios.")
    return s


def coarse_fine_section(ctx: ReportContext) -> Section:
    s = Section("Coarse vs fine anatomy labels")
    t = coarse_fine_table(ctx.results)
    s.blocks.append(
        t if t is not None else "No coarse/fine pair (supervised or awcl, both granularities) in this study."
    )
    return s


def confusion_section(ctx: ReportContext) -> Section:
    """A grid of confusion matrices per classification task: main full fine-tuning runs, first seed."""
    s = Section("Confusion matrices")
    first = min(ctx.results.runs.seed.fillna(0), default=0)  # the first pretraining seed (a missing one: 0)
    full = ctx.results.main_runs("full")
    found = False
    for task in ctx.tasks:
        items = []
        for _, run in full[(full.task == task) & (full.task_kind == "classify") & (full.seed == first)].iterrows():
            p = find_image(run["dir"], "confusion")
            if p is not None:
                items.append((run["method"], p))
        grid = image_grid(sorted(items, key=lambda x: order_key(x[0])))
        if grid:
            found = True
            s.blocks.append(Image(grid, f"confusion_{safe_name(task)}.png", f"{task}, full fine-tuning"))
    if not found:
        s.blocks.append("No confusion matrices (no finished classification runs).")
    return s


def pretrain_curves_section(ctx: ReportContext) -> Section:
    s = Section("Pretraining curves")
    png = pretrain_curves(ctx.data)
    s.blocks.append(
        Image(png, "pretrain_curves.png", "pretraining loss per epoch")
        if png
        else "No pretraining histories (no pretrained methods finished)."
    )
    return s


def run_times_section(ctx: ReportContext) -> Section:
    records = ctx.data.records
    s = Section("Run times")
    rows = [[r.kind, r.name, f"{r.seconds:.1f}"] for r in records]
    if rows:
        total = sum(r.seconds for r in records)
        rows.append(["total", "", f"{total:.1f}"])
        s.blocks.append(Table(["kind", "run", "seconds"], rows))
    else:
        s.blocks.append("No finished runs.")
    return s


def configuration_section(ctx: ReportContext) -> Section:
    s = Section("Configuration")
    s.blocks.append(("pre", ctx.data.config_text or "(config.yaml missing)"))
    return s


def versions_section(ctx: ReportContext) -> Section:
    s = Section("Versions and hardware")
    s.blocks.append(Table(["item", "value"], versions_and_hardware()))
    s.blocks.append(f"Report written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    return s


# --------------------------------------------------------------------------- the registry
REGISTRY: dict[str, Builder] = {
    ANSWER_KEY: answer_section,
    "overview": overview_section,
    **{transfer_key(p): partial(transfer_section, protocol=p) for p in PROTOCOLS},
    "pairwise": pairwise_section,
    "efficiency": efficiency_section,
    "knn-monitor": knn_section,
    "tsne": tsne_section,
    "ratio": ratio_section,
    "coarse-fine": coarse_fine_section,
    "confusion": confusion_section,
    "pretrain-curves": pretrain_curves_section,
    "run-times": run_times_section,
    "configuration": configuration_section,
    "versions": versions_section,
}


def build_sections(data: StudyData, results: Results | None = None) -> list[Section]:
    """The report's sections in :data:`REGISTRY` order (the answer, overview, one table per
    protocol, then the analyses), each with its registry key; builders that return None are
    left out. ``results``: the study's (:func:`~awcl.study.report.load.load_results`)."""
    ctx = ReportContext(data, load_results(data) if results is None else results)
    out = []
    for key, build in REGISTRY.items():
        s = build(ctx)
        if s is not None:
            s.key = key
            out.append(s)
    return out
