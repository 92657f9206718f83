"""What the report states about how the study ran, as sentences and rows: the pretraining
setup (batch composition, augmentations), per-fold pretraining, each pretraining run's compute,
and the versions and hardware the report was written on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pandas as pd

from awcl.study.answer import Compute, run_compute
from awcl.study.report.document import methods_in_order, order_key
from awcl.study.report.load import StudyData


def pretrain_setup(data: StudyData) -> list[str]:
    """Sentences on how pretraining was run: batch composition (summary.json's
    ``batch_composition``, else derived from ``class_group``) and augmentations."""
    recs = data.of_kind("pretrain")
    if not recs:
        return []
    comps: dict[str, list[str]] = {}
    for rec in recs:
        m = str(rec.labels.method if rec.labels.method is not None else rec.name)
        res = rec.result
        comp = res.batch_composition
        if comp is None:
            g = res.class_group
            if g is None or not m.startswith(("awcl", "clpi")):
                comp = "not recorded" if g is None and m.startswith(("awcl", "clpi")) else "random"
            else:
                comp = "random" if int(g) <= 1 else f"labelled frames of one class (awcl) or scan (clpi) in groups of {g}"
        comps.setdefault(str(comp), [])
        if m not in comps[str(comp)]:
            comps[str(comp)].append(m)
    parts = [f"{comp} ({', '.join(methods_in_order(ms))})" for comp, ms in comps.items()]
    out = ["Pretraining batch composition: " + "; ".join(parts) + " (the paper's batches are random)."]
    augs = {(tuple(r.result.crop_scale), r.result.blur) for r in recs if r.result.crop_scale is not None}
    for crop, blur in sorted(augs, key=str):
        out.append(f"Pretraining augmentations: random resized crop of {crop[0]:g}–{crop[1]:g} of the frame "
                   f"area, blur probability {blur:g}.")  # fmt: skip
    return out


def per_fold_line(data: StudyData) -> str | None:
    """Which methods were pretrained per fold (a task's ``pretrain_per_fold``), or None."""
    by: dict[str, dict[str, set]] = {}
    for run in data.planned:
        lab = run.labels
        if run.kind == "pretrain" and lab.fold is not None:
            by.setdefault(str(lab.fold_of), {}).setdefault(str(lab.method), set()).add(run.dir)
    if not by:
        return None
    parts = [f"{', '.join(methods_in_order(list(ms)))} on {task} ({sum(map(len, ms.values()))} runs)"
             for task, ms in by.items()]  # fmt: skip
    return ("Per-fold pretraining: " + "; ".join(parts) + " — pretrained once per outer fold of "
            "the task on that fold's training groups only (no frame or label of its test part), "
            "each fold fine-tuned from its own encoder; any other pretrained method once on all "
            "the pretraining data.")


def pretrain_compute(data: StudyData, knn: pd.DataFrame) -> list[Compute]:
    """Each pretraining run's steps, views seen, lr schedule and kNN monitor (its DONE result;
    the kNN history ``knn`` of :class:`~awcl.study.report.results.Results` fills what an older
    result lacks), in the report's method order."""
    out = []
    for rec in sorted(data.of_kind("pretrain"), key=lambda r: (order_key(str(r.labels.method)), str(r.labels.ratio),
                                                               str(r.labels.seed))):  # fmt: skip
        h = knn[knn.run == rec.dir.name].sort_values("epoch")
        curve = [(int(st), float(a)) for st, a in zip(h.step, h.knn_acc)] if len(h) and h.step.notna().all() else None
        out.append(run_compute(rec.labels, rec.result, curve))
    return out


def versions_and_hardware() -> list[list[str]]:
    import awcl

    rows = [["awcl", awcl.__version__], ["python", sys.version.split()[0]], ["platform", platform.platform()]]
    for mod in ("torch", "torchvision", "lightning", "numpy", "sklearn"):
        try:
            m = __import__(mod)
            rows.append([mod, str(getattr(m, "__version__", "?"))])
        except Exception:  # an optional library missing is not an error for the report
            rows.append([mod, "not installed"])
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rows.append(["CPU", cpu])
    rows.append(["cores", str(os.cpu_count())])
    try:
        import torch

        rows.append(["torch threads", str(torch.get_num_threads())])
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:
        gpu = "unknown"
    rows.append(["GPU", gpu])
    try:
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        rows.append(["memory", f"{kb / 1024**2:.1f} GiB"])
    except (OSError, ValueError, IndexError):
        pass
    return rows
