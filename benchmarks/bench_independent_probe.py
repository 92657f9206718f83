"""An independent linear probe of pretrained encoders against random init, on a fresh phantom.

Uses no awcl training or evaluation code: awcl only loads the encoders
(``awcl.models.build_encoder``) and makes the phantom (``make_phantom``, through ``prepare
videos``, every frame labelled, of ``--seed`` 7, a seed no config or test of the project uses).
Everything else is written here: frozen features (eval mode, no grad, uint8 frames fed as float
[0, 1] grey [B, 1, H, W] the way awcl feeds its encoders), L2-normalised, then scikit-learn's
StandardScaler + LogisticRegression (C = 1, fixed: nothing is tuned, so nothing is selected on
a test fold) under GroupKFold by patient, on

  (a) the coarse anatomies: frames whose coarse label is brain / heart / spine / abdomen / femur;
  (b) the fine views: every fine label but background.

Accuracy and macro-F1 are pooled over the folds' predictions; "diff vs random" is encoder minus
a random-init ResNet-18 (``torch.manual_seed(0)``) with a 95 % bootstrap interval over patients
(paired: the same resampled patients for both; 1000 draws, seed 0). An encoder "beats random"
when the lower end of that interval is above 0.

Sources are ``NAME=PATH``: PATH is a pretraining run dir (holding ``encoder.pt``), an encoder
file, or a study dir, whose every ``runs/pretrain-*/run/encoder.pt`` is taken and named
``NAME:<method>[-r<ratio>]-s<seed>`` from the run's ``config.json``.

    python benchmarks/bench_independent_probe.py simclr=out/simclr awcl=out/study
    python benchmarks/bench_independent_probe.py a=runA b=runB --scans 12 --frames 12  # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import awcl  # noqa: F401  (torchvision shim)
from awcl.data import open_dataset
from awcl.data.phantom import PhantomConfig, make_phantom
from awcl.models import build_encoder

COARSE = ("brain", "heart", "spine", "abdomen", "femur")
BACKGROUND = "background"
ENCODER_FILE = "encoder.pt"


# ---------------------------------------------------------------------------- sources
def _run_label(cfg_path: Path) -> str:
    labels = json.loads(cfg_path.read_text()).get("labels", {})
    name = str(labels.get("method", cfg_path.parent.name))
    if labels.get("ratio") is not None:
        name += f"-r{labels['ratio']:g}"
    return f"{name}-s{labels.get('seed', 0)}"


def expand_sources(specs: list[str]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` -> [(name, encoder file)]; a study dir gives one entry per pretrain run."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"source {spec!r}: expected NAME=PATH")
        p = Path(path)
        if p.is_file():
            out.append((name, p))
            continue
        direct = [c for c in (p / ENCODER_FILE, p / "export" / ENCODER_FILE) if c.is_file()]
        if direct:
            out.append((name, direct[0]))
            continue
        runs = sorted((p / "runs").glob(f"pretrain-*/run/{ENCODER_FILE}"))
        if not runs:
            raise SystemExit(f"{p}: no {ENCODER_FILE}, and no runs/pretrain-*/run/{ENCODER_FILE} (study dir)")
        for enc in runs:
            cfg = enc.parent.parent / "config.json"
            label = _run_label(cfg) if cfg.is_file() else enc.parent.parent.name
            out.append((f"{name}:{label}", enc))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"duplicate encoder names: {names}")
    return out


# ---------------------------------------------------------------------------- features
@torch.no_grad()
def features(encoder: torch.nn.Module, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Frozen, L2-normalised features of uint8 [N, H, W] frames."""
    encoder.eval()
    feats = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).unsqueeze(1).float() / 255.0
        feats.append(torch.nn.functional.normalize(encoder(x).float(), dim=1))
    return torch.cat(feats).numpy()


# ---------------------------------------------------------------------------- probe
def probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> tuple[np.ndarray, int]:
    """Out-of-fold predictions of a fixed logistic-regression probe; also # convergence warnings."""
    pred = np.empty_like(y)
    n_warn = 0
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x[train], y[train])
        n_warn += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        pred[test] = clf.predict(x[test])
    return pred, n_warn


