"""The study report: ``results.csv``, ``report.md`` and a self-contained ``report.html``.

Everything is read back from the study directory (``study.json`` + every run's ``DONE``
record and files), so ``awcl report DIR`` can be re-run at any time, also on a partly
finished study. Sections without data say so instead of staying silently empty.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awcl.errors import AwclError

# Metrics shown in the tables, in order of preference (the rest stay in results.csv).
CLASSIFY_METRICS = ("accuracy", "f1", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy")
SEGMENT_METRICS = ("dice", "miou", "hc_mae_mm", "mean_iou", "hc_error_mm", "gaa", "ma")
LOWER_IS_BETTER = ("error", "loss", "mae", "rmse")
METHOD_ORDER = (
    "random", "imagenet", "supervised-coarse", "supervised-fine", "simclr", "clpi", "uscl",
    "awcl-coarse", "awcl-fine",
)  # fmt: skip
MAX_TABLE_METRICS = 3
# Column titles for metric keys whose meaning is not obvious from the key alone.
DISPLAY = {"f1": "macro-F1", "precision": "macro-precision", "recall": "macro-recall",
           "hc_mae_mm": "HC error (mm)", "miou": "mIoU", "gaa": "GAA", "ma": "MA"}  # fmt: skip


def lower_is_better(metric: str) -> bool:
    return any(s in metric.lower() for s in LOWER_IS_BETTER)


# --------------------------------------------------------------------------- loading
@dataclass
class StudyData:
    out: Path
    index: dict[str, Any]
    records: list[dict[str, Any]]  # DONE records, each with "dir" added
    pending: list[str]  # runs of the plan without DONE
    config_text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]


def load_study(out: str | os.PathLike) -> StudyData:
    out = Path(out)
    idx_path = out / "study.json"
    if not idx_path.is_file():
        raise AwclError(f"{out}: not a study directory (no study.json); run `awcl study` first")
    index = json.loads(idx_path.read_text())
    records, pending = [], []
    for run in index.get("runs", []):
        d = out / "runs" / run["dir"]
        done = d / "DONE"
        if done.is_file():
            rec = json.loads(done.read_text())
            rec["dir"] = d
            records.append(rec)
        else:
            pending.append(run["dir"])
    cfg = out / "config.yaml"
    return StudyData(out, index, records, pending, cfg.read_text() if cfg.is_file() else "")


def fold_metrics(result: dict[str, Any]) -> list[dict[str, float]]:
    """Per-fold numeric metrics from a finetune result."""
    folds = result.get("folds") or []
    out = []
    for f in folds:
        out.append({k: float(v) for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def results_table(data: StudyData) -> pd.DataFrame:
    """Every number of the study, one row each (finetune folds and pretraining epochs)."""
    rows: list[dict[str, Any]] = []
    for rec in data.of_kind("finetune"):
        lab = rec["labels"]
        for i, f in enumerate(fold_metrics(rec["result"])):
            for metric, value in f.items():
                rows.append({
                    "kind": "finetune", "method": lab.get("method"), "ratio": lab.get("ratio"),
                    "seed": lab.get("seed"), "task": lab.get("task"), "task_kind": lab.get("task_kind"),
                    "protocol": lab.get("protocol"), "main": bool(lab.get("main", True)),
                    "fold": i, "epoch": None, "metric": metric, "value": value, "run": rec["dir"].name,
                })  # fmt: skip
    for rec in data.of_kind("pretrain"):
        lab = rec["labels"]
        hist = pretrain_history(rec)
        if hist is None:
            continue
        for _, h in hist.iterrows():
            for metric in hist.columns:
                if metric == "epoch" or not np.issubdtype(hist[metric].dtype, np.number):
                    continue
                rows.append({
                    "kind": "pretrain", "method": lab.get("method"), "ratio": lab.get("ratio"),
                    "seed": lab.get("seed"), "task": None, "task_kind": None, "protocol": None,
                    "main": None, "fold": None, "epoch": int(h.get("epoch", _)),
                    "metric": metric, "value": float(h[metric]), "run": rec["dir"].name,
                })  # fmt: skip
    cols = ["kind", "method", "ratio", "seed", "task", "task_kind", "protocol", "main", "fold",
            "epoch", "metric", "value", "run"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def pretrain_history(rec: dict[str, Any]) -> pd.DataFrame | None:
    for cand in (rec["dir"] / "run" / "history.csv", *sorted(rec["dir"].glob("**/history.csv"))):
        if cand.is_file():
            try:
                return pd.read_csv(cand)
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                return None
    return None


def find_image(run_dir: Path, *words: str) -> Path | None:
    """First PNG under ``run_dir`` whose name contains one of ``words``."""
    for p in sorted(run_dir.glob("**/*.png")):
        if any(w in p.name.lower() for w in words):
            return p
    return None


# --------------------------------------------------------------------------- document
@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, col)


@dataclass
class Image:
    png: bytes
    name: str
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (paragraph) | Table | Image | ("pre", str)


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _methods_in_order(methods: list[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def table_metrics(df: pd.DataFrame, task: str) -> list[str]:
    sub = df[df.task == task]
    present = list(dict.fromkeys(sub.metric))
    kind = sub.task_kind.iloc[0] if len(sub) else "classify"
    pref = CLASSIFY_METRICS if kind == "classify" else SEGMENT_METRICS
    chosen = [m for m in pref if m in present]
    if not chosen:
        chosen = [m for m in present if m not in ("loss", "epoch", "seconds")]
    return chosen[:MAX_TABLE_METRICS]


def transfer_table(df: pd.DataFrame, protocol: str, tasks: list[str]) -> Table | None:
    """Methods x (task, metric), mean ± std over folds and seeds; best per column in bold."""
    sub = df[(df.kind == "finetune") & (df.protocol == protocol) & (df.main == True)]  # noqa: E712
    if sub.empty:
        return None
    tasks = [t for t in tasks if t in set(sub.task)]
    cols = [(t, m) for t in tasks for m in table_metrics(sub, t)]
    methods = _methods_in_order(list(dict.fromkeys(sub.method)))
    stats = sub.groupby(["method", "task", "metric"]).value.agg(["mean", "std", "count"])
    header = ["method"] + [f"{t}: {DISPLAY.get(m, m)}" for t, m in cols]
    rows, means = [], []
    for m in methods:
        row, mrow = [m], []
        for t, met in cols:
            if (m, t, met) in stats.index:
                s = stats.loc[(m, t, met)]
                std = float(np.nan_to_num(s["std"])) if s["count"] > 1 else 0.0
                row.append(_fmt(float(s["mean"]), std))
                mrow.append(float(s["mean"]))
            else:
                row.append("—")
                mrow.append(np.nan)
        rows.append(row)
        means.append(mrow)
    bold: set[tuple[int, int]] = set()
    arr = np.array(means, dtype=float)
    for j, (_, met) in enumerate(cols):
        col = arr[:, j]
        if np.all(np.isnan(col)):
            continue
        best = np.nanmin(col) if lower_is_better(met) else np.nanmax(col)
        for i in np.where(np.isclose(col, best))[0]:
            bold.add((int(i), j + 1))
    return Table(header, rows, bold)


def coarse_fine_table(df: pd.DataFrame, tasks: list[str]) -> Table | None:
    sub = df[(df.kind == "finetune") & (df.protocol == "full") & (df.main == True)]  # noqa: E712
    pairs = [(f"{b}-coarse", f"{b}-fine") for b in ("supervised", "awcl")]
    pairs = [p for p in pairs if p[0] in set(sub.method) and p[1] in set(sub.method)]
    if not pairs:
        return None
    header = ["method", "task: metric", "coarse", "fine", "fine − coarse"]
    rows: list[list[str]] = []
    bold: set[tuple[int, int]] = set()
    for c, f in pairs:
        for t in [t for t in tasks if t in set(sub.task)]:
            for met in table_metrics(sub, t):
                vc = sub[(sub.method == c) & (sub.task == t) & (sub.metric == met)].value
                vf = sub[(sub.method == f) & (sub.task == t) & (sub.metric == met)].value
                if vc.empty or vf.empty:
                    continue
                rows.append([c.split("-")[0], f"{t}: {DISPLAY.get(met, met)}", _fmt(vc.mean(), float(np.nan_to_num(vc.std()))),
                             _fmt(vf.mean(), float(np.nan_to_num(vf.std()))), f"{vf.mean() - vc.mean():+.3f}"])  # fmt: skip
                better_fine = (vf.mean() < vc.mean()) if lower_is_better(met) else (vf.mean() > vc.mean())
                bold.add((len(rows) - 1, 3 if better_fine else 2))
    return Table(header, rows, bold) if rows else None


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ratio_curve(df: pd.DataFrame, tasks: list[str]) -> bytes | None:
    sub = df[(df.kind == "finetune") & df.method.astype(str).str.startswith("awcl") & df.ratio.notna()]
    if sub.empty or sub.ratio.nunique() < 2:
        return None
    tasks = [t for t in tasks if sub[sub.task == t].ratio.nunique() >= 2]  # swept tasks only
    if not tasks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        st = sub[sub.task == t]
        met = table_metrics(st, t)[0]
        proto = "full" if "full" in set(st.protocol) else st.protocol.iloc[0]
        st = st[(st.metric == met) & (st.protocol == proto)]
        for m in sorted(set(st.method)):
            g = st[st.method == m].groupby("ratio").value.agg(["mean", "std"]).sort_index()
            ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=m)
        ax.set_xlabel("anatomy ratio r")
        ax.set_ylabel(met)
        ax.set_title(f"{t} ({proto})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def pretrain_curves(data: StudyData) -> bytes | None:
    series = []
    for rec in data.of_kind("pretrain"):
        hist = pretrain_history(rec)
        if hist is None or hist.empty:
            continue
        col = "loss" if "loss" in hist.columns else next((c for c in hist.columns if "loss" in c), None)
        if col is None:
            continue
        x = hist["epoch"] if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
        lab = rec["labels"]
        name = lab.get("method", rec["name"])
        if lab.get("ratio") is not None:
            name += f" r={lab['ratio']:g}"
        if len(data.index.get("runs", [])) and lab.get("seed", 0) != 0:
            name += f" seed {lab['seed']}"
        series.append((name, np.asarray(x), hist[col].to_numpy(dtype=float), col))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, x, y, _ in sorted(series, key=lambda s: s[0]):
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(series[0][3])
    ax.set_title("pretraining loss (each method's own objective)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def image_grid(items: list[tuple[str, Path]], ncols: int = 4) -> bytes | None:
    """Compose PNG files into one captioned grid."""
    if not items:
        return None
    plt = _plt()
    n = len(items)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, path) in zip(axes.flat, items):
        ax.imshow(plt.imread(path))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def versions_and_hardware() -> list[list[str]]:
    import awcl

    rows = [["awcl", awcl.__version__], ["python", sys.version.split()[0]], ["platform", platform.platform()]]
    for mod in ("torch", "torchvision", "lightning", "numpy", "sklearn"):
        try:
            m = __import__(mod)
            rows.append([mod, str(getattr(m, "__version__", "?"))])
        except Exception:  # an optional library missing is not an error for the report
            rows.append([mod, "not installed"])
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rows.append(["CPU", cpu])
    rows.append(["cores", str(os.cpu_count())])
    try:
        import torch

        rows.append(["torch threads", str(torch.get_num_threads())])
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:
        gpu = "unknown"
    rows.append(["GPU", gpu])
    try:
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        rows.append(["memory", f"{kb / 1024**2:.1f} GiB"])
    except (OSError, ValueError, IndexError):
        pass
    return rows


def build_sections(data: StudyData, df: pd.DataFrame) -> list[Section]:
    tasks = list(dict.fromkeys(df[df.kind == "finetune"].task.dropna()))
    secs: list[Section] = []

    over = Section("Overview")
    n_runs = len(data.index.get("runs", []))
    over.blocks.append(
        f"Study **{data.index.get('name', '?')}**: {len(data.records)} of {n_runs} runs finished"
        + (f", {len(data.pending)} not finished (re-run `awcl study` to complete them)." if data.pending else ".")
        + f" Main-table anatomy ratio r = {data.index.get('anatomy_ratio')}."
        + " Cells are mean ± std over folds (and seeds); best per column in bold."
    )
    for note in data.index.get("notes", []):
        over.blocks.append(f"Note: {note}.")
    secs.append(over)

    for protocol, title, empty in (
        ("full", "Transfer table (full fine-tuning)", "No full fine-tuning runs have finished."),
        ("partial", "Partial fine-tuning (encoder frozen)", "No partial fine-tuning runs in this study."),
    ):
        s = Section(title)
        t = transfer_table(df, protocol, tasks)
        s.blocks.append(t if t is not None else empty)
        secs.append(s)

    s = Section("t-SNE of penultimate features")
    items = []
    for rec in data.of_kind("embed"):
        p = find_image(rec["dir"], "tsne", "t-sne")
        if p is not None:
            items.append((rec["labels"].get("method", rec["name"]), p))
    grid = image_grid(sorted(items, key=lambda x: _order_key(x[0])))
    if grid:
        task = data.of_kind("embed")[0]["labels"].get("task")
        s.blocks.append(Image(grid, "tsne_grid.png", f"t-SNE per method ({task} data, coloured by class)"))
    else:
        s.blocks.append("No t-SNE embeddings in this study (embed disabled or not finished).")
    secs.append(s)

    s = Section("Anatomy-ratio sweep")
    png = ratio_curve(df, tasks)
    if png:
        s.blocks.append(Image(png, "ratio_curve.png", "downstream metric vs anatomy ratio (mean ± std over folds)"))
    else:
        s.blocks.append("No anatomy-ratio sweep: the study has no AWCL method with two or more ratios.")
    secs.append(s)

    s = Section("Coarse vs fine anatomy labels")
    t = coarse_fine_table(df, tasks)
    s.blocks.append(
        t if t is not None else "No coarse/fine pair (supervised or awcl, both granularities) in this study."
    )
    secs.append(s)

    s = Section("Confusion matrices")
    found = False
    for task in tasks:
        items = []
        for rec in data.of_kind("finetune"):
            lab = rec["labels"]
            if lab.get("task") != task or lab.get("task_kind") != "classify":
                continue
            if lab.get("protocol") != "full" or not lab.get("main", True):
                continue
            if lab.get("seed") != min(r["labels"].get("seed", 0) for r in data.of_kind("finetune")):
                continue
            p = find_image(rec["dir"], "confusion")
            if p is not None:
                items.append((lab.get("method", rec["name"]), p))
        grid = image_grid(sorted(items, key=lambda x: _order_key(x[0])))
        if grid:
            found = True
            s.blocks.append(Image(grid, f"confusion_{_safe(task)}.png", f"{task}, full fine-tuning"))
    if not found:
        s.blocks.append("No confusion matrices (no finished classification runs).")
    secs.append(s)

    s = Section("Pretraining curves")
    png = pretrain_curves(data)
    s.blocks.append(
        Image(png, "pretrain_curves.png", "pretraining loss per epoch")
        if png
        else "No pretraining histories (no pretrained methods finished)."
    )
    secs.append(s)

    s = Section("Run times")
    rows = [[r["kind"], r["name"], f"{r.get('seconds', 0):.1f}"] for r in data.records]
    if rows:
        total = sum(r.get("seconds", 0) for r in data.records)
        rows.append(["total", "", f"{total:.1f}"])
        s.blocks.append(Table(["kind", "run", "seconds"], rows))
    else:
        s.blocks.append("No finished runs.")
    secs.append(s)

    s = Section("Configuration")
    s.blocks.append(("pre", data.config_text or "(config.yaml missing)"))
    secs.append(s)

    s = Section("Versions and hardware")
    s.blocks.append(Table(["item", "value"], versions_and_hardware()))
    s.blocks.append(f"Report written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    secs.append(s)
    return secs


def _order_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


# --------------------------------------------------------------------------- rendering
def render_markdown(sections: list[Section], files_dir: str) -> str:
    out = ["# awcl study report", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, Table):
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
                out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.header) + "</tr>")
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


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    csv: Path


def write_report(out: str | os.PathLike) -> ReportFiles:
    """Write ``results.csv``, ``report.md`` (+ ``report_files/``) and ``report.html`` in ``out``."""
    data = load_study(out)
    df = results_table(data)
    sections = build_sections(data, df)
    out = Path(out)
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Image):
                _write_atomic(files / b.name, b.png)
    _write_atomic(out / "results.csv", df.to_csv(index=False))
    _write_atomic(out / "report.md", render_markdown(sections, files.name))
    _write_atomic(out / "report.html", render_html(sections))
    return ReportFiles(out / "report.html", out / "report.md", out / "results.csv")


def summary_text(out: str | os.PathLike) -> str:
    """The transfer tables as plain Markdown (for the console / notes)."""
    data = load_study(out)
    df = results_table(data)
    tasks = list(dict.fromkeys(df[df.kind == "finetune"].task.dropna()))
    parts = []
    for proto in ("full", "partial"):
        t = transfer_table(df, proto, tasks)
        if t is not None:
            body = render_markdown([Section("", [t])], "report_files").split("\n")[4:]
            parts.append(f"{proto} fine-tuning (mean ± std over folds; best in bold)\n" + "\n".join(body))
    return "\n".join(parts) if parts else "(no finished downstream runs)"
