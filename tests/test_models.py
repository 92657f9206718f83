"""Encoder export/import: strict torchvision compatibility and clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from awcl.errors import AwclError
from awcl.models import Encoder, build_encoder, load_state_file, save_encoder


def _torchvision_trunk():
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = nn.Identity()
    return net


def test_export_loads_strict_into_torchvision_and_matches(tmp_path):
    torch.manual_seed(0)
    enc = Encoder().eval()
    path = save_encoder(enc, tmp_path / "encoder.pt")
    sd = torch.load(path, weights_only=True)
    tv = _torchvision_trunk().eval()
    tv.load_state_dict(sd, strict=True)  # minus fc: Identity has no parameters
    x = torch.rand(2, 1, 64, 80)
    rgb = ((x - 0.449) / 0.226).repeat(1, 3, 1, 1)  # what a user feeds torchvision
    assert torch.allclose(enc(x), tv(rgb), atol=1e-4)


def test_round_trip_through_file_and_run_dir(tmp_path):
    torch.manual_seed(1)
    enc = Encoder().eval()
    save_encoder(enc, tmp_path / "run" / "encoder.pt")
    for init in (tmp_path / "run", tmp_path / "run" / "encoder.pt"):
        again = build_encoder(init).eval()
        x = torch.rand(1, 1, 32, 40)
        assert torch.allclose(enc(x), again(x), atol=1e-5)


def test_torchvision_state_dict_with_fc_loads(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "imagenet.pth")
    build_encoder(tmp_path / "imagenet.pth")


def test_wrong_architecture_names_keys(tmp_path):
    from torchvision.models import resnet34

    torch.save(resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(AwclError, match=r"r34\.pth.*unexpected .*layer"):
        build_encoder(tmp_path / "r34.pth")


def test_pickled_module_is_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(AwclError, match="weights_only"):
        load_state_file(tmp_path / "module.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(AwclError, match=r"junk\.pt"):
        load_state_file(tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(AwclError, match="not a state dict"):
        load_state_file(tmp_path / "list.pt")


def test_feature_maps_shapes():
    maps = Encoder().feature_maps(torch.rand(1, 1, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 32, 48), (64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)
    ]


def _rgb_network(seed: int = 0):
    """A torchvision ResNet-18 with distinct RGB kernels and non-trivial BN statistics, as an
    ImageNet checkpoint has."""
    torch.manual_seed(seed)
    net = _torchvision_trunk()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return net.eval()


def test_imagenet_normalisation_folded_exactly_into_grey_stem(tmp_path):
    net = _rgb_network()
    torch.save(net.state_dict(), tmp_path / "imagenet.pth")
    enc = build_encoder(tmp_path / "imagenet.pth").eval()
    x = torch.rand(2, 1, 64, 96)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = (x.repeat(1, 3, 1, 1) - mean) / std  # what the network was trained on
    with torch.no_grad():
        want = net.bn1(net.conv1(rgb))
        got = enc.bn1(enc.conv1((x - 0.449) / 0.226))
        # exact where the 7x7 window is inside the image (output rows/cols 2 .. n-3)
        inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
        torch.testing.assert_close(got[inner], want[inner], rtol=1e-4, atol=1e-4)
        # the whole frozen encoder: only the border frame differs (unfolded: ~2.6%)
        f_want, f_got = net(rgb), enc(x)
        assert ((f_got - f_want).norm(dim=1) / f_want.norm(dim=1)).max() < 0.01


def test_folded_imagenet_encoder_exports_and_reloads_unchanged(tmp_path):
    torch.save(_rgb_network(1).state_dict(), tmp_path / "imagenet.pth")
    enc = build_encoder(tmp_path / "imagenet.pth").eval()
    save_encoder(enc, tmp_path / "run" / "encoder.pt")  # identical channels: summed, no refold
    again = build_encoder(tmp_path / "run").eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(again(x), enc(x))
