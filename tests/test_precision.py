"""Precision chosen for the hardware: never emulated bf16, the probe's fastest, cached."""

from __future__ import annotations

import json

import pytest
import torch

from awcl.errors import AwclError
from awcl.runtime import precision as P

AVX2 = {"avx2": True, "avx512": False, "avx512_bf16": False, "amx": False}
AMX = {"avx2": True, "avx512": True, "avx512_bf16": True, "amx": True}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AWCL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("AWCL_PRECISION_PROBE", raising=False)
    return tmp_path / "precision.json"


def test_native_bf16_detection():
    assert not P.native_cpu_bf16(AVX2)
    assert P.native_cpu_bf16(AMX)
    assert P.native_cpu_bf16({**AVX2, "avx512_bf16": True})
    assert all(prec != "bf16-mixed" for prec, _ in P.cpu_candidates(AVX2))
    assert ("bf16-mixed", True) in P.cpu_candidates(AMX)


def test_avx2_cpu_never_gets_bf16(cache, monkeypatch):
    monkeypatch.setattr(P, "cpu_features", lambda: AVX2)
    calls = []

    def timer(prec, cl, size):  # bf16 would "win" if it were ever timed
        calls.append(prec)
        return 1000.0 if prec.startswith("bf16") else (20.0 if cl else 12.0)

    monkeypatch.setattr(P, "time_train_step", timer)
    c = P.choose("auto", "cpu", (64, 80))
    assert c.precision == "32-true" and c.channels_last  # fp32 + channels_last: the faster
    assert "bf16" not in calls and "no native bf16" in c.reason
    assert P.choose("auto", "cpu", (64, 80), probe=False).precision == "32-true"


def test_probe_picks_fastest_and_caches(cache, monkeypatch):
    monkeypatch.setattr(P, "cpu_features", lambda: AMX)
    calls = []

    def timer(prec, cl, size):
        calls.append((prec, cl))
        return {("bf16-mixed", True): 96.0, ("32-true", True): 48.0, ("32-true", False): 40.0}[(prec, cl)]

    monkeypatch.setattr(P, "time_train_step", timer)
    c = P.choose("auto", "cpu", (112, 144))
    assert (c.precision, c.channels_last) == ("bf16-mixed", True)
    assert "96.0" in c.reason and "112x144" in c.reason
    n = len(calls)
    assert n == 6  # three candidates, two rounds
    again = P.choose("auto", "cpu", (112, 144))
    assert again == c and len(calls) == n  # answered from the cache, not timed again
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["precision"] == "bf16-mixed" and entry["size"] == [112, 144]
    P.choose("auto", "cpu", (64, 80))  # another size is timed on its own
    assert len(calls) == 2 * n


def test_bf16_needs_a_clear_margin(monkeypatch):
    def timer(prec, cl, size):
        return {("bf16-mixed", True): 50.0, ("32-true", True): 49.0, ("32-true", False): 30.0}[(prec, cl)]

    best, rates = P.probe_cpu((32, 40), timer=timer, features=AMX)
    assert best == ("32-true", True)  # 2% faster is within noise: full precision is safer
    assert rates["bf16-mixed+channels_last"] == 50.0


def test_explicit_precision_kept_and_checked(cache, monkeypatch, caplog):
    monkeypatch.setattr(P, "cpu_features", lambda: AVX2)
    with caplog.at_level("WARNING"):
        c = P.choose("bf16-mixed", "cpu", (32, 40))
    assert c.precision == "bf16-mixed" and "emulated" in caplog.text
    assert P.choose("32", "cpu", (32, 40)).precision == "32-true"
    with pytest.raises(AwclError, match="--precision must be one of"):
        P.choose("fp8", "cpu", (32, 40))


def test_gpu_rules(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.choose("auto", "gpu", (224, 288)).precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    c = P.choose("auto", "gpu", (224, 288))
    assert c.precision == "16-mixed" and "Test GPU" in c.device


def test_gpu_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.resolve_accelerator("auto") == "cpu"
    with pytest.raises(AwclError, match="no CUDA device"):
        P.resolve_accelerator("gpu")


def test_real_timer_runs():
    assert P.time_train_step("32-true", True, (32, 40), batch=2, steps=1) > 0
    assert P.describe_cpu()  # names the CPU and its bf16 capability


def test_contiguous_fp32_needs_a_clear_margin_too():
    def timer(prec, cl, size):
        return {("32-true", True): 100.0, ("32-true", False): 103.0}[(prec, cl)]

    best, _ = P.probe_cpu((32, 40), timer=timer, features=AVX2)
    assert best == ("32-true", True)  # 3% is noise: keep channels_last


def test_lightning_hardware_banner_is_dropped(tmp_path, caplog) -> None:
    """A fit prints no 'GPU available' / 'TPU available' / litlogger tip lines (awcl logs its
    own device choice); Lightning's other messages still come through."""
    import logging

    import lightning as L
    import torch

    from awcl.runtime.precision import Choice
    from awcl.runtime.trainer import build_trainer

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.w(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    choice = Choice("32-true", False, "test", "cpu")
    # Lightning's own logger at INFO for this test: a study run earlier in the same process may
    # have left it at WARNING (its quiet console), and then nothing would be captured
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        build_trainer(tmp_path, choice, accelerator="cpu", max_steps=1, progress=False).fit(Tiny(), data)
    text = caplog.text
    assert "GPU available" not in text and "TPU available" not in text and "Tip" not in text
    assert "max_steps=1" in text  # other Lightning info is kept


def test_cached_timings_are_decided_by_the_current_rule(cache, monkeypatch):
    """A cache written under an older rule (here: contiguous fp32 chosen on a 2% lead) is
    re-decided from its timings, without timing again."""
    monkeypatch.setattr(P, "cpu_features", lambda: AVX2)
    monkeypatch.setattr(P, "time_train_step", lambda *a, **k: pytest.fail("timed again"))
    key = P._cache_key((64, 80), torch.get_num_threads())
    P._write_cache(key, {"precision": "32-true", "channels_last": False,
                         "rates": {"32-true+channels_last": 100.0, "32-true": 102.0}})
    c = P.choose("auto", "cpu", (64, 80))
    assert (c.precision, c.channels_last) == ("32-true", True)


@pytest.mark.parametrize(("aten", "onednn", "native", "avx512"), [
    ("AVX512", "", True, True),                  # the machine as it is
    ("AVX2", "", False, False),                  # ATEN_CPU_CAPABILITY=avx2
    ("AVX512", "AVX2", False, False),            # ONEDNN_MAX_CPU_ISA=AVX2
    ("AVX512", "avx512_core_bf16", True, True),  # bf16 dot products kept, AMX dropped
    ("AVX512", "AVX512_CORE", False, True),
    ("AVX512", "ALL", True, True),
])
def test_capped_kernels_are_not_native_bf16(aten, onednn, native, avx512) -> None:
    # an AVX2-only CPU emulated on an AMX machine: bf16 there runs ~10x slower than fp32, so
    # the probe must not call it native nor try it
    f = P._capped(AMX, aten, onednn)
    assert P.native_cpu_bf16(f) is native
    assert f["avx512"] is avx512
    assert f["avx2"]
    assert not f["amx"] or onednn in ("", "ALL")
    assert P._capped(AMX, "DEFAULT", "")["avx2"] is False
    assert P._capped(AMX, "AVX512", "SSE41")["avx2"] is False


def test_cpu_features_reads_the_oneDNN_cap(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    f = P.cpu_features()
    assert not (f["avx512"] or f["avx512_bf16"] or f["amx"])
    assert not P.native_cpu_bf16(f)
