"""``reports/index.html``: every incident at a glance, with its notebooks and post-mortem one click away.

Each incident row carries id, title, severity, status, start, duration, time to acknowledge, time to
resolve and whether the response and resolution targets were met. Executed notebooks are rendered to
HTML next to the record (``html/``, sanitized: incident text in outputs cannot run script) so the
links open in any browser. Two small charts: incidents by severity, and MTTA/MTTR over time.
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from irkit import templating
from irkit.config import Settings
from irkit.errors import IrkitError
from irkit.files import atomic_write_bytes, sha256_file
from irkit.record import Record, list_incidents
from irkit.severity import compute_clocks, judged_at
from irkit.times import human, utcnow


@dataclass
class Row:
    """One incident's index row: identity, times, whether targets were met, notebook and post-mortem links."""

    id: str
    title: str
    severity: str
    status: str
    started: datetime
    duration: timedelta | None
    tta: timedelta | None
    ttr: timedelta | None
    response_met: bool | None
    resolution_met: bool | None
    notebooks: list[tuple[str, str]]  # (label, relative href)
    postmortem: str | None
    review_overdue: bool = False

    def verdict(self, ok: bool | None) -> str:
        """"met", "missed" or "—" (not known) for a target, as shown in the index and used as its CSS class."""
        return {True: "met", False: "missed", None: "—"}[ok]


OUTPUT_TAGS = frozenset(
    {
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "th",
        "td",
        "caption",
        "div",
        "span",
        "p",
        "b",
        "i",
        "em",
        "strong",
        "code",
        "pre",
        "small",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "ul",
        "ol",
        "li",
        "br",
        "hr",
        "a",
        "img",
    }
)


SCRIPT_MIMES = ("application/javascript", "text/javascript", "application/x-javascript", "image/svg+xml")


def clean_output_html(html: str) -> str:
    """HTML with only table/text markup kept: no script, style, handlers, ``javascript:`` or remote images.

    Incident text reaches outputs (alert summaries in tables); rendered for a browser it must stay text.
    nh3 (ammonia) parses the HTML as a browser would, so malformed markup cannot smuggle a tag through.
    """
    import nh3

    return str(
        nh3.clean(
            html,
            tags=set(OUTPUT_TAGS),
            clean_content_tags={"script", "style"},
            attributes={"*": {"class"}, "a": {"href", "title"}, "img": {"src", "alt"}},
            url_schemes={"http", "https", "data"},
            link_rel="noopener noreferrer",
        )
    )


def _markdown_html(text: str) -> str:
    from nbconvert.filters.markdown import markdown2html_mistune

    return clean_output_html(str(markdown2html_mistune(text)))


def sanitize_notebook(nb: Any) -> Any:
    """Every output type made safe for a browser: HTML and Markdown sanitized, JavaScript and SVG dropped.

    Markdown cells are rendered and sanitized too: a responder's cell in a sealed working copy is input.
    """
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            cell["source"] = _markdown_html(str(cell.get("source", "")))
            cell["attachments"] = {}
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not isinstance(data, dict):
                continue
            for mime in [m for m in data if m in SCRIPT_MIMES or "javascript" in m or m.endswith("+json")]:
                if mime != "application/json":
                    del data[mime]
            if "text/markdown" in data:
                md = data.pop("text/markdown")
                data["text/html"] = _markdown_html(md if isinstance(md, str) else "".join(md))
            elif "text/html" in data:
                html = data["text/html"]
                data["text/html"] = clean_output_html(html if isinstance(html, str) else "".join(html))
    return nb


def render_notebook(src: Path, dest: Path) -> None:
    """A sanitized, standalone HTML rendering of an executed notebook (only when stale)."""
    if dest.is_file() and dest.stat().st_mtime >= src.stat().st_mtime:
        return
    import nbformat
    from nbconvert import HTMLExporter

    nb = sanitize_notebook(nbformat.read(str(src), as_version=4))
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    with warnings.catch_warnings():  # scrapbook's scrap mimetypes have no HTML form, by design
        warnings.filterwarnings("ignore", message=".*is not able to be represented", category=UserWarning)
        body, _ = exporter.from_notebook_node(nb)
    atomic_write_bytes(dest, body.encode(), durable=False)


