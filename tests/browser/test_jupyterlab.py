"""What a responder sees in a real browser: the triage runbook run in JupyterLab, and the published pages.

1. Triage in JupyterLab. The bundled incident's Alertmanager notification opens an incident (what
   ``irkit serve`` does when it arrives), its recorded metric series and cluster snapshot are imported
   (what ``irkit demo`` does), and ``irkit open ID triage -p metrics_source recorded -p cluster_source
   recorded`` prepares the working copy. Chromium opens it in JupyterLab, runs all cells and reads what
   is on the page (``textContent``: JupyterLab does not paint off-screen cells, so ``innerText`` would be
   empty for them): the severity line and its reasons, one plot per plotting cell, no error or stderr
   output, no table cell cut short by pandas. A responder's note is added and saved with Ctrl+S; then
   ``irkit seal`` and ``irkit verify`` must pass and the sealed notebook must hold the note.
2. The demo's post-mortem and index, opened from disk (file://): the incident id, its severity, every
   section of the template, images that load, links that resolve, and no HTML markup shown as text.

Screenshots of every page go under the test's temp dir; their paths are printed (``pytest -s``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from irkit.record import Record

IRKIT = Path(sys.executable).with_name("irkit")
# The plan's post-incident review template (section 7), in its order.
PLAN_SECTIONS = [
    "Summary",
    "Timeline",
    "Root Cause",
    "Impact Assessment",
    "What Went Well",
    "What Went Wrong",
    "Action Items",
    "Lessons Learned",
    "Appendices",
]
PLAN_APPENDICES = ["Relevant logs", "Metrics", "Communication log"]
RUN_ALL_TIMEOUT_MS = 180_000  # ~30 s alone on 2 cores; generous for a loaded `pytest -n auto`
# Text that means HTML or a template reached the reader as characters instead of being rendered.
RAW_MARKUP = (
    "<td",
    "<th",
    "<tr",
    "<table",
    "<div",
    "<br",
    "<p>",
    "</",
    "&lt;",
    "&gt;",
    "&amp;",
    "&quot;",
    "&#",
    "{{",
    "{%",
)

KERNEL_IDLE = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => /\\|\\s*Idle$/.test(e.textContent.trim()))"""

# Done: the kernel is idle, no cell is queued or running ([*]) and the first cell has run (it showed
# [ ] before Run All, so an idle kernel before the run cannot pass). A stdin box means a cell waits for input.
RUN_ALL_DONE = """() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
        .map(e => e.textContent.trim());
    const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
        .some(e => /\\|\\s*Idle$/.test(e.textContent.trim()));
    return Boolean(document.querySelector('.jp-Stdin'))
        || (idle && prompts.length > 0 && !prompts.includes('[*]:') && /^\\[\\d+\\]:$/.test(prompts[0]));
}"""

