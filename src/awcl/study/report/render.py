"""Writing the report: Markdown (``report.md`` + ``report_files/``), self-contained HTML
(``report.html``, pictures inlined), ``results.csv``, and the console summary
(``report_files/summary.md``: the sections of :data:`SUMMARY_KEYS`, picked by registry key)."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

from awcl.atomic import write_atomic
from awcl.evaluate.tasks import PROTOCOLS
from awcl.study.answer import FOREST_FILE
from awcl.study.report.document import Image, Section, Table
from awcl.study.report.load import load_results, load_study
from awcl.study.report.sections import ANSWER_KEY, TRANSFER_KEYS, build_sections
from awcl.study.report.tables import transfer_table

SUMMARY_FILE = "summary.md"
# The console summary: the transfer tables as the report renders them, and it ends with the
# answer (its paragraphs only: keys in SUMMARY_TEXT_ONLY lose their tables and pictures).
SUMMARY_KEYS = (*TRANSFER_KEYS, ANSWER_KEY)
SUMMARY_TEXT_ONLY = frozenset({ANSWER_KEY})


def render_markdown(sections: list[Section], files_dir: str) -> str:
    out = ["# awcl study report", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(b.header) + " |")
                out.append("|" + "|".join("---" for _ in b.header) + "|")
                for i, row in enumerate(b.rows):
                    cells = [f"**{c}**" if (i, j) in b.bold else c for j, c in enumerate(row)]
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.caption}]({files_dir}/{b.name})", "", f"*{b.caption}*", ""]
            elif isinstance(b, tuple) and b[0] == "pre":
                out += ["```yaml", b[1].rstrip(), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-style:italic;color:#555}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:0.85em}
"""


def render_html(sections: list[Section]) -> str:
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>awcl study report</title>",
        f"<style>{_CSS}</style></head><body><h1>awcl study report</h1>",
    ]
    for s in sections:
        out.append(f"<section><h2>{html.escape(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, str):
                text = html.escape(b)
                # the only markdown used in paragraphs: **bold** and `code`
                parts = text.split("**")
                text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
                parts = text.split("`")
                text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
                out.append(f"<p>{text}</p>")
            elif isinstance(b, Table):
                cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
                out.append(f"<table>{cap}<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.header) + "</tr>")
                for i, row in enumerate(b.rows):
                    cells = [
                        f"<td><b>{html.escape(c)}</b></td>" if (i, j) in b.bold else f"<td>{html.escape(c)}</td>"
                        for j, c in enumerate(row)
                    ]
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</table>")
            elif isinstance(b, Image):
                enc = base64.b64encode(b.png).decode()
                out.append(
                    f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{enc}'>"
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
            elif isinstance(b, tuple) and b[0] == "pre":
                out.append(f"<pre>{html.escape(b[1])}</pre>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    csv: Path


def summary_sections(sections: list[Section]) -> list[Section]:
    """The sections of the console summary, picked by registry key in :data:`SUMMARY_KEYS`
    order (titles play no part); those in :data:`SUMMARY_TEXT_ONLY` keep their paragraphs only."""
    by_key = {s.key: s for s in sections}
    keep = []
    for key in SUMMARY_KEYS:
        s = by_key.get(key)
        if s is None:
            continue
        if key in SUMMARY_TEXT_ONLY:
            s = Section(s.title, [b for b in s.blocks if isinstance(b, str)], key)
        keep.append(s)
    return keep


def write_report(out: str | os.PathLike) -> ReportFiles:
    """Write ``results.csv``, ``report.md`` (+ ``report_files/``) and ``report.html`` in ``out``."""
    data = load_study(out)
    results = load_results(data)
    sections = build_sections(data, results)
    out = Path(out)
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    write_atomic(files / SUMMARY_FILE, render_markdown(summary_sections(sections), files.name).split("\n", 2)[2])
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Image):
                write_atomic(files / b.name, b.png)
                if b.name == FOREST_FILE:  # the one picture of the answer, also beside report.html
                    write_atomic(out / b.name, b.png)
    write_atomic(out / "results.csv", results.table.to_csv(index=False))
    write_atomic(out / "report.md", render_markdown(sections, files.name))
    write_atomic(out / "report.html", render_html(sections))
    return ReportFiles(out / "report.html", out / "report.md", out / "results.csv")


def summary_text(out: str | os.PathLike) -> str:
    """The transfer tables as plain Markdown (for the console / notes): the summary that
    :func:`write_report` wrote (with intervals and verdicts), else plain mean ± std tables."""
    cached = Path(out) / "report_files" / SUMMARY_FILE
    if cached.is_file():
        return cached.read_text(encoding="utf-8").strip()
    results = load_results(load_study(out))
    parts = []
    for proto in PROTOCOLS:
        t = transfer_table(results, proto)
        if t is not None:
            body = render_markdown([Section("", [t])], "report_files").split("\n")[4:]
            parts.append(f"{proto} fine-tuning (mean ± std over folds; best in bold)\n" + "\n".join(body))
    return "\n".join(parts) if parts else "(no finished downstream runs)"
