"""The one configuration layer (awcl.config): every pretraining and fine-tuning setting is a
dataclass field with one flag; YAML, ``--set`` and flags merge in a fixed order; interpolation;
typed one-line errors naming the source and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from awcl.cli import build_parser
from awcl.config import build, compose, fields
from awcl.config_checks import flag_name
from awcl.errors import AwclError
from awcl.evaluate.cli import embed_config, finetune_config
from awcl.evaluate.config import FinetuneConfig
from awcl.evaluate.embed import EmbedConfig
from awcl.train.cli import config_from_args
from awcl.train.pretrain import PretrainConfig


def _sample(f: dataclasses.Field) -> tuple[list[str], object]:
    """Command-line words that set field ``f`` to a non-default value, and that value."""
    flag = flag_name(f)
    ann = str(f.type).replace(" ", "")
    if f.metadata.get("choices"):
        choices = [c for c in f.metadata["choices"] if c != f.default]
        return [flag, choices[0]], choices[0]
    if ann == "bool":
        if f.default is True:
            return ["--no-" + f.name.replace("_", "-")], False
        return [flag], True
    if ann == "bool|None":
        return ["--no-" + f.name.replace("_", "-")], False
    if f.name in ("size",):
        return [flag, "48x64"], (48, 64)
    if f.name == "crop_scale":
        return [flag, "0.3,0.9"], (0.3, 0.9)
    if f.name == "color_by":
        return [flag, "video_id"], ["video_id"]
    if f.name == "classes":
        return [flag, "a,b=b+c"], ["a", "b=b+c"]
    if f.name in ("data", "out"):
        return [flag, f"/tmp/{f.name}-x"], f"/tmp/{f.name}-x"
    if f.name == "logger":
        return [flag, "csv"], ["csv"]
    if f.name == "ignore_labels":
        return [flag, "junk"], ["junk"]
    if f.name == "fold_inits":  # repeatable: one encoder per fold
        return [flag, "xyz"], ["xyz"]
    if ann.startswith("int"):
        return [flag, "7"], 7
    if ann.startswith("float"):
        return [flag, "0.25"], 0.25
    return [flag, "xyz"], "xyz"


def _parse(command: str, words: list[str]):
    args = build_parser().parse_args([command, *words])
    return {"pretrain": config_from_args, "finetune": finetune_config, "embed": embed_config}[command](args)


@pytest.mark.parametrize(("command", "schema"), [("pretrain", PretrainConfig), ("finetune", FinetuneConfig), ("embed", EmbedConfig)])
def test_every_field_has_exactly_its_flag(command: str, schema: type) -> None:
    """Each flag is generated from a field and sets that field (and no other)."""
    base = {"data": "/tmp/d", "out": "/tmp/o"}
    default = _parse(command, ["--data", "/tmp/d", "--out", "/tmp/o"])
    for name, f in fields(schema).items():
        if not f.metadata.get("cli", True) or name == "resume":
            continue
        words, want = _sample(f)
        if name in ("strategy",):  # a valid non-default strategy
            words, want = [words[0], "ddp"], "ddp"
        if name == "precision":
            words, want = [words[0], "32-true"], "32-true"
        if name == "monitor_granularity":
            words, want = [words[0], "fine"], "fine"
        if name == "backbone":  # a valid non-default architecture
            words, want = [words[0], "resnet34"], "resnet34"
        rest = [w for k, v in base.items() if k != name for w in ("--" + k, v)]
        cfg = _parse(command, rest + words)
        assert getattr(cfg, name) == want, name
        changed = {k for k in fields(schema) if getattr(cfg, k) != getattr(default, k)}
        assert changed == {name}, (name, changed)


def test_pretrain_precedence_yaml_saved_set_flags(tmp_path: Path) -> None:
    """defaults < --config < the run's config.yaml (--resume) < --set < flags."""
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"lr": 0.1, "epochs": 3, "batch-size": 8, "size": "48x64",
                                    "proj_hidden": "${proj_dim}", "proj_dim": 64}))  # fmt: skip
    out = tmp_path / "run"
    cfg = _parse("pretrain", ["--data", "d", "--out", str(out), "--config", str(conf)])
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.size) == (0.1, 3, 8, (48, 64))
    assert cfg.proj_hidden == 64 and cfg.temperature == 0.5  # interpolation; untouched default
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "epochs": 5, "lr": 0.2}))
    cfg = _parse("pretrain", ["--data", "d", "--out", str(out), "--config", str(conf), "--resume",
                              "--set", "lr=0.3", "--set", "seed=4", "--seed", "9"])  # fmt: skip
    assert cfg.epochs == 5 and cfg.lr == 0.3 and cfg.seed == 9 and cfg.resume


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = PretrainConfig(data=["a", "b"], size=(48, 64), crop_scale=(0.2, 0.9), logger=["csv"])
    text = yaml.safe_dump(cfg.to_dict())
    assert PretrainConfig.from_dict(yaml.safe_load(text)) == cfg
    (tmp_path / "p.yaml").write_text(text)
    assert PretrainConfig.from_yaml(tmp_path / "p.yaml", ["epochs=2"]) == dataclasses.replace(cfg, epochs=2)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"lr": "fast"}, ["c.yaml", "lr", "fast"]),
        ({"bogus": 1}, ["c.yaml", "unknown key", "bogus"]),
        ({"method": "byol"}, ["c.yaml", "byol"]),
        ({"size": "tiny"}, ["c.yaml", "size", "tiny"]),
        ({"epochs": "${nope}"}, ["c.yaml", "epochs", "${nope} is not defined"]),
        ({"batch_size": 1}, ["c.yaml", "batch-size"]),
    ],
)
def test_errors_are_one_line_naming_file_and_key(tmp_path: Path, values: dict, words: list[str]) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(values))
    with pytest.raises(AwclError) as exc:
        PretrainConfig.from_yaml(conf)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_set_errors_name_the_override() -> None:
    with pytest.raises(AwclError, match="--set 'oops': expected NAME=VALUE"):
        compose(PretrainConfig, overrides=["oops"])
    with pytest.raises(AwclError, match="epochs"):
        compose(PretrainConfig, overrides=["epochs=many"])


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from awcl.cli import main

    for bad in ("12", "12x12"):  # malformed; below the pretraining minimum of 16
        with pytest.raises(SystemExit) as exc:
            main(["pretrain", "--data", "d", "--out", "o", "--size", bad])
        assert exc.value.code == 2
        assert f"--size '{bad}'" in capsys.readouterr().err


