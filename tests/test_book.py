"""The book: the status page and toc come from runs/; `stm book` builds the HTML from the
committed runs; headless Chromium opens every table page and finds both columns, loaded images and
no error output."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from stm_lib.book import build as B
from stm_lib.book.experiments import TABLES, notebook_name

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(runs: Path, name: str, profile: str, rows: list[dict]) -> None:
    d = runs / name / profile
    d.mkdir(parents=True)
    (d / f"{name}.ipynb").write_text("{}")
    (d / "results.json").write_text(json.dumps({
        "rows": rows, "claims": [{"better": "stm", "worse": "tsn", "measured": [80.0, 20.0], "verdict": "holds"},
                                 {"better": "stm", "worse": "cmm", "measured": [80.0, 79.0], "verdict": "noise"}],
        "provenance": {"git": {"commit": "a" * 40, "dirty": False}, "wall_time_s": 1.0,
                       "hardware": {"cpu": "cpu", "gpus": []}, "end": "now"}}))


def test_published_profile_and_status_page(tmp_path):
    runs = tmp_path / "runs"
    rows = [{"id": "tsn", "setting": "TSN", "frames": 8, "status": "proxy", "paper_top1": 19.7, "top1": 20.0},
            {"id": "i3d", "setting": "I3D", "frames": "32", "status": "not run: other method", "paper_top1": 41.6}]
    _fake_run(runs, "table5", "smoke", rows)
    _fake_run(runs, "table5", "proxy", rows)
    _fake_run(runs, "table8", "smoke", rows)
    (runs / "table6" / "proxy").mkdir(parents=True)          # an incomplete run (no results.json)
    (runs / "table6" / "proxy" / "table6.ipynb").write_text("{}")
    res = B.load_results(runs)
    chosen = B.published(res)
    assert chosen == {"table5": "proxy", "table8": "smoke"}
    md = B.status_markdown(res, chosen, "../runs")
    assert "| Table 5 | [proxy](../runs/table5/proxy/table5.ipynb) | proxy, smoke | 1 | 1 | 20.0 to 20.0 | 1 of 2 hold, 1 within noise |" in md
    assert "| Table 6 | not run |" in md
    assert "not run: other method" in md and "`aaaaaaaaaa`" in md
    toc = B.write_toc(tmp_path, runs, chosen).read_text()
    assert "file: runs/table5/proxy/table5" in toc and "table6" not in toc and "book/status" in toc


def test_book_refuses_missing_tables(tmp_path, capsys):
    assert B.build(runs=tmp_path / "none", root=tmp_path) == 2
    assert "no complete run for table1" in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(browser: str, url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
               "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom", url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
def test_book_builds_and_renders_in_chromium():
    missing = [notebook_name(t) for t in TABLES if notebook_name(t) not in B.published(B.load_results(ROOT / "runs"))]
    if missing:
        pytest.skip(f"runs/ has no committed run for {missing}; `make reproduce TABLE=all PROFILE=smoke` first")
    assert B.build("runs", ROOT) == 0, "jupyter-book build -W failed (see the output above)"
    html = ROOT / "_build" / "html"
    chosen = B.published(B.load_results(ROOT / "runs"))
    pages = {name: html / "runs" / name / prof / f"{name}.html" for name, prof in chosen.items()}
    for page in [*pages.values(), html / "book" / "status.html", html / "book" / "intro.html"]:
        assert page.is_file(), f"missing page {page}"
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); the HTML was built")
    images = []
    for name, page in [*pages.items(), ("intro", html / "book" / "intro.html")]:
        dom = _dump_dom(browser, page.as_uri())
        assert "</html>" in dom, f"{name}: chromium rendered nothing"
        text = re.sub(r"<[^>]+>", " ", dom)
        if name.startswith("table"):
            assert re.search(r"paper[^<]{0,20}top-1|paper[^<]{0,20}\(M\)|paper UCF-101", dom), f"{name}: no paper column"
            assert re.search(r"measured", dom), f"{name}: no measured column"
        assert "Traceback" not in text and 'class="output error"' not in dom and "Error" + "Traceback" not in dom, \
            f"{name}: a cell shows an error"
        assert 'class="output stderr"' not in dom, f"{name}: a cell wrote to stderr"
        srcs = re.findall(r'<img[^>]+src="([^"]+)"', dom)
        assert srcs or name == "intro", f"{name}: no image on the page"
        for s in srcs:
            if s.startswith("data:"):
                images.append(s)
                continue
            target = (page.parent / s.split("#")[0]).resolve()
            assert target.is_file(), f"{name}: image {s} missing"
            images.append(target.as_uri())
    # every image decodes in the browser: naturalWidth > 0
    harness = html / "_image_check.html"
    harness.write_text(
        "<html><body><pre id='out'>pending</pre><script>\n"
        f"const urls = {json.dumps(images)};\n"
        "let done = 0, bad = [];\n"
        "urls.forEach((u, i) => { const im = new Image();\n"
        "  im.onload = () => { if (!(im.naturalWidth > 0)) bad.push(i); if (++done == urls.length) fin(); };\n"
        "  im.onerror = () => { bad.push(i); if (++done == urls.length) fin(); };\n"
        "  im.src = u; });\n"
        "function fin() { document.getElementById('out').textContent = 'BAD=' + JSON.stringify(bad) + ' N=' + urls.length; }\n"
        "</script></body></html>")
    try:
        dom = _dump_dom(browser, harness.as_uri())
    finally:
        harness.unlink()
    m = re.search(r"BAD=(\[[^\]]*\]) N=(\d+)", dom)
    assert m, f"image check did not finish: {dom[-300:]}"
    assert json.loads(m.group(1)) == [], f"images that did not load: {[images[i][:80] for i in json.loads(m.group(1))]}"
    assert int(m.group(2)) == len(images) > 0
