"""Downstream transfer: classification and segmentation fine-tuning, metrics, embeddings."""

from awcl.evaluate.embed import EmbedConfig, embed
from awcl.evaluate.finetune import PRESETS, FinetuneConfig, finetune

__all__ = ["PRESETS", "EmbedConfig", "FinetuneConfig", "embed", "finetune"]
