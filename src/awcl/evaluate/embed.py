"""``awcl embed``: penultimate (512-d) features of a prepared dataset and their t-SNE map."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import TSNE

from awcl import _compat  # noqa: F401
from awcl.backbones import BACKBONE_HELP
from awcl.config import option
from awcl.data.store import open_dataset
from awcl.errors import AwclError
from awcl.evaluate.finetune import RunDir, load_frames, subsample_per_video
from awcl.evaluate.fit import RuntimeOptions, encode
from awcl.evaluate.plots import plot_tsne
from awcl.locking import out_lock
from awcl.models import build_encoder
from awcl.options import parse_size
from awcl.runtime.precision import choose, resolve_accelerator

log = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    """Penultimate features and t-SNE of one encoder on a prepared dataset (``awcl embed``)."""

    data: str = option(help="prepared dataset directory")
    out: str = option(help="directory to write")
    init: str = option("random", help="'random', an awcl pretrain run dir / encoder.pt, a torchvision ResNet .pth, or a foundation-model checkpoint (architecture named by --backbone)")
    backbone: str | None = option(None, help=BACKBONE_HELP)
    label: str = option("coarse", help="colour of the main plot: coarse | fine | a manifest column")
    color_by: list[str] | None = option(None, repeat=True, help="further plot coloured by a column (scan = video_id); repeatable")
    size: tuple[int, int] | None = option(None, parse=parse_size, help="HxW to resize frames to (default: the prepared size)")
    max_per_video: int | None = option(None, help="at most N frames per video")
    max_frames: int | None = option(5000, help="t-SNE cost grows fast: a seeded random subset beyond this")
    perplexity: float = option(30.0, help="t-SNE perplexity")
    tsne_iter: int = option(1000, help="t-SNE optimisation steps (sklearn's minimum is 250)")
    seed: int = option(0, help="random seed (subset, t-SNE)")
    batch_size: int = option(64, help="frames per forward pass")
    threads: int | None = option(None, help="torch CPU threads (default: all cores)")
    precision: str = option("auto", help="auto (fastest safe for this hardware) | 32-true | bf16-mixed | 16-mixed")
    accelerator: str = option("auto", help="auto | cpu | gpu")


def extract_features(encoder, frames: torch.Tensor, batch: int = 64,
                     runtime: RuntimeOptions | None = None) -> np.ndarray:
    """``frames: uint8 [N,H,W]`` -> penultimate features ``[N, 512]`` float32, on the
    runtime's device and precision (default: chosen for this machine)."""
    if runtime is None:
        runtime = runtime_for("auto", "auto", tuple(frames.shape[-2:]))
    return encode(encoder, frames, runtime, batch=batch).numpy()


def runtime_for(precision: str, accelerator: str, size: tuple[int, int]) -> RuntimeOptions:
    """An inference runtime: the device and the precision chosen for it at ``size``."""
    acc = resolve_accelerator(accelerator)
    return RuntimeOptions(choose(precision, acc, size), acc)


def _column(m, name: str) -> str:
    alias = {"coarse": "coarse_label", "fine": "fine_label", "scan": "video_id",
             "video": "video_id", "patient": "patient_id"}
    col = alias.get(name, name)
    if col not in m.columns:
        raise AwclError(f"--color-by/--label {name!r}: no such manifest column")
    return col


def embed(cfg: EmbedConfig) -> dict:
    """Write ``features.npy [N,512]``, ``index.csv`` (row i <-> features[i]), ``tsne.csv``
    and one ``tsne_<column>.png`` per colouring; return a summary dict."""
    with out_lock(cfg.out, "embedding run"):
        return _embed(cfg)


def _embed(cfg: EmbedConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = open_dataset(cfg.data)
    m = ds.manifest
    cols = [_column(m, cfg.label)] + [_column(m, c) for c in (cfg.color_by or [])]
    rows = subsample_per_video(m, np.arange(len(m)), cfg.max_per_video)
    if cfg.max_frames and len(rows) > cfg.max_frames:
        rng = np.random.default_rng(cfg.seed)
        rows = np.sort(rng.choice(rows, cfg.max_frames, replace=False))
    torch.manual_seed(cfg.seed)  # a 'random' init is reproducible too
    encoder = build_encoder(cfg.init, cfg.backbone, tuple(cfg.size) if cfg.size else tuple(ds.size))
    frames = load_frames(ds, rows, cfg.size)
    runtime = runtime_for(cfg.precision, cfg.accelerator, tuple(frames.shape[-2:]))
    feats = extract_features(encoder, frames, cfg.batch_size, runtime)
    run = RunDir(cfg.out)
    try:
        np.save(run.tmp / "features.npy", feats.astype(np.float32))
        index = m.iloc[rows][list(dict.fromkeys(["frame_id", "video_id", "patient_id", *cols]))].copy()
        index.insert(0, "row", rows)
        index.to_csv(run.tmp / "index.csv", index=False)
        pngs = []
        if len(rows) >= 5:
            perp = min(cfg.perplexity, max(2.0, (len(rows) - 1) / 3))
            xy = TSNE(
                n_components=2, perplexity=perp, random_state=cfg.seed, init="pca",
                max_iter=max(250, cfg.tsne_iter),
            ).fit_transform(feats)
            index.assign(tsne_x=xy[:, 0], tsne_y=xy[:, 1]).to_csv(run.tmp / "tsne.csv", index=False)
            for col in dict.fromkeys(cols):
                labels = index[col].astype("string").fillna("<unlabelled>").tolist()
                name = f"tsne_{col}.png"
                plot_tsne(xy, labels, run.tmp / name, f"t-SNE of {Path(str(cfg.init)).name} features by {col}")
                pngs.append(name)
        else:
            log.warning("only %d frames: t-SNE skipped", len(rows))
        summary = {"num_frames": len(rows), "dim": int(feats.shape[1]), "plots": pngs,
                   "config": {**asdict(cfg), "size": list(cfg.size) if cfg.size else None}}
        (run.tmp / "embed.json").write_text(json.dumps(summary, indent=2))
        run.commit()
    except BaseException:
        run.abort()
        raise
    return summary
