"""The model card of an export (``MODEL_CARD.md``) and what it reads: the run (its config,
summary and ``history.csv``), the pretraining curves and the downstream results of the study
the run belongs to. ``awcl.train.export`` writes it with the encoder files.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from awcl import __version__
from awcl.errors import AwclError
from awcl.models import ENCODER_FILE, GREY_MEAN, GREY_STD, RESNET_NAMES, encoder_meta

METHOD_TEXT = {
    "awcl": "anatomy-aware contrastive learning (AWCL; Fu et al. 2022): a labelled frame's positive "
    "is another frame of the same anatomy (from any scan), an unlabelled frame's positive is a "
    "second augmentation of itself; per-sample choice between the instance loss (Eq. 1) and the "
    "anatomy loss (Eq. 2)",
    "simclr": "SimCLR: two augmentations of one frame are positives, labels are not used",
    "clpi": "contrastive learning with patient information (CLPI): the positive is another frame "
    "of the same scan / patient",
    "uscl": "USCL (Chen et al. 2021): frames mixed within a video form positive pairs (NT-Xent), "
    "plus a cross-entropy head on the labelled frames",
    "supervised": "supervised pretraining: cross-entropy on the anatomy labels",
}


# ------------------------------------------------------------------------------ locating
@dataclass
class RunInfo:
    root: Path  # where encoder.pt, config.yaml, summary.json live
    study: Path | None  # the study directory, when the run belongs to one
    study_dir: str | None  # the run's directory name inside ``study/runs``
    config: dict[str, Any]
    summary: dict[str, Any]


def locate(run: str | os.PathLike) -> RunInfo:
    p = Path(run)
    if not p.is_dir():
        raise AwclError(f"{p}: run directory not found")
    root = p / "run" if (p / "run" / ENCODER_FILE).is_file() else p
    if not (root / ENCODER_FILE).is_file():
        raise AwclError(f"{p}: no {ENCODER_FILE} (not a finished awcl pretraining run)")
    study_run = root.parent if root.name == "run" else root
    study = study_run.parent.parent if study_run.parent.name == "runs" else None
    if study is not None and not (study / "study.json").is_file():
        study = None

    def read(name: str, loader) -> dict[str, Any]:
        f = root / name
        if not f.is_file():
            return {}
        try:
            data = loader(f.read_text())
        except (ValueError, yaml.YAMLError):
            raise AwclError(f"{f}: unreadable") from None
        return data if isinstance(data, dict) else {}

    return RunInfo(
        root=root,
        study=study,
        study_dir=study_run.name if study else None,
        config=read("config.yaml", yaml.safe_load),
        summary=read("summary.json", json.loads),
    )


# ------------------------------------------------------------------------------ files
def history(info: RunInfo) -> pd.DataFrame | None:
    f = info.root / "history.csv"
    if not f.is_file():
        return None
    try:
        df = pd.read_csv(f)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return df if not df.empty else None


def curves_png(hist: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = hist["epoch"] if "epoch" in hist else np.arange(1, len(hist) + 1)  # epochs completed
    knn = "knn_acc" in hist and hist["knn_acc"].notna().any()
    fig, axes = plt.subplots(1, 2 if knn else 1, figsize=(9 if knn else 5, 3.2), squeeze=False)
    axes[0, 0].plot(x, hist["loss"], marker="o", ms=3)
    axes[0, 0].set(xlabel="epoch", ylabel="training loss", title="pretraining loss")
    if knn:
        axes[0, 1].plot(x, hist["knn_acc"], marker="o", ms=3, color="C1")
        axes[0, 1].set(xlabel="epoch", ylabel="kNN accuracy", title="kNN monitor (held-out patients)")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ the card
def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"
    return "n/a" if v is None else str(v)


def _sources(info: RunInfo) -> list[dict[str, Any]]:
    rec = info.summary.get("data_sources")
    if rec:
        return list(rec)
    from awcl.data.store import describe_source, open_dataset

    data = info.config.get("data") or []
    out = []
    for d in [data] if isinstance(data, str) else list(data):
        try:
            out.append(describe_source(open_dataset(d)))
        except AwclError:
            out.append({"name": Path(d).name, "path": str(d)})
    return out


def model_card(info: RunInfo, files: list[str], hist: pd.DataFrame | None, results: list[dict[str, Any]]) -> str:
    """MODEL_CARD.md of an export: model, method, data, settings, curves, results, use."""
    c, s = info.config, info.summary
    method = str(c.get("method", s.get("method", "?")))
    gran = c.get("granularity", "coarse")
    title = method + (f" ({gran} labels, anatomy ratio {c.get('anatomy_ratio')})" if method == "awcl" else "")
    size = c.get("size") or s.get("size") or ["?", "?"]
    bb = card_backbone(info)
    L = [f"# Model card: awcl {RESNET_NAMES.get(bb['name'], bb['name'])} encoder, {title}", ""]
    L += [f"Exported by awcl {__version__} on {time.strftime('%Y-%m-%d')} from `{info.root.resolve()}`.", ""]
    L += _card_model(size, files, bb) if bb["name"] in RESNET_NAMES else _card_timm(size, files, bb)
    L += ["## Method", "", f"{METHOD_TEXT.get(method, method)}.", ""]
    L += _card_data(info, gran)
    L += _card_settings(c, s)
    L += _card_curves(hist)
    L += _card_results(results)
    L += _card_use()
    return "\n".join(L)


def card_backbone(info: RunInfo) -> dict[str, Any]:
    """The exported encoder's backbone: ``name``, ``img_size`` (timm models built for one),
    ``dim`` (pooled feature width)."""
    from awcl.backbones import feature_dim

    meta = encoder_meta(info.root / ENCODER_FILE)
    name = meta.get("backbone") or "resnet18"
    size = meta.get("img_size")
    return {"name": name, "img_size": size, "dim": feature_dim(name, tuple(size) if size else None)}


def _timm_call(bb: dict[str, Any]) -> str:
    arch = bb["name"].removeprefix("timm:")
    size = f", img_size=({bb['img_size'][0]}, {bb['img_size'][1]})" if bb.get("img_size") else ""
    return f'timm.create_model("{arch}", pretrained=False, num_classes=0, in_chans=1{size})'


def _card_timm(size: list[Any], files: list[str], bb: dict[str, Any]) -> list[str]:
    """The card's model section for a timm backbone (1-channel, timm's own keys)."""
    dim = bb["dim"]
    L = ["## Model", "",
         f"- Architecture: timm `{bb['name'].removeprefix('timm:')}` with `num_classes=0` (pooled "
         f"{dim}-d features, the model's own pooling) and `in_chans=1` (grey input).",
         f"- Trained on grey-scale ultrasound frames of {size[0]}x{size[1]} (HxW).",
         f"- Files: {', '.join(f'`{f}`' for f in files)}.",
         f"- `encoder.safetensors` / `encoder.pt`: timm's own keys; load with `strict=True` into "
         f"`{_timm_call(bb)}`. Input: the grey image in [0, 1] normalised with mean {GREY_MEAN} "
         f"and std {GREY_STD}, one channel. `awcl finetune --init encoder.safetensors` reads the "
         "backbone from the file's metadata.",
         "- TorchScript / ONNX (when exported): input `[B, 1, H, W]` grey in [0, 1] "
         f"(normalisation inside), output `[B, {dim}]`.", ""]  # fmt: skip
    L += ["```python", "import timm, torch", "from safetensors.torch import load_file", "",
          f"net = {_timm_call(bb)}",
          'net.load_state_dict(load_file("encoder.safetensors"))',
          "grey = ...  # [B, 1, H, W] in [0, 1]",
          f"features = net.eval()((grey - {GREY_MEAN}) / {GREY_STD})  # [B, {dim}]",
          "```", ""]  # fmt: skip
    return L


def _card_model(size: list[Any], files: list[str], bb: dict[str, Any] | None = None) -> list[str]:
    """The architecture, the files, how to load them (with a snippet): torchvision ResNets."""
    arch, dim = (bb["name"], bb["dim"]) if bb else ("resnet18", 512)
    label = RESNET_NAMES[arch]
    L = ["## Model", "",
         f"- Architecture: {label} trunk (torchvision `{arch}` without `fc`), {dim}-d output "
         "after global average pooling.",
         f"- Trained on grey-scale ultrasound frames of {size[0]}x{size[1]} (HxW).",
         f"- Files: {', '.join(f'`{f}`' for f in files)}.",
         "- `encoder.safetensors` / `encoder.pt`: loads with `strict=True` into "
         f"`torchvision.models.{arch}()` whose `fc` is replaced by `torch.nn.Identity()`. Input: "
         f"the grey image in [0, 1] normalised with mean {GREY_MEAN} and std {GREY_STD} (the grey "
         "equivalent of ImageNet's), replicated to 3 channels; this reproduces awcl's encoder "
         "exactly (conv1 holds the grey kernel divided by 3 on each channel).",
         "- TorchScript / ONNX (when exported): input `[B, 1, H, W]` grey in [0, 1] "
         f"(normalisation inside), output `[B, {dim}]`.", ""]  # fmt: skip
    L += ["```python", "import torch, torchvision", "from safetensors.torch import load_file", "",
          f"net = torchvision.models.{arch}()", "net.fc = torch.nn.Identity()",
          'net.load_state_dict(load_file("encoder.safetensors"))',
          "grey = ...  # [B, 1, H, W] in [0, 1]",
          f"x = ((grey - {GREY_MEAN}) / {GREY_STD}).expand(-1, 3, -1, -1)",
          f"features = net.eval()(x)  # [B, {dim}]",
          "```", ""]  # fmt: skip
    return L


def _card_data(info: RunInfo, gran: Any) -> list[str]:
    """The pretraining sources (sizes, paths, manifest hashes) and the classes used."""
    L = ["## Data", ""]
    sources = _sources(info)
    if sources:
        L += ["| source | frames | labelled frames | videos | patients | manifest SHA-256 |",
              "|---|---:|---:|---:|---:|---|"]  # fmt: skip
        for d in sources:
            L.append(f"| {d.get('name', '?')} | {_num(d.get('frames'))} | {_num(d.get('labelled_frames'))} | "
                     f"{_num(d.get('videos'))} | {_num(d.get('patients'))} | "
                     f"`{d.get('manifest_sha256', 'not recorded')}` |")  # fmt: skip
        L.append("")
        L += [f"- `{d.get('name', '?')}`: `{d.get('path', '?')}`" for d in sources]
        L.append("")
    else:
        L += ["Not recorded (the run's config names no dataset).", ""]
    if info.summary.get("classes"):
        L += [f"Anatomy classes used ({gran}): {', '.join(map(str, info.summary['classes']))}.", ""]
    return L


def _card_settings(c: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """The run's configured settings, then the measured values the config does not hold."""
    L = ["## Settings", "", "| setting | value |", "|---|---|"]
    keys = ("method", "granularity", "anatomy_ratio", "epochs", "batch_size", "lr", "weight_decay",
            "temperature", "proj_hidden", "proj_dim", "size", "crop_scale", "flip", "brightness",
            "contrast", "blur", "init", "seed", "precision")  # fmt: skip
    for k in keys:
        if k in c:
            v = c[k]
            L.append(f"| {k} | {'x'.join(map(str, v)) if isinstance(v, list) else v} |")
    for k in ("steps", "precision", "devices", "img_per_s"):
        if k in s and k not in c:
            L.append(f"| {k} (measured) | {_num(s[k])} |")
    L.append("")
    return L