def _row(root: Path, incident_id: str, settings: Settings) -> Row:
    rec = Record.open(root, incident_id)
    problem = rec.broken()
    if problem:
        raise IrkitError(problem)
    st = rec.state()
    now = judged_at(st)
    clocks = compute_clocks(st, settings.severity, now)
    detected = clocks.detected_at
    tta = clocks.acknowledged_at - detected if clocks.acknowledged_at else None
    ttr = clocks.resolved_at - detected if clocks.resolved_at else None
    notebooks = []
    # Only what the record vouches for is published: sealed notebooks whose bytes still hash to the seal.
    for rel, info in sorted(st["artifacts"].items()):
        if not (rel.startswith("notebooks/") and rel.endswith(".ipynb")):
            continue
        nb = rec.path / rel
        if nb.is_symlink() or not nb.is_file() or sha256_file(nb) != info["sha256"]:
            continue
        html = rec.path / "html" / f"{nb.stem}.html"
        html_dir = rec.path / "html"
        if html_dir.is_symlink() or (html.exists() and html.is_symlink()):
            raise IrkitError(f"{incident_id}/html is a symlink; refusing to write through it")
        html_dir.mkdir(exist_ok=True)
        render_notebook(nb, html)
        notebooks.append((nb.stem, f"{incident_id}/html/{html.name}"))
    pm = rec.latest_file("postmortem.html")
    return Row(
        id=incident_id,
        title=st["title"] or "",
        severity=st["severity"] or "—",
        status=st["status"],
        started=detected,
        duration=ttr,
        tta=tta,
        ttr=ttr,
        response_met=None
        if clocks.response_due is None or (tta is None and not clocks.response_overdue)
        else not clocks.response_overdue,
        resolution_met=None
        if clocks.resolution_due is None or (ttr is None and not clocks.resolution_overdue)
        else not clocks.resolution_overdue,
        notebooks=notebooks,
        postmortem=f"{incident_id}/{pm}" if pm else None,
        review_overdue=clocks.review_overdue,
    )


def _charts(rows: list[Row]) -> dict[str, str]:
    from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from irkit.plots import png_bytes

    charts = {}
    fig = Figure(figsize=(4.2, 2.6), layout="constrained")
    ax = fig.add_subplot()
    levels = ["P0", "P1", "P2", "P3", "P4", "—"]
    counts = [sum(1 for r in rows if r.severity == lv) for lv in levels]
    ax.bar(levels, counts, color=["#7f0000", "#c62828", "#ef6c00", "#f9a825", "#9e9e9e", "#cfd8dc"])
    ax.set_title("Incidents by severity", fontsize=10)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    charts["severity"] = base64.b64encode(png_bytes(fig)).decode()
    fig = Figure(figsize=(6, 2.6), layout="constrained")
    ax = fig.add_subplot()
    for label, attr, color in (("MTTA", "tta", "tab:blue"), ("MTTR", "ttr", "tab:red")):
        pts = [(r.started, getattr(r, attr)) for r in rows if getattr(r, attr) is not None]
        if pts:
            ax.plot(
                [date2num(p[0]) for p in pts], [p[1].total_seconds() / 60 for p in pts], "o-", label=label, color=color
            )
    ax.set_ylabel("minutes", fontsize=8)
    ax.set_title("Time to acknowledge / resolve, by incident start", fontsize=10)
    starts = [r.started for r in rows]
    if starts:  # a window around the incidents, not matplotlib's default decade for a single point
        ax.set_xlim(date2num(min(starts) - timedelta(days=3)), date2num(max(starts) + timedelta(days=3)))
    ax.xaxis.set_major_locator(AutoDateLocator(maxticks=6))
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d", tz="UTC"))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    charts["times"] = base64.b64encode(png_bytes(fig)).decode()
    return charts


def build_index(root: str | Path, settings: Settings) -> Path:
    """Write ``<root>/index.html`` and return its path."""

    base = Path(root).resolve()
    rows, broken = [], []
    for iid in list_incidents(base):
        try:  # one corrupt record is listed as such and never breaks the index for the others
            rows.append(_row(base, iid, settings))
        except (IrkitError, KeyError, TypeError, ValueError) as exc:
            broken.append((iid, str(exc)[:300]))
    rows.sort(key=lambda r: r.started, reverse=True)
    ctx: dict[str, Any] = {
        "rows": rows,
        "broken": broken,
        "human": human,
        "charts": _charts(rows),
        "generated": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    }
    html = templating.render("index.html.j2", "html", **ctx)
    out = base / "index.html"
    atomic_write_bytes(out, html.encode(), durable=False)
    return out