# Every cell as the page holds it, read with textContent (works for cells JupyterLab has not painted).
NOTEBOOK_CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell, index) => ({
    index,
    type: cell.classList.contains('jp-CodeCell') ? 'code' : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
    prompt: (cell.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
    source: [...cell.querySelectorAll('.jp-InputArea-editor .cm-line')].map(l => l.textContent).join('\\n'),
    rendered: (cell.querySelector('.jp-MarkdownOutput') || {textContent: ''}).textContent,
    outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({
        mime: o.getAttribute('data-mime-type') || '', text: o.textContent,
    })),
    images: [...cell.querySelectorAll('.jp-OutputArea-output img')].map(i => ({
        width: i.naturalWidth, height: i.naturalHeight, complete: i.complete,
    })),
    tableCells: [...cell.querySelectorAll('.jp-OutputArea-output td, .jp-OutputArea-output th')]
        .map(c => c.textContent.trim()),
}))"""

IMAGES_LOADED = "() => [...document.images].every(i => i.complete)"

# A static page as a reader sees it (innerText: what is rendered, without <style> text).
STATIC_PAGE = """() => ({
    title: document.title,
    text: document.body.innerText,
    h1: [...document.querySelectorAll('h1')].map(h => h.innerText.trim()),
    h2: [...document.querySelectorAll('h2')].map(h => h.innerText.trim()),
    h3: [...document.querySelectorAll('h3')].map(h => h.innerText.trim()),
    images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, complete: i.complete})),
    rows: [...document.querySelectorAll('tr')].map(r => [...r.children].map(c => c.innerText.trim())),
    links: [...document.querySelectorAll('a[href]')].map(a => ({text: a.innerText.trim(), href: a.getAttribute('href')})),
})"""


# --------------------------------------------------------------------------- helpers


def irkit(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The venv's ``irkit`` command, as a responder types it."""
    return subprocess.run(
        [str(IRKIT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def open_bundled_incident(records: Path) -> str:
    """The bundled incident as an alert opens it, with its recorded signals and cluster snapshot imported."""
    from irkit.alerts import load_notification_file, open_from_notification
    from irkit.cluster import RecordedCluster, capture, snapshot
    from irkit.demo import SCENARIO_DIR
    from irkit.sources import RecordedSource, copy_recording

    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    rec = open_from_notification(records, note, service="schema-registry", actor="alertmanager")
    assert copy_recording(RecordedSource(SCENARIO_DIR / "signals"), rec, actor="Ana Ruiz") > 0
    snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor="Ana Ruiz")
    return rec.id


STYLE = re.compile(r"\.dataframe [^{}]*\{[^}]*\}\s*")  # pandas' scoped <style>, part of textContent


def digest(cells: list[dict[str, Any]], width: int = 220) -> str:
    """One line per code cell (prompt, first source line, images, output text): what was on the page."""
    lines = []
    for c in cells:
        if c["type"] != "code":
            continue
        last = (c["source"].splitlines() or [""])[-1][:50]
        shown = (STYLE.sub("", " ".join(o["text"].split())) for o in c["outputs"])
        text = " ‖ ".join(f"[{o['mime']}] {t}" for o, t in zip(c["outputs"], shown, strict=True))
        lines.append(f"  cell {c['index']:>2} {c['prompt']:<6} {last:<50} img={len(c['images'])} {text[:width]}")
    return "\n".join(lines)


def notebook_screenshots(page: Any, out: Path, stem: str) -> list[Path]:
    """Viewport shots down the notebook (JupyterLab scrolls inside its panel, so full_page shows one screen)."""
    panel = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first
    shots: list[Path] = []
    top = 0
    for n in range(80):
        panel.evaluate("(e, y) => { e.scrollTop = y; }", top)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.wait_for_timeout(100)
        shots.append(out / f"{stem}-{n:02d}.png")
        page.screenshot(path=shots[-1])
        # done when the last cell's bottom is on screen (below it is only scroll-past-end space)
        height, now, done = panel.evaluate(
            """e => {
                const cells = e.querySelectorAll('.jp-Cell');
                const last = cells[cells.length - 1];
                const bottom = last ? last.getBoundingClientRect().bottom : 0;
                return [e.clientHeight, e.scrollTop,
                        bottom <= e.getBoundingClientRect().bottom || e.scrollTop + e.clientHeight >= e.scrollHeight - 2];
            }"""
        )
        if done:
            break
        top = now + int(height * 0.85)
    return shots


@pytest.fixture
def screenshots(tmp_path: Path) -> Iterator[Path]:
    """The directory screenshots go to; their paths are printed at the end (pytest -s, or on failure)."""
    out = tmp_path / "screenshots"
    out.mkdir()
    yield out
    for path in sorted(out.glob("*.png")):
        print(f"screenshot: {path}")


# --------------------------------------------------------------------------- 1. triage in JupyterLab


def test_triage_runs_in_jupyterlab_and_the_saved_copy_seals(jupyter_lab, chromium, screenshots: Path) -> None:
    env, cwd = jupyter_lab.env, jupyter_lab.root.parent
    records = jupyter_lab.root / "records"
    timings: dict[str, float] = {}
    began = time.monotonic()
    incident = open_bundled_incident(records)
    prepared = irkit(
        "open", incident, "triage", "-p", "metrics_source", "recorded", "-p", "cluster_source", "recorded",
        "--records", str(records), env=env, cwd=cwd,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    working = Path(prepared.stdout.strip().splitlines()[-1])
    assert working.is_file() and working.is_relative_to(records / incident), prepared.stdout
    rel = working.relative_to(records / incident).as_posix()
    expected = nbformat.read(str(working), as_version=4)
    plot_cells = {i for i, c in enumerate(expected.cells) if c.cell_type == "code" and "session.plot_" in c.source}
    assert plot_cells, "the triage runbook has no plotting cell: this test expects its plots"
    timings["prepare"] = time.monotonic() - began

    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        began = time.monotonic()
        page.goto(jupyter_lab.url(working))
        page.wait_for_function(KERNEL_IDLE, timeout=90_000)
        timings["open → kernel idle"] = time.monotonic() - began
        page.keyboard.press("Control+b")  # hide the file browser: wider tables in the screenshots

        began = time.monotonic()
        page.locator('.lm-MenuBar-itemLabel:text-is("Run")').click()
        page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').click()
        try:
            page.wait_for_function(RUN_ALL_DONE, timeout=RUN_ALL_TIMEOUT_MS, polling=250)
        except Exception as exc:  # a timeout: say where it stood
            cells = page.evaluate(NOTEBOOK_CELLS)
            page.screenshot(path=screenshots / "triage-stuck.png")
            raise AssertionError(f"Run All did not finish ({exc}); the page showed:\n{digest(cells)}") from exc
        page.wait_for_function(IMAGES_LOADED)
        timings["run all"] = time.monotonic() - began
        cells = page.evaluate(NOTEBOOK_CELLS)
        seen = digest(cells)

        # --- every cell ran, nothing failed or complained
        assert not page.locator(".jp-Stdin").count(), f"a cell is waiting for input:\n{seen}"
        assert len(cells) == len(expected.cells), f"{len(cells)} cells on the page, {len(expected.cells)} in {rel}"
        stderr = [(c["index"], o["text"][:800]) for c in cells for o in c["outputs"] if "stderr" in o["mime"]]
        assert not stderr, f"error or stderr output (a responder reads it as a failure): {stderr}"
        unrun = [c["index"] for c in cells if c["type"] == "code" and not re.fullmatch(r"\[\d+\]:", c["prompt"])]
        assert not unrun, f"cells {unrun} did not run (an error stops Run All):\n{seen}"
        tracebacks = [c["index"] for c in cells for o in c["outputs"] if "Traceback" in o["text"]]
        assert not tracebacks, f"tracebacks in cells {tracebacks}:\n{seen}"

        # --- the severity and the reasons that decided it, as the record has them
        events = Record.open(records, incident).events()
        assessed = [e for e in events if e["type"] == "severity.assessed"]
        assert assessed, f"no severity.assessed event in the record; the page showed:\n{seen}"
        verdict = assessed[-1]
        assert verdict["actor"] == "Ana Ruiz", verdict  # the kernel ran as the server's IRKIT_ACTOR
        assert verdict["data"]["level"] == "P1", verdict["data"]  # 16.4% errors, p99 12.4x normal: the plan's P1
        (assess,) = [c for c in cells if "session.assess(" in c["source"]]
        assess_text = " ".join(o["text"] for o in assess["outputs"])
        assert f"metrics say: {verdict['data']['summary']}" in assess_text, f"the assess cell showed: {assess_text!r}"
        assert "metrics say: P1: error ratio" in assess_text and "incident severity stays P1" in assess_text, (
            assess_text
        )
        for reason in verdict["data"]["reasons"]:
            assert reason["text"] in assess["tableCells"], (reason, assess["tableCells"])
        (summary,) = [c for c in cells if "session.summary()" in c["source"]]
        assert ["severity", "P1"] in [summary["tableCells"][i : i + 2] for i in range(len(summary["tableCells"]))], (
            f"summary table: {summary['tableCells']}"
        )

        # --- one loaded plot per plotting cell, none elsewhere
        images = {c["index"]: c["images"] for c in cells if c["images"]}
        per_cell = {i: len(v) for i, v in images.items()}
        assert per_cell == dict.fromkeys(plot_cells, 1), (
            f"plots per cell {per_cell}, expected one in each of cells {sorted(plot_cells)}:\n{seen}"
        )
        broken = {i: v for i, v in images.items() if not all(img["width"] > 0 and img["complete"] for img in v)}
        assert not broken, f"plots that did not load: {broken}"

        # --- evidence shown whole: no cell cut short by pandas, no markup as text
        cut = [(c["index"], t) for c in cells for t in c["tableCells"] if t.endswith(("...", "…"))]
        assert not cut, f"table cells cut short (pandas truncation): {cut}"
        markup = [(c["index"], m) for c in cells for o in c["outputs"] for m in RAW_MARKUP if m in o["text"]]
        assert not markup, f"HTML markup shown as text: {markup}"

        # --- a responder's note, saved from the browser
        note = f"Responder note {incident}: rolled back by hand to revision 6 at 14:40 (browser test)"
        page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputPrompt").click()
        for key in ("Escape", "b", "m", "Enter"):  # command mode, new cell below, markdown, edit
            page.keyboard.press(key)
        page.keyboard.type(note)
        page.keyboard.press("Control+Enter")  # render it in place
        began = time.monotonic()
        page.keyboard.press("Control+s")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => e.textContent.includes('Saving completed'))"
        )
        timings["save"] = time.monotonic() - began
        rendered = page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-MarkdownOutput").text_content() or ""
        assert rendered.strip() == note, f"the new cell renders {rendered!r}"
        saved = nbformat.read(str(working), as_version=4)
        assert saved.cells[-1].cell_type == "markdown" and saved.cells[-1].source == note, saved.cells[-1]
        notebook_screenshots(page, screenshots, "triage")
    finally:
        if page_errors:
            print(f"JupyterLab page errors: {page_errors}")
        context.close()  # before sealing: no autosave may rewrite the file after it is sealed

    # --- sealed and verified by the CLI, with the note in the sealed copy
    began = time.monotonic()
    sealed = irkit("seal", incident, "--records", str(records), env=env, cwd=cwd)
    assert sealed.returncode == 0 and f"sealed {rel}" in sealed.stdout, (sealed.stdout, sealed.stderr)
    verified = irkit("verify", incident, "--records", str(records), env=env, cwd=cwd)
    assert verified.returncode == 0 and verified.stdout.startswith(f"OK {incident}"), (verified.stdout, verified.stderr)
    timings["seal + verify"] = time.monotonic() - began
    state = Record.open(records, incident).state()
    assert rel not in state["working_copies"], state["working_copies"]
    in_record = nbformat.read(str(records / incident / rel), as_version=4)
    assert any(c.cell_type == "markdown" and note in c.source for c in in_record.cells), (
        "the note is not in the sealed notebook"
    )
    pngs = sum("image/png" in o.get("data", {}) for c in in_record.cells for o in c.get("outputs", []))
    assert pngs == len(plot_cells), f"{pngs} plots in the sealed notebook, {len(plot_cells)} expected"
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


# --------------------------------------------------------------------------- 2. the published pages


def _no_markup(text: str, where: str) -> None:
    shown = [m for m in RAW_MARKUP if m in text]
    assert not shown, (
        f"{where} shows markup as text {shown}: …{text[text.find(shown[0]) - 80 : text.find(shown[0]) + 80]!r}…"
    )


def test_demo_postmortem_and_index_read_in_a_browser(demo_cli, chromium, screenshots: Path) -> None:
    assert demo_cli.output.exit_code == 0, demo_cli.output.stderr
    result = demo_cli.result
    incident = result.incident_id
    state = Record.open(demo_cli.records, incident).state()
    assert result.postmortem and result.index, result
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        # --- the post-mortem
        page.goto(result.postmortem.as_uri())
        page.wait_for_function(IMAGES_LOADED)
        pm = page.evaluate(STATIC_PAGE)
        page.screenshot(path=screenshots / "postmortem.png", full_page=True)
        meta = {row[0]: row[1] for row in pm["rows"] if len(row) == 2}
        assert meta.get("Incident ID") == incident, f"post-mortem meta table: {meta}"
        assert meta.get("Severity") == state["severity"] == "P1", f"post-mortem meta table: {meta}"
        assert pm["h1"] == [f"Post-Incident Review: {state['title']}"], pm["h1"]
        assert pm["h2"] == PLAN_SECTIONS, f"sections shown: {pm['h2']}"
        assert pm["h3"] == PLAN_APPENDICES, f"appendices shown: {pm['h3']}"
        html = result.postmortem.read_text()
        assert len(pm["images"]) == html.count("<img ") >= 1, pm["images"]
        assert all(i["complete"] and i["width"] > 0 for i in pm["images"]), f"images that did not load: {pm['images']}"
        _no_markup(pm["text"], "the post-mortem")

        # --- the index, and every page it links to
        page.goto(result.index.as_uri())
        page.wait_for_function(IMAGES_LOADED)
        index = page.evaluate(STATIC_PAGE)
        page.screenshot(path=screenshots / "index.png", full_page=True)
        header = index["rows"][0]
        rows = [dict(zip(header, row, strict=True)) for row in index["rows"][1:]]
        assert [r["Incident"] for r in rows] == [incident], f"index rows: {rows}"
        assert rows[0]["Severity"] == state["severity"], rows[0]
        assert index["images"] and all(i["complete"] and i["width"] > 0 for i in index["images"]), index["images"]
        _no_markup(index["text"], "the index")
        base = result.index.parent
        targets = [(link["text"], (base / link["href"]).resolve()) for link in index["links"]]
        missing = [(text, str(path)) for text, path in targets if not path.is_file()]
        assert not missing, f"index links to files that do not exist: {missing}"
        assert ("post-mortem", result.postmortem.resolve()) in targets, targets
        notebooks = [(text, path) for text, path in targets if text != "post-mortem"]
        assert len(notebooks) == len(result.runs), (
            f"notebook links {notebooks}, runs {[r.runbook for r in result.runs]}"
        )
        for n, (text, path) in enumerate(notebooks, 1):
            page.goto(path.as_uri())
            page.wait_for_function(IMAGES_LOADED)
            shown = page.evaluate(STATIC_PAGE)
            page.screenshot(path=screenshots / f"index-{n}-{path.stem}.png", full_page=True)
            assert incident in shown["text"], f"{text} ({path.name}) does not name the incident"
            assert "Traceback" not in shown["text"], f"{text} ({path.name}) shows a traceback"
            assert all(i["complete"] and i["width"] > 0 for i in shown["images"]), (text, shown["images"])
    finally:
        context.close()