def _card_curves(hist: pd.DataFrame | None) -> list[str]:
    L = ["## Pretraining curves", ""]
    if hist is None:
        return [*L, "No history.csv in the run.", ""]
    L += ["![pretraining curves](pretrain_curves.png)", "", "| epoch | step | loss | kNN accuracy |",
          "|---:|---:|---:|---:|"]  # fmt: skip
    for _, h in hist.iterrows():
        L.append(f"| {int(h.get('epoch', 0))} | {_num(h.get('step'))} | {_num(h.get('loss'))} | "
                 f"{_num(h.get('knn_acc'))} |")  # fmt: skip
    L += ["", "kNN accuracy: labelled frames of held-out patients classified by their nearest "
          "neighbours among the training patients' frames (n/a: monitor off).", ""]  # fmt: skip
    return L


def _card_results(results: list[dict[str, Any]]) -> list[str]:
    """The study's rows for this encoder (``awcl.study.downstream.encoder_results``: the
    report's value and interval of each number)."""
    L = ["## Downstream results", ""]
    if not results:
        return [*L, "None recorded: the run is not part of an awcl study, or its study has no finished "
                "downstream run of it (`awcl export` of a study's runs/pretrain-... directory lists "
                "them; `awcl study` or `awcl finetune --init` with this encoder measures transfer).", ""]  # fmt: skip
    L += ["| task | protocol | labelled patients | metric | value | 95% interval | runs × folds |",
          "|---|---|---|---|---|---|---:|"]  # fmt: skip
    for r in results:
        n = "all" if r["train_patients"] is None else str(r["train_patients"])
        value = f"{r['value']:.4f}" if r["lo"] is not None else f"{r['value']:.4f} ± {r['std']:.4f}"
        ci = f"[{r['lo']:.4f}, {r['hi']:.4f}] ({r['unit']})" if r["lo"] is not None else "n/a"
        L.append(f"| {r['task']} | {r['protocol']} | {n} | {r['metric']} | {value} | {ci} | {r['folds']} |")
    L += ["", "Computed as the study's report computes a table cell, over this encoder's own runs: the "
          "metric on the test frames of all folds pooled, with its 95% interval by bootstrap over the "
          "test patients (or the task's group); where a run wrote no predictions, mean ± std over folds "
          "and no interval. The report's cell pools every pretraining seed of the method, so with "
          "several seeds it differs from this one-seed figure.", ""]  # fmt: skip
    return L


def _card_use() -> list[str]:
    return ["## Intended use", "",
            "Research on ultrasound image analysis: initialising encoders for classification, "
            "segmentation or retrieval tasks that are then fine-tuned and validated on the user's "
            "own data, and comparing pretraining methods.", "",
            "## Limitations", "",
            "- Not a medical device and not validated for clinical decisions; downstream models need "
            "their own validation on data from the intended population and scanners.",
            "- The encoder has seen only the sources listed above (their scanners, presets, "
            "populations and label sets); expect a drop under domain shift.",
            "- Grey-scale input at the training size; colour Doppler overlays, other resolutions or "
            "crops differ from what it was trained on.",
            "- Contrastive features encode what the positives shared: anatomy-aware pretraining "
            "groups views of the same anatomy and may discard cues that separate them.", ""]  # fmt: skip
