"""Task heads on the encoder's last feature map, and the U-Net style segmentation decoder.

Classification heads take the layer4 map ``f: [B, 512, h, w]`` so that the same cached maps
serve every head in the partial protocol (linear and fc2 pool first, SonoNet adapts first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def make_head(name: str, num_classes: int) -> nn.Module:
    if name == "linear":
        return LinearHead(num_classes)
    if name == "fc2":
        return FC2Head(num_classes)
    if name == "sononet":
        return SonoNetHead(num_classes)
    raise ValueError(f"unknown head {name!r} (choose from {', '.join(HEADS)})")


def last_feature_map(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    """``x: [B,1,H,W] -> [B, 512, H/32, W/32]`` (layer4 output, before pooling)."""
    h = encoder.maxpool(encoder.stem(x))
    return encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(h))))


class Classifier(nn.Module):
    """Encoder + head. ``forward(x: [B,1,H,W]) -> logits [B,K]``."""

    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(last_feature_map(self.encoder, x))


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
    """ResNet-18 encoder (``Encoder.feature_maps``) + U-Net decoder.

    ``forward(x: [B,1,H,W]) -> logits [B, C, H, W]`` (final bilinear upsample to input size).
    """

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.up4 = UpBlock(512, 256, 256)  # /32 -> /16
        self.up3 = UpBlock(256, 128, 128)  # -> /8
        self.up2 = UpBlock(128, 64, 64)  # -> /4
        self.up1 = UpBlock(64, 64, 32)  # -> /2 (stem)
        self.out = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, f1, f2, f3, f4 = self.encoder.feature_maps(x)
        d = self.up4(f4, f3)
        d = self.up3(d, f2)
        d = self.up2(d, f1)
        d = self.up1(d, s)
        return F.interpolate(self.out(d), size=x.shape[-2:], mode="bilinear", align_corners=False)
