"""Frames become network input the same way in pretraining, fine-tuning and embedding."""

from __future__ import annotations

import torch


def to_input(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [0, 1] (channels_last when asked)."""
    x = x.unsqueeze(1).float() / 255.0
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
