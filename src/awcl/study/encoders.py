"""The encoders a study compares, before any downstream run: per seed, backbone and method a
random init, the ImageNet weights or a pretraining run per anatomy ratio; per ``inits:``
entry a weights file. Missing weights files are skipped with a one-line note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awcl.backbones import DEFAULT_BACKBONE, RESNETS
from awcl.study.config import StudyConfig
from awcl.study.names import backbone_tag
from awcl.study.records import PretrainLabels
from awcl.study.runs import Run


@dataclass
class EncoderSpec:
    """One encoder of the comparison (a row of the report's tables): how it is made, not the
    network (that is :class:`awcl.models.Encoder`)."""

    method: str  # the study method (random, simclr, awcl-fine, ...) or an init's name
    ratio: float | None
    seed: int
    init: Run | str  # 'random', a weights file, or its pretraining run (planned where used)
    label: str = ""  # the row name: the method with its backbone tag, or the init's name
    # on every run of it: EncoderLabels fields besides method, ratio, seed (backbone, init, layout)
    labels: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # downstream settings it needs (backbone)

    def __post_init__(self) -> None:
        self.label = self.label or self.method


def abs_path(p: str | None) -> str | None:
    return str(Path(p).expanduser().resolve()) if p else None


def add_note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def method_config(method: str, ratio: float | None, seed: int, cfg: StudyConfig,
                  backbone: str = DEFAULT_BACKBONE) -> dict[str, Any]:
    """A pretraining run's settings (ResNet-18's without a ``backbone`` key, as always)."""
    base, _, gran = method.partition("-")
    p = cfg.pretrain
    out: dict[str, Any] = {
        "method": base,
        "epochs": p.epochs,
        "batch_size": p.batch_size,
        "size": p.size,
        "lr": p.lr,
        "seed": seed,
    }
    if gran:
        out["granularity"] = gran
    if ratio is not None:
        out["anatomy_ratio"] = ratio
    if backbone != DEFAULT_BACKBONE:
        out["backbone"] = backbone
    out.update(p.extra)
    return out


def pretrain_weight(method: str, cfg: StudyConfig, share: float = 1.0) -> float:
    return cfg.pretrain.epochs * (3.0 if method != "uscl" else 2.0) * share


def _imagenet(cfg: StudyConfig, notes: list[str], seed: int, backbone: str, labels: dict[str, Any]) -> list[EncoderSpec]:
    """The ``imagenet_weights`` file (a torchvision ResNet) on the study's first ResNet backbone."""
    resnets = [b for b in cfg.backbones if b in RESNETS]
    if not resnets:
        add_note(notes, "imagenet skipped: imagenet_weights is a torchvision ResNet and the study has "
                 "no ResNet backbone")  # fmt: skip
        return []
    if backbone != resnets[0]:
        return []
    w = cfg.imagenet_weights
    if not w or not Path(w).is_file():
        add_note(notes, f"imagenet skipped: weights file {w!r} not found" if w
                 else "imagenet skipped: no imagenet_weights file given in the config")  # fmt: skip
        return []
    down = {} if backbone == DEFAULT_BACKBONE else {"backbone": backbone}
    return [EncoderSpec("imagenet", None, seed, abs_path(w), "imagenet" + backbone_tag(backbone), labels, down)]  # type: ignore[arg-type]


def method_encoders(cfg: StudyConfig, pre_data: Run | str | None, notes: list[str], method: str,
                    seed: int, backbone: str = DEFAULT_BACKBONE) -> list[EncoderSpec]:
    """The encoders of one method, seed and backbone: random init, ImageNet weights (a note
    when the file is missing), or a pretraining per anatomy ratio."""
    labels = {} if cfg.default_encoders else {"backbone": backbone}
    label = method + backbone_tag(backbone)
    if method == "random":
        down = {} if backbone == DEFAULT_BACKBONE else {"backbone": backbone}
        return [EncoderSpec(method, None, seed, "random", label, labels, down)]
    if method == "imagenet":
        return _imagenet(cfg, notes, seed, backbone, labels)
    swept = method.startswith("awcl") and (cfg.sweep_methods is None or method in cfg.sweep_methods)
    ratios = cfg.anatomy_ratios if swept else [None]
    if method.startswith("awcl") and not swept:
        ratios = [cfg.anatomy_ratio]
    encoders: list[EncoderSpec] = []
    for r in ratios:
        mcfg = method_config(method, r, seed, cfg, backbone)
        deps = {"data": pre_data} if isinstance(pre_data, Run) else {}
        if isinstance(pre_data, str):
            mcfg["data"] = pre_data
        # planned (grid.add) only where used: a method pretrained per fold for every task that
        # reads it needs no pretraining on the whole data
        run = Run("pretrain", label if r is None else f"{label}-r{r:g}", mcfg,
                  PretrainLabels(method=label, seed=seed, ratio=r, **labels), deps, pretrain_weight(method, cfg))
        encoders.append(EncoderSpec(method, r, seed, run, label, labels))
    return encoders


def init_encoders(cfg: StudyConfig, notes: list[str], seed: int) -> list[EncoderSpec]:
    """One encoder per ``inits:`` entry whose weights file exists (else a note)."""
    out = []
    for spec in cfg.inits.values():
        if not Path(spec.weights).expanduser().is_file():
            add_note(notes, f"{spec.name} skipped: weights file {spec.weights!r} not found")
            continue
        labels = {"backbone": spec.backbone, "init": spec.name, "layout": spec.layout}
        down = {} if spec.backbone == DEFAULT_BACKBONE else {"backbone": spec.backbone}
        out.append(EncoderSpec(spec.name, None, seed, abs_path(spec.weights), spec.name, labels, down))  # type: ignore[arg-type]
    return out
