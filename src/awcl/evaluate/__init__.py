"""Downstream transfer: classification and segmentation fine-tuning, metrics, embeddings.

The names of tasks, protocols and metrics live in :mod:`awcl.evaluate.tasks`; the heads in
``awcl.evaluate.heads.HEADS``; the paper presets in ``awcl.evaluate.config.PRESETS``.
"""

from awcl.evaluate.embed import EmbedConfig, embed
from awcl.evaluate.finetune import PRESETS, FinetuneConfig, finetune
from awcl.evaluate.tasks import HEADLINE, METRICS, PROBES, PROTOCOLS, TABLE_METRICS, TASKS

__all__ = [
    "HEADLINE", "METRICS", "PRESETS", "PROBES", "PROTOCOLS", "TABLE_METRICS", "TASKS",
    "EmbedConfig", "FinetuneConfig", "embed", "finetune",
]  # fmt: skip
