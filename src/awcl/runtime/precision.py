"""Choosing the numeric precision (and memory format) for the hardware a run is on.

``choose(requested, accelerator, size)`` turns ``--precision auto`` into the fastest precision
that is numerically safe on this machine, with a reason a user can read:

* GPU: ``bf16-mixed`` where the device supports bf16 (Ampere and newer), else ``16-mixed``.
* CPU: bf16 autocast only where the CPU runs bf16 natively (AMX or AVX512-BF16). Without it
  oneDNN emulates bf16 and a ResNet-18 step runs ~12x *slower* than fp32 (measured on an
  AVX2-only AMD EPYC). Where bf16 is native it is usually, not always, faster; so on such a
  CPU, and for the fp32 memory format everywhere, a short probe times a few training steps of
  each candidate at the run's frame size once, and the answer is cached per machine
  (CPU model, flags, torch version, threads, size) in ``~/.cache/awcl/precision.json``
  (``AWCL_CACHE_DIR`` moves it; ``AWCL_PRECISION_PROBE=0`` skips probing and uses the rule).

The same choice serves pretraining, fine-tuning, embedding and the demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from awcl.atomic import write_json_atomic
from awcl.errors import AwclError
from awcl.locking import dir_lock

log = logging.getLogger("awcl.train.precision")  # the name its log lines have always had

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Choice:
    """What a run uses: a Lightning precision string, the memory format, and why."""

    precision: str  # "32-true" | "bf16-mixed" | "16-mixed" | ...
    channels_last: bool
    reason: str
    device: str  # "cpu" | "cuda:0 NVIDIA H100 ..." | ...

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of a mixed precision, None for full precision."""
        if self.precision.startswith("bf16"):
            return torch.bfloat16
        if self.precision.startswith("16"):
            return torch.float16
        return None

    def autocast(self, device_type: str = "cpu"):
        """Autocast context for code outside a Lightning Trainer (feature extraction)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=dtype)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- CPU facts
def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    """What torch's CPU kernels may use: AVX2, AVX512, AVX512-BF16, AMX (the hardware's flags,
    less what ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` caps)."""
    c = torch.cpu

    def has(name: str) -> bool:
        fn = getattr(c, name, None)
        try:
            return bool(fn()) if fn is not None else False
        except Exception:  # a build without that probe
            return False

    hw = {
        "avx2": has("_is_avx2_supported"),
        "avx512": has("_is_avx512_supported"),
        "avx512_bf16": has("_is_avx512_bf16_supported"),
        "amx": has("_is_amx_tile_supported"),
    }
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA", "")
    return _capped(hw, _aten_capability(), onednn)


def _aten_capability() -> str:
    """ATen's kernel level (``ATEN_CPU_CAPABILITY`` can lower it): DEFAULT, AVX2, AVX512, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # an old build without it
        return ""


def _capped(hw: dict[str, bool], aten: str, onednn: str) -> dict[str, bool]:
    """The hardware flags less what the kernels may use: ``ATEN_CPU_CAPABILITY=avx2`` and
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (how an AVX2-only CPU is emulated) make bf16 emulated, so
    the probe should neither try it nor call it native."""
    f = dict(hw)
    if aten in ("DEFAULT", "AVX2"):
        f.update(avx512=False, avx512_bf16=False, amx=False)
        if aten == "DEFAULT":
            f["avx2"] = False
    isa = onednn.strip().upper()
    if isa and isa != "ALL":  # oneDNN runs the convolutions, so its cap decides bf16's speed
        if "AMX" not in isa:
            f["amx"] = False
        if "BF16" not in isa and "AMX" not in isa:
            f["avx512_bf16"] = False
        if "AVX512" not in isa:
            f.update(avx512=False, avx512_bf16=False, amx=False)
        if not isa.startswith(("AVX2", "AVX512")):
            f["avx2"] = False
    return f


def native_cpu_bf16(features: dict[str, bool] | None = None) -> bool:
    """True where bf16 matrix work runs in hardware (AMX tiles or AVX512-BF16 dot products)."""
    f = cpu_features() if features is None else features
    return bool(f.get("amx") or f.get("avx512_bf16"))


def describe_cpu() -> str:
    f = cpu_features()
    flags = ", ".join(k for k, v in f.items() if v) or "no AVX2"
    return f"{cpu_model()} ({flags}; native bf16: {'yes' if native_cpu_bf16(f) else 'no'})"


# ---------------------------------------------------------------------------- probing
Candidate = tuple[str, bool]  # (precision, channels_last)


def _cache_path() -> Path:
    root = os.environ.get("AWCL_CACHE_DIR") or Path.home() / ".cache" / "awcl"
    return Path(root) / "precision.json"


def _cache_key(size: tuple[int, int], threads: int) -> str:
    ident = json.dumps(
        [CACHE_VERSION, cpu_model(), cpu_features(), torch.__version__, threads, list(size)]
    )
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def _read_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = entry
        write_json_atomic(path, data, indent=1)
    except OSError as err:  # a read-only home: probe again next time, never fail the run
        log.debug("precision cache not written: %s", err)


def time_train_step(precision: str, channels_last: bool, size: tuple[int, int],
                    batch: int | None = None, steps: int = 3) -> float:
    """Images/s of a ResNet-18 (grey input) training step on CPU at ``size`` (H, W)."""
    from awcl.models import Encoder

    if batch is None:  # a few seconds per candidate even at 224x288 on a slow CPU
        batch = 16 if size[0] * size[1] <= 128 * 160 else 8

    torch.manual_seed(0)
    enc = Encoder()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    enc = enc.to(memory_format=fmt)
    opt = torch.optim.SGD(enc.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, *size).contiguous(memory_format=fmt)
    choice = Choice(precision, channels_last, "", "cpu")

    def step() -> None:
        with choice.autocast("cpu"):
            loss = enc(x).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN primitive creation
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def cpu_candidates(features: dict[str, bool] | None = None) -> list[Candidate]:
    """Precisions worth timing on this CPU; never emulated bf16."""
    cands: list[Candidate] = [("32-true", True), ("32-true", False)]
    if native_cpu_bf16(features):
        cands.insert(0, ("bf16-mixed", True))
    return cands


def probe_cpu(size: tuple[int, int], timer: Callable[[str, bool, tuple[int, int]], float] | None = None,
              features: dict[str, bool] | None = None) -> tuple[Candidate, dict[str, float]]:
    """Time each candidate (two rounds, best of each, to damp a busy machine); the fastest wins.

    bf16 must beat fp32 + channels_last by 5% (at equal speed full precision is the safer
    one) and contiguous fp32 by 10% (one noisy timing should not flip the memory-format order
    that held in every end-to-end measurement); see :func:`decide`.
    """
    timer = timer or time_train_step
    rates: dict[str, float] = {}
    for _ in range(2):
        for prec, cl in cpu_candidates(features):
            name = f"{prec}{'+channels_last' if cl else ''}"
            rates[name] = max(rates.get(name, 0.0), float(timer(prec, cl, size)))

    return decide(rates, features), rates


def decide(rates: dict[str, float], features: dict[str, bool] | None = None) -> Candidate:
    """The candidate to use given measured ``rates`` (img/s by candidate name). Applied to
    cached rates too, so a change of this rule reaches machines that were timed before it."""

    def score(c: Candidate) -> float:
        # fp32 + channels_last is the reference. bf16 (less precise) must beat it by 5%.
        # Contiguous fp32 by 10%: end to end it was slower in every pretraining benchmark
        # (AVX2 and native, 64x80 and 112x144), while a single probe on a busy machine once
        # timed it 8.6% faster and the run then went 17% below channels_last.
        r = rates.get(f"{c[0]}{'+channels_last' if c[1] else ''}", 0.0)
        if c == ("32-true", True):
            return r
        return r / (1.10 if c == ("32-true", False) else 1.05)

    return max(cpu_candidates(features), key=score)


# ---------------------------------------------------------------------------- the choice
def _normalise(precision: str) -> str:
    p = str(precision)
    if p not in PRECISIONS:
        raise AwclError(f"--precision must be one of {', '.join(PRECISIONS)} (got {p!r})")
    return "32-true" if p == "32" else p


def _probe_once(key: str, size: tuple[int, int], features: set[str] | frozenset[str], dev: str,
                threads: int) -> dict:
    """Time the candidates once per machine, one process at a time: the processes of a DDP
    launch start together, and each timing its own would let timing noise give them different
    memory formats (DDP then refuses: "params ... not to match strides")."""
    try:
        lock = dir_lock(_cache_path().with_suffix(".lock"), "precision probe", wait=900)
        with lock:
            entry = _read_cache().get(key)  # another process may have timed it meanwhile
            if entry is None:
                log.info("timing training-step precisions on this CPU at %dx%d (once per machine)", *size)
                (prec, cl), rates = probe_cpu(size, features=features)
                entry = {"precision": prec, "channels_last": cl, "rates": rates,
                         "cpu": dev, "size": list(size), "threads": threads}
                _write_cache(key, entry)
            return entry
    except OSError:  # a read-only cache folder: time without the lock (nothing is shared)
        (prec, cl), rates = probe_cpu(size, features=features)
        return {"precision": prec, "channels_last": cl, "rates": rates, "cpu": dev,
                "size": list(size), "threads": threads}


def choose(requested: str = "auto", accelerator: str = "cpu", size: tuple[int, int] = (224, 288),
           channels_last: bool | None = None, probe: bool | None = None) -> Choice:
    """Resolve ``requested`` on ``accelerator`` ("cpu" | "gpu"/"cuda") for frames of ``size``.

    An explicit precision is kept as asked (with a warning when it is bf16 on a CPU without
    native bf16). ``probe`` None reads ``AWCL_PRECISION_PROBE`` (default on).
    """
    requested = _normalise(requested)
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        name = f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
        if requested != "auto":
            return Choice(requested, True if channels_last is None else channels_last,
                          "asked for", name)
        if torch.cuda.is_bf16_supported():
            return Choice("bf16-mixed", True if channels_last is None else channels_last,
                          "GPU supports bf16: bf16 autocast (no loss scaling needed)", name)
        return Choice("16-mixed", True if channels_last is None else channels_last,
                      "GPU without bf16: fp16 autocast with loss scaling", name)

    dev = describe_cpu()
    features = cpu_features()
    if requested != "auto":
        if requested.startswith("bf16") and not native_cpu_bf16(features):
            log.warning("precision %s asked for on a CPU without native bf16 (%s): bf16 is "
                        "emulated there and runs many times slower than 32-true", requested, dev)
        return Choice(requested, True if channels_last is None else channels_last, "asked for", dev)

    if probe is None:
        probe = os.environ.get("AWCL_PRECISION_PROBE", "1") not in ("0", "false", "no")
    threads = torch.get_num_threads()
    if probe:
        key = _cache_key(tuple(size), threads)
        entry = _read_cache().get(key)
        if entry is None:
            entry = _probe_once(key, tuple(size), features, dev, threads)
        prec, cl_best = decide(entry["rates"], features)  # today's rule on the cached timings
        rates = ", ".join(f"{k} {v:.1f}" for k, v in entry["rates"].items())
        native = "native bf16" if native_cpu_bf16(features) else "no native bf16 (bf16 not tried)"
        reason = f"fastest measured on this CPU ({native}; img/s at {size[0]}x{size[1]}: {rates})"
        cl = cl_best if channels_last is None else channels_last
        return Choice(prec, cl, reason, dev)

    if native_cpu_bf16(features):
        return Choice("bf16-mixed", True if channels_last is None else channels_last,
                      "CPU runs bf16 natively (AMX/AVX512-BF16); not timed", dev)
    return Choice("32-true", True if channels_last is None else channels_last,
                  "CPU without native bf16: bf16 would be emulated; fp32 channels_last, not timed", dev)


def resolve_accelerator(accelerator: str = "auto") -> str:
    """'auto' -> 'gpu' when CUDA is available, else 'cpu'; anything else as given."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise AwclError(f"--accelerator {accelerator}: no CUDA device is available here")
    return accelerator
