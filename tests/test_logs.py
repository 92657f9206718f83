"""Quiet, informative console output: warnings summarised per kind (awcl.logs), the two
new-user tries of issue 11 (a partial FETAL_PLANES_DB download, a label table named like
awcl's manifest), and defaults shown in every command's --help."""

from __future__ import annotations

import argparse
import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np

from awcl import logs
from awcl.cli import build_parser, main
from awcl.data.ingest import prepare_images
from awcl.data.store import open_dataset
from test_recipes import FP_ROWS, _busi_release, _fetal_release, _png


def _lines(capsys) -> tuple[list[str], list[str]]:
    cap = capsys.readouterr()
    return cap.out.splitlines(), cap.err.splitlines()


# ------------------------------------------------------------------ the summary itself
def test_summary_groups_by_kind_and_stays_short(capsys):
    log = logging.getLogger("awcl.test")
    with logs.summarized():
        for i in range(5000):
            logs.skipped(log, f"/data/Images/Patient{i:05d}_Plane1.png", "file not found")
        for i in range(3000):
            log.warning("/data/videos/v%d.mp4: frame size changes mid-stream; kept %d of %d", i, i, 2 * i)
        for i in range(40):  # 40 distinct reasons: more kinds than the summary lists
            logs.skipped(log, f"row{i}.png", f"label {chr(65 + i % 26)}{i // 26} is not in the mapping file")
        warnings.warn("something odd in /x/y.ckpt", UserWarning, stacklevel=1)
        logs.details_at("/out/dataset.json (key skipped)")
    out, err = _lines(capsys)
    assert out == []
    assert len(err) <= logs.MAX_LINES, "\n".join(err)
    text = "\n".join(err)
    assert "5,000 × skipped: file not found" in text
    assert "3,000 × " in text and "frame size changes" in text
    assert "Patient00000_Plane1.png" in text  # examples of the biggest kind
    assert "full list: /out/dataset.json" in text
    assert re.search(r"\.\.\. and \d+ more kinds", text)
    total = 5000 + 3000 + 40 + 1
    assert f"{total:,} warnings" in text


def test_verbose_prints_every_warning(capsys):
    log = logging.getLogger("awcl.test")
    with logs.summarized(verbose=True):
        for i in range(300):
            logs.skipped(log, f"f{i}.png", "file not found")
    _, err = _lines(capsys)
    assert sum("skipped f" in line for line in err) == 300


def test_few_warnings_print_as_usual(capsys):
    log = logging.getLogger("awcl.test")
    with logs.summarized():
        log.warning("a/b.png: one thing")
        log.warning("other thing")
    _, err = _lines(capsys)
    assert err == ["WARNING awcl.test: a/b.png: one thing", "WARNING awcl.test: other thing"]


def test_kind_of_blanks_paths_and_numbers():
    assert logs.kind_of("/a/b/c12.png: file not found")[0] == "<file>: file not found"
    assert logs.kind_of("x_1.mp4: kept 3 of 9")[0] == logs.kind_of("y_22.mp4: kept 4 of 7")[0]
    assert logs.kind_of("C:\\data\\a.png: bad")[1] == "C:\\data\\a.png"


# ------------------------------------------------------------------ try 1: partial download
def _partial_fetal_release(root: Path, missing: int) -> Path:
    extra = tuple(
        f"Patient{9000 + i:05d}_Plane{1 + i % 6}_1_of_1;{9000 + i};Fetal brain;Trans-thalamic;Op. 1;Voluson E6;1 "
        for i in range(missing)
    )
    return _fetal_release(root, extra_lines=extra)


def test_partial_fetal_planes_download_prints_a_short_summary(tmp_path, capsys):
    """The user's try: the full CSV, few images present -> one line per reason, not per file."""
    missing = 3000
    src = _partial_fetal_release(tmp_path / "FETAL_PLANES_ZENODO", missing)
    out = tmp_path / "fp"
    assert main(["prepare", "fetal-planes", str(src), "--out", str(out), "--size", "24x32"]) == 0
    stdout, stderr = _lines(capsys)
    printed = stdout + stderr
    assert len(printed) <= 25, "\n".join(printed)
    text = "\n".join(printed)
    assert f"{missing:,} × skipped: file not found" in text
    assert "dataset.json" in text and "skipped" in text  # where the full list is kept
    ds = open_dataset(out)
    assert len(ds) == len(FP_ROWS) and len(ds.meta["skipped"]) == missing
    assert {s["reason"] for s in ds.meta["skipped"]} == {"file not found"}

    # --verbose (after the sub-command) prints every one
    assert main(["prepare", "fetal-planes", str(src), "--out", str(out), "--size", "24x32", "--verbose"]) == 0
    _, stderr = _lines(capsys)
    assert sum("file not found" in line for line in stderr) >= missing


def test_busi_without_masks_prints_a_short_summary(tmp_path, capsys):
    src = _busi_release(tmp_path / "rel")
    base = src / "Dataset_BUSI_with_GT"
    for p in base.rglob("*_mask*.png"):
        p.unlink()
    for i in range(3, 60):
        _png(base / "benign" / f"benign ({i}).png", np.full((50, 60), 30, np.uint8))
    out = tmp_path / "busi"
    assert main(["prepare", "busi", str(src), "--out", str(out), "--size", "25x30"]) == 0
    stdout, stderr = _lines(capsys)
    assert len(stdout + stderr) <= 25
    text = "\n".join(stderr)
    assert "× note: no mask file; kept without a mask" in text and "dataset.json" in text
    notes = json.loads((out / "dataset.json").read_text())["notes"]
    assert len(notes) == len(open_dataset(out)) > 50  # every image, none with a mask


