"""``--backbone``: every path (pretrain, resume, fine-tune classify/segment, probe, embed,
export) on a ResNet-18, a timm ConvNeXt and a timm ViT with random weights at 32 px; and the
foundation-model checkpoint layouts (timm/MAE ViT, BEiT, open_clip visual tower) loaded from
synthetic state dicts with those layouts' keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import yaml

import awcl  # noqa: F401  (torchvision shim, before timm)
import awcl.backbones as backbones
from _synth import make_class_dataset, make_seg_dataset
from awcl.errors import AwclError
from awcl.evaluate.embed import EmbedConfig, embed
from awcl.evaluate.finetune import FinetuneConfig, finetune
from awcl.models import build_encoder, encoder_meta, save_encoder
from awcl.train.export import ExportConfig, export_run
from awcl.train.pretrain import PretrainConfig, pretrain
from test_pretrain import _Kill, _kill, cfg_for, make_tiny

timm = pytest.importorskip("timm")

SIZE = (32, 32)
BACKBONES = ["resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224"]
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bb")
    return {"pre": make_tiny(tmp / "tiny"), "cls": make_class_dataset(tmp / "cls", patients_per_class=4),
            "seg": make_seg_dataset(tmp / "seg", n=16)}  # fmt: skip


def _pre(data: dict[str, Path], out: Path, backbone: str, **kw) -> PretrainConfig:
    kw = {"method": "simclr", "size": SIZE, "max_steps": 2, "monitor_fraction": 0.25, "precision": "32-true",
          "backbone": None if backbone == "resnet18" else backbone, **kw}  # fmt: skip
    return cfg_for(data["pre"], out, **kw)


def _ft(sets: dict[str, Path], out: Path, init: Path, **kw) -> dict:
    base = dict(data=str(sets["cls"]), out=str(out), init=str(init), epochs=1, batch_size=8,
                folds=2, size=SIZE, bootstrap=0, precision="32-true")  # fmt: skip
    return finetune(FinetuneConfig(**{**base, **kw}))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_path(data, tmp_path: Path, backbone: str) -> None:
    run = pretrain(_pre(data, tmp_path / "pre", backbone))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backbone"] == backbone and summary["steps"] == 2
    assert summary["knn_acc_init"] is not None  # the kNN monitor ran the encoder
    meta = encoder_meta(run / "encoder.pt")
    if backbone == "resnet18":  # unchanged: a bare torchvision state dict, no record
        assert meta == {} and yaml.safe_load((run / "config.yaml").read_text())["backbone"] is None
        from torchvision.models import resnet18

        net = resnet18()
        net.fc = torch.nn.Identity()
        net.load_state_dict(torch.load(run / "encoder.pt", weights_only=True), strict=True)
    else:
        assert meta["backbone"] == backbone
    dim = build_encoder(run).out_dim
    # fine-tuning reads the backbone from the encoder file; heads sized from its width
    m = _ft(data, tmp_path / "full", run, head="sononet")
    assert len(m["folds"]) == 2 and "f1" in m["mean"]
    m = _ft(data, tmp_path / "partial", run, protocol="partial", head="linear")
    assert len(m["folds"]) == 2
    m = _ft(data, tmp_path / "knn", run, protocol="knn")
    assert m["head"] == "knn"
    m = _ft(data, tmp_path / "seg", run, data=str(data["seg"]), task="segment", batch_size=4)
    assert "miou" in m["mean"]
    s = embed(EmbedConfig(data=str(data["cls"]), out=str(tmp_path / "emb"), init=str(run), size=SIZE,
                          max_frames=20, tsne_iter=250, precision="32-true"))  # fmt: skip
    assert s["dim"] == dim and s["num_frames"] == 20
    # export: the backbone's own keys, strict into torchvision / timm, awcl's features
    out = export_run(ExportConfig(run=str(run), out=str(tmp_path / "exp")))
    from safetensors.torch import load_file

    sd = load_file(str(out / "encoder.safetensors"))
    grey = torch.rand(2, 1, *SIZE)
    with torch.no_grad():
        ref = build_encoder(run).eval()(grey)
        if backbone == "resnet18":
            net.load_state_dict(sd, strict=True)
            got = net.eval()(((grey - 0.449) / 0.226).expand(-1, 3, -1, -1))
        else:
            kw = {"img_size": SIZE} if "vit" in backbone else {}
            net = timm.create_model(backbone[5:], pretrained=False, num_classes=0, in_chans=1, **kw)
            net.load_state_dict(sd, strict=True)
            got = net.eval()((grey - 0.449) / 0.226)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    card = (out / "MODEL_CARD.md").read_text()
    assert ("timm.create_model" in card) == (backbone != "resnet18")
    # the exported safetensors names its backbone: an --init on its own
    assert build_encoder(out / "encoder.safetensors").backbone == backbone


@pytest.mark.parametrize("backbone", BACKBONES[1:])
def test_resume_is_exact(data, tmp_path: Path, backbone: str) -> None:
    kw = dict(max_steps=4, checkpoint_every_n_steps=1)
    full = pretrain(_pre(data, tmp_path / "full", backbone, **kw))
    with pytest.raises(_Kill):
        pretrain(_pre(data, tmp_path / "cut", backbone, **kw), callbacks=[_kill(at_step=2)])
    resumed = pretrain(_pre(data, tmp_path / "cut", backbone, resume=True, **kw))
    a = torch.load(full / "encoder.pt", weights_only=True)["encoder"]
    b = torch.load(resumed / "encoder.pt", weights_only=True)["encoder"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_default_and_checks(tmp_path: Path) -> None:
    assert PretrainConfig().backbone is None and FinetuneConfig(data="", out="").backbone is None
    torch.manual_seed(0)
    a = build_encoder("random")
    torch.manual_seed(0)
    b = build_encoder("random", "resnet18")
    assert a.backbone == "resnet18" and all(torch.equal(x, y) for x, y in
                                            zip(a.state_dict().values(), b.state_dict().values()))  # fmt: skip
    with pytest.raises(AwclError, match="expected resnet18, resnet34, resnet50 or timm:<model>"):
        PretrainConfig(backbone="vgg16")
    with pytest.raises(AwclError, match="timm has no model 'nope_net'"):
        PretrainConfig(backbone="timm:nope_net")
    assert build_encoder("random", "resnet50").out_dim == 2048
    p = save_encoder(build_encoder("random", "timm:convnext_atto"), tmp_path / "c" / "encoder.pt")
    with pytest.raises(AwclError, match="encoder of backbone timm:convnext_atto, not --backbone resnet18"):
        build_encoder(p, "resnet18")


# ----------------------------------------------------------------------------- layouts
def _grey_vs_rgb(src: torch.nn.Module, enc: torch.nn.Module, size, norm=IMAGENET) -> None:
    """The grey encoder on x equals the RGB source on x replicated and normalised per channel."""
    mean, std = (t.view(1, 3, 1, 1) for t in norm)
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = src.eval()((x.expand(-1, 3, -1, -1) - mean) / std)
        got = enc.eval()(x)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_mae_vit_checkpoint(tmp_path: Path) -> None:
    """MAE / UltraFedFM layout: {'model': ViT keys + decoder_* + mask_token, 'args': Namespace}."""
    torch.manual_seed(1)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    sd = dict(src.state_dict())
    sd["mask_token"] = torch.zeros(1, 1, 192)
    sd["decoder_embed.weight"] = torch.zeros(128, 192)
    sd["decoder_pos_embed"] = torch.zeros(1, 197, 128)
    sd["decoder_blocks.0.norm1.weight"] = torch.ones(128)
    sd["decoder_pred.weight"] = torch.zeros(768, 128)
    f = tmp_path / "checkpoint.pth"
    torch.save({"model": sd, "epoch": 799, "args": argparse.Namespace(model="mae_vit_tiny")}, f)
    bb = "timm:vit_tiny_patch16_224"
    _grey_vs_rgb(src, build_encoder(f, bb, (224, 224)), (224, 224))  # exact RGB -> grey fold
    enc = build_encoder(f, bb, SIZE)  # 14x14 position grid resampled to 2x2
    assert enc.model.pos_embed.shape == (1, 5, 192) and enc(torch.rand(1, 1, *SIZE)).shape == (1, 192)
    torch.testing.assert_close(enc.model.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    from safetensors.torch import save_file  # the same weights as a safetensors file

    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    _grey_vs_rgb(src, build_encoder(tmp_path / "w.safetensors", bb, (224, 224)), (224, 224))


TINY = dict(embed_dim=64, depth=2, num_heads=2)


@pytest.fixture
def tiny_timm(monkeypatch):
    """Full-size architectures shrunk to 2 blocks of width 64 (same key layout)."""
    real = backbones.create_timm
    monkeypatch.setattr(backbones, "create_timm", lambda arch, size, **kw: real(arch, size, **TINY, **kw))


def test_beit_checkpoint(tmp_path: Path, tiny_timm) -> None:
    """USFM layout: timm BEiT names (q_bias, relative_position_bias_table, gamma_*), a
    masked-image-modelling head and mask token, pretrained at another grid (64 px)."""
    torch.manual_seed(2)
    src = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=5, img_size=64, **TINY)
    sd = dict(src.state_dict())
    sd["mask_token"] = torch.zeros(1, 1, 64)
    sd["lm_head.weight"] = torch.zeros(8192, 64)
    sd["blocks.0.attn.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    torch.save({"module": sd, "epoch": 3}, tmp_path / "usfm.pth")  # BEiT v2 kept DDP's wrapper
    src.reset_classifier(0)
    _grey_vs_rgb(src, build_encoder(tmp_path / "usfm.pth", "timm:beit_base_patch16_224", (64, 64)), (64, 64))
    enc = build_encoder(tmp_path / "usfm.pth", "timm:beit_base_patch16_224", SIZE)  # 4x4 window -> 2x2
    assert enc(torch.rand(1, 1, *SIZE)).shape == (1, 64)


def _open_clip_vit(width: int = 64, layers: int = 2, grid: int = 4, patch: int = 16) -> dict:
    """An open_clip ViT's state dict (visual tower + a text tower), random values."""
    g = torch.Generator().manual_seed(3)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    sd = {"visual.class_embedding": r(width), "visual.positional_embedding": r(grid * grid + 1, width),
          "visual.conv1.weight": r(width, 3, patch, patch), "visual.ln_pre.weight": 1 + r(width),
          "visual.ln_pre.bias": r(width), "visual.ln_post.weight": 1 + r(width),
          "visual.ln_post.bias": r(width), "visual.proj": r(width, 32),
          "token_embedding.weight": r(100, 32), "positional_embedding": r(77, 32),
          "text_projection": r(32, 32), "logit_scale": torch.tensor(4.6),
          "transformer.resblocks.0.ln_1.weight": torch.ones(32), "ln_final.weight": torch.ones(32)}  # fmt: skip
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        sd.update({p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width),
                   p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                   p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                   p + "ln_2.weight": 1 + r(width), p + "ln_2.bias": r(width),
                   p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
                   p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width)})  # fmt: skip
    return sd


