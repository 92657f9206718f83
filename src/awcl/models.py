"""Encoder, projection head and the loading of every initialisation kind.

The default encoder is torchvision's ResNet-18 without ``fc`` (``--backbone resnet34`` /
``resnet50`` swap the trunk; ``timm:<model>`` builds :class:`awcl.backbones.TimmEncoder`). Ultrasound is grey-scale, so it runs
with a 1-channel ``conv1`` (a third of that layer's work); exported weights use the standard
3-channel ``conv1`` (the grey kernel divided by 3 on each channel), which gives identical
features for a grey image replicated to RGB. The exported state dict therefore loads with
``strict=True`` into ``torchvision.models.resnet18()`` minus ``fc``.

Inputs everywhere are float grey images in [0, 1], ``x: [B, 1, H, W]``; the encoder applies
the grey equivalent of ImageNet normalisation itself. An RGB network (ImageNet weights) is
loaded with its input normalisation folded into the grey stem (``fold_rgb_stem``).
"""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from awcl import _compat  # noqa: F401
from awcl.atomic import atomic_file
from awcl.backbones import (
    DEFAULT_BACKBONE,
    GREY_MEAN,
    GREY_STD,
    RESNETS,
    TimmEncoder,
    check_backbone,
    feature_dim,
    mismatch,
)
from awcl.errors import AwclError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FEATURE_DIM = 512
ENCODER_FILE = "encoder.pt"  # name of the exported encoder inside a run directory
BACKBONE_KEY = "awcl_backbone"  # an encoder file's record of its architecture (not ResNet-18)


RESNET_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}
PYRAMIDS = {"resnet18": [64, 64, 128, 256, 512], "resnet34": [64, 64, 128, 256, 512],
            "resnet50": [64, 256, 512, 1024, 2048]}  # stem, layer1..4 channels


def _resnet(arch: str = "resnet18") -> nn.Module:
    import torchvision.models

    return getattr(torchvision.models, arch)(weights=None)


