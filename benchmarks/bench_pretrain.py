"""Pretraining throughput, all on this machine in one run, at each --sizes (HxW), batch 32.

For every precision candidate of this machine (CPU: fp32, fp32 + channels_last, and bf16
autocast + channels_last; GPU: bf16/fp16 mixed), and for ``auto`` (what a user gets):

(a) ``awcl pretrain`` end to end from a prepared dataset (the engine's own steady-state
    img/s: time between consecutive step ends, data waiting included, warm-up left out);
(b) the model step alone on uint8 tensors already in memory (same precision/channels_last,
    same loss) — the ceiling for (a);
(c) a straightforward reference: per-sample PIL transforms in DataLoader workers, fp32,
    torchvision ResNet-18 on 3-channel input, NT-Xent (once per size).

``--backbone`` (default resnet18) sets the encoder of (a) and (b): ``resnet50``,
``timm:vit_small_patch16_224`` (ViT-S/16, built for each size), any ``timm:<name>``. (c) stays
the ResNet-18 reference, so a/c compares against that fixed baseline.

Images/s counts encoder inputs (two views per sample). Targets: (a)/(b) >= 0.9 at the chosen
precision, auto within 10% of the fastest, (a)/(c) >= 1.5 (goal 2). The first lines name the
CPU and its bf16 capability (or the GPU).

    python benchmarks/bench_pretrain.py                 # 30 timed steps per figure
    python benchmarks/bench_pretrain.py --steps 3 --sizes 32x40   # smoke test
    python benchmarks/bench_pretrain.py --precisions auto --blur 0.5   # one row, with blur
    python benchmarks/bench_pretrain.py --backbone resnet50
    python benchmarks/bench_pretrain.py --backbone timm:vit_small_patch16_224 --sizes 224x288
    python benchmarks/bench_pretrain.py --backbone timm:vit_small_patch16_224 --steps 2 --warmup 3 --sizes 32x32 --skip c   # smoke

(a) is nan unless ``--warmup`` >= 3: the engine leaves its first 3 steps out of its figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import awcl  # noqa: F401  (torchvision shim)
from _timing import steps_per_second  # benchmarks/_timing.py
from awcl.data.store import DatasetWriter
from awcl.options import parse_size
from awcl.runtime.precision import Choice


def synthetic_dataset(out: Path, n: int, size: tuple[int, int]) -> Path:
    """Speckle-like frames with a bright fan, a few videos; written once per run."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    fan = ((xx - w / 2) ** 2 / (w / 2) ** 2 + (yy / h) ** 2 < 1).astype(np.float32)
    with DatasetWriter(out, size=size, source="bench") as wr:
        for i in range(n):
            speckle = rng.rayleigh(40, size=(h, w)).astype(np.float32)
            img = np.clip(fan * speckle + 10, 0, 255).astype(np.uint8)
            wr.add(img, video_id=f"v{i // 32}", patient_id=f"p{i // 64}", frame_index=i % 32,
                   coarse_label=("a", "b", "c")[i % 3] if i % 4 == 0 else None)
    return out


def bench_end_to_end(data: Path, size, args, precision: str, channels_last: bool | None) -> tuple[float, dict]:
    from awcl.train.pretrain import PretrainConfig, pretrain

    run = Path(tempfile.mkdtemp(prefix="bench_run_"))
    shutil.rmtree(run)
    try:
        cfg = PretrainConfig(
            data=str(data), out=str(run), method=args.method, size=size,
            batch_size=args.batch_size, epochs=1, max_steps=args.warmup + args.steps,
            num_workers=args.workers, threads=args.threads, progress=False,
            monitor_fraction=0, log_every_n_steps=max(1, args.steps), precision=precision,
            channels_last=channels_last, blur=args.blur, crop_scale=(0.08, 1.0),
            compile=args.compile, backbone=None if args.backbone == "resnet18" else args.backbone,
        )
        pretrain(cfg)
        summary = json.loads((run / "summary.json").read_text())
        return float(summary["img_per_s"] or "nan"), summary
    finally:
        shutil.rmtree(run, ignore_errors=True)


