"""The names of the downstream layer, defined once: tasks, protocols, and the metric keys
each task writes. The configuration checks, the CLI choices, the study config and the
report's tables all read them from here (no imports: any module may use it)."""

from __future__ import annotations

TASKS = ("classify", "segment")
PROTOCOLS = ("full", "partial", "knn", "linear-probe")  # the report's section order too
PROBES = ("knn", "linear-probe")  # frozen-feature probes (scikit-learn; classification only)

# Every metric a task writes per fold and as mean/std in metrics.json.
METRICS: dict[str, tuple[str, ...]] = {
    "classify": ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auroc"),
    "segment": ("gaa", "ma", "miou", "fg_iou", "dice", "dice_per_image", "hd95_mm", "msd_mm",
                "hd95_px", "msd_px", "hc_mae_mm", "hc_fail_rate", "hc_mae_vs_gt_ellipse_mm"),
}  # fmt: skip
# The metrics the report's tables show, in order of preference (the rest stay in results.csv).
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "classify": ("accuracy", "f1", "auroc", "balanced_accuracy"),
    "segment": ("dice_per_image", "dice", "fg_iou", "hc_mae_mm", "hc_fail_rate", "miou",
                "hd95_mm", "gaa", "ma"),
}
# The metric whose pairwise differences between methods the report tests.
HEADLINE: dict[str, str] = {"classify": "f1", "segment": "dice_per_image"}


def headline_metric(task_kind: str) -> str:
    """The one metric a run of ``task_kind`` is summed up by: the study's per-run line, the
    report's pairwise tests and label-efficiency curves, ``awcl finetune``'s printout and the
    downstream benchmark all call this (macro-F1 for classification, per-image Dice for
    segmentation)."""
    if task_kind not in HEADLINE:
        raise ValueError(f"unknown task kind {task_kind!r} (choose from {', '.join(HEADLINE)})")
    return HEADLINE[task_kind]