class Encoder(nn.Module):
    """ResNet trunk (ResNet-18 by default). ``forward(x: [B,1,H,W] in [0,1]) -> [B, out_dim]``
    (512 for ResNet-18/34, 2048 for ResNet-50)."""

    def __init__(self, arch: str = "resnet18") -> None:
        super().__init__()
        if arch not in PYRAMIDS:
            raise AwclError(f"unknown ResNet {arch!r} (choose from {', '.join(PYRAMIDS)})")
        net = _resnet(arch)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.avgpool = net.avgpool
        self.backbone = arch
        self.out_dim = int(net.fc.in_features)
        self.feature_channels = list(PYRAMIDS[arch])

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - GREY_MEAN) / GREY_STD
        return self.relu(self.bn1(self.conv1(x)))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale maps for a segmentation decoder.

        Returns [stem /2: 64ch, layer1 /4: 64, layer2 /8: 128, layer3 /16: 256, layer4 /32: 512]
        (ResNet-18/34; ``feature_channels`` lists them for each ResNet).
        """
        s = self.stem(x)
        f1 = self.layer1(self.maxpool(s))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [s, f1, f2, f3, f4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    # ------------------------------------------------------------------ torchvision interop
    def export_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """State dict that loads strictly into ``torchvision.models.<arch>()`` minus ``fc``."""
        sd = OrderedDict((k, v.detach().clone().cpu()) for k, v in self.state_dict().items())
        sd["conv1.weight"] = sd["conv1.weight"].repeat(1, 3, 1, 1) / 3.0
        return sd

    def load_torchvision_state_dict(self, sd: dict[str, torch.Tensor], source: str = "") -> None:
        """Load a ResNet state dict of this depth (3- or 1-channel conv1; ``fc.*`` ignored) strictly."""
        sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.startswith("fc.")}
        w = sd.get("conv1.weight")
        if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] == 3:
            sd.update(fold_rgb_stem(sd))
        own = self.state_dict()
        # sorted, so the first keys named are the same whatever the file's order
        problems = mismatch(dict(sorted(own.items())), dict(sorted(sd.items())), RESNET_NAMES[self.backbone])
        if problems:
            raise AwclError(f"{source or 'state dict'}: not a {RESNET_NAMES[self.backbone]} encoder: "
                            + problems + " (--backbone names a foreign file's architecture)")
        self.load_state_dict(sd, strict=True)


def fold_rgb_stem(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A 3-channel ``conv1`` (and ``bn1.running_mean``) as the grey encoder's 1-channel stem.

    Identical channels (an awcl export: the grey kernel / 3 on each) are summed back. Distinct
    channels mean an RGB network trained on ImageNet-normalised input (torchvision's
    convention); for a grey image x replicated to RGB it computed
    ``Σ_c W_c * (x - m_c)/s_c``, while the encoder feeds ``(x - GREY_MEAN)/GREY_STD``. So the
    grey kernel is ``GREY_STD · Σ_c W_c / s_c`` and the constant left over,
    ``d_k = Σ_{c,i,j} W[k,c,i,j] (m_c - GREY_MEAN) / s_c`` per output channel, is folded into
    ``bn1.running_mean`` (+d_k), so a frozen (eval-mode) encoder sees what the network was
    trained on. Exact wherever the 7x7 window lies inside the image; on the 3-pixel frame
    where it reaches the zero padding the padded values differ (zero after the per-channel
    normalisation there, zero after the grey one here).
    """
    w = sd["conv1.weight"].double()  # [64, 3, 7, 7]
    if torch.allclose(w[:, 0], w[:, 1], rtol=1e-6, atol=1e-9) and torch.allclose(
        w[:, 0], w[:, 2], rtol=1e-6, atol=1e-9
    ):
        return {"conv1.weight": sd["conv1.weight"].sum(dim=1, keepdim=True)}
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    grey = GREY_STD * (w / std.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    d = (w * ((mean - GREY_MEAN) / std).view(1, 3, 1, 1)).sum(dim=(1, 2, 3))  # [64]
    out = {"conv1.weight": grey.to(sd["conv1.weight"].dtype)}
    rm = sd.get("bn1.running_mean")
    if isinstance(rm, torch.Tensor):
        out["bn1.running_mean"] = (rm.double() + d).to(rm.dtype)
    return out


class ProjectionHead(nn.Module):
    """SimCLR MLP g: 512 -> hidden -> out. ``forward(h: [B, 512]) -> [B, out]`` (not normalised)."""

    def __init__(self, in_dim: int = FEATURE_DIM, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


# ---------------------------------------------------------------------- loading inits
def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (``weights_only=True``) and return a flat tensor state dict.

    Accepts a bare state dict, or a dict holding one under ``state_dict``/``encoder``/
    ``model``/``module`` (a training checkpoint's ``argparse.Namespace`` of settings, as MAE's, is
    allowed), or a ``.safetensors`` file. Anything else (a pickled module, a list, ...) is
    refused with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise AwclError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors for full modules, zip errors for junk files
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise AwclError(
            f"{path}: not a loadable state dict (weights_only=True refused it: {first[:160]})"
        ) from None
    if isinstance(obj, dict):
        for key in ("encoder", "state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AwclError(f"{path}: not a state dict of tensors ({type(obj).__name__})")
    return obj


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    except ImportError:
        raise AwclError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise AwclError(f"{path}: not a readable safetensors file ({first})") from None


def encoder_meta(path: str | os.PathLike) -> dict[str, Any]:
    """What an awcl encoder file records about itself: ``{"backbone": name, "img_size":
    [H, W] or None}``, or ``{}`` (a bare state dict: a ResNet-18 of awcl's, or a foreign file)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            size = meta.get("img_size")
            return {"backbone": meta["awcl_backbone"],
                    "img_size": [int(v) for v in size.split("x")] if size else None} if meta.get("awcl_backbone") else {}  # fmt: skip
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: load_state_file says why
        return {}
    if isinstance(obj, dict) and isinstance(obj.get(BACKBONE_KEY), str):
        return {"backbone": obj[BACKBONE_KEY], "img_size": obj.get("img_size")}
    return {}


def resolve_init(init: str | os.PathLike) -> str | Path:
    """Normalise an ``--init`` value: 'random', or a weights file (a run dir -> its encoder)."""
    if str(init) in ("random", "none", ""):
        return "random"
    p = Path(init)
    if p.is_dir():
        for cand in (p / ENCODER_FILE, p / "export" / ENCODER_FILE):
            if cand.is_file():
                return cand
        raise AwclError(f"{p}: directory has no exported {ENCODER_FILE} (is it an awcl pretrain run?)")
    if not p.exists():
        raise AwclError(f"{p}: --init must be 'random', a pretrain run directory or a weights file")
    return p


def resolve_backbone(init: str | os.PathLike = "random", backbone: str | None = None) -> str:
    """The architecture to build: ``backbone`` if given, else the one the ``init`` file records,
    else ResNet-18. A ``backbone`` that contradicts the recorded one is an error."""
    src = resolve_init(init)
    recorded = encoder_meta(src).get("backbone") if src != "random" else None
    if backbone:
        backbone = check_backbone(backbone)
        if recorded and recorded != backbone:
            raise AwclError(f"{src}: an encoder of backbone {recorded}, not --backbone {backbone} "
                            f"(drop --backbone or pass {recorded})")  # fmt: skip
        return backbone
    return check_backbone(recorded or DEFAULT_BACKBONE)


def encoder_dim(init: str | os.PathLike = "random", backbone: str | None = None,
                size: tuple[int, int] | None = None) -> int:
    """Width of the pooled features of the encoder ``build_encoder`` would build (without
    building it, and without drawing random numbers)."""
    return feature_dim(resolve_backbone(init, backbone), tuple(size) if size else None)


def build_encoder(init: str | os.PathLike = "random", backbone: str | None = None,
                  size: tuple[int, int] | None = None) -> nn.Module:
    """Encoder from 'random', an awcl run directory / exported encoder, a torchvision ResNet
    file or a foreign checkpoint (awcl.backbones).

    ``backbone``: the architecture (default: the one the init file records, else ResNet-18);
    ``size``: the working frame size ``(H, W)``, which timm models that need one (ViT
    position embeddings) are built for. A ResNet is an :class:`Encoder`, a timm model an
    :class:`awcl.backbones.TimmEncoder`; both give ``forward(x) -> [B, out_dim]``,
    ``feature_maps``, ``feature_channels``, ``backbone`` and ``export_state_dict``.
    """
    name = resolve_backbone(init, backbone)
    src = resolve_init(init)
    if name in RESNETS:
        enc = Encoder(name)
        if src != "random":
            enc.load_torchvision_state_dict(load_state_file(src), source=str(src))
        return enc
    meta = encoder_meta(src) if src != "random" else {}
    tenc = TimmEncoder(name, tuple(size) if size else meta.get("img_size"))
    if src != "random":
        tenc.load_weights(load_state_file(src), str(src), own=bool(meta), own_img_size=meta.get("img_size"))
    return tenc


def save_encoder(encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write the encoder atomically: ResNet-18 as a bare torchvision-compatible state dict (as
    always); any other backbone as ``{"awcl_backbone": name, "img_size": [H, W] | None,
    "encoder": state dict}`` (torchvision / timm keys), so a later run builds the same model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = getattr(encoder, "backbone", "resnet18")
    obj: Any = encoder.export_state_dict()
    if name != "resnet18":
        size = getattr(encoder, "img_size", None)
        obj = {BACKBONE_KEY: name, "img_size": list(size) if size else None, "encoder": obj}
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return path
