"""Full fine-tuning throughput (Task I: encoder + SonoNet head, SGD, the preset's batched
augmentation), at each --sizes (HxW), for every precision candidate of this machine and for
``auto`` (what ``awcl finetune`` picks):

(a) the engine: a :class:`awcl.evaluate.fit.DownstreamModule` fitted by the Lightning trainer
    that ``awcl finetune`` uses (in-memory uint8 frames, augmentation on the device), images/s
    between consecutive step ends after warm-up;
(b) the same model step alone on a tensor already in memory (no loader, no augmentation).

    python benchmarks/bench_finetune.py                   # 20 timed steps per figure
    python benchmarks/bench_finetune.py --steps 3 --sizes 32x40   # smoke test
"""

from __future__ import annotations

import argparse
import logging
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
from awcl.evaluate.finetune import PRESETS
from awcl.evaluate.fit import DownstreamModule, Optim
from awcl.evaluate.heads import Classifier, make_head
from awcl.models import Encoder
from awcl.options import parse_size
from awcl.runtime.precision import Choice, choose, cpu_candidates, describe_cpu
from awcl.runtime.trainer import build_trainer, quiet_fit
from awcl.train.engine import to_input


def step_timer(warmup: int):
    """A callback recording step-end times (lightning is imported after awcl's shim)."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            self.sizes.append(batch[0].shape[0])

        @property
        def rate(self) -> float:
            t, n = self.times[warmup:], self.sizes[warmup + 1 :]
            return sum(n) / (t[-1] - t[0]) if len(t) > 1 else float("nan")

    return StepTimer()


def _model(k: int, cl: bool, dev: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    m = Classifier(Encoder(), make_head("sononet", k)).to(dev)
    return m.to(memory_format=torch.channels_last) if cl else m


def bench_engine(size, args, choice: Choice, accelerator: str) -> float:
    p = PRESETS["task1"]
    n = args.batch_size * (args.warmup + args.steps + 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + 8, *size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (n + 8,), generator=g)
    fold = SimpleNamespace(index=0, train=np.arange(n), val=np.arange(n, n + 8), test=np.arange(0))
    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    module = DownstreamModule(
        _model(3, choice.channels_last, torch.device("cpu")), "classify", 3,
        Optim(p.optimizer, p.lr, p.momentum, p.weight_decay), (x, y), fold, args.batch_size,
        p.augment, choice.channels_last, seed=0,
    )
    timer = step_timer(args.warmup)
    out = Path(tempfile.mkdtemp(prefix="bench_ft_"))
    try:
        trainer = build_trainer(out, choice, accelerator=accelerator, max_epochs=1,
                                max_steps=args.warmup + args.steps, callbacks=[timer],
                                loggers=[], progress=False, use_distributed_sampler=False,
                                limit_val_batches=0)
        with quiet_fit():
            trainer.fit(module)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    del dev
    return timer.rate


def bench_step(size, args, choice: Choice, accelerator: str) -> float:
    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    cl = choice.channels_last
    model = _model(3, cl, dev).train()
    p = PRESETS["task1"]
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch_size, *size), dtype=torch.uint8, generator=g).to(dev)
    y = torch.randint(0, 3, (args.batch_size,), generator=g).to(dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=choice.autocast_dtype == torch.float16)

    def step() -> None:
        with choice.autocast(dev.type):
            logits = model(to_input(x, cl))
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return args.batch_size * steps_per_second(step, args.warmup, args.steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="112x144,224x288", help="comma-separated HxW list")
    ap.add_argument("--batch-size", type=int, default=16, help="Task I's batch")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per figure")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    gpu = torch.cuda.is_available()
    accelerator = "gpu" if gpu else "cpu"
    print(f"cpu: {describe_cpu()}")
    if gpu:
        print(f"gpu: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"timed steps {args.steps}")
    print(f"{'size':>9} {'precision':>16} {'(a) engine':>11} {'(b) step':>9} {'a/b':>6}   img/s")
    for text in args.sizes.split(","):
        size = parse_size(text)
        if gpu:
            rows = [(f"{q}+cl", Choice(q, True, "", "gpu")) for q in ("bf16-mixed", "16-mixed")]
        else:
            rows = [(f"{q.replace('-true', '')}{'+cl' if cl else ''}", Choice(q, cl, "", "cpu"))
                    for q, cl in cpu_candidates()]
        auto = choose("auto", accelerator, size)
        rows.append((f"auto={auto.precision.replace('-true', '')}{'+cl' if auto.channels_last else ''}", auto))
        for label, choice in rows:
            a = bench_engine(size, args, choice, accelerator)
            b = bench_step(size, args, choice, accelerator)
            print(f"{text:>9} {label:>16} {a:11.1f} {b:9.1f} {a / b:6.2f}", flush=True)


if __name__ == "__main__":
    main()
