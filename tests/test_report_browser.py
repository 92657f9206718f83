"""The report as a user sees it: report.html rendered by headless Chromium (Debian's
``chromium`` package; the test skips where it is not installed). Every section heading of
the report is laid out visibly and every embedded image decodes and is drawn."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from awcl.study.config import parse_config
from awcl.study.report import write_report
from awcl.study.runner import run_study
from test_report import SECTIONS, report_raw
from test_study import Calls

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")

# Appended to a copy of the report: after 'load' (all images decoded) it writes what the
# browser laid out into an attribute, which --dump-dom prints.
PROBE = """
<script>
window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete,
    natural: [i.naturalWidth, i.naturalHeight], shown: box(i)}));
  const heads = [...document.querySelectorAll('h2')].map(h => ({text: h.textContent, shown: box(h)}));
  document.body.setAttribute('data-probe', JSON.stringify({imgs, heads,
    height: document.documentElement.scrollHeight}));
});
</script>
"""


def chromium(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def render(report: Path, work: Path) -> dict:
    """What Chromium laid out for ``report`` (images, h2 headings, page height)."""
    page = work / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    res = chromium("--dump-dom", page.as_uri(), profile=work / "profile")
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, f"chromium printed no probe (rc {res.returncode}): {res.stderr[-500:]}"
    return json.loads(html_lib.unescape(m.group(1)))


def screenshot(report: Path, png: Path, work: Path, width: int = 1280) -> Path:
    """A full-page PNG of ``report`` (the window as tall as the page)."""
    height = min(int(render(report, work)["height"]) + 40, 16000)
    chromium(f"--screenshot={png}", f"--window-size={width},{height}", report.as_uri(), profile=work / "profile")
    return png


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    run_study(parse_config(report_raw()), out, Calls().executors(), progress=False, echo=lambda s: None)
    write_report(out)
    return out


def test_report_renders_every_section_and_image(study, tmp_path):
    seen = render(study / "report.html", tmp_path)
    heads = [h["text"] for h in seen["heads"]]
    md_heads = re.findall(r"^## (.+)$", (study / "report.md").read_text(), flags=re.M)
    assert heads == md_heads  # the browser shows the same sections as the Markdown report
    for s in SECTIONS:
        assert s in heads, s
    assert all(w > 0 and h > 0 for w, h in (x["shown"] for x in seen["heads"]))
    md_images = re.findall(r"!\[[^\]]*\]\((report_files/[^)]+)\)", (study / "report.md").read_text())
    assert len(seen["imgs"]) == len(md_images) >= 4
    for img in seen["imgs"]:
        assert img["complete"] and min(img["natural"]) > 0, img["alt"]  # decoded
        assert min(img["shown"]) > 10, img["alt"]  # and drawn at a visible size
    # the answer opens the page, and its forest plot is the first picture, drawn
    assert heads[0] == "Answer on this data"
    assert seen["imgs"][0]["alt"].startswith("Forest plot: every pairwise difference")
    assert seen["imgs"][0]["shown"][0] > 300


def test_report_screenshot(study, tmp_path):
    import cv2

    png = screenshot(study / "report.html", tmp_path / "report.png", tmp_path)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] == 1280 and img.shape[0] > 1500
    assert img.std() > 10  # content, not a blank page
