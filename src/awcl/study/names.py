"""How a study names an encoder's row when it has several backbones or inits.

The default backbone (ResNet-18) is never named: ``simclr`` is SimCLR on ResNet-18, as in every
study before the ``backbones:`` axis, so adding a backbone to a study re-uses its ResNet-18
runs (same names, same cache keys). Any other backbone is a suffix: ``simclr@convnext_atto``,
``random@vit_small_patch16_224`` (a timm model without ``timm:``, unless it would read as a
torchvision ResNet: ``simclr@timm:resnet50``). An init's row is its own name (``usf-mae``).

A study with the axis labels every run with its ``backbone``; :func:`with_backbone` adds that
as a column to the report's results table, :func:`row_backbones` maps each row to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from awcl.backbones import DEFAULT_BACKBONE, RESNETS, TIMM_PREFIX

if TYPE_CHECKING:
    import pandas as pd

SEP = "@"


def backbone_tag(backbone: str) -> str:
    """``''`` for ResNet-18, else ``@<short name>``."""
    if backbone == DEFAULT_BACKBONE:
        return ""
    short = backbone.removeprefix(TIMM_PREFIX)
    return SEP + (backbone if short in RESNETS else short)


def split_row(name: str) -> tuple[str, str]:
    """A row name as (method or init name, backbone): ``simclr@convnext_atto`` ->
    ``("simclr", "timm:convnext_atto")``; an untagged name is on ResNet-18."""
    base, sep, tag = str(name).partition(SEP)
    if not sep:
        return base, DEFAULT_BACKBONE
    return base, tag if tag in RESNETS or tag.startswith(TIMM_PREFIX) else TIMM_PREFIX + tag


def row_backbones(index: dict[str, Any]) -> dict[str, str]:
    """Row name -> backbone, from a study index's run labels (``study.json``); ``{}`` for a
    study without the axis (its runs carry no ``backbone`` label)."""
    out: dict[str, str] = {}
    for run in index.get("runs", []):
        lab = run.get("labels") or {}
        if lab.get("backbone") and lab.get("method") is not None:
            out[str(lab["method"])] = str(lab["backbone"])
    return out


def with_backbone(df: pd.DataFrame, index: dict[str, Any]) -> pd.DataFrame:
    """The results table with a ``backbone`` column after ``method`` when the study has the
    axis (several backbones, a non-default one, or an init); otherwise ``df`` unchanged, so a
    default study's ``results.csv`` stays as it was. The backbone is read from the index
    (current labels, also for runs finished before the axis was added), by run directory."""
    by_run = {r.get("dir"): (r.get("labels") or {}).get("backbone") for r in index.get("runs", [])}
    by_run = {k: v for k, v in by_run.items() if v}
    if not by_run or "run" not in df.columns:
        return df
    out = df.copy()
    fallback = out["method"].map(lambda m: split_row(m)[1] if isinstance(m, str) else None)
    where = list(out.columns).index("method") + 1 if "method" in out.columns else len(out.columns)
    out.insert(where, "backbone", out["run"].map(by_run).fillna(fallback))
    return out
