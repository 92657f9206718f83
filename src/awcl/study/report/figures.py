"""Every matplotlib figure of the report, as PNG bytes (None when there is nothing to draw):
kNN monitor curves, label efficiency, the anatomy-ratio sweep, pretraining loss curves and the
grid of per-run pictures (t-SNE, confusion matrices). Matplotlib is imported on first use."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from awcl.study.report.document import display, is_none, methods_in_order
from awcl.study.report.load import StudyData, pretrain_history, table_metrics
from awcl.study.report.results import Results


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def knn_curves(knn: pd.DataFrame) -> bytes | None:
    """kNN accuracy vs pretraining step, one line per run (the first point: before training)."""
    if knn.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    cmap = plt.get_cmap("tab10")
    methods = methods_in_order(list(dict.fromkeys(knn.method)))
    for i, m in enumerate(methods):
        for j, (_, g) in enumerate(knn[knn.method == m].groupby("run", sort=False)):
            g = g.sort_values("epoch")
            x = g["step"] if g["step"].notna().all() else g["epoch"]
            r = g["ratio"].iloc[0]
            name = m + (f" r={r:g}" if not is_none(r) else "") + (f" seed {g['seed'].iloc[0]}" if knn.seed.nunique() > 1 else "")
            ax.plot(x, g["knn_acc"], marker="o", ms=3, color=cmap(i % 10), alpha=1.0 if j == 0 else 0.6,
                    label=name)  # fmt: skip
            if int(g["epoch"].iloc[0]) == 0:
                ax.plot(x.iloc[:1], g["knn_acc"].iloc[:1], marker="s", ms=7, color=cmap(i % 10), mfc="none")
    ax.set_xlabel("pretraining step" if knn["step"].notna().all() else "epoch")
    ax.set_ylabel("kNN accuracy (held-out patients)")
    ax.set_title("kNN monitor during pretraining (square: before training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def efficiency_curve(points: pd.DataFrame) -> bytes | None:
    """Metric vs number of labelled training patients, one panel per (task, protocol)."""
    if points.empty:
        return None
    plt = _plt()
    panels = list(dict.fromkeys(zip(points.task, points.protocol)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, (task, protocol) in zip(axes[0], panels):
        pp = points[(points.task == task) & (points.protocol == protocol)]
        ns = sorted({int(n) for n in pp.n.dropna()})
        ticks = [*ns, None]  # "all" at the right end
        pos = {n: i for i, n in enumerate(ticks)}
        methods = methods_in_order(list(dict.fromkeys(pp.method)))
        for k, m in enumerate(methods):
            pm = pp[pp.method == m]
            x = np.array([pos[None if is_none(n) else int(n)] for n in pm.n], dtype=float)
            x += (k - (len(methods) - 1) / 2) * 0.06  # small dodge so intervals do not overlap
            y = pm["mean"].to_numpy()
            have = pm.lo.notna().to_numpy()
            yerr = np.vstack([np.where(have, y - pm.lo, pm["std"]), np.where(have, pm.hi - y, pm["std"])])
            order = np.argsort(x)
            ax.errorbar(x[order], y[order], yerr=yerr[:, order], marker="o", ms=4, capsize=3, label=m)
        ax.set_xticks(range(len(ticks)), [str(n) if n is not None else "all" for n in ticks])
        ax.set_xlabel("labelled training patients per fold")
        ax.set_ylabel(display(pp.metric.iloc[0]))
        ax.set_title(f"{task} ({protocol})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def ratio_curve(results: Results) -> bytes | None:
    """AWCL's downstream metric vs anatomy ratio (mean ± std over folds), one panel per swept task."""
    sub = results.ratio_sweep()
    if sub.empty or sub.ratio.nunique() < 2:
        return None
    tasks = [t for t in results.tasks if sub[sub.task == t].ratio.nunique() >= 2]  # swept tasks only
    if not tasks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        st = sub[sub.task == t]
        met = table_metrics(st, t)[0]
        proto = "full" if "full" in set(st.protocol) else st.protocol.iloc[0]
        st = st[(st.metric == met) & (st.protocol == proto)]
        for m in sorted(set(st.method)):
            g = st[st.method == m].groupby("ratio").value.agg(["mean", "std"]).sort_index()
            ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=m)
        ax.set_xlabel("anatomy ratio r")
        ax.set_ylabel(met)
        ax.set_title(f"{t} ({proto})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def pretrain_curves(data: StudyData) -> bytes | None:
    """Pretraining loss per epoch, one line per pretraining run."""
    series = []
    for rec in data.of_kind("pretrain"):
        hist = pretrain_history(rec)
        if hist is None or hist.empty:
            continue
        col = "loss" if "loss" in hist.columns else next((c for c in hist.columns if "loss" in c), None)
        if col is None:
            continue
        x = hist["epoch"] if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
        lab = rec.labels
        name = lab.method if lab.method is not None else rec.name
        if lab.ratio is not None:
            name += f" r={lab.ratio:g}"
        if data.planned and lab.seed not in (0, None):
            name += f" seed {lab.seed}"
        if lab.fold is not None:  # per-fold pretraining
            name += f" {lab.fold_of} f{lab.fold}"
        series.append((name, np.asarray(x), hist[col].to_numpy(dtype=float), col))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, x, y, _ in sorted(series, key=lambda s: s[0]):
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(series[0][3])
    ax.set_title("pretraining loss (each method's own objective)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def image_grid(items: list[tuple[str, Path]], ncols: int = 4) -> bytes | None:
    """Compose PNG files into one captioned grid."""
    if not items:
        return None
    plt = _plt()
    n = len(items)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, path) in zip(axes.flat, items):
        ax.imshow(plt.imread(path))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
