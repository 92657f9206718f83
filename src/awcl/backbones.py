"""Encoders beyond torchvision's ResNets: any timm model as awcl's grey encoder, and the
checkpoint layouts of the public foundation models as inits.

``--backbone`` names the architecture: ``resnet18`` (the default and the papers'),
``resnet34``, ``resnet50`` (torchvision, :class:`awcl.models.Encoder`) or ``timm:<name>``
(any model ``timm.create_model`` knows, with an optional pretrained tag such as
``timm:vit_base_patch16_224.mae``, whose tag only sets the input normalisation a foreign
checkpoint was trained with). A timm encoder (:class:`TimmEncoder`) is built with
``pretrained=False, num_classes=0`` (pooled features, ``num_features`` wide), ``in_chans=1``
(timm's own grey adaptation) and, for models that take one (ViT, BEiT, Swin, ...),
``img_size`` = the working frame size, so position embeddings fit the grid. Its input is
awcl's: ``x: [B, 1, H, W]`` grey in [0, 1], normalised inside with the grey equivalent of
ImageNet's mean/std.

A foreign checkpoint (``--init FILE --backbone timm:<name>``) is read with
``torch.load(weights_only=True)`` or safetensors and put in the model's own key layout:

- timm / MAE ViT: ``model``/``state_dict`` wrappers and ``module.`` prefixes removed;
  ``decoder_*``, ``mask_token`` (MAE) and classifier keys dropped;
- BEiT-style ViT (timm ``beit`` names: ``q_bias``, ``relative_position_bias_table``, ...):
  ``lm_head``/``mask_token`` dropped, relative-position tables resized by timm;
- open_clip visual tower: a ViT tower (``visual.class_embedding``,
  ``visual.transformer.resblocks.*``) is renamed to timm's CLIP ViT names (use a
  ``*_clip_*`` architecture, e.g. ``timm:vit_large_patch14_clip_224``), a timm trunk
  (``visual.trunk.*``) is unwrapped; other towers (ModifiedResNet) are refused in one line.

then passed through the architecture's own timm ``checkpoint_filter_fn`` (position-embedding
and patch-embedding resampling). A 3-channel first convolution becomes the grey one: for a
grey image replicated to RGB and normalised per channel with ``(mean, std)`` (ImageNet's, or
CLIP's for an open_clip tower, or those of the named timm tag) the grey kernel is
``GREY_STD · Σ_c W_c / std_c`` and the constant left over is folded into the conv's bias, the
patch tokens' position embedding or the following BatchNorm's running mean (as
``awcl.models.fold_rgb_stem`` does for a ResNet). The result loads with ``strict=True``; a
mismatch names the missing and unexpected keys in one line.

awcl's own encoder files record their backbone and frame size (``awcl.models.save_encoder``),
so a later fine-tuning, embedding or export builds the same model; a ViT used at another frame
size gets its position embedding resampled from the recorded grid.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from awcl import _compat  # noqa: F401  (timm imports torchvision)
from awcl.errors import AwclError

log = logging.getLogger(__name__)

GREY_MEAN, GREY_STD = 0.449, 0.226  # every encoder's input normalisation: ImageNet's, grey
TIMM_PREFIX = "timm:"
RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}  # torchvision, pooled width
DEFAULT_BACKBONE = "resnet18"
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
BACKBONE_HELP = ("encoder architecture: resnet18 (default; the papers'), resnet34, resnet50, or "
                 "timm:<model> (any timm model, e.g. timm:convnext_tiny, timm:vit_small_patch16_224); "
                 "default: the one --init records, else resnet18")  # fmt: skip


def timm_module():
    """``import timm`` (after awcl's torchvision shim), or a one-line error naming the install."""
    try:
        import timm
    except ImportError:
        raise AwclError("timm backbones need the 'timm' package: pip install timm") from None
    return timm


def check_backbone(name: Any) -> str:
    """A valid backbone name (``resnet18`` | ``resnet34`` | ``resnet50`` | ``timm:<model>``)."""
    name = str(name).strip()
    if name in RESNETS:
        return name
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX):]
        if not timm_module().is_model(arch):
            stem = arch.split(".")[0].split("_")[0]
            raise AwclError(f"--backbone {name}: timm has no model {arch!r} "
                            f"(timm.list_models('{stem}*') lists the names)")  # fmt: skip
        return name
    raise AwclError(f"--backbone {name!r}: expected resnet18, resnet34, resnet50 or timm:<model> "
                    "(e.g. timm:convnext_tiny, timm:vit_small_patch16_224)")  # fmt: skip


