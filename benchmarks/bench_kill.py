"""Fault injection: ``kill -9`` at random moments of ``prepare``, ``pretrain``, ``finetune`` and
``study`` must lose nothing.

For each command the script first runs it twice uninterrupted (wall time T = the faster run;
the two fingerprints must agree, or a difference after a kill would say nothing), then
``--kills`` times: starts it on a fresh output, sends SIGKILL to its process at a uniformly
random moment in [0, 1.1 T] (``--chain K``: K such kills in a row on the same output, each later
start being the "next run" below; for ``study`` this is kill, rerun, kill ... on one study
folder), and checks

  (a) torn      nothing half-written under a final name: every non-hidden file in the output
                parses or loads (json/DONE, yaml, csv, npy, pt/ckpt, png, html; Lightning's
                logs/ are skipped), a prepared dataset opens with ``awcl.data.open_dataset``;
                an output complete by its own marker (a prepared dataset, a finetune folder
                with metrics.json, a study run with DONE, pretrain's summary.json, a study's
                results.csv) must be the uninterrupted result; a finetune output is absent or
                complete;
  (b) rerun     the next run of the same command (pretrain: with ``--resume`` when
                checkpoints/*.ckpt exist) exits 0;
  (c) differ    its fingerprint equals the uninterrupted one, bit for bit (tensors: how many
                differ and the max abs diff);
  (d) leftover  after the rerun no ``.NAME.tmp-*`` / ``.NAME.old-*`` temporaries and no
                ``.lock`` files remain next to or inside the output (every process is gone).

Fingerprints: prepare = sha256 of manifest.csv, frames.npy, masks.npy, and dataset.json;
pretrain = encoder.pt and heads.pt tensors, summary.json (steps, final_loss and every other
key but timings), history.csv and monitor.csv without timing columns; finetune = metrics.json
without timing/environment keys, and its file list; study = results.csv without timing
columns and rows (seconds, img_per_s).

Every subprocess runs under a timeout (its process group is killed and it counts as a
failure), so the script cannot hang. Sizes are tiny (32x40 frames, a few scans, batch 8,
16 pretraining steps with a checkpoint every 3). Prints the CPU model, one line per command
(kills before start / during / after finish, how many kills left temporaries or locks for
the rerun to sweep, failures by kind, mean rerun time) and PASS or FAIL (exit status 0 / 1).
The work folder is removed when everything passes, else kept with the failed trials' logs.

    OMP_NUM_THREADS=1 python benchmarks/bench_kill.py               # 20 kills per command
    python benchmarks/bench_kill.py --kills 2 --commands pretrain,study   # a smoke run
    python benchmarks/bench_kill.py --commands study --chain 3      # kill, rerun, kill ...
    python benchmarks/bench_kill.py --commands pretrain --kill-at 0.9,0.97  # fixed moments
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMANDS = ("prepare", "pretrain", "finetune", "study")
PY = sys.executable
SIZE = "32x40"
# a fixed pseudonym key of this harness only (the phantom's ids do not depend on it, but a
# prepared dataset records its fingerprint): never the user's ~/.config/awcl/secret
SECRET = "bench-kill-fixed-key-0123456789abcdef"

# temporaries of awcl.atomic (.NAME.tmp-HOST-PID-RAND, .NAME.old-...) and anything else that
# looks like a temporary; locks: .NAME.lock (awcl.locking.out_lock), .awcl-study.lock
TEMP_RE = re.compile(r"^\..+\.(tmp|old)-|\.tmp\b|~$")
TIMING_KEYS = re.compile(r"(^|_)(elapsed|seconds|time|timing|duration|environment|img_per_s|finished|started)(_|$)")
TIMING_METRICS = {"seconds", "img_per_s", "elapsed_s", "time"}


# ---------------------------------------------------------------------------- processes
@dataclass
class Proc:
    rc: int | None  # None: killed by us (SIGKILL or timeout)
    seconds: float
    timed_out: bool = False
    log: str = ""


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)  # stragglers (DataLoader workers) of a killed run
    except (ProcessLookupError, PermissionError):
        pass


def run(argv: list[str], cwd: Path, env: dict, timeout: float, kill_at: float | None = None,
        log: Path | None = None) -> Proc:
    """Run ``argv``; SIGKILL its main process at ``kill_at`` seconds (None: let it finish) and
    its whole process group on ``timeout``. Never blocks longer than ``timeout``."""
    log = log or cwd / "log.txt"
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n".encode())
        fh.flush()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        limit = timeout if kill_at is None else min(kill_at, timeout)
        try:
            rc = p.wait(timeout=limit)
            _kill_group(p)
            return Proc(rc, time.perf_counter() - t0, log=str(log))
        except subprocess.TimeoutExpired:
            pass
        if kill_at is not None and kill_at < timeout:
            os.kill(p.pid, signal.SIGKILL)  # kill -9 of the command (what a user or the OOM killer does)
        else:
            os.killpg(p.pid, signal.SIGKILL)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:  # unkillable (D state): give up on it, do not hang
            pass
        _kill_group(p)
        fh.write(f"\n[bench_kill: SIGKILL at {time.perf_counter() - t0:.2f} s]\n".encode())
        return Proc(None, time.perf_counter() - t0, timed_out=kill_at is None or kill_at >= timeout, log=str(log))


# ---------------------------------------------------------------------------- file checks
def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def check_file(p: Path) -> str | None:
    """Why ``p`` is not a complete file of its kind (None: it parses/loads)."""
    name = p.name
    try:
        if p.is_symlink() and not p.exists():
            return "dangling link"
        if p.stat().st_size == 0 and name not in ("__init__.py",):
            return "empty"
        if name == "DONE" or name.endswith(".json"):
            json.loads(p.read_text(encoding="utf-8"))
        elif name.endswith((".yaml", ".yml")):
            import yaml

            yaml.safe_load(p.read_text(encoding="utf-8"))
        elif name.endswith(".csv"):
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            if not rows:
                return "no header"
            n = len(rows[0])
            bad = [i for i, r in enumerate(rows) if len(r) != n]
            if bad:
                return f"row {bad[0]} has {len(rows[bad[0]])} fields, header {n}"
            if not p.read_bytes().endswith(b"\n"):
                return "last line not terminated"
        elif name.endswith(".npy"):
            import numpy as np

            np.load(p, mmap_mode="r")
        elif name.endswith((".pt", ".ckpt", ".pth")):
            import torch

            torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(p) as im:
                im.verify()
        elif name.endswith(".html"):
            if b"</html>" not in p.read_bytes()[-4096:].lower():
                return "no closing </html>"
    except Exception as err:
        return f"{err.__class__.__name__}: {str(err)[:120]}"
    return None


def torn_files(out: Path, skip_logs: bool = True) -> list[str]:
    """Final-named files under ``out`` that do not parse. Hidden temporaries are checked by
    :func:`leftovers`; Lightning's logs/ (append-only TensorBoard/CSV logs) are skipped."""
    bad = []
    if not out.exists():
        return bad
    files = [out] if out.is_file() else sorted(q for q in out.rglob("*") if q.is_file() or q.is_symlink())
    for q in files:
        if out.is_dir() and _hidden(q, out):
            continue
        if skip_logs and out.is_dir() and "logs" in q.relative_to(out).parts:
            continue
        why = check_file(q)
        if why:
            bad.append(f"{q.relative_to(out.parent)}: {why}")
    return bad


