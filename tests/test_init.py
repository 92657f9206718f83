"""Every init kind loads; wrong architectures and non-state-dict files are refused; the
ImageNet download streams, verifies and writes atomically (against a local server)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch
from torch import nn

from awcl.errors import AwclError
from awcl.evaluate.weights import download_weights
from awcl.models import Encoder, build_encoder, save_encoder


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)  # conv1 /3*3


def _torchvision_resnet18_file(path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    sd = resnet18(weights=None).state_dict()
    torch.save(sd, path)
    return sd


def test_random_init():
    enc = build_encoder("random")
    assert isinstance(enc, Encoder)
    assert enc(torch.rand(2, 1, 32, 40)).shape == (2, 512)


def test_run_dir_and_encoder_file(tmp_path):
    torch.manual_seed(0)
    src = Encoder()
    run = tmp_path / "pretrain-run"
    save_encoder(src, run / "encoder.pt")
    assert _same(build_encoder(run), src)  # a run directory
    assert _same(build_encoder(run / "encoder.pt"), src)  # the exported file


def test_torchvision_state_dict(tmp_path):
    sd = _torchvision_resnet18_file(tmp_path / "resnet18.pth")
    enc = build_encoder(tmp_path / "resnet18.pth")
    assert torch.equal(enc.layer3[0].conv1.weight, sd["layer3.0.conv1.weight"])
    # RGB kernels folded with ImageNet's per-channel std into the grey stem (see test_models)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(enc.conv1.weight, 0.226 * (sd["conv1.weight"] / std).sum(1, keepdim=True))


def test_wrong_architecture_names_keys(tmp_path):
    from torchvision.models import resnet34

    torch.save(resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(AwclError, match=r"r34\.pth: not a ResNet-18 encoder: unexpected .*layer"):
        build_encoder(tmp_path / "r34.pth")


def test_pickled_module_and_non_dict_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(AwclError, match=r"module\.pt: not a loadable state dict"):
        build_encoder(tmp_path / "module.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(AwclError, match=r"list\.pt: not a state dict"):
        build_encoder(tmp_path / "list.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(AwclError, match=r"junk\.pth"):
        build_encoder(tmp_path / "junk.pth")
    with pytest.raises(AwclError, match=r"no exported encoder\.pt"):
        build_encoder(tmp_path)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a, **k: None
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_hash_and_loads(server, tmp_path):
    root, base = server
    tmp = root / "tmp.pth"
    _torchvision_resnet18_file(tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(root / f"resnet18-{digest[:8]}.pth")  # torchvision's naming convention
    out = download_weights(tmp_path / "w" / "imagenet.pth", url=f"{base}/resnet18-{digest[:8]}.pth")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    build_encoder(out)  # loads as an init
    # a full expected digest is checked too
    download_weights(tmp_path / "w2.pth", url=f"{base}/resnet18-{digest[:8]}.pth", sha256=digest)


def test_download_bad_hash_leaves_nothing(server, tmp_path):
    root, base = server
    (root / "resnet18-deadbeef.pth").write_bytes(b"tampered")
    out = tmp_path / "imagenet.pth"
    with pytest.raises(AwclError, match=r"SHA-256 mismatch"):
        download_weights(out, url=f"{base}/resnet18-deadbeef.pth")
    assert not out.exists() and not list(tmp_path.glob(".*part"))
    with pytest.raises(AwclError, match=r"download failed"):
        download_weights(out, url=f"{base}/missing-0123abcd.pth")
    with pytest.raises(AwclError, match=r"pass --sha256"):
        download_weights(out, url=f"{base}/weights.pth")


def test_weights_cli(server, tmp_path, capsys):
    from awcl.cli import main

    root, base = server
    data = b"x" * 100
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / name).write_bytes(data)
    rc = main(["weights", "imagenet", "--out", str(tmp_path / "w.pth"), "--url", f"{base}/{name}"])
    assert rc == 0 and (tmp_path / "w.pth").read_bytes() == data
    assert "--init" in capsys.readouterr().out