def create_timm(arch: str, size: tuple[int, int] | None, **overrides: Any,
                ) -> tuple[nn.Module, tuple[int, int] | None]:
    """``timm.create_model(arch, pretrained=False, num_classes=0, in_chans=1[, img_size=size])``;
    ``img_size`` only for models that take one. Returns the model and the img_size used.
    ``overrides``: further model arguments (tests shrink a model with them)."""
    timm = timm_module()
    kw: dict[str, Any] = {"pretrained": False, "num_classes": 0, "in_chans": 1, **overrides}
    if size is not None:
        size = (int(size[0]), int(size[1]))
        try:
            return timm.create_model(arch, img_size=size, **kw), size
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(arch, **kw), None


@functools.lru_cache(maxsize=32)
def feature_dim(backbone: str, size: tuple[int, int] | None = None) -> int:
    """Width of the pooled features of ``backbone`` (built on the meta device; the global
    random state is left untouched, so building it changes no later initialisation)."""
    if backbone in RESNETS:
        return RESNETS[backbone]
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model, _ = create_timm(backbone[len(TIMM_PREFIX):], size)
    return int(model.num_features)


class TimmEncoder(nn.Module):
    """A timm model as awcl's encoder. ``forward(x: [B,1,H,W] in [0,1]) -> [B, out_dim]``
    (the model's own pooling: average, class token, ...; ``out_dim = num_features``).

    ``feature_maps(x)`` gives NCHW maps for a segmentation decoder: one per stride of a CNN's
    pyramid (``tokens`` False: the U-Net decoder), or the token grids of four evenly spaced
    blocks of a plain ViT (``tokens`` True: every block at the patch stride; the progressive
    upsampling decoder). ``state_dict`` keys are ``model.<timm key>``; ``export_state_dict``
    gives timm's own keys.
    """

    def __init__(self, backbone: str, size: tuple[int, int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.arch = backbone[len(TIMM_PREFIX):]
        self.grey = (GREY_MEAN, GREY_STD)
        self.model, self.img_size = create_timm(self.arch, size)
        self.out_dim = int(self.model.num_features)
        info = list(getattr(self.model, "feature_info", None) or [])
        reds = [int(f["reduction"]) for f in info]
        self.tokens = len(info) > 1 and len(set(reds)) == 1
        if self.tokens:  # four evenly spaced blocks, the last included
            n = len(info)
            idx = sorted({max(0, round(n * k / 4) - 1) for k in (1, 2, 3, 4)})
        else:  # the deepest stage of each stride, shallow to deep
            last = {r: i for i, r in enumerate(reds)}
            idx = [last[r] for r in sorted(last)]
        self.feature_indices = idx
        self.feature_channels = [int(info[i]["num_chs"]) for i in idx]
        self.feature_strides = [reds[i] for i in idx]

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.grey[0]) / self.grey[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._norm(x))

    def _intermediates(self, x: torch.Tensor, indices: list[int], norm: bool) -> list[torch.Tensor]:
        if not hasattr(self.model, "forward_intermediates") or not self.feature_indices:
            raise AwclError(f"--backbone {self.backbone}: this timm model has no forward_intermediates "
                            "(feature maps for segmentation and the SonoNet head); pick another")  # fmt: skip
        return self.model.forward_intermediates(self._norm(x), indices=indices, norm=norm,
                                                intermediates_only=True)  # fmt: skip

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """NCHW maps at ``feature_indices`` (channels ``feature_channels``), shallow to deep."""
        return list(self._intermediates(x, self.feature_indices, norm=False))

    def last_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage / block as an NCHW map ``[B, C, h, w]`` (final norm applied)."""
        n = len(getattr(self.model, "feature_info", None) or [])
        return self._intermediates(x, [max(n - 1, 0)], norm=True)[-1]

    def export_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """timm's own keys: loads strict into ``timm.create_model(arch, num_classes=0,
        in_chans=1[, img_size=...])``."""
        return OrderedDict((k, v.detach().clone().cpu()) for k, v in self.model.state_dict().items())

    def load_weights(self, sd: dict[str, torch.Tensor], source: str, own: bool,
                     own_img_size: tuple[int, int] | None = None) -> None:
        """Load an awcl encoder file (``own``: timm keys, recorded img_size) or a foreign
        checkpoint in any supported layout, strictly."""
        if own:
            sd = resample_own_pos_embed(dict(sd), self.model, own_img_size)
        else:
            sd, norm = to_timm_layout(sd, source, self.arch)
            sd = _timm_filter(self.arch, sd, self.model, source)
            sd = drop_extras(sd, self.model)
            sd = fold_first_conv(sd, self.model, norm or _tag_norm(self.arch), source)
        load_strict(self.model, sd, source, self.backbone)


# ------------------------------------------------------------------------ checkpoint layouts
_CLIP_SWAPS = (
    ("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
    ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
)  # fmt: skip


def _clip_vit_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip / OpenAI CLIP ViT tower (``visual.*``) in timm's CLIP ViT names; the
    projection to the text space (``visual.proj``) and the text tower are dropped."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not k.startswith("visual.") or k == "visual.proj":
            continue
        k = k[len("visual."):]
        for a, b in _CLIP_SWAPS:
            k = k.replace(a, b)
        if k == "class_embedding":
            k, v = "cls_token", v.reshape(1, 1, -1)
        elif k == "pos_embed" and v.ndim == 2:
            v = v.unsqueeze(0)
        out[k] = v
    return out


def to_timm_layout(sd: dict[str, torch.Tensor], source: str, arch: str,
                   ) -> tuple[dict[str, torch.Tensor], tuple | None]:
    """A foreign checkpoint in timm's key layout; also the input normalisation it implies
    (CLIP's for an open_clip tower, else None: the architecture's)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    norm = None
    if any(k.startswith("visual.") for k in sd):
        if "visual.class_embedding" in sd:
            sd, norm = _clip_vit_to_timm(sd), CLIP_NORM
            log.info("%s: open_clip ViT tower mapped to timm's CLIP ViT names", source)
        elif any(k.startswith("visual.trunk.") for k in sd):
            sd = {k[len("visual.trunk."):]: v for k, v in sd.items() if k.startswith("visual.trunk.")}
            norm = CLIP_NORM
        else:
            first = next(k for k in sd if k.startswith("visual."))
            raise AwclError(
                f"{source}: an open_clip visual tower awcl cannot map (keys like {first!r}); only "
                "ViT towers (visual.class_embedding, visual.transformer.resblocks.*) and timm "
                "trunks (visual.trunk.*) are mapped: this layout needs the optional open_clip "
                "package (pip install open_clip_torch) to export model.visual as a timm state dict")
    # MAE: the pixel decoder and the mask token; BEiT: the masked-image-modelling head
    drop = [k for k in sd if k.startswith(("decoder_", "lm_head.")) or k == "mask_token"]
    if drop:
        log.info("%s: %d pretraining-only keys dropped (%s ...)", source, len(drop), drop[0])
    return {k: v for k, v in sd.items() if k not in set(drop)}, norm


