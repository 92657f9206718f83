"""``awcl export RUN --out DIR``: a pretrained encoder in the formats others load, with a card.

``DIR`` receives::

    encoder.safetensors     torchvision ResNet-18 state dict minus ``fc`` (3-channel conv1), safetensors
    encoder.pt              the same state dict as a torch file (``torch.load(weights_only=True)``)
    encoder.torchscript.pt  (--torchscript) the grey encoder, normalisation included
    encoder.onnx            (--onnx) the same graph in ONNX (opset 17, dynamic batch and size)
    MODEL_CARD.md           method, data sources (frames, patients, manifest hash), settings,
                            pretraining curves, downstream results, intended use, limitations
    pretrain_curves.png     loss (and kNN accuracy) per epoch
    config.yaml, summary.json, history.csv   the run's own records

Other backbones (``--backbone``): a ResNet-34/50 exports the same way (torchvision keys); a
timm model exports timm's own keys with its 1-channel stem, loadable strict into
``timm.create_model(name, num_classes=0, in_chans=1[, img_size=(H, W)])`` (the card names the
call); its safetensors metadata records the backbone, so the file is an ``--init`` as it is.

Inputs: the state dicts take a 3-channel input: the grey image normalised with awcl's grey
mean/std (0.449, 0.226) and replicated to three channels gives exactly awcl's features. The TorchScript and
ONNX graphs take awcl's convention: ``x: [B, 1, H, W]`` grey in [0, 1], -> ``[B, 512]``.

``RUN`` is a pretraining run directory, or a study's ``runs/pretrain-...`` directory (then
the card also lists that study's downstream results for this encoder).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from awcl import __version__
from awcl.atomic import replace_dir, temp_sibling
from awcl.errors import AwclError
from awcl.locking import out_lock
from awcl.models import ENCODER_FILE, GREY_MEAN, GREY_STD, RESNET_NAMES, Encoder, build_encoder
from awcl.train.card import (  # noqa: F401  (METHOD_TEXT, RunInfo, card_backbone: re-exported)
    METHOD_TEXT,
    RunInfo,
    _timm_call,
    card_backbone,
    curves_png,
    history,
    locate,
    model_card,
)

ONNX_OPSET = 17
# (study directory, the run's directory name in its runs/) -> the card's downstream rows; the
# study provides it (awcl.study.downstream.encoder_results): this layer cannot read a study
Downstream = Callable[[Path, str], list[dict[str, Any]]]


@dataclass
class ExportConfig:
    run: str  # pretraining run dir, or a study's runs/pretrain-... dir
    out: str  # directory to write (created; replaced if it is an earlier export)
    torchscript: bool = False
    onnx: bool = False


# ------------------------------------------------------------------------------ formats
def _require(module: str, extra: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise AwclError(f"{what} needs the {module!r} package: pip install 'awcl[{extra}]'")


def save_safetensors(sd: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    _require("safetensors", "export", "encoder.safetensors")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)


def save_torchscript(enc: Encoder, path: Path, size: tuple[int, int]) -> None:
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        traced = torch.jit.trace(enc, x)
    traced.save(str(path))


def save_onnx(enc: Encoder, path: Path, size: tuple[int, int]) -> None:
    _require("onnx", "export", "--onnx")
    import warnings

    x = torch.rand(2, 1, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not the user's
        torch.onnx.export(
            enc, (x,), str(path), input_names=["image"], output_names=["features"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )  # fmt: skip
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))


# ------------------------------------------------------------------------------ main API
def export_run(cfg: ExportConfig, downstream: Downstream | None = None) -> Path:
    """Write the export directory (atomically: a temporary sibling renamed at the end).
    ``downstream``: the study's results of a run that belongs to one (``awcl export`` passes
    :func:`awcl.study.downstream.encoder_results`); without it the card lists none."""
    with out_lock(cfg.out, "export"):
        return _export_run(cfg, downstream)


def _export_run(cfg: ExportConfig, downstream: Downstream | None) -> Path:
    info = locate(cfg.run)
    enc = build_encoder(info.root / ENCODER_FILE).eval()
    out = Path(cfg.out)
    if out.exists() and not (out / "MODEL_CARD.md").is_file() and any(out.iterdir()):
        raise AwclError(f"{out}: exists and is not an awcl export; refusing to replace it")
    size = tuple(info.config.get("size") or info.summary.get("size") or (224, 288))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    tmp.mkdir()
    try:
        sd = enc.export_state_dict()
        meta = {"format": "pt", "architecture": "torchvision.models.resnet18 without fc",
                "input": f"grey in [0,1], (x-{GREY_MEAN})/{GREY_STD}, replicated to 3 channels",
                "awcl_version": __version__,
                "method": str(info.config.get("method", ""))}  # fmt: skip
        name = getattr(enc, "backbone", "resnet18")
        if name != "resnet18":  # recorded, so the file is an --init that names its backbone
            img = getattr(enc, "img_size", None)
            meta.update(awcl_backbone=name, img_size=f"{img[0]}x{img[1]}" if img else "")
            bb = {"name": name, "img_size": img, "dim": enc.out_dim}
            meta["architecture"] = (f"torchvision.models.{name} without fc" if name in RESNET_NAMES
                                    else _timm_call(bb))  # fmt: skip
            if name not in RESNET_NAMES:
                meta["input"] = f"grey in [0,1], (x-{GREY_MEAN})/{GREY_STD}, 1 channel"
        save_safetensors(sd, tmp / "encoder.safetensors", meta)
        torch.save(sd, tmp / "encoder.pt")
        files = ["encoder.safetensors", "encoder.pt"]
        if cfg.torchscript:
            save_torchscript(enc, tmp / "encoder.torchscript.pt", size)  # type: ignore[arg-type]
            files.append("encoder.torchscript.pt")
        if cfg.onnx:
            save_onnx(enc, tmp / "encoder.onnx", size)  # type: ignore[arg-type]
            files.append("encoder.onnx")
        hist = history(info)
        if hist is not None and "loss" in hist:
            curves_png(hist, tmp / "pretrain_curves.png")
        for name in ("config.yaml", "summary.json", "history.csv"):
            if (info.root / name).is_file():
                shutil.copy2(info.root / name, tmp / name)
        rows = downstream(info.study, info.study_dir) if downstream and info.study and info.study_dir else []
        (tmp / "MODEL_CARD.md").write_text(model_card(info, files, hist, rows))
        replace_dir(tmp, out)
    except OSError as err:
        raise AwclError(f"{out}: export not written ({err.strerror or err})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ CLI
def _cli(args) -> int:
    cfg = ExportConfig(run=args.run, out=args.out, torchscript=args.torchscript, onnx=args.onnx)
    out = export_run(cfg, getattr(args, "downstream", None))  # set by the study's registration
    print(f"exported {args.run} -> {out}")
    for p in sorted(out.iterdir()):
        print(f"  {p.name:<24} {p.stat().st_size / 1e6:8.2f} MB")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a pretrained encoder (safetensors, torchvision state dict, TorchScript/ONNX) with a model card",
        description="Write encoder.safetensors and encoder.pt (torchvision resnet18 minus fc), "
        "optionally TorchScript and ONNX graphs, and MODEL_CARD.md (method, data sources with "
        "counts and manifest hash, settings, pretraining curves, downstream results of the study "
        "the run belongs to, intended use, limitations). RUN is a pretraining run directory or a "
        "study's runs/pretrain-... directory.",
    )
    p.add_argument("run", help="pretraining run directory (holds encoder.pt)")
    p.add_argument("--out", required=True, help="export directory to write")
    p.add_argument("--torchscript", action="store_true", help="also write encoder.torchscript.pt")
    p.add_argument("--onnx", action="store_true", help="also write encoder.onnx (needs awcl[export])")
    p.set_defaults(func=_cli)
