"""Task heads on the encoder's last feature map, and the U-Net style segmentation decoder.

Classification heads take the layer4 map ``f: [B, 512, h, w]`` so that the same cached maps
serve every head in the partial protocol (linear and fc2 pool first, SonoNet adapts first).
Widths follow the encoder (``out_dim``: 2048 for ResNet-50, ``num_features`` for a timm
model). A timm encoder feeds the linear and fc2 heads its own pooled features as a
``[B, D, 1, 1]`` map (its pooling: average, class token, with its final norm) and the SonoNet
head its last map. Segmentation: the U-Net decoder on a pyramid (ResNets, timm CNNs), the
progressive-upsampling decoder on a plain ViT's tokens (:func:`make_segmenter`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from awcl.backbones import TokenSegmenter
from awcl.models import FEATURE_DIM, Encoder

HEADS = ("linear", "fc2", "sononet")


class LinearHead(nn.Module):
    """Global average pooling then one linear layer. ``[B,512,h,w] -> [B,K]``."""

    def __init__(self, num_classes: int, in_ch: int = FEATURE_DIM):
        super().__init__()
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))


class FC2Head(nn.Module):
    """Pooling then two FC layers (Task II). ``[B,512,h,w] -> [B,K]``."""

    def __init__(self, num_classes: int, in_ch: int = FEATURE_DIM, hidden: int = 256, p: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_ch, hidden), nn.ReLU(inplace=True), nn.Dropout(p), nn.Linear(hidden, num_classes)
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f.mean(dim=(2, 3)))


class SonoNetHead(nn.Module):
    """SonoNet-style adaptation layers: 1x1 conv-BN-ReLU, 1x1 conv to K channels + BN, then
    global average pooling of the K class maps. ``[B,512,h,w] -> [B,K]``."""

    def __init__(self, num_classes: int, in_ch: int = FEATURE_DIM, hidden: int = 128):
        super().__init__()
        self.adapt = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1, bias=False),
            nn.BatchNorm2d(num_classes),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.adapt(f).mean(dim=(2, 3))


def make_head(name: str, num_classes: int, in_ch: int = FEATURE_DIM) -> nn.Module:
    """A classification head on ``in_ch``-channel maps (the encoder's ``out_dim``)."""
    if name == "linear":
        return LinearHead(num_classes, in_ch)
    if name == "fc2":
        return FC2Head(num_classes, in_ch)
    if name == "sononet":
        return SonoNetHead(num_classes, in_ch)
    raise ValueError(f"unknown head {name!r} (choose from {', '.join(HEADS)})")


def last_feature_map(encoder: nn.Module, x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
    """``x: [B,1,H,W] -> [B, 512, H/32, W/32]`` (a ResNet's layer4 output, before pooling).

    A timm encoder gives its pooled features ``[B, D, 1, 1]`` when ``pooled`` (what a pooling
    head needs) and its last map otherwise; a ResNet always gives layer4's map."""
    if not isinstance(encoder, Encoder):
        return encoder(x)[:, :, None, None] if pooled else encoder.last_map(x)
    h = encoder.maxpool(encoder.stem(x))
    return encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(h))))


class Classifier(nn.Module):
    """Encoder + head. ``forward(x: [B,1,H,W]) -> logits [B,K]``."""

    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(last_feature_map(self.encoder, x, pooled=not isinstance(self.head, SonoNetHead)))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class UpBlock(nn.Module):
    """Upsample x2 to the skip's size, concatenate the skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """Encoder pyramid (``encoder.feature_maps``, channels ``encoder.feature_channels``,
    shallow to deep) + U-Net decoder: one :class:`UpBlock` per skip, deepest first, 256, 128,
    64, 32 channels wide. ResNet-18: up4 /32 -> /16, up3 -> /8, up2 -> /4, up1 -> /2 (stem).

    ``forward(x: [B,1,H,W]) -> logits [B, C, H, W]`` (final bilinear upsample to input size).
    """

    WIDTHS = (256, 128, 64, 32)

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        ch = list(getattr(encoder, "feature_channels", (64, 64, 128, 256, 512)))
        cin = ch[-1]
        for i in range(len(ch) - 2, -1, -1):  # up<n-1> (deepest) ... up1
            width = self.WIDTHS[min(len(ch) - 2 - i, len(self.WIDTHS) - 1)]
            setattr(self, f"up{i + 1}", UpBlock(cin, ch[i], width))
            cin = width
        self.out = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder.feature_maps(x)
        d = maps[-1]
        for i in range(len(maps) - 2, -1, -1):
            d = getattr(self, f"up{i + 1}")(d, maps[i])
        return F.interpolate(self.out(d), size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_segmenter(encoder: nn.Module, num_classes: int) -> nn.Module:
    """U-Net on a pyramid encoder; the progressive-upsampling decoder on a plain ViT."""
    if getattr(encoder, "tokens", False):
        return TokenSegmenter(encoder, num_classes)
    return UNet(encoder, num_classes)