def _timm_filter(arch: str, sd: dict[str, torch.Tensor], model: nn.Module, source: str,
                 ) -> dict[str, torch.Tensor]:
    """The architecture's own ``checkpoint_filter_fn`` (resamples position / patch
    embeddings, resizes relative-position tables, renames original-repo keys), if it has one."""
    from timm.models import get_arch_name
    from timm.models._registry import model_entrypoint

    try:
        module = sys.modules[model_entrypoint(get_arch_name(arch)).__module__]
    except Exception:  # an unusual registration: load the keys as they are
        return sd
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return sd
    try:
        return dict(fn(sd, model))
    except Exception as err:  # keys of another architecture: the strict load names them
        log.debug("%s: timm's checkpoint filter for %s failed (%r)", source, arch, err)
        return sd


def drop_extras(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Keys a ``num_classes=0`` encoder has no place for: the classifier, ``mask_token``."""
    own = model.state_dict()
    cls = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    prefixes = (*(f"{c}." for c in ([cls] if isinstance(cls, str) else cls)), "head.", "fc.")
    return {k: v for k, v in sd.items()
            if k in own or not (k.startswith(prefixes) or k == "mask_token")}  # fmt: skip


def _tag_norm(arch: str) -> tuple:
    """ImageNet's mean/std, or those of an explicitly named pretrained tag (``name.tag``)."""
    if "." not in arch:
        return IMAGENET_NORM
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or len(cfg.mean) != 3:
        return IMAGENET_NORM
    return tuple(cfg.mean), tuple(cfg.std)


def fold_first_conv(sd: dict[str, torch.Tensor], model: nn.Module, norm: tuple, source: str,
                    ) -> dict[str, torch.Tensor]:
    """A 3-channel first convolution as the grey model's 1-channel one (see the module
    docstring). Identical channels are summed; distinct ones are folded with ``norm``."""
    first = getattr(model, "pretrained_cfg", {}).get("first_conv") or ""
    first = first[0] if isinstance(first, (list, tuple)) else first
    key = f"{first}.weight"
    own = model.state_dict()
    w = sd.get(key)
    if w is None or key not in own or w.ndim != 4 or w.shape[1] != 3 or own[key].shape[1] != 1:
        return sd
    sd = dict(sd)
    wd = w.double()
    if torch.allclose(wd[:, 0], wd[:, 1], rtol=1e-6, atol=1e-9) and torch.allclose(
            wd[:, 0], wd[:, 2], rtol=1e-6, atol=1e-9):  # fmt: skip
        sd[key] = w.sum(dim=1, keepdim=True)
        return sd
    mean = torch.tensor(norm[0], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(norm[1], dtype=torch.float64).view(1, 3, 1, 1)
    sd[key] = (GREY_STD * (wd / std).sum(dim=1, keepdim=True)).to(w.dtype)
    d = (wd * (mean - GREY_MEAN) / std).sum(dim=(1, 2, 3))  # [out]: the original's output is ours - d
    bias = f"{first}.bias"
    n_prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    if bias in sd and bias in own:
        sd[bias] = (sd[bias].double() - d).to(sd[bias].dtype)
    elif first.endswith("patch_embed.proj") and isinstance(sd.get("pos_embed"), torch.Tensor):
        pe = sd["pos_embed"].clone()
        pe[:, n_prefix:] = (pe[:, n_prefix:].double() - d).to(pe.dtype)
        sd["pos_embed"] = pe
    elif first == "conv1" and isinstance(sd.get("bn1.running_mean"), torch.Tensor):
        rm = sd["bn1.running_mean"]
        sd["bn1.running_mean"] = (rm.double() + d).to(rm.dtype)
    else:
        log.warning("%s: RGB first conv folded to grey without its normalisation offset "
                    "(no bias, position embedding or BatchNorm after %s); features are approximate",
                    source, first)  # fmt: skip
    return sd


def resample_own_pos_embed(sd: dict[str, torch.Tensor], model: nn.Module,
                           own_img_size: Any) -> dict[str, torch.Tensor]:
    """awcl's own ViT file used at another frame size: its position embedding resampled from
    the recorded grid to the model's (timm's ``resample_abs_pos_embed``)."""
    pe, target = sd.get("pos_embed"), getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor) or target is None or pe.shape == target.shape or not own_img_size:
        return sd
    from timm.layers import resample_abs_pos_embed

    patch = model.patch_embed.patch_size
    old = (int(own_img_size[0]) // patch[0], int(own_img_size[1]) // patch[1])
    n_prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    sd["pos_embed"] = resample_abs_pos_embed(pe, new_size=list(model.patch_embed.grid_size),
                                             old_size=list(old), num_prefix_tokens=n_prefix)  # fmt: skip
    return sd


def mismatch(own: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], model: str = "model") -> str:
    """One line naming the missing, unexpected and mis-shaped keys (first few each); '' if none."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)} vs "
                     f"{model} {tuple(own[k].shape)})")  # fmt: skip
    return "; ".join(parts)


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str, backbone: str) -> None:
    if problem := mismatch(model.state_dict(), sd):
        raise AwclError(f"{source}: does not fit --backbone {backbone}: {problem}")
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------ segmentation decoder
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TokenSegmenter(nn.Module):
    """A plain ViT + progressive-upsampling decoder (SETR-PUP style).

    The token grids of four evenly spaced blocks (``encoder.feature_maps``: ``[B, D, H/p, W/p]``
    each) are projected (1x1) to ``width`` channels, concatenated and fused (3x3 conv-BN-ReLU),
    then upsampled x2 with a 3x3 conv-BN-ReLU per step until the patch stride is undone.
    ``forward(x: [B,1,H,W]) -> logits [B, C, H, W]`` (final bilinear resize to input size).
    """

    def __init__(self, encoder: TimmEncoder, num_classes: int, width: int = 128):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in encoder.feature_channels)
        self.fuse = _conv_bn_relu(width * len(encoder.feature_channels), width)
        steps = max(1, (max(encoder.feature_strides) - 1).bit_length())  # 16 -> 4, 14 -> 4
        chans = [width] + [max(width >> (i + 1), 32) for i in range(steps)]
        self.up = nn.ModuleList(_conv_bn_relu(chans[i], chans[i + 1]) for i in range(steps))
        self.out = nn.Conv2d(chans[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder.feature_maps(x)
        f = self.fuse(torch.cat([p(m) for p, m in zip(self.proj, maps)], dim=1))
        for block in self.up:
            f = block(F.interpolate(f, scale_factor=2.0, mode="bilinear", align_corners=False))
        return F.interpolate(self.out(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
