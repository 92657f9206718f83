"""Figures of a downstream run: confusion matrix, training curves, t-SNE scatter."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str = "") -> Path:
    """Counts with row-normalised colour (rows = true class), summed over folds."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.0 * k + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (all test folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: pd.DataFrame, path: Path, score: str) -> Path:
    """Train/val loss and the model-selection score per epoch, one line per fold."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for fold, h in history.groupby("fold"):
        axes[0].plot(h["epoch"], h["train_loss"], label=f"fold {fold} train")
        axes[0].plot(h["epoch"], h["val_loss"], "--", label=f"fold {fold} val")
        axes[1].plot(h["epoch"], h[score], label=f"fold {fold}")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel(score)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tsne(xy: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """2-D scatter ``xy: [N, 2]`` coloured by ``labels``."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cats = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    lab = np.asarray(labels)
    for i, c in enumerate(cats):
        sel = lab == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % cmap.N), label=c)
    if len(cats) <= 25:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
