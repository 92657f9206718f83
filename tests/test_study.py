"""Study config validation and the runner's cache/resume behaviour (fast stand-in runs)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from awcl.errors import AwclError
from awcl.study.config import load_config, parse_config
from awcl.study.runner import Executors, plan_study, run_study


def base_raw(tmp: Path | None = None) -> dict:
    return {
        "name": "t",
        "vars": {"data_root": "/nowhere"},
        "pretrain_data": {"recipe": "phantom", "params": {"n": 3}},
        "methods": ["random", "simclr", "awcl-coarse", "awcl-fine"],
        "anatomy_ratios": [0.2, 0.5],
        "anatomy_ratio": 0.5,
        "pretrain": {"epochs": 2, "batch_size": 8},
        "tasks": [
            {"name": "cls", "dataset": "pretrain", "task": "classify", "protocols": ["full", "partial"],
             "epochs": 1, "folds": 2},
            {"name": "seg", "dataset": "pretrain", "task": "segment", "protocols": ["full"],
             "epochs": 1, "folds": 2},
        ],
        "seeds": [0],
    }


# ------------------------------------------------------------------ config validation
@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda r: r["methods"].append("byol"), ["methods[4]", "byol"]),
        (lambda r: r.update(bogus=1), ["bogus", "unknown key"]),
        (lambda r: r["tasks"][0].update(task="detect"), ["tasks[0].task", "detect"]),
        (lambda r: r["tasks"][1].update(protocols=["full", "linear"]), ["tasks[1].protocols[1]", "linear"]),
        (lambda r: r["pretrain"].update(epochs=0), ["pretrain.epochs", "0"]),
        (lambda r: r["pretrain"].update(size=[64]), ["pretrain.size"]),
        (lambda r: r.update(anatomy_ratios=[0.2, 1.5]), ["anatomy_ratios[1]", "1.5"]),
        (lambda r: r.update(pretrain_data={"recipe": "pocus"}), ["pretrain_data.src", "pocus"]),
        (lambda r: r.update(pretrain_data={"recipe": "mnist", "src": "x"}), ["pretrain_data.recipe", "mnist"]),
        (lambda r: r.update(pretrain_data={"path": "${missing}/x"}), ["pretrain_data.path", "missing"]),
        (lambda r: r["tasks"].append(dict(r["tasks"][0])), ["tasks", "unique"]),
        (lambda r: r.update(sweep_tasks=["nope"]), ["sweep_tasks[0]", "nope"]),
        (lambda r: r.pop("tasks"), ["tasks", "missing"]),
        (lambda r: r["tasks"][0].update(folds="three"), ["tasks[0].folds", "three"]),
        (lambda r: r.update(sweep_methods=["simclr"]), ["sweep_methods[0]", "simclr"]),
    ],
)
def test_config_errors_name_key_and_value(mutate, words):
    raw = base_raw()
    mutate(raw)
    with pytest.raises(AwclError) as exc:
        parse_config(raw, source="my.yaml")
    msg = str(exc.value)
    assert msg.startswith("my.yaml: ")
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_variables_and_overrides(tmp_path):
    raw = base_raw()
    raw["pretrain_data"] = {"path": "${data_root}/prepared"}
    cfg = parse_config(raw, overrides=["data_root=/data", "pretrain.epochs=5", "seeds=[1, 2]", "tasks.1.epochs=4"])
    assert cfg.pretrain_data.path == "/data/prepared"
    assert cfg.pretrain.epochs == 5
    assert cfg.seeds == [1, 2]
    assert cfg.tasks[1].epochs == 4
    with pytest.raises(AwclError, match="index"):
        parse_config(raw, overrides=["tasks.9.epochs=4"])
    with pytest.raises(AwclError, match="NAME=VALUE"):
        parse_config(raw, overrides=["oops"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(AwclError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [a\n")
    with pytest.raises(AwclError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("name", ["demo", "pocus", "hc18", "pocus2hc18"])
def test_shipped_configs_parse(name):
    cfg = load_config(name, overrides=["data_root=/somewhere"])
    assert cfg.methods and cfg.tasks


# ------------------------------------------------------------------ stand-in runs
class Calls:
    def __init__(self, fail_at: int | None = None):
        self.log: list[str] = []
        self.fail_at = fail_at

    def _tick(self, run):
        self.log.append(run.dirname)
        if self.fail_at is not None and len(self.log) == self.fail_at:
            raise RuntimeError("simulated crash")
        run.output.mkdir(parents=True)

    def executors(self) -> Executors:
        def data(run, inputs):
            self._tick(run)
            (run.output / "dataset.json").write_text("{}")
            return {"frames": 10}

        def pretrain(run, inputs):
            assert (Path(inputs["data"]) / "dataset.json").is_file()
            self._tick(run)
            loss = np.linspace(2, 1, run.config["epochs"])
            knn = np.linspace(0.3, 0.6, run.config["epochs"] + 1)
            (run.output / "history.csv").write_text(  # row 0: the kNN monitor before training
                "epoch,step,loss,img_per_s,knn_acc\n0,0,nan,nan,0.3\n"
                + "".join(f"{i + 1},{10 * (i + 1)},{v},{50},{knn[i + 1]}\n" for i, v in enumerate(loss))
            )
            return {"final_loss": float(loss[-1]), "class_group": 1, "crop_scale": [0.08, 1.0], "blur": 0.0}

        def finetune(run, inputs):
            self._tick(run)
            rng = np.random.default_rng(len(run.name))
            img = np.zeros((20, 20, 3), np.uint8)
            cv2.imwrite(str(run.output / "confusion_fold0.png"), img)
            if run.config["task"] == "classify":  # 6 test patients x 3 frames per fold
                rows = [{"fold": f, "frame_id": f"f{f}p{p}:{i}", "video_id": f"f{f}p{p}",
                         "patient_id": f"f{f}p{p}", "true": "ab"[p % 2], "pred": "ab"[int(rng.integers(0, 2))]}
                        for f in range(run.config["folds"]) for p in range(6) for i in range(3)]
                pred = pd.DataFrame(rows)
                pred["prob_a"] = (pred.pred == "a") * 0.8 + 0.1
                pred["prob_b"] = 1 - pred.prob_a
                pred.to_csv(run.output / "predictions.csv", index=False)
            return {"folds": [{"accuracy": float(rng.uniform()), "macro_f1": float(rng.uniform())}
                              for _ in range(run.config["folds"])]}

        def embed(run, inputs):
            self._tick(run)
            cv2.imwrite(str(run.output / "tsne.png"), np.full((20, 20, 3), 128, np.uint8))
            return {"plots": ["tsne.png"]}

        return Executors(data, pretrain, finetune, embed)


def test_plan_grid_shape(tmp_path):
    cfg = parse_config(base_raw())
    plan = plan_study(cfg, tmp_path)
    kinds = [r.kind for r in plan.runs]
    assert kinds.count("data") == 1
    # simclr + awcl-coarse x2 ratios + awcl-fine x2 ratios
    assert kinds.count("pretrain") == 5
    # main encoders (random, simclr, awcl-c, awcl-f @0.5): 3 runs each; sweep (r=0.2): cls-full + seg-full
    assert kinds.count("finetune") == 4 * 3 + 2 * 2
    assert kinds.count("embed") == 4
    assert len({r.key for r in plan.runs}) == len(plan.runs)
    assert "imagenet" not in str(plan.notes)


def test_imagenet_skipped_with_note(tmp_path):
    raw = base_raw()
    raw["methods"].append("imagenet")
    raw["imagenet_weights"] = str(tmp_path / "missing.pth")
    plan = plan_study(parse_config(raw), tmp_path)
    assert any("imagenet skipped" in n for n in plan.notes)
    assert not any(r.kind != "data" and r.labels.method == "imagenet" for r in plan.runs)


def test_cache_and_resume(tmp_path):
    cfg = parse_config(base_raw())
    out = tmp_path / "study"
    crash = Calls(fail_at=7)
    with pytest.raises(RuntimeError, match="simulated"):
        run_study(cfg, out, crash.executors(), progress=False, echo=lambda s: None)
    done_before = {p.parent.name for p in (out / "runs").glob("*/DONE")}
    assert len(done_before) == 6
    half = out / "runs" / crash.log[-1]
    assert half.is_dir() and not (half / "DONE").exists()  # the crashed run left no DONE

    calls = Calls()
    res = run_study(cfg, out, calls.executors(), progress=False, echo=lambda s: None)
    assert set(calls.log).isdisjoint(done_before)  # finished runs are not recomputed
    assert len(calls.log) == len(res.plan.runs) - 6
    assert crash.log[-1] in calls.log  # the interrupted one is redone

    again = Calls()
    res2 = run_study(cfg, out, again.executors(), progress=False, echo=lambda s: None)
    assert again.log == [] and res2.computed == []
    assert len(res2.cached) == len(res2.plan.runs)

    # changing a downstream setting re-runs only the downstream runs it touches
    raw = base_raw()
    raw["tasks"][1]["epochs"] = 2
    changed = Calls()
    run_study(parse_config(raw), out, changed.executors(), progress=False, echo=lambda s: None)
    assert changed.log and all("-seg-" in d for d in changed.log)


def test_done_record_contents(tmp_path):
    cfg = parse_config(base_raw())
    run_study(cfg, tmp_path, Calls().executors(), progress=False, echo=lambda s: None)
    index = json.loads((tmp_path / "study.json").read_text())
    rec = json.loads((tmp_path / "runs" / index["runs"][-1]["dir"] / "DONE").read_text())
    assert {"kind", "config", "result", "seconds", "labels"} <= set(rec)
    assert (tmp_path / "config.yaml").is_file()


def test_sweep_methods_limits_the_sweep(tmp_path):
    raw = base_raw()
    raw["sweep_methods"] = ["awcl-coarse"]
    plan = plan_study(parse_config(raw), tmp_path)
    pre = [r.name for r in plan.runs if r.kind == "pretrain"]
    assert sorted(pre) == ["awcl-coarse-r0.2", "awcl-coarse-r0.5", "awcl-fine-r0.5", "simclr"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from awcl.cli import main

    assert main(["study", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("awcl: error: ") and "nope.yaml" in err and "\n" not in err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
    cfg = load_config("configs/pocus.yaml", ["data_root=/x"])  # the shipped copy
    assert cfg.pretrain_data.src == "/x/pocus"


# ------------------------------------------------------------------ evidence design options
def test_scales_typed_variables_and_precedence():
    raw = base_raw()
    raw["vars"] = {"scale": "cpu", "size": [32, 40], "ep": 2, "weights": ""}
    raw["scales"] = {"cpu": {}, "paper": {"size": [224, 288], "ep": 10}}
    raw["pretrain"] = {"epochs": "${ep}", "size": "${size}", "batch_size": 8}
    raw["imagenet_weights"] = "${weights}"
    cfg = parse_config(raw)
    assert cfg.pretrain.epochs == 2 and cfg.pretrain.size == [32, 40] and cfg.imagenet_weights is None
    cfg = parse_config(raw, overrides=["scale=paper"])
    assert cfg.pretrain.epochs == 10 and cfg.pretrain.size == [224, 288]
    cfg = parse_config(raw, overrides=["scale=paper", "ep=3"])  # --set beats the scale preset
    assert cfg.pretrain.epochs == 3 and cfg.pretrain.size == [224, 288]
    with pytest.raises(AwclError, match="'huge' is not one of the scales: cpu, paper"):
        parse_config(raw, overrides=["scale=huge"], source="my.yaml")


def test_train_patients_probes_and_seeds_parse():
    raw = base_raw()
    raw["tasks"][0].update(protocols=["full", "knn", "linear-probe"], train_patients=[8, 2, "all"],
                           finetune_seeds=[0, 1], epochs="preset")
    raw["finetune_seeds"] = [5]
    cfg = parse_config(raw)
    t = cfg.tasks[0]
    assert t.train_patients == [2, 8, None] and t.finetune_seeds == [0, 1] and t.epochs is None
    assert cfg.finetune_seeds == [5]
    raw["tasks"][0]["train_patients"] = [4]
    assert parse_config(raw).tasks[0].train_patients == [4, None]  # "all" always runs
    for mutate, words in [
        (lambda r: r["tasks"][0].update(train_patients=[0]), ["tasks[0].train_patients[0]"]),
        (lambda r: r["tasks"][0].update(train_patients=["some"]), ["tasks[0].train_patients[0]", "some"]),
        (lambda r: r["tasks"][1].update(protocols=["knn"]), ["tasks[1].protocols", "classification probes"]),
        (lambda r: r["tasks"][0].update(finetune_seeds=[1, 1]), ["tasks[0].finetune_seeds", "duplicates"]),
        (lambda r: r["tasks"][0].update(extra={"train_patients": 3}), ["tasks[0].extra.train_patients"]),
    ]:
        bad = base_raw()
        mutate(bad)
        with pytest.raises(AwclError) as exc:
            parse_config(bad, source="my.yaml")
        assert all(w in str(exc.value) for w in words), str(exc.value)


def test_plan_label_efficiency_probes_and_downstream_seeds(tmp_path):
    raw = base_raw()
    raw["methods"] = ["random", "simclr", "awcl-coarse"]
    raw["anatomy_ratios"] = [0.2, 0.5]
    raw["tasks"][0].update(protocols=["knn", "full"], train_patients=[2, 4, "all"], finetune_seeds=[0, 1, 2])
    plan = plan_study(parse_config(raw), tmp_path)
    ft = [r for r in plan.runs if r.kind == "finetune" and r.labels.task == "cls"]
    main = [r for r in ft if r.labels.main]
    # 3 main encoders x 2 protocols x 3 downstream seeds x 3 patient counts
    assert len(main) == 3 * 2 * 3 * 3
    assert {r.labels.train_patients for r in main} == {2, 4, None}
    assert {r.labels.ft_seed for r in main} == {0, 1, 2}
    assert all(r.config["seed"] == r.labels.ft_seed for r in ft)
    assert all(("train_patients" in r.config) == (r.labels.train_patients is not None) for r in ft)
    # the ratio sweep (awcl-coarse at r=0.2) only on the whole training part, sweep protocol only
    sweep = [r for r in ft if not r.labels.main]
    assert sweep and {r.labels.train_patients for r in sweep} == {None}
    assert {r.labels.protocol for r in sweep} == {"full"}
    # the same encoder, seed and patient count give the same subset: methods share the config
    rand = {(r.labels.ft_seed, r.labels.train_patients, r.labels.protocol): r.config for r in main
            if r.labels.method == "random"}
    simc = {(r.labels.ft_seed, r.labels.train_patients, r.labels.protocol): r.config for r in main
            if r.labels.method == "simclr"}
    assert rand.keys() == simc.keys()
    assert all({k: v for k, v in rand[k].items() if k != "init"} == simc[k] for k in rand)
    assert len({r.key for r in plan.runs}) == len(plan.runs)
    # the old grid (no new options) keeps its cache keys: no train_patients key in configs
    old = plan_study(parse_config(base_raw()), tmp_path)
    assert not any("train_patients" in r.config for r in old.runs if r.kind == "finetune")


def test_demo_config_variables():
    from awcl.study.demo import FAST_OVERRIDES, demo_config_path

    cfg = load_config(demo_config_path())
    assert cfg.pretrain_data.params["prepare"] == "videos"  # text-free corpus, the user's path
    assert cfg.pretrain.extra["crop_scale"] == [0.08, 1.0] and cfg.pretrain.extra["monitor_fraction"] > 0
    views = cfg.tasks[0]
    assert {"knn", "linear-probe"} <= set(views.protocols) and len(views.train_patients) > 1
    assert len(views.finetune_seeds) > 1
    paper = load_config(demo_config_path(), ["scale=paper"])
    assert paper.pretrain_data.params["size"] == [224, 288] and paper.pretrain.epochs == 10
    assert all(t.epochs is None for t in paper.tasks if "full" in t.protocols)  # full task presets
    fast = load_config(demo_config_path(), FAST_OVERRIDES)
    assert fast.pretrain.epochs == 1 and fast.tasks[0].folds == 2


def test_demo_epochs_reach_the_steps_chosen_on_the_monitor():
    # 1,000 steps at 48x64 were chosen on the kNN monitor (docs/study.md): the epochs must
    # leave room for them, or a contrastive method would stop short of its crossover margin
    import math

    from awcl.study.demo import demo_config_path

    cfg = load_config(demo_config_path())
    params = cfg.pretrain_data.params
    per_epoch = math.ceil(params["scans"] * params["frames_per_scan"] / cfg.pretrain.batch_size)
    steps = min(int(cfg.pretrain.extra["max_steps"]), cfg.pretrain.epochs * per_epoch)
    assert steps == int(cfg.pretrain.extra["max_steps"]) == 1000
    assert list(params["size"]) == [48, 64]
    assert cfg.pretrain.extra["lr_schedule"] == "warmup-cosine"


# ------------------------------------------------------------------ environment in configs
@pytest.mark.parametrize(
    "where, text, words",
    [
        ("yaml", "${oc.env:AWCL_TEST_SECRET_HOLDER}", ["AWCL_TEST_SECRET_HOLDER", "not set"]),
        ("yaml", "${oc.env:HOME}", ["oc.env:HOME", "not allowed", "AWCL_"]),
        ("set", "${oc.env:PATH}", ["oc.env:PATH", "not allowed"]),
        ("yaml", "${bad(", ["bad interpolation"]),
        ("set", "${bad(", ["bad interpolation"]),
    ],
)
def test_study_env_and_bad_interpolation_are_one_line(tmp_path, capsys, monkeypatch, where, text, words):
    import yaml

    from awcl.cli import main

    monkeypatch.delenv("AWCL_TEST_SECRET_HOLDER", raising=False)
    raw = base_raw()
    if where == "yaml":
        raw["vars"]["note"] = text
        sets = []
    else:
        sets = ["--set", f"note={text}"]
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "o"
    assert main(["study", str(cfg), "--out", str(out), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("awcl: error: ") and "\n" not in err and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_study_env_allowed_for_project_variables(monkeypatch):
    monkeypatch.setenv("AWCL_DATA_ROOT", "/data/here")
    raw = base_raw()
    raw["vars"]["data_root"] = "${oc.env:AWCL_DATA_ROOT}"
    raw["pretrain_data"] = {"path": "${data_root}/prepared"}
    assert parse_config(raw).pretrain_data.path == "/data/here/prepared"
