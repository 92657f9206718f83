"""End to end pretraining on a tiny synthetic prepared dataset: every method runs and writes
its run directory; the exported encoder loads strict into torchvision; resume is exact."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import awcl  # noqa: F401  (torchvision shim)
from awcl.data.store import DatasetWriter
from awcl.errors import AwclError
from awcl.train.pretrain import PretrainConfig, pretrain

SIZE = (32, 40)


def make_tiny(out: Path, patients: int = 4, videos: int = 2, frames: int = 4) -> Path:
    """Synthetic frames: a bright block whose place depends on the class; half the frames labelled."""
    rng = np.random.default_rng(0)
    kinds = [("heart", "4CH"), ("heart", "3VT"), ("brain", "TV"), ("background", None)]
    with DatasetWriter(out, size=(36, 44), source="synthetic") as w:
        for p in range(patients):
            for v in range(videos):
                for f in range(frames):
                    coarse, fine = kinds[(p + v + f) % 4]
                    img = (rng.random((36, 44)) * 60).astype(np.uint8)
                    if coarse == "heart":
                        img[8:28, 6:26] += 120
                    if fine == "3VT":
                        img[2:12, 28:40] += 80
                    if coarse == "brain":
                        img[18:34, 4:40] += 150
                    labelled = f % 2 == 0
                    w.add(
                        img,
                        video_id=f"p{p}v{v}",
                        patient_id=f"p{p}",
                        frame_index=f,
                        coarse_label=coarse if labelled else None,
                        fine_label=fine if labelled else None,
                    )
        w.meta["hierarchy"] = {"4CH": "heart", "3VT": "heart", "TV": "brain"}
        w.meta["ignore_labels"] = ["background"]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("data") / "tiny")


def cfg_for(data: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(
        data=str(data), out=str(out), epochs=1, batch_size=8, size=SIZE, num_workers=0,
        progress=False, log_every_n_steps=1, threads=2,
    )
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.parametrize(
    "method,extra",
    [
        ("awcl", {"granularity": "fine", "anatomy_ratio": 0.5}),
        ("simclr", {}),
        ("clpi", {}),
        ("uscl", {}),
        ("supervised", {"batch_size": 4}),
    ],
)
def test_every_method_runs(tiny: Path, tmp_path: Path, method: str, extra: dict) -> None:
    run = pretrain(cfg_for(tiny, tmp_path / method, method=method, **extra))
    for name in ("config.yaml", "history.csv", "summary.json", "encoder.pt", "heads.pt"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any((run / "logs" / "tb").iterdir())
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert rows[-1]["epoch"] == "1" and np.isfinite(float(rows[-1]["loss"]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] > 0
    assert summary["class_group"] == 1 and summary["batch_composition"]


def test_encoder_loads_strict_into_torchvision(uninterrupted: Path) -> None:
    from torchvision.models import resnet18

    run = uninterrupted
    sd = torch.load(run / "encoder.pt", weights_only=True)
    net = resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.load_state_dict(sd, strict=True)
    # same features as the grey encoder on a grey image replicated to RGB
    from awcl.models import build_encoder

    enc = build_encoder(run).eval()
    net.eval()
    x = torch.rand(2, 1, *SIZE)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (x.repeat(1, 3, 1, 1) - 0.449) / 0.226 * std[:, None, None] + mean[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(net((rgb - mean[:, None, None]) / std[:, None, None]), enc(x), rtol=1e-4, atol=1e-4)


class _Kill(Exception):
    pass


def _kill(at_epoch: int = -1, at_step: int = -1):
    """Simulates a killed run: raises at the start of epoch ``at_epoch`` (after its checkpoint)
    or before the batch that follows global step ``at_step`` (after that step's checkpoint)."""
    from lightning.pytorch.callbacks import Callback

    class Kill(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == at_epoch:
                raise _Kill()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == at_step:
                raise _Kill()

    return Kill()


@pytest.fixture(scope="module")
def uninterrupted(tiny: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    return pretrain(cfg_for(tiny, out, **RESUME_KW))


# The kNN monitor is on: its step-0 measurement must not disturb an exact resume.
RESUME_KW = dict(method="awcl", epochs=2, anatomy_ratio=0.5, monitor_fraction=0.25)


@pytest.mark.parametrize("where", ["epoch", "mid_epoch"])
def test_resume_reaches_same_weights(tiny: Path, tmp_path: Path, uninterrupted: Path, where: str) -> None:
    # 32 frames / batch 8 = 4 steps per epoch; mid-epoch: killed after step 6 of 8
    kill = _kill(at_epoch=1) if where == "epoch" else _kill(at_step=6)
    kw = dict(RESUME_KW, checkpoint_every_n_steps=0 if where == "epoch" else 3)
    with pytest.raises(_Kill):
        pretrain(cfg_for(tiny, tmp_path / "cut", **kw), callbacks=[kill])
    assert not (tmp_path / "cut" / "encoder.pt").exists()
    with pytest.raises(AwclError, match="already holds a run"):
        pretrain(cfg_for(tiny, tmp_path / "cut", **kw))
    resumed = pretrain(cfg_for(tiny, tmp_path / "cut", resume=True, **kw))
    a = torch.load(uninterrupted / "encoder.pt", weights_only=True)
    b = torch.load(resumed / "encoder.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = torch.load(uninterrupted / "heads.pt", weights_only=True)
    hb = torch.load(resumed / "heads.pt", weights_only=True)
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    h = list(csv.DictReader(open(resumed / "history.csv")))
    ref = list(csv.DictReader(open(uninterrupted / "history.csv")))
    # row 0 = before training (measured once, kept through the resume), then one row per epoch
    assert [int(r["epoch"]) for r in h] == [0, 1, 2]
    assert [int(r["step"]) for r in h] == [0, 4, 8]
    assert [r["knn_acc"] for r in h] == [r["knn_acc"] for r in ref]
    # both granularities' curves (coarse, and fine on the same features) survive the resume
    assert "knn_acc_fine" in (resumed / "monitor.csv").read_text().splitlines()[0]
    assert (resumed / "monitor.csv").read_text() == (uninterrupted / "monitor.csv").read_text()
    if where == "epoch":  # a whole epoch redone: identical epoch losses
        assert [r["loss"] for r in h] == [r["loss"] for r in ref]


def test_knn_monitor_reports_step_zero(uninterrupted: Path) -> None:
    rows = list(csv.DictReader(open(uninterrupted / "history.csv")))
    first = rows[0]
    assert (first["epoch"], first["step"]) == ("0", "0")
    assert first["loss"] in ("", "nan") and 0.0 <= float(first["knn_acc"]) <= 1.0
    assert all(0.0 <= float(r["knn_acc"]) <= 1.0 for r in rows[1:])
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["knn_acc_init"] == pytest.approx(float(first["knn_acc"]))
    assert summary["knn_acc"] == pytest.approx(float(rows[-1]["knn_acc"]))
    # the step-0 point also reaches the loggers (TensorBoard / CSV)
    import pandas as pd

    logged = pd.read_csv(uninterrupted / "logs" / "csv" / "metrics.csv")
    assert logged[logged.step == 0].knn_acc.notna().any()


def test_without_monitor_no_step_zero_row(tmp_path: Path, tiny: Path) -> None:
    run = pretrain(cfg_for(tiny, tmp_path / "nomon", method="simclr", monitor_fraction=0, max_steps=2))
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1]


def test_uscl_resume_mid_epoch_and_summary(tiny: Path, tmp_path: Path) -> None:
    """USCL (one sample per video, 8 videos, batch 4, one pass per epoch: 2 steps an epoch)
    killed after step 3 of 4 and resumed ends with the weights of an uninterrupted run."""
    kw = dict(method="uscl", epochs=2, batch_size=4, uscl_rounds=1, monitor_fraction=0,
              checkpoint_every_n_steps=1)
    ref = pretrain(cfg_for(tiny, tmp_path / "ref", **kw))
    with pytest.raises(_Kill):
        pretrain(cfg_for(tiny, tmp_path / "cut", **kw), callbacks=[_kill(at_step=3)])
    resumed = pretrain(cfg_for(tiny, tmp_path / "cut", resume=True, **kw))
    a = torch.load(ref / "encoder.pt", weights_only=True)
    b = torch.load(resumed / "encoder.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["uscl"]["videos"] == 8 and summary["uscl"]["ce_weight"] == 0.2
    assert summary["batch_composition"].startswith("one sample per video")
    assert json.loads((resumed / "summary.json").read_text())["final_loss"] == summary["final_loss"]


# With --max-steps, Lightning restarts an epoch-end checkpoint as if a validation loop were
# due (one extra batch; awcl rewrites the state, engine.epoch_end_as_last_batch); a kill
# before the epoch-end checkpoint resumes from the step checkpoint before it (none is written
# after an epoch's last batch, engine.StepCheckpoint); a run resumed from its final checkpoint
# trains nothing. All three must end as the uninterrupted run: weights, the
# summary (final loss, epochs, kNN values and curve) and history.csv (benchmarks/bench_kill.py).
@pytest.mark.parametrize("case", ["epoch_end", "last_batch", "finished"])
def test_resume_with_max_steps_is_exact(tiny: Path, tmp_path: Path, case: str) -> None:
    # 4 steps an epoch (1 of 4 patients held out by the monitor); 5 steps = 1 1/4 epochs
    kw = dict(method="awcl", anatomy_ratio=0.5, epochs=100, max_steps=5, monitor_fraction=0.25,
              checkpoint_every_n_steps=1 if case == "last_batch" else 0)
    ref = pretrain(cfg_for(tiny, tmp_path / "ref", **kw))
    cut = tmp_path / "cut"
    if case == "finished":
        pretrain(cfg_for(tiny, cut, **kw))
    else:
        with pytest.raises(_Kill):
            pretrain(cfg_for(tiny, cut, **kw), callbacks=[_kill(at_epoch=1)])
        if case == "last_batch":  # killed before the epoch-end checkpoint was written
            for p in (cut / "checkpoints").glob("*.ckpt"):
                if not p.name.startswith("step"):
                    p.unlink()
            assert [p.name for p in (cut / "checkpoints").glob("*.ckpt")] == ["step0000003.ckpt"]
    pretrain(cfg_for(tiny, cut, resume=True, **kw))
    a, b = (torch.load(r / "encoder.pt", weights_only=True) for r in (ref, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, cut))
    assert {k: v for k, v in sa.items() if k != "img_per_s"} == {k: v for k, v in sb.items() if k != "img_per_s"}
    ha, hb = ([(r["epoch"], r["step"], r["loss"], r["knn_acc"]) for r in csv.DictReader(open(d / "history.csv"))]
              for d in (ref, cut))  # fmt: skip
    assert ha == hb


def test_nan_loss_stops_with_message(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(AwclError, match="loss became"):
        pretrain(cfg_for(tiny, tmp_path / "nan", method="simclr", lr=float("inf"), epochs=2,
                         monitor_fraction=0))
    # the first epoch cannot finish: no checkpoint of poisoned weights is written
    assert not (tmp_path / "nan" / "encoder.pt").exists()


def test_cli_pretrain_and_resume(tiny: Path, tmp_path: Path, capsys) -> None:
    from awcl.cli import main

    out = tmp_path / "cli"
    args = ["pretrain", "--data", str(tiny), "--out", str(out), "--method", "simclr",
            "--epochs", "1", "--batch-size", "8", "--size", "32x40", "--num-workers", "0",
            "--no-progress", "--max-steps", "2"]
    assert main(args) == 0
    assert "summary:" in capsys.readouterr().out
    assert main(args) == 2  # exists, no --resume: one-line error
    assert "already holds a run" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_crop_scale_default_and_flag(tmp_path: Path) -> None:
    from awcl.cli import build_parser
    from awcl.train.cli import config_from_args

    assert PretrainConfig().crop_scale == (0.08, 1.0)  # SimCLR's, as the AWCL authors' code
    args = build_parser().parse_args(
        ["pretrain", "--data", "d", "--out", str(tmp_path / "o"), "--crop-scale", "0.2,0.9", "--blur", "0.5"]
    )
    cfg = config_from_args(args)
    assert cfg.crop_scale == (0.2, 0.9) and cfg.blur == 0.5
    assert PretrainConfig.from_dict(cfg.to_dict()).crop_scale == (0.2, 0.9)  # config.yaml round trip
    for bad in ("0.5", "0,1", "0.9,0.2", "a,b", "0.1,1.5"):
        with pytest.raises(AwclError, match="--crop-scale"):
            PretrainConfig(crop_scale=bad)


def test_monitor_granularity_is_the_same_task_for_every_method(tiny: Path, tmp_path: Path) -> None:
    """With one monitor granularity, methods of different granularity are scored on the same
    bank and queries with the same labels, and start from the same step-0 kNN value."""
    from awcl.data.store import open_dataset
    from awcl.train.pretrain import _held_out, _monitor

    ds = open_dataset(tiny)

    def monitor(**kw):
        cfg = cfg_for(tiny, tmp_path / "m", monitor_fraction=0.25, **kw)
        return _monitor(ds, cfg, _held_out(ds, cfg), str(tiny / "frames.npy"))

    same = [monitor(method="awcl", granularity="fine", monitor_granularity="fine"),
            monitor(method="simclr", monitor_granularity="fine")]  # fmt: skip
    assert np.array_equal(same[0].query_y, same[1].query_y) and np.array_equal(same[0].bank, same[1].bank)
    own = [monitor(method="awcl", granularity="fine"), monitor(method="simclr")]  # each its own labels
    assert int(own[0].query_y.max()) != int(own[1].query_y.max())
    kw = dict(max_steps=1, monitor_fraction=0.25, monitor_granularity="fine")
    a = pretrain(cfg_for(tiny, tmp_path / "a", method="awcl", granularity="fine", **kw))
    b = pretrain(cfg_for(tiny, tmp_path / "b", method="simclr", **kw))
    first = [next(iter(csv.DictReader(open(r / "history.csv"))))["knn_acc"] for r in (a, b)]
    assert first[0] == first[1]
    with pytest.raises(AwclError, match="monitor-granularity"):
        PretrainConfig(monitor_granularity="organ")


def test_knn_vote_matches_a_per_query_loop() -> None:
    """The monitor's vote (top-k cosine neighbours, weights exp(sim / 0.1)) against a plain
    loop over queries; frames without a label at a granularity (-1) take no part."""
    from awcl.train.callbacks import KnnMonitor

    rng = np.random.default_rng(0)
    mon = KnnMonitor("unused", np.arange(30), np.zeros(30, int), np.arange(12), np.zeros(12, int), (8, 8), k=5)
    sim = torch.from_numpy(rng.uniform(-1, 1, (12, 30)).astype(np.float32))
    by, qy = rng.integers(-1, 4, 30), rng.integers(-1, 4, 12)
    right = total = 0
    for q in range(12):
        if qy[q] < 0:
            continue
        cand = [(float(sim[q, b]), by[b]) for b in range(30) if by[b] >= 0]
        votes: dict[int, float] = {}
        for s, y in sorted(cand, reverse=True)[:5]:
            votes[y] = votes.get(y, 0.0) + math.exp(s / 0.1)
        right += max(votes, key=votes.get) == qy[q]
        total += 1
    assert mon.knn_accuracy(sim, by, qy) == pytest.approx(right / total)


def test_monitor_scores_the_other_granularity_on_the_same_frames(tiny: Path, tmp_path: Path) -> None:
    """With the fine views monitored, the coarse anatomy is scored on the same bank and queries
    at every point; its curve goes to monitor.csv and its step-0 and final values and
    crossover to summary.json."""
    run = pretrain(cfg_for(tiny, tmp_path / "r", method="simclr", max_steps=3, monitor_fraction=0.25,
                           monitor_granularity="fine", monitor_every_n_steps=1))
    rows = list(csv.DictReader(open(run / "monitor.csv")))
    assert list(rows[0]) == ["step", "knn_acc", "knn_acc_coarse"]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    s = json.loads((run / "summary.json").read_text())
    assert s["knn_granularity"] == "fine" and set(s["knn_other"]) == {"coarse"}
    other = s["knn_other"]["coarse"]
    assert other["init"] == pytest.approx(float(rows[0]["knn_acc_coarse"]))
    assert other["final"] == pytest.approx(float(rows[-1]["knn_acc_coarse"]))


def test_monitor_keeps_each_patients_votes_under_a_code(tmp_path: Path) -> None:
    """summary.json's knn_hits: per held-out patient (a code, no id) its monitor queries and how
    many the kNN vote got right at step 0 and at the end; they add up to the two kNN values the
    summary states, so the report's interval is over the same queries."""
    data = make_tiny(tmp_path / "eight", patients=8)
    run = pretrain(cfg_for(data, tmp_path / "r", method="simclr", monitor_fraction=0.5))
    s = json.loads((run / "summary.json").read_text())
    h = s["knn_hits"]
    assert len(h["queries"]) == len(h["init"]) == len(h["final"]) == 4  # 4 of 8 patients held out
    assert np.isclose(sum(h["init"]) / sum(h["queries"]), s["knn_acc_init"])
    assert np.isclose(sum(h["final"]) / sum(h["queries"]), s["knn_acc"])
    assert all(isinstance(v, int) for k in ("queries", "init", "final") for v in h[k])
