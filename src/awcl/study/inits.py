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

from awcl.backbones import DEFAULT_BACKBONE, check_backbone
from awcl.errors import AwclError
from awcl.study.validate import Ctx

LAYOUTS = ("auto", "awcl", "torchvision", "timm", "mae", "beit", "open_clip")
INIT_KEYS = frozenset(("backbone", "weights", "layout", "pretrained_on", "model"))
# declared layout -> the layouts found from the keys that fit it (detect_layout's names)
FITS = {"awcl": {"awcl", "torchvision"}, "torchvision": {"torchvision"},
        "timm": {"timm", "mae", "beit", "torchvision"}, "mae": {"mae", "timm"}, "beit": {"beit"},
        "open_clip": {"open_clip"}}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class InitSpec:
    """A weights file fine-tuned and probed like a method's encoder (no pretraining run)."""

    name: str  # the row name in the report
    backbone: str  # its architecture (``--backbone``)
    weights: str
    layout: str = "auto"
    # the data sets it was pretrained on, as declared here; None: the built-in declaration of
    # ``model`` (awcl.study.overlap.DECLARED), if any, else not stated
    pretrained_on: list[str] | None = None
    model: str | None = None  # the public model it is (default: its name), for the built-ins


def _backbone(v: Any, key: str, ctx: Ctx) -> str:
    try:
        return check_backbone(ctx.string(v, key))
    except AwclError as err:
        if str(err).startswith(ctx.source):
            raise
        raise ctx.err(key, str(err)) from None


def parse_backbones(raw: dict[str, Any], ctx: Ctx) -> list[str]:
    """``backbones:`` (default ``[resnet18]``): every method is pretrained and evaluated on each."""
    if raw.get("backbones") is None:
        return [DEFAULT_BACKBONE]
    names = ctx.str_list(raw["backbones"], "backbones")
    out = [_backbone(b, f"backbones[{i}]", ctx) for i, b in enumerate(names)]
    ctx.unique(out, "backbones")
    # the single-backbone way (a backbone in extra:) would contradict the axis
    pre = raw.get("pretrain")
    places = [("pretrain.extra", pre.get("extra") if isinstance(pre, dict) else None)]
    places += [(f"tasks[{i}].extra", t.get("extra")) for i, t in enumerate(raw.get("tasks") or [])
               if isinstance(t, dict)]  # fmt: skip
    for where, extra in places:
        if isinstance(extra, dict) and extra.get("backbone") is not None:
            raise ctx.err(f"{where}.backbone", "the study has backbones: (every method is run on each); "
                          "drop this one")  # fmt: skip
    return out


def parse_inits(raw: dict[str, Any], methods: tuple[str, ...], ctx: Ctx) -> dict[str, InitSpec]:
    """``inits: {name: {backbone, weights, layout, pretrained_on, model}}``."""
    inits = ctx.mapping(raw.get("inits"), "inits")
    out: dict[str, InitSpec] = {}
    for name, v in inits.items():
        key = f"inits.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ctx.err(key, "an init's name is letters, digits, '.', '_' and '-'")
        if name in methods:
            raise ctx.err(key, f"{name!r} is a method name; name the init otherwise")
        d = ctx.mapping(v, key)
        ctx.check_keys(d, key, set(INIT_KEYS))
        for req in ("backbone", "weights"):
            if d.get(req) is None:
                raise ctx.err(f"{key}.{req}", "missing")
        declared = d.get("pretrained_on")
        if isinstance(declared, str):
            declared = [declared]
        if declared is not None and not isinstance(declared, list):
            raise ctx.err(f"{key}.pretrained_on", f"expected a list of data set names, got {declared!r}")
        if declared is not None:
            declared = [ctx.string(x, f"{key}.pretrained_on[{i}]") for i, x in enumerate(declared)]
        out[name] = InitSpec(
            name=name,
            backbone=_backbone(d["backbone"], f"{key}.backbone", ctx),
            weights=ctx.string(d["weights"], f"{key}.weights"),
            layout=ctx.choice(d.get("layout", "auto"), f"{key}.layout", LAYOUTS),
            pretrained_on=declared,
            model=ctx.string(d["model"], f"{key}.model") if d.get("model") is not None else None,
        )
    return out


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