# ------------------------------------------------------------------ try 2: label table
def _images(src: Path, n: int = 6) -> list[str]:
    names = []
    for i in range(n):
        img = np.zeros((40, 48), np.uint8)
        img[8:30, 6 + i : 30 + i] = 60 + 30 * i
        _png(src / f"img{i}.png", img)
        names.append(f"img{i}.png")
    return names


def test_label_table_named_like_the_manifest_just_works(tmp_path, capsys):
    src = tmp_path / "imgs"
    names = _images(src)
    table = tmp_path / "labels.csv"
    rows = ["image,coarse_label,fine_label,patient_id,Plane"]
    for i, n in enumerate(names):
        coarse, fine = ("heart", "4CH" if i % 2 else "LVOT") if i < 4 else ("brain", "TV")
        rows.append(f"{n},{coarse},{fine},P{i // 2},{'x' if i == 0 else ''}")
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "ds"
    # --keep-names: these file names are safe, and the test looks rows up by them
    assert main(["prepare", "images", str(src), "--labels", str(table), "--out", str(out),
                 "--size", "32x40", "--no-crop", "--keep-names"]) == 0  # fmt: skip
    stdout, stderr = _lines(capsys)
    ds = open_dataset(out)
    m = ds.manifest.set_index("file")
    assert m["coarse_label"].notna().all() and m["fine_label"].notna().all()
    assert m.loc["img0.png", "fine_label"] == "LVOT" and m.loc["img5.png", "coarse_label"] == "brain"
    assert m["patient_id"].nunique() == 3
    assert ds.hierarchy == {"4CH": "heart", "LVOT": "heart", "TV": "brain"}
    assert ds.meta["prepare"]["columns"]["used"] == {
        "path": "image", "coarse": "coarse_label", "fine": "fine_label", "patient": "patient_id"
    }
    # the label-like column that is not used is reported (and recorded)
    assert any("'Plane'" in line and "not used" in line for line in stderr), stderr
    assert ds.meta["prepare"]["columns"]["unused_label_like"] == ["Plane"]
    assert any("coarse_label" in line for line in stdout)
    # the user's second attempt, naming only the path column, gets the labels too
    assert main(["prepare", "images", str(src), "--labels", str(table), "--out", str(out),
                 "--path-col", "image", "--size", "32x40", "--no-crop"]) == 0  # fmt: skip
    assert open_dataset(out).manifest["fine_label"].notna().all()


def test_label_table_auto_columns_and_separator(tmp_path):
    src = tmp_path / "imgs"
    names = _images(src, 3)
    table = tmp_path / "t.tsv"
    table.write_text("File Name\tLabel\tSubject\n" + "".join(f"{n}\tc{i}\tS{i}\n" for i, n in enumerate(names)))
    ds = open_dataset(prepare_images(src, tmp_path / "o", labels=table, size=(32, 40), crop=None))
    assert sorted(ds.manifest["coarse_label"]) == ["c0", "c1", "c2"]
    assert ds.manifest["patient_id"].nunique() == 3
    # 'none' switches a role off; an explicit name still wins
    ds = open_dataset(prepare_images(src, tmp_path / "o", labels=table, size=(32, 40), crop=None,
                                     coarse_col=None, fine_col="Label"))  # fmt: skip
    assert ds.manifest["coarse_label"].isna().all() and sorted(ds.manifest["fine_label"]) == ["c0", "c1", "c2"]


def test_label_table_without_a_path_column_names_the_choices(tmp_path, capsys):
    src = tmp_path / "imgs"
    _images(src, 2)
    table = tmp_path / "t.csv"
    table.write_text("what,coarse_label\nimg0.png,a\n")
    rc = main(["prepare", "images", str(src), "--labels", str(table), "--out", str(tmp_path / "o")])
    _, err = _lines(capsys)
    assert rc == 2 and len(err) == 1
    assert "no image path column" in err[0] and "'what'" in err[0] and "--path-col" in err[0]


# ------------------------------------------------------------------ --help shows defaults
def _leaves(parser: argparse.ArgumentParser, name: str = "awcl"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for a in subs:
        for sub_name, p in a.choices.items():
            yield from _leaves(p, f"{name} {sub_name}")


def test_every_command_help_shows_defaults():
    checked = 0
    for name, p in _leaves(build_parser()):
        text = " ".join(p.format_help().split())
        for a in p._actions:
            d = a.default
            if not a.option_strings or d in (None, argparse.SUPPRESS, []) or isinstance(d, bool):
                continue
            shown = "x".join(map(str, d)) if isinstance(d, tuple) else str(d)
            flag = a.option_strings[-1]
            entry = p.formatter_class(prog=name)._get_help_string(a) or ""
            assert "default" in entry.lower(), (name, flag, entry)
            if "default" not in (a.help or "").lower():  # filled in by the formatter
                assert f"(default: {shown})" in text, (name, flag, shown)
            checked += 1
        assert "--verbose" in text, name
    assert checked > 30