def leftovers(parent: Path) -> list[str]:
    """Temporaries and lock files anywhere under ``parent`` (the output and its siblings)."""
    found = []
    for q in sorted(parent.rglob("*")):
        n = q.name
        if n == "log.txt":
            continue
        if TEMP_RE.search(n) or n.endswith(".lock"):
            found.append(str(q.relative_to(parent)))
    return found


# ---------------------------------------------------------------------------- fingerprints
def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _strip_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not TIMING_KEYS.search(str(k))}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _tensors(p: Path) -> dict:
    import torch

    return torch.load(p, map_location="cpu", weights_only=True)


def fingerprint(cmd: str, out: Path) -> dict[str, Any]:
    """What must be identical between an uninterrupted run and a killed-then-rerun one."""
    if cmd == "prepare":
        fp: dict[str, Any] = {n: _sha(out / n) for n in ("manifest.csv", "frames.npy", "masks.npy") if (out / n).exists()}
        fp["dataset.json"] = _strip_timing(json.loads((out / "dataset.json").read_text()))
        return fp
    if cmd == "pretrain":
        s = json.loads((out / "summary.json").read_text())
        fp = {"encoder": _tensors(out / "encoder.pt"), "heads": _tensors(out / "heads.pt"),
              "steps": s.get("steps"), "final_loss": s.get("final_loss")}
        # the rest of the run's record: summary.json, the per-epoch history and the kNN curve
        fp["summary"] = _strip_timing(s)
        for name in ("history.csv", "monitor.csv"):
            if (out / name).is_file():
                with open(out / name, newline="") as fh:
                    fp[name] = [{k: v for k, v in r.items() if not TIMING_KEYS.search(k)} for r in csv.DictReader(fh)]
        return fp
    if cmd == "finetune":
        return {"metrics": _strip_timing(json.loads((out / "metrics.json").read_text())),
                "files": sorted(str(q.relative_to(out)) for q in out.rglob("*") if q.is_file())}
    if cmd == "study":
        with open(out / "results.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        keep = [c for c in (rows[0].keys() if rows else []) if not TIMING_KEYS.search(c)]
        rows = [{c: r[c] for c in keep} for r in rows if r.get("metric") not in TIMING_METRICS]
        return {"results": rows}
    raise ValueError(cmd)


def compare(a: dict, b: dict) -> list[str]:
    """Differences between two fingerprints (tensors: bit-identical, else max abs diff)."""
    import torch

    diffs = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and x and all(isinstance(v, torch.Tensor) for v in x.values()):
            if not isinstance(y, dict) or x.keys() != y.keys():
                diffs.append(f"{k}: keys differ")
                continue
            worst, names = 0.0, []
            for n in x:
                if x[n].shape != y[n].shape or x[n].dtype != y[n].dtype:
                    names.append(n)
                    worst = float("inf")
                elif not torch.equal(x[n], y[n]):
                    names.append(n)
                    worst = max(worst, float((x[n].double() - y[n].double()).abs().max()))
            if names:
                diffs.append(f"{k}: {len(names)} tensors differ (max abs diff {worst:.3g}, e.g. {names[0]})")
        elif isinstance(x, dict) and isinstance(y, dict) and x != y:
            diffs.extend(f"{k}.{d}" for d in compare(x, y))
        elif x != y:
            diffs.append(f"{k}: {_short(x)} != {_short(y)}")
    return diffs


def _short(v: Any) -> str:
    s = json.dumps(v, default=str, sort_keys=True)
    return s if len(s) <= 160 else s[:157] + "..."


# ---------------------------------------------------------------------------- commands
@dataclass
class Setup:
    work: Path
    env: dict
    pre_data: Path  # pretraining phantom (input of pretrain)
    ds_data: Path  # fully labelled downstream phantom (input of finetune)
    study_cfg: Path


def _awcl(*args: str) -> list[str]:
    return [PY, "-m", "awcl", *args]


def argv_for(cmd: str, s: Setup, out: str, resume: bool = False) -> list[str]:
    if cmd == "prepare":
        return _awcl("prepare", "phantom", "--out", out, "--seed", "3", "--scans", "24",
                     "--frames-per-scan", "40", "--size", "64x80", "--labelled-fraction", "0.3")
    if cmd == "pretrain":
        return _awcl("pretrain", "--data", str(s.pre_data), "--out", out, "--method", "awcl",
                     "--anatomy-ratio", "0.5", "--size", SIZE, "--batch-size", "8", "--epochs", "100",
                     "--max-steps", "16", "--checkpoint-every-n-steps", "3", "--monitor-fraction", "0.25",
                     "--monitor-max", "32", "--num-workers", "1", "--threads", "1",
                     "--precision", "32-true", "--no-channels-last", "--no-progress",
                     *(["--resume"] if resume else []))
    if cmd == "finetune":
        return _awcl("finetune", "--data", str(s.ds_data), "--out", out, "--init", "random",
                     "--protocol", "knn", "--folds", "2", "--classes", "brain,heart,spine",
                     "--threads", "1", "--fp32", "--bootstrap", "50", "--no-progress")
    if cmd == "study":
        return _awcl("study", str(s.study_cfg), "--out", out, "--no-progress")
    raise ValueError(cmd)


STUDY_YAML = """\
# bench_kill.py: a tiny study (prepared phantom, random init + SimCLR, 8 steps, one kNN probe)
name: killtest
pretrain_data:
  recipe: phantom
  params: {seed: 0, scans: 6, frames_per_scan: 16, size: [32, 40], labelled_fraction: 0.5, masks: none}
methods: [random, simclr]
anatomy_ratios: [0.5]
anatomy_ratio: 0.5
pretrain:
  epochs: 100
  batch_size: 8
  extra: {max_steps: 8, checkpoint_every_n_steps: 3, num_workers: 0, threads: 1,
          precision: 32-true, channels_last: false, monitor_fraction: 0.0, logger: [csv]}
tasks:
  - name: views
    dataset: pretrain
    task: classify
    classes: [brain, heart, spine]
    protocols: [knn]
    folds: 2
    extra: {precision: 32-true, threads: 1, bootstrap: 50}
embed: {enabled: false}
seeds: [0]
"""


def setup(work: Path, timeout: float) -> Setup:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(AWCL_SECRET=SECRET, AWCL_CACHE_DIR=str(work / "cache"), MPLBACKEND="Agg",
               PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    env.pop("AWCL_SECRET_FILE", None)
    inputs = work / "inputs"
    inputs.mkdir(parents=True)
    cfg = inputs / "study.yaml"
    cfg.write_text(STUDY_YAML)
    s = Setup(work, env, inputs / "pre", inputs / "ds", cfg)
    for out, extra in ((s.pre_data, ["--seed", "0", "--scans", "6", "--frames-per-scan", "16",
                                     "--labelled-fraction", "0.5", "--masks", "none"]),
                       (s.ds_data, ["--seed", "1", "--scans", "10", "--frames-per-scan", "12",
                                    "--labelled-fraction", "1.0", "--masks", "none"])):
        r = run(_awcl("prepare", "phantom", "--out", str(out), "--size", SIZE, *extra), inputs, env, timeout)
        if r.rc != 0:
            sys.exit(f"bench_kill: preparing the inputs failed (see {r.log})")
    return s


# ---------------------------------------------------------------------------- one command
@dataclass
class Tally:
    kills: int = 0
    phase: Counter = field(default_factory=Counter)  # before start / during / after finish
    fail: Counter = field(default_factory=Counter)  # torn / rerun / differ / leftover / timeout
    rerun_s: list[float] = field(default_factory=list)
    left: int = 0  # kills after which temporaries or locks were left (for the rerun to sweep)
    notes: list[str] = field(default_factory=list)


def _next_argv(cmd: str, s: Setup, out: Path) -> list[str]:
    """The next run of the same command after a kill (pretrain resumes from a checkpoint)."""
    resume = cmd == "pretrain" and any((out / "checkpoints").glob("*.ckpt"))
    return argv_for(cmd, s, out.name, resume=resume)


def _after_kill(cmd: str, out: Path, ref: dict) -> list[str]:
    """Check (a): nothing half-written is visible under a final name."""
    problems = torn_files(out)
    if problems or not out.exists():
        return problems

    def same(what: str, fp_cmd: str, where: Path) -> None:
        try:
            d = compare(ref_of[fp_cmd], fingerprint(fp_cmd, where)) if fp_cmd in ref_of else []
        except Exception as err:
            d = [f"{err.__class__.__name__}: {err}"]
        problems.extend(f"{what} complete but not the uninterrupted result: {x}" for x in d)

    ref_of = {cmd: ref}
    if cmd == "prepare":
        from awcl.data.store import open_dataset

        try:
            open_dataset(out)
        except Exception as err:
            return [f"{out.name}: dataset does not open: {err}"]
        same(out.name, "prepare", out)
    elif cmd == "finetune":
        if not (out / "metrics.json").is_file():
            return [f"{out.name}: exists without metrics.json (not complete)"]
        same(out.name, "finetune", out)
    elif cmd == "pretrain":
        if (out / "summary.json").exists():
            missing = [n for n in ("encoder.pt", "heads.pt") if not (out / n).is_file()]
            if missing:
                return [f"{out.name}: summary.json without {', '.join(missing)}"]
            same(out.name, "pretrain", out)
    elif cmd == "study":
        from awcl.data.store import open_dataset

        for d in sorted((out / "runs").glob("*")) if (out / "runs").is_dir() else []:
            if d.name.startswith(".") or not (d / "DONE").is_file():
                continue
            kind, res = d.name.split("-", 1)[0], d / "run"
            need = {"pretrain": ["encoder.pt", "summary.json"], "finetune": ["metrics.json"],
                    "embed": ["features.npy"]}.get(kind, [])
            miss = [n for n in need if not (res / n).is_file()]
            if miss:
                problems.append(f"{d.name}: DONE without {', '.join(miss)}")
            if kind == "data":
                try:
                    open_dataset(res)
                except Exception as err:
                    problems.append(f"{d.name}: DONE but its dataset does not open: {err}")
        if (out / "results.csv").is_file():
            same("results.csv", "study", out)
    return problems


def bench_command(cmd: str, s: Setup, kills: int, chain: int, rng: random.Random, timeout: float,
                  kill_at: list[float] | None, verbose: bool) -> tuple[Tally, float]:
    root = s.work / cmd
    tally = Tally()
    # uninterrupted, twice: the second (warm caches) gives T, and both must agree, or a
    # difference after a kill would say nothing about the kill
    refs, times = [], []
    for b in ("base1", "base2"):
        base = root / b
        base.mkdir(parents=True)
        r = run(argv_for(cmd, s, "out", False), base, s.env, timeout)
        if r.rc != 0:
            tally.fail["baseline"] += 1
            tally.notes.append(f"uninterrupted run failed (rc {r.rc}{', timeout' if r.timed_out else ''}): {r.log}")
            return tally, r.seconds
        times.append(r.seconds)
        refs.append(fingerprint(cmd, base / "out"))
        for why in torn_files(base / "out") + [f"leftover {x}" for x in leftovers(base)]:
            tally.fail["baseline"] += 1
            tally.notes.append(f"uninterrupted run: {why}")
    for d in compare(refs[0], refs[1]):
        tally.fail["baseline"] += 1
        tally.notes.append(f"two uninterrupted runs differ (not deterministic): {d}")
    T, ref = min(times), refs[0]
    rerun_limit = max(60.0, 4 * T)
    trial, done = 0, 0
    while done < kills:
        trial += 1
        tdir = root / f"trial{trial:02d}"
        tdir.mkdir()
        out = tdir / "out"
        ok = True

        def fail(kind: str, msg: str, tdir: Path = tdir) -> None:
            nonlocal ok
            ok = False
            tally.fail[kind] += 1
            tally.notes.append(f"{tdir.name}: {kind}: {msg}")
            if verbose:
                print(f"  {cmd} {tdir.name}: {kind}: {msg}", flush=True)

        for _ in range(min(chain, kills - done)):
            argv = _next_argv(cmd, s, out) if out.exists() else argv_for(cmd, s, out.name)
            at = (kill_at[done % len(kill_at)] * T) if kill_at else rng.uniform(0.0, 1.1 * T)
            k = run(argv, tdir, s.env, rerun_limit, kill_at=at)
            done += 1
            tally.kills += 1
            if k.rc is not None:
                tally.phase["after finish"] += 1
                if k.rc != 0:
                    fail("rerun", f"a run that was not killed exited {k.rc} ({k.log})")
            elif k.timed_out:
                fail("timeout", f"ran over {rerun_limit:.0f} s ({k.log})")
            elif any(p.name != "log.txt" for p in tdir.iterdir()):
                tally.phase["during"] += 1
            else:
                tally.phase["before start"] += 1
            tally.left += bool(leftovers(tdir))
            for why in _after_kill(cmd, out, ref):
                fail("torn", f"after the kill at {at:.2f} s: {why}")
        # (b) the next run of the same command succeeds, (c) with the same result, (d) clean
        argv = _next_argv(cmd, s, out) if out.exists() else argv_for(cmd, s, out.name)
        r = run(argv, tdir, s.env, rerun_limit)
        if r.rc != 0:
            fail("timeout" if r.timed_out else "rerun", f"{' '.join(argv[3:5])}... exited {r.rc} ({r.log})")
        else:
            tally.rerun_s.append(r.seconds)
            try:
                diffs = compare(ref, fingerprint(cmd, out))
            except Exception as err:
                diffs = [f"fingerprint: {err.__class__.__name__}: {err}"]
            for d in diffs:
                fail("differ", d)
            for why in torn_files(out):
                fail("torn", f"after the rerun: {why}")
            left = leftovers(tdir)
            if left:
                fail("leftover", ", ".join(left[:6]) + (f" (+{len(left) - 6})" if len(left) > 6 else ""))
        if ok:
            shutil.rmtree(tdir, ignore_errors=True)  # keep only failed trials (disk)
    if not tally.fail:
        for b in ("base1", "base2"):
            shutil.rmtree(root / b, ignore_errors=True)
    return tally, T


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "Model name: (lscpu unavailable)"
    line = next((x for x in out.splitlines() if x.startswith("Model name")), "Model name: ?")
    return " ".join(line.split())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per command (default 20)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma list of " + ", ".join(COMMANDS))
    ap.add_argument("--chain", type=int, default=1,
                    help="kills in a row on the same output before the completing rerun (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--kill-at", default="", help="fixed kill times as fractions of T, cycled "
                    "(e.g. 0.5,0.9; default: uniform in [0, 1.1])")
    ap.add_argument("--timeout", type=float, default=900, help="limit of an uninterrupted run, seconds")
    ap.add_argument("--work", default="", help="work folder (default: a temporary one, removed when all pass)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("-q", "--quiet", action="store_true", help="no line per failure as it happens")
    args = ap.parse_args()
    cmds = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in cmds if c not in COMMANDS]
    if unknown:
        ap.error(f"unknown command(s) {unknown}; choose from {COMMANDS}")
    kill_at = [float(x) for x in args.kill_at.split(",") if x.strip()] or None

    print(_cpu_model(), flush=True)
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1 (set here)')}; "
          f"kills per command: {args.kills}, chain {args.chain}, seed {args.seed}", flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_kill-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = setup(work, args.timeout)
    rng = random.Random(args.seed)
    all_ok = True
    for cmd in cmds:
        t1 = time.perf_counter()
        tally, T = bench_command(cmd, s, args.kills, max(1, args.chain), rng, args.timeout, kill_at,
                                 not args.quiet)
        ok = not tally.fail
        all_ok &= ok
        phases = ", ".join(f"{k} {tally.phase[k]}" for k in ("before start", "during", "after finish"))
        fails = ", ".join(f"{k} {v}" for k, v in sorted(tally.fail.items())) or "none"
        mean = sum(tally.rerun_s) / len(tally.rerun_s) if tally.rerun_s else float("nan")
        print(f"{cmd:9s} T {T:5.1f} s | kills {tally.kills} ({phases}; {tally.left} left temporaries/locks) | "
              f"failures: {fails} | "
              f"rerun mean {mean:.1f} s | {time.perf_counter() - t1:.0f} s | {'ok' if ok else 'FAIL'}", flush=True)
        for n in tally.notes[:20]:
            print(f"    {n}", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    if all_ok and not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}", flush=True)
    print("PASS" if all_ok else "FAIL", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
