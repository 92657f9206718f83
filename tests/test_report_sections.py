"""The report's section registry: its keys in report order, and the console summary picking
sections by registry key (never by title or position)."""

from __future__ import annotations

import re

from awcl.study.report import REGISTRY, SUMMARY_KEYS, Section, Table, summary_sections, summary_text
from test_report import designed_study

EXPECTED_KEYS = [
    "answer",
    "overview",
    "transfer-full",
    "transfer-partial",
    "transfer-knn",
    "transfer-linear-probe",
    "pairwise",
    "efficiency",
    "knn-monitor",
    "tsne",
    "ratio",
    "coarse-fine",
    "confusion",
    "pretrain-curves",
    "run-times",
    "configuration",
    "versions",
]


def test_registry_has_every_section_in_report_order():
    assert list(REGISTRY) == EXPECTED_KEYS
    assert all(callable(build) for build in REGISTRY.values())
    assert SUMMARY_KEYS == ("transfer-full", "transfer-partial", "transfer-knn", "transfer-linear-probe", "answer")
    assert set(SUMMARY_KEYS) <= set(REGISTRY)


def test_summary_picks_sections_by_key():
    # titles that would fool a pick by title, in an order that would fool a pick by position
    sections = [
        Section("Transfer table (full fine-tuning)", ["decoy"], key="overview"),
        Section("Answer on this data", ["decoy answer"], key="pairwise"),
        Section("Anything", ["the answer", Table(["a"], [["1"]])], key="answer"),
        Section("Renamed main table", [Table(["m"], [["x"]])], key="transfer-full"),
        Section("Renamed probe", ["probe"], key="transfer-knn"),
    ]
    picked = summary_sections(sections)
    assert [(s.key, s.title) for s in picked] == [
        ("transfer-full", "Renamed main table"),
        ("transfer-knn", "Renamed probe"),
        ("answer", "Anything"),
    ]
    assert picked[-1].blocks == ["the answer"]  # the answer keeps its paragraphs only
    assert len(sections[2].blocks) == 2  # the report's own section is not changed


def test_console_summary_follows_registry_keys(tmp_path, monkeypatch):
    build = REGISTRY["transfer-full"]

    def renamed(ctx):
        s = build(ctx)
        s.title = "Main table (renamed)"
        return s

    monkeypatch.setitem(REGISTRY, "transfer-full", renamed)  # same key, same place
    out = designed_study(tmp_path, {"random": 0.5, "simclr": 0.8})
    md = (out / "report.md").read_text()
    assert re.findall(r"^## (.+)$", md, flags=re.M)[:3] == [
        "Answer on this data", "Overview", "Main table (renamed)"]  # fmt: skip
    console = summary_text(out)
    assert re.findall(r"^## (.+)$", console, flags=re.M) == [
        "Main table (renamed)", "Partial fine-tuning (encoder frozen)", "Answer on this data"]  # fmt: skip
    assert "| simclr |" in console.split("## Partial")[0]  # the renamed table itself