def test_open_clip_visual_tower(tmp_path: Path, tiny_timm) -> None:
    """FetalCLIP layout: open_clip ViT (visual.*) into timm's CLIP ViT, CLIP normalisation."""
    sd = _open_clip_vit()
    torch.save(sd, tmp_path / "FetalCLIP_weights.pt")
    bb = "timm:vit_base_patch16_clip_224"
    enc = build_encoder(tmp_path / "FetalCLIP_weights.pt", bb, (64, 64))  # 4x4 grid as saved
    torch.testing.assert_close(enc.model.blocks[1].attn.qkv.weight,
                               sd["visual.transformer.resblocks.1.attn.in_proj_weight"])  # fmt: skip
    # the RGB tower, rebuilt in timm from the same keys, on CLIP-normalised replicated input
    src = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=0, img_size=64, **TINY)
    conv = {k: v for k, v in enc.model.state_dict().items() if k not in ("patch_embed.proj.weight", "pos_embed")}
    conv["patch_embed.proj.weight"] = sd["visual.conv1.weight"]
    conv["pos_embed"] = sd["visual.positional_embedding"][None]
    src.load_state_dict(conv, strict=True)
    _grey_vs_rgb(src, enc, (64, 64), norm=tuple(torch.tensor(v) for v in backbones.CLIP_NORM))
    assert build_encoder(tmp_path / "FetalCLIP_weights.pt", bb, SIZE)(torch.rand(1, 1, *SIZE)).shape == (1, 64)
    # a ModifiedResNet tower has no timm mapping here: one line naming the optional package
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1), "visual.attnpool.c_proj.weight": torch.zeros(2, 2)},
               tmp_path / "rn50_clip.pt")  # fmt: skip
    with pytest.raises(AwclError, match=r"rn50_clip\.pt: an open_clip visual tower .*open_clip") as err:
        build_encoder(tmp_path / "rn50_clip.pt", bb, SIZE)
    assert "\n" not in str(err.value)


def test_key_mismatch_names_keys(tmp_path: Path) -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(AwclError) as err:
        build_encoder(tmp_path / "vit.pth", "timm:convnext_atto", SIZE)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit --backbone timm:convnext_atto" in msg
    assert "missing" in msg and "stem.0.weight" in msg and "unexpected" in msg and "cls_token" in msg
    with pytest.raises(AwclError, match=r"vit\.pth: not a ResNet-18 encoder: missing .*--backbone"):
        build_encoder(tmp_path / "vit.pth")  # no backbone named: ResNet-18
