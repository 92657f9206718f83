"""Cheap batched augmentations on tensors (affine via ``affine_grid``; intensity ops).

Images are ``x: [B,1,H,W]`` floats in [0,1]; masks ``m: [B,H,W]`` long, transformed jointly
with the same affine (nearest neighbour) so labels stay aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BatchAugmentConfig:
    """Augmentation of a downstream training batch (torch, on the device; masks follow the
    frames); the pretraining views have their own :class:`awcl.data.augment.ViewAugmentConfig`."""

    hflip: bool = False
    vflip: bool = False
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0  # fraction of the size
    shear: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0  # additive, +-
    noise_std: float = 0.0

    @property
    def geometric(self) -> bool:
        return bool(
            self.hflip or self.vflip or self.rotate_deg or self.shift or self.shear
            or self.scale != (1.0, 1.0)
        )


def _uniform(b: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, generator=g, device=g.device)


def augment(
    x: torch.Tensor, cfg: BatchAugmentConfig, g: torch.Generator, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly transform ``x: [B,1,H,W]`` (and ``mask: [B,H,W]``) with one draw per sample.

    Random draws come from ``g`` on its own device (pass a generator on ``x``'s device)."""
    b, dev = x.shape[0], g.device
    if cfg.geometric:
        ang = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, g) * math.pi / 180
        sc = _uniform(b, *cfg.scale, g)
        sh = _uniform(b, -cfg.shear, cfg.shear, g)
        tx = _uniform(b, -cfg.shift, cfg.shift, g) * 2
        ty = _uniform(b, -cfg.shift, cfg.shift, g) * 2
        coin = lambda: torch.rand(b, generator=g, device=dev) < 0.5  # noqa: E731
        fx = torch.where(coin(), -1.0, 1.0) if cfg.hflip else torch.ones(b, device=dev)
        fy = torch.where(coin(), -1.0, 1.0) if cfg.vflip else torch.ones(b, device=dev)
        h, w = x.shape[-2:]
        # The map output -> input pixel, built in pixel units (x right, y down) so a rotation
        # stays a rotation on non-square frames: A = flips · shear · rotation / scale.
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        a00, a01 = cos * fx, (-sin + sh * cos) * fy
        a10, a11 = sin * fx, (cos + sh * sin) * fy
        # affine_grid wants normalised coordinates (x·2/W, y·2/H): theta = D⁻¹ A D, D = diag(W/2, H/2)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = a00
        theta[:, 0, 1] = a01 * (h / w)
        theta[:, 1, 0] = a10 * (w / h)
        theta[:, 1, 1] = a11
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if mask is not None:
            m = F.grid_sample(
                mask[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )
            mask = m[:, 0].long()
    if cfg.gamma != (1.0, 1.0):
        gam = _uniform(b, *cfg.gamma, g).view(b, 1, 1, 1).to(x.device)
        x = x.clamp_min(0).pow(gam)
    if cfg.brightness:
        x = x + _uniform(b, -cfg.brightness, cfg.brightness, g).view(b, 1, 1, 1).to(x.device)
    if cfg.noise_std:
        x = x + cfg.noise_std * torch.randn(x.shape, generator=g, device=dev).to(x.device)
    return x.clamp(0, 1), mask
