"""A study's encoder axes beyond ``methods:``: the backbones every method is run on
(``backbones: [resnet18, timm:convnext_atto]``) and weights files compared as they are
(``inits: {usf-mae: {backbone: timm:vit_base_patch16_224, weights: PATH, layout: mae,
pretrained_on: [HC18, POCUS]}}``).

``layout`` declares the checkpoint's key layout (``auto``: not checked). awcl finds the layout
from the keys itself (:mod:`awcl.backbones`); a declared one is checked against the file
before the file is used (:func:`check_layout`), so a wrong file is one line, not a key
mismatch deep in a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from awcl.backbones import check_backbone
from awcl.config import option
from awcl.config_checks import ConfigError, check_choices, check_filled, listed
from awcl.errors import AwclError
from awcl.methods import STUDY_METHODS

LAYOUTS = ("auto", "awcl", "torchvision", "timm", "mae", "beit", "open_clip")
# declared layout -> the layouts found from the keys that fit it (detect_layout's names)
FITS = {"awcl": {"awcl", "torchvision"}, "torchvision": {"torchvision"},
        "timm": {"timm", "mae", "beit", "torchvision"}, "mae": {"mae", "timm"}, "beit": {"beit"},
        "open_clip": {"open_clip"}}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def named(inits: Any) -> Any:
    """A ``parse`` hook of ``inits:``: each init's name (its key) into its mapping."""
    if not isinstance(inits, dict):
        return inits
    out = {}
    for name, v in inits.items():
        if isinstance(v, dict) and "name" in v:
            raise ConfigError(f"{name}.name", "unknown key (an init's name is its key under inits:)")
        if v is None:  # `a:` with nothing under it: the fields it lacks are named next
            v = {}
        out[name] = {**v, "name": name} if isinstance(v, dict) else v
    return out


def backbone_name(v: str, key: str) -> str:
    """``v`` checked as a backbone name (:func:`awcl.backbones.check_backbone`), the problem
    a :class:`ConfigError` at ``key``."""
    try:
        return check_backbone(v)
    except AwclError as err:
        raise ConfigError(key, str(err)) from None


@dataclass
class InitSpec:
    """A weights file fine-tuned and probed like a method's encoder (no pretraining run)."""

    name: str = option(help="the row name in the report (its key under inits:)")
    backbone: str = option(help="its architecture (--backbone)")
    weights: str = option(help="the weights file")
    layout: str = option("auto", choices=LAYOUTS, help="the checkpoint's key layout (auto: not checked)")
    # the data sets it was pretrained on, as declared here; None: the built-in declaration of
    # ``model`` (awcl.study.overlap.DECLARED), if any, else not stated
    pretrained_on: list[str] | None = option(None, parse=listed(str), help="the data sets it was pretrained on")
    model: str | None = option(None, help="the public model it is (default: its name), for the built-ins")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError("", "an init's name is letters, digits, '.', '_' and '-'")
        if self.name in STUDY_METHODS:
            raise ConfigError("", f"{self.name!r} is a method name; name the init otherwise")
        check_filled(self, ("weights", "model"))
        check_choices(self, keys=True)  # layout
        self.backbone = backbone_name(self.backbone, "backbone")


# ------------------------------------------------------------------------ layout check
def detect_layout(keys: list[str], recorded: bool = False) -> str:
    """The layout a checkpoint's keys have: ``awcl`` (an encoder file that records its
    backbone), ``open_clip``, ``beit``, ``mae`` (decoder / mask token), ``torchvision``
    (ResNet names) or ``timm``."""
    if recorded:
        return "awcl"
    ks = [k.removeprefix("module.") for k in keys]
    if any(k.startswith("visual.") for k in ks):
        return "open_clip"
    if any(k.startswith("lm_head.") or "relative_position_bias_table" in k or k.endswith(".q_bias") for k in ks):
        return "beit"
    if "mask_token" in ks or any(k.startswith("decoder_") for k in ks):
        return "mae"
    if "conv1.weight" in ks and any(k.startswith("layer1.") for k in ks):
        return "torchvision"
    return "timm"


def check_layout(path: str, layout: str, name: str) -> str:
    """Fail in one line unless the weights file at ``path`` has the declared ``layout``;
    return the layout found."""
    from awcl.models import encoder_meta, load_state_file

    found = detect_layout(list(load_state_file(path)), recorded=bool(encoder_meta(path)))
    if layout != "auto" and found not in FITS[layout]:
        raise AwclError(f"init {name}: {path} has the keys of a {found} checkpoint, not the declared "
                        f"layout {layout} (fix inits.{name}.layout, or leave it out: auto)")  # fmt: skip
    return found