def _patient_confusions(y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                        patients: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """[P, K, K] confusion counts (true, predicted) per patient."""
    yi, pi = np.searchsorted(classes, y), np.searchsorted(classes, pred)
    gi = np.searchsorted(patients, groups)
    k = len(classes)
    conf = np.zeros((len(patients), k, k), np.int64)
    np.add.at(conf, (gi, yi, pi), 1)
    return conf


def _scores(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of [..., K, K] confusions; macro over the classes present in the
    truth or the predictions (scikit-learn's default)."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    n_true, n_pred = conf.sum(-1), conf.sum(-2)
    acc = tp.sum(-1) / np.maximum(conf.sum((-2, -1)), 1)
    denom = n_true + n_pred
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0).sum(-1) / np.maximum(present.sum(-1), 1)
    return acc, f1


def bootstrap_diff(conf_enc: np.ndarray, conf_rnd: np.ndarray, draws: int = 1000,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[draws, 2] (acc, macro-F1) differences encoder - random, patients resampled (paired)."""
    rng = np.random.default_rng(seed)
    n = len(conf_enc)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(draws)])
    k = conf_enc.shape[-1]
    res = []
    for conf in (conf_enc, conf_rnd):
        summed = (counts @ conf.reshape(n, k * k)).reshape(draws, k, k)
        res.append(np.stack(_scores(summed), axis=1))
    return res[0] - res[1], counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", metavar="NAME=PATH",
                    help="pretraining run dir, encoder file or study dir")
    ap.add_argument("--seed", type=int, default=7, help="phantom seed (7: used nowhere in the project)")
    ap.add_argument("--scans", type=int, default=40)
    ap.add_argument("--frames", type=int, default=24, help="frames per scan")
    ap.add_argument("--size", default="64x80", help="HxW")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--diff", choices=("acc", "f1"), default="acc",
                    help="metric of the diff vs random and of 'beats random' (default acc)")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    sources = expand_sources(args.sources)

    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    print(f"# CPU: {cpu.split(':', 1)[-1].strip() or 'unknown'}; torch threads {args.threads}", flush=True)
    print(f"# phantom seed {args.seed}, {args.scans} scans x {args.frames} frames, {h}x{w}, "
          f"prepare videos, all labelled; {args.folds} folds by patient; "
          f"LogReg C=1 on L2-normalised frozen features", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_phantom(Path(tmp) / "phantom", PhantomConfig(
            seed=args.seed, scans=args.scans, frames_per_scan=args.frames, size=(h, w),
            labelled_fraction=1.0, masks="none", prepare="videos"))
        ds = open_dataset(root)
        frames = np.array(ds.frames)  # copied into memory before the temp dir goes
        man = ds.manifest
    coarse = man["coarse_label"].astype("string").fillna("").to_numpy(dtype=object)
    fine = man["fine_label"].astype("string").fillna("").to_numpy(dtype=object)
    groups = man["patient_id"].astype(str).to_numpy()
    tasks = {
        "coarse": (np.isin(coarse, COARSE), coarse),
        "fine": ((fine != "") & (fine != BACKGROUND), fine),
    }
    print(f"# phantom: {len(frames)} frames, {len(set(groups))} patients, {frames.shape[1]}x{frames.shape[2]}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    for task, (keep, y) in tasks.items():
        labs, cnt = np.unique(y[keep], return_counts=True)
        print(f"#   {task}: {keep.sum()} frames, {len(labs)} classes: "
              + ", ".join(f"{a} {c}" for a, c in zip(labs, cnt, strict=True)), flush=True)

    torch.manual_seed(0)
    encoders: list[tuple[str, object]] = [("random", "random")] + [(n, p) for n, p in sources]
    results: dict[str, dict] = {}
    for name, src in encoders:
        t1 = time.perf_counter()
        if src == "random":
            torch.manual_seed(0)
        enc = build_encoder(src)
        x = features(enc, frames)
        row = {}
        for task, (keep, y) in tasks.items():
            yk, gk = y[keep].astype(str), groups[keep]
            pred, n_warn = probe(x[keep], yk, gk, args.folds)
            row[task] = {"y": yk, "pred": pred, "groups": gk, "warn": n_warn,
                         "acc": float(np.mean(pred == yk)),
                         "f1": float(f1_score(yk, pred, average="macro"))}
        results[name] = row
        print(f"# {name}: {src} ({time.perf_counter() - t1:.0f} s)", flush=True)

    mi = 0 if args.diff == "acc" else 1
    head = (f"{'encoder':<28} {'coarse acc':>10} {'coarse F1':>9} {'diff ' + args.diff + ' [95% CI]':>26}"
            f" {'fine acc':>8} {'fine F1':>7} {'diff ' + args.diff + ' [95% CI]':>26}")
    print(head)
    print("-" * len(head))
    beats: list[bool] = []
    out_json = []
    for name, row in results.items():
        cells = []
        rec = {"encoder": name}
        for task in tasks:
            r, rr = row[task], results["random"][task]
            cells += [f"{r['acc']:>{10 if task == 'coarse' else 8}.3f}",
                      f"{r['f1']:>{9 if task == 'coarse' else 7}.3f}"]
            rec[task] = {"acc": r["acc"], "f1": r["f1"], "convergence_warnings": r["warn"]}
            if name == "random":
                cells.append(f"{'-':>26}")
                continue
            classes = np.unique(np.concatenate([r["y"], r["pred"], rr["pred"]]))
            patients = np.unique(r["groups"])
            ce = _patient_confusions(r["y"], r["pred"], r["groups"], patients, classes)
            cr = _patient_confusions(rr["y"], rr["pred"], rr["groups"], patients, classes)
            point = _scores(ce.sum(0))[mi] - _scores(cr.sum(0))[mi]
            diffs, _ = bootstrap_diff(ce, cr, args.draws, seed=0)
            lo, hi = np.percentile(diffs[:, mi], [2.5, 97.5])
            cells.append(f"{point:>+8.3f} [{lo:+.3f}, {hi:+.3f}]")
            rec[task]["diff"] = {"metric": args.diff, "point": float(point), "lo": float(lo), "hi": float(hi)}
            if task == "coarse":
                beats.append(bool(lo > 0))
        print(f"{name:<28} " + " ".join(cells))
        out_json.append(rec)
    warns = sum(row[t]["warn"] for row in results.values() for t in tasks)
    if warns:
        print(f"# {warns} probe fits stopped at max_iter=2000 before converging")
    print(f"# 'beats random': the 95 % interval of the coarse {args.diff} difference lies above 0")
    print(f"every pretrained encoder beats random on the coarse anatomies: {'yes' if all(beats) else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": out_json}, indent=2))


if __name__ == "__main__":
    main()