def test_finetune_config_file_set_and_flags(tmp_path: Path) -> None:
    conf = tmp_path / "f.yaml"
    conf.write_text(yaml.safe_dump({"data": "/d", "out": "/o", "preset": "task2", "epochs": 5,
                                    "classes": "a,b", "size": [32, 40]}))  # fmt: skip
    cfg = _parse("finetune", ["--config", str(conf), "--set", "epochs=6", "--lr", "0.5"])
    assert (cfg.data, cfg.preset, cfg.epochs, cfg.lr, cfg.classes, cfg.size) == ("/d", "task2", 6, 0.5, ["a", "b"], (32, 40))
    assert cfg.progress  # the command line shows a bar unless --no-progress
    assert not _parse("finetune", ["--config", str(conf), "--no-progress"]).progress
    assert _parse("finetune", ["--config", str(conf), "--fp32"]).precision == "32-true"
    with pytest.raises(AwclError, match="--data and --out are required"):
        _parse("finetune", [])


def test_finetune_run_config_yaml_is_a_config(tmp_path: Path) -> None:
    """A run directory's config.yaml (with its derived keys) re-creates the run's config."""
    from awcl.evaluate.finetune import config_record

    cfg = FinetuneConfig(data="/d", out="/o", preset="task2", size=(32, 40), classes=["a", "b"], epochs=4)
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config_record(cfg)))
    again = _parse("finetune", ["--config", str(saved)])
    assert dataclasses.replace(again, progress=False) == cfg


def test_build_checks_types_of_study_settings() -> None:
    """The study hands its task settings to the same layer: types and unknown keys checked."""
    cfg = build(FinetuneConfig, {"data": "d", "out": "o", "size": [32, 40], "epochs": 2}, "task t")
    assert cfg.size == (32, 40) and cfg.epochs == 2
    with pytest.raises(AwclError, match="task t: unknown key 'sizes'"):
        build(FinetuneConfig, {"data": "d", "out": "o", "sizes": [32, 40]}, "task t")
    with pytest.raises(AwclError, match="task t: epochs"):
        build(FinetuneConfig, {"data": "d", "out": "o", "epochs": "two"}, "task t")


def test_env_interpolation_limited_to_project_variables(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("AWCL_RUNS", "/runs")
    with pytest.raises(AwclError, match=r"--set: out: .*not allowed") as err:
        compose(PretrainConfig, [], ["out=${oc.env:AWS_SECRET_ACCESS_KEY}"])
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AwclError, match="bad interpolation"):
        compose(PretrainConfig, [("x.yaml", {"out": "${bad("})])
    assert compose(PretrainConfig, [], ["out=${oc.env:AWCL_RUNS}/a"]).out == "/runs/a"
