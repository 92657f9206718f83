"""Did a downstream run learn anything? The check behind the "did not learn" flag.

A number from a run that never left its trivial baseline says nothing about the encoder it
started from (the old Task III preset scored Dice 0.08 on HC18 for every init, and the table
compared those). So every run is checked against the best predictor that looks at no image:

- segmentation: the best constant mask, "every pixel = class c" over every class c, scored
  as the run is scored (pooled Dice averaged over the foreground classes present in truth or
  prediction). All background scores 0; all class c scores ``2T_c / (T_c + P)`` for class c
  (``T_c`` of ``P`` pixels) and 0 for every other foreground class present. Two classes: the
  familiar ``2T / (T + P)``. A pooled Dice at or below it (plus ``SEG_MARGIN``) is flagged;
- classification: balanced accuracy averages recall over the classes *present in the test
  truth*, so a constant answer scores ``1/K_present`` (not ``1/K``: with a class absent from
  the test frames, "always a" scores 0.5 for K=3), and a random one less. Within
  ``CLASS_MARGIN`` of ``1/K_present`` is flagged. A run without a balanced accuracy to check
  is not reported as learned.

``awcl finetune`` writes the result to ``metrics.json`` (``learned``) and warns in one line;
the study report marks such rows.
"""

from __future__ import annotations

import numpy as np

from awcl.evaluate.metrics import balanced_accuracy, segmentation_metrics
from awcl.evaluate.scores import segmentation_scores

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
    baseline, best = constant_mask_baseline(cm)
    learned = dice > baseline + SEG_MARGIN
    reason = "" if learned else (
        f"pooled Dice {dice:.3f} is not above the trivial predictor's {baseline:.3f} "
        f"(every pixel class {best}; all background scores 0): the segmenter did not learn")
    return {"learned": bool(learned), "score": dice, "baseline": baseline, "reason": reason}


def constant_mask_baseline(cm: np.ndarray) -> tuple[float, int]:
    """(pooled Dice, class) of the best constant mask "every pixel = class c" on the truth of
    ``cm: [C, C]``, each scored by the pooled Dice a run is scored by (all background: 0)."""
    true_n = np.asarray(cm, dtype=np.float64).sum(1)
    n = len(true_n)
    const = np.zeros((max(n - 1, 0), n, n))  # [c - 1]: every pixel predicted as class c
    const[np.arange(n - 1), :, np.arange(1, n)] = true_n
    dice = np.nan_to_num(segmentation_scores(const)["dice"]) if n > 1 else np.zeros(0)
    best = int(np.argmax(dice)) if len(dice) else 0
    if not len(dice) or dice[best] <= 0:
        return 0.0, 0
    return float(dice[best]), best + 1


def classification_check(balanced_accuracy: float | None, num_classes: int) -> dict:
    """Balanced accuracy against chance ``1/K``, ``K = num_classes`` the classes present in
    the test truth (what balanced accuracy averages over). No score: not learned."""
    chance = 1.0 / max(num_classes, 1)
    if balanced_accuracy is None:
        return {"learned": False, "score": None, "baseline": chance,
                "reason": "no balanced accuracy to check (no test frame of a known class): "
                          "nothing shows that the classifier learned"}  # fmt: skip
    learned = balanced_accuracy > chance + CLASS_MARGIN
    reason = "" if learned else (
        f"balanced accuracy {balanced_accuracy:.3f} is at chance ({chance:.3f} for {num_classes} "
        "classes in the test truth): the classifier did not learn")
    return {"learned": bool(learned), "score": float(balanced_accuracy), "baseline": chance,
            "reason": reason}


def confusion_check(cm: np.ndarray) -> dict:
    """:func:`classification_check` of a pooled class confusion ``cm: [K, K]`` (rows true)."""
    cm = np.asarray(cm, dtype=np.float64)
    return classification_check(balanced_accuracy(cm), int((cm.sum(1) > 0).sum()))


def check_metrics(metrics: dict) -> dict:
    """The check of a finished run from its metrics dict (``awcl finetune``'s metrics.json).

    Classification: the pooled balanced accuracy, else the pooled confusion's, else the fold
    mean (a present-but-None value falls through); chance from the pooled confusion's classes
    present in the truth, else all ``classes``. A task kind without a trivial baseline here is
    not checked (learned, with no score)."""
    if metrics.get("task") == "segment":
        return segmentation_check(np.asarray(metrics["confusion_matrix"]))
    if metrics.get("task", "classify") != "classify":
        return {"learned": True, "score": None, "baseline": None,
                "reason": f"no trivial-baseline check for task kind {metrics.get('task')!r}"}  # fmt: skip
    cm = metrics.get("confusion_matrix")
    cm = np.asarray(cm, dtype=np.float64) if cm is not None else None
    candidates = ((metrics.get("pooled") or {}).get("balanced_accuracy"),
                  balanced_accuracy(cm) if cm is not None else None,
                  (metrics.get("mean") or {}).get("balanced_accuracy"))  # fmt: skip
    ba = next((v for v in candidates if v is not None and np.isfinite(v)), None)
    k = int((cm.sum(1) > 0).sum()) if cm is not None and cm.sum() > 0 else len(metrics.get("classes") or [])
    return classification_check(ba, k)
