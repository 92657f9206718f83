"""The names of the downstream layer, defined once: tasks, protocols, and what each kind of
task reports (:class:`TaskKind`). The configuration checks, the CLI choices, the study config,
the validation loop and the report's tables all read them from here (no imports: any module
may use it)."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("full", "partial", "knn", "linear-probe")  # the report's section order too
PROBES = ("knn", "linear-probe")  # frozen-feature probes (scikit-learn; classification only)


@dataclass(frozen=True)
class TaskKind:
    """What a kind of downstream task (``--task``) reports, declared once.

    ``metrics``: every metric a run writes per fold and as mean/std in ``metrics.json``;
    ``table``: those the report's tables show, in order of preference (the rest stay in
    ``results.csv``); ``headline``: the one number a run is summed up by (the study's per-run
    line, the report's pairwise tests and label-efficiency curves, ``awcl finetune``'s
    printout, the downstream benchmark); ``selection``: the validation metric the best epoch
    (or a probe's hyper-parameter) is chosen by; ``monitor``: the validation metrics logged
    each epoch (``val_<key>`` in ``history.csv``), ``selection`` among them.
    """

    name: str
    metrics: tuple[str, ...]
    table: tuple[str, ...]
    headline: str
    selection: str
    monitor: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.headline not in self.metrics or not set(self.table) <= set(self.metrics):
            raise ValueError(f"task kind {self.name!r}: headline and table metrics must be among its metrics")
        if self.selection not in self.monitor:
            raise ValueError(f"task kind {self.name!r}: the selection metric must be monitored")

    @property
    def selection_key(self) -> str:
        """The logged name of the selection metric (the checkpoint monitor), ``val_<key>``."""
        return f"val_{self.selection}"


CLASSIFY = TaskKind(
    "classify",
    metrics=("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auroc"),
    table=("accuracy", "f1", "auroc", "balanced_accuracy"),
    headline="f1",
    selection="f1",
    monitor=("accuracy", "f1"),
)
SEGMENT = TaskKind(
    "segment",
    metrics=("gaa", "ma", "miou", "fg_iou", "dice", "dice_per_image", "hd95_mm", "msd_mm",
             "hd95_px", "msd_px", "hc_mae_mm", "hc_fail_rate", "hc_mae_vs_gt_ellipse_mm"),
    table=("dice_per_image", "dice", "fg_iou", "hc_mae_mm", "hc_fail_rate", "miou", "hd95_mm", "gaa", "ma"),
    headline="dice_per_image",
    selection="dice_per_image",  # the epoch is kept on the headline (was pooled mIoU)
    monitor=("dice_per_image", "miou", "dice"),
)  # fmt: skip
KINDS: dict[str, TaskKind] = {k.name: k for k in (CLASSIFY, SEGMENT)}

# The same, by field (read by older code and the CLI choices).
TASKS = tuple(KINDS)
METRICS: dict[str, tuple[str, ...]] = {n: k.metrics for n, k in KINDS.items()}
TABLE_METRICS: dict[str, tuple[str, ...]] = {n: k.table for n, k in KINDS.items()}
HEADLINE: dict[str, str] = {n: k.headline for n, k in KINDS.items()}


def task_kind(name: str) -> TaskKind:
    """The :class:`TaskKind` called ``name``; an unknown name is a ValueError."""
    if name not in KINDS:
        raise ValueError(f"unknown task kind {name!r} (choose from {', '.join(KINDS)})")
    return KINDS[name]


def headline_metric(task_kind_name: str) -> str:
    """The one metric a run of this task kind is summed up by (macro-F1 for classification,
    per-image Dice for segmentation): :attr:`TaskKind.headline`."""
    return task_kind(task_kind_name).headline
