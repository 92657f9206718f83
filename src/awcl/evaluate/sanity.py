"""Did a downstream run learn anything? The check behind the "did not learn" flag.

A number from a run that never left its trivial baseline says nothing about the encoder it
started from (the old Task III preset scored Dice 0.08 on HC18 for every init, and the table
compared those). So every run is checked against the best predictor that looks at no image:

- segmentation: the better of "all background" (Dice 0) and "all foreground" (Dice
  ``2T / (T + P)`` for ``T`` foreground of ``P`` pixels, per foreground class). A pooled Dice
  at or below it (plus ``SEG_MARGIN``) is flagged;
- classification: a constant or random answer has balanced accuracy ``1/K``; within
  ``CLASS_MARGIN`` of it is flagged.

``awcl finetune`` writes the result to ``metrics.json`` (``learned``) and warns in one line;
the study report marks such rows.
"""

from __future__ import annotations

import numpy as np

from awcl.evaluate.metrics import segmentation_metrics

SEG_MARGIN = 0.02
CLASS_MARGIN = 0.05


def segmentation_check(cm: np.ndarray) -> dict:
    """``cm: [C, C]`` pooled pixel confusion (rows true) -> ``{"learned", "score",
    "baseline", "reason"}`` with the pooled foreground Dice and the trivial predictors' best."""
    cm = np.asarray(cm, dtype=np.float64)
    total, true_n, pred_n = cm.sum(), cm.sum(1), cm.sum(0)
    fg = [c for c in range(1, len(cm)) if true_n[c] + pred_n[c] > 0]
    if not fg or total <= 0:
        return {"learned": True, "score": None, "baseline": None, "reason": "no foreground to score"}
    dice = segmentation_metrics(cm)["dice"]  # mean over the same foreground classes
    baseline = float(np.mean([2 * true_n[c] / (true_n[c] + total) for c in fg]))  # all foreground
    learned = dice > baseline + SEG_MARGIN
    reason = "" if learned else (
        f"pooled Dice {dice:.3f} is not above the trivial predictor's {baseline:.3f} "
        "(all foreground; all background scores 0): the segmenter did not learn")
    return {"learned": bool(learned), "score": dice, "baseline": baseline, "reason": reason}


def classification_check(balanced_accuracy: float | None, num_classes: int) -> dict:
    """Balanced accuracy against chance ``1/K``."""
    chance = 1.0 / max(num_classes, 1)
    if balanced_accuracy is None:
        return {"learned": True, "score": None, "baseline": chance, "reason": "no test frames"}
    learned = balanced_accuracy > chance + CLASS_MARGIN
    reason = "" if learned else (
        f"balanced accuracy {balanced_accuracy:.3f} is at chance ({chance:.3f} for {num_classes} "
        "classes): the classifier did not learn")
    return {"learned": bool(learned), "score": float(balanced_accuracy), "baseline": chance,
            "reason": reason}


def check_metrics(metrics: dict) -> dict:
    """The check of a finished run from its metrics dict (``awcl finetune``'s metrics.json)."""
    if metrics.get("task") == "segment":
        return segmentation_check(np.asarray(metrics["confusion_matrix"]))
    pooled = metrics.get("pooled") or {}
    ba = pooled.get("balanced_accuracy", (metrics.get("mean") or {}).get("balanced_accuracy"))
    return classification_check(ba, len(metrics.get("classes") or []))