def bench_model_step(size, args, precision: str, channels_last: bool) -> float:
    from awcl.data.pairs import FrameIndex
    from awcl.methods import build_method
    from awcl.models import build_encoder
    from awcl.train.engine import to_input

    cfg = SimpleNamespace(temperature=0.5, proj_hidden=512, proj_dim=128, anatomy_ratio=1.0,
                          class_group=4, clpi_by="video", uscl_ce_weight=1.0)
    idx = FrameIndex(video=np.zeros(1, int), patient=np.zeros(1, int), label=np.zeros(1, int), classes=[])
    method = build_method("simclr", cfg, idx)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    enc = build_encoder("random", args.backbone, size).to(dev, memory_format=fmt)
    if args.compile:
        enc.compile()
    heads = method.heads(enc.out_dim).to(dev)
    params = list(enc.parameters()) + list(heads.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-6)
    b = args.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2 * b, *size), dtype=torch.uint8, generator=g).to(dev)
    batch = {"key": torch.full((b,), -1, device=dev)}
    choice = Choice(precision, channels_last, "", "")
    scaler = torch.amp.GradScaler(dev.type, enabled=choice.autocast_dtype == torch.float16)

    def step() -> None:
        with choice.autocast(dev.type):
            loss, _ = method.loss(heads, enc(to_input(x, channels_last)), batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return 2 * b * steps_per_second(step, args.warmup, args.steps)


class _RefViews(torch.utils.data.Dataset):
    """Reference pipeline: PIL image per sample, torchvision v1 transforms, fp32 RGB tensors."""

    def __init__(self, frames_path: str, size):
        from torchvision import transforms as T

        self.frames_path = frames_path
        self.t = T.Compose([
            T.RandomResizedCrop(size, scale=(0.4, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
        self.n = len(np.load(frames_path, mmap_mode="r"))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(np.asarray(np.load(self.frames_path, mmap_mode="r")[i])).convert("RGB")
        return self.t(img), self.t(img)


def nt_xent(z: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """Plain SimCLR loss. z: [2B, d], rows i and i+B are a pair."""
    z = torch.nn.functional.normalize(z, dim=1)
    n = z.shape[0] // 2
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return torch.nn.functional.cross_entropy(sim, target)


def bench_reference(data: Path, size, args) -> float:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-6)
    loader = torch.utils.data.DataLoader(
        _RefViews(str(data / "frames.npy"), size), batch_size=args.batch_size, shuffle=True,
        num_workers=args.ref_workers, drop_last=True, persistent_workers=args.ref_workers > 0,
    )
    it = iter(loader)
    seen, t = 0, None
    for k in range(args.warmup + args.steps):
        try:
            x1, x2 = next(it)
        except StopIteration:
            it = iter(loader)
            x1, x2 = next(it)
        loss = nt_xent(net(torch.cat([x1, x2])))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k == args.warmup - 1:
            t = time.perf_counter()
        elif k >= args.warmup:
            seen += x1.shape[0] * 2
    return seen / (time.perf_counter() - t)


def candidates(args) -> list[tuple[str, str, bool | None]]:
    """(label, precision, channels_last) rows to measure; 'auto' is what a user gets."""
    from awcl.runtime.precision import cpu_candidates

    if torch.cuda.is_available():
        rows = [("bf16-mixed+cl", "bf16-mixed", True), ("16-mixed+cl", "16-mixed", True)]
    else:
        rows = [(f"{p.replace('-true', '')}{'+cl' if cl else ''}", p, cl) for p, cl in cpu_candidates()]
    rows.append(("auto", "auto", None))
    want = set(filter(None, args.precisions.split(",")))
    return [r for r in rows if not want or r[0] in want or r[1] in want]


def machine_lines() -> list[str]:
    from awcl.runtime.precision import describe_cpu

    lines = [f"cpu: {describe_cpu()}"]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    lines.append(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="112x144,224x288", help="comma-separated HxW list")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="timed steps per figure")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--method", default="simclr")
    p.add_argument("--backbone", default="resnet18",
                   help="encoder of (a) and (b): resnet18, resnet34, resnet50 or timm:<model> "
                        "(e.g. timm:vit_small_patch16_224); (c) is always ResNet-18")
    p.add_argument("--workers", type=int, default=1, help="awcl DataLoader workers")
    p.add_argument("--ref-workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--data", help="prepared dataset (default: a synthetic one at 224x288)")
    p.add_argument("--skip", default="", help="comma list of figures to skip: a,b,c")
    p.add_argument("--precisions", default="", help="comma list of rows (default: all, e.g. auto,fp32+cl)")
    p.add_argument("--blur", type=float, default=0.0, help="pretraining blur probability in (a)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder in (a) and (b)")
    args = p.parse_args()
    from awcl.backbones import check_backbone

    args.backbone = check_backbone(args.backbone)  # one line for a bad name, before any work
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    skip = set(filter(None, args.skip.split(",")))
    tmp = None
    if args.data:
        data = Path(args.data)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
        n = max(256, args.batch_size * (args.warmup + args.steps + 2))
        data = synthetic_dataset(tmp / "ds", n, (224, 288))
    for line in machine_lines():
        print(line)
    print(f"backbone {args.backbone} (reference (c): torchvision ResNet-18), batch {args.batch_size}, "
          f"method {args.method}, timed steps {args.steps}, blur {args.blur}, compile {args.compile}")
    print(f"{'size':>9} {'precision':>16} {'(a) e2e':>9} {'(b) step':>9} {'(c) ref':>9} "
          f"{'a/b':>6} {'a/c':>6}   img/s")
    try:
        for text in args.sizes.split(","):
            size = parse_size(text)
            c = bench_reference(data, size, args) if "c" not in skip else float("nan")
            for label, prec, cl in candidates(args):
                a, summary = (bench_end_to_end(data, size, args, prec, cl) if "a" not in skip
                              else (float("nan"), {}))
                if prec == "auto":  # the step at what auto chose
                    chosen = summary.get("precision", "32-true")
                    b_prec, b_cl = chosen, bool(summary.get("channels_last", True))
                    label = f"auto={chosen.replace('-true', '')}{'+cl' if b_cl else ''}"
                else:
                    b_prec, b_cl = prec, bool(cl)
                b = bench_model_step(size, args, b_prec, b_cl) if "b" not in skip else float("nan")
                print(f"{text:>9} {label:>16} {a:9.1f} {b:9.1f} {c:9.1f} {a / b:6.2f} {a / c:6.2f}",
                      flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
