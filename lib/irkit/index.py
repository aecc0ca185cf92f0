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
    body = body.replace("</head>", READABLE_TABLES + "</head>", 1)
    atomic_write_bytes(dest, body.encode(), durable=False)


# Evidence tables as people read them: text left-aligned and wrapping between words, never inside one.
READABLE_TABLES = (
    "<style>.jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{text-align:left;"
    "overflow-wrap:normal;word-break:normal;vertical-align:top}</style>"
)


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


LEVELS = ("P0", "P1", "P2", "P3", "P4")
LEVEL_COLORS = {"P0": "#7f0000", "P1": "#c62828", "P2": "#ef6c00", "P3": "#f9a825", "P4": "#9e9e9e", "—": "#cfd8dc"}


def response_stats(rows: list[Row], settings: Settings) -> list[dict[str, Any]]:
    """Per severity with incidents, for acknowledge (TTA) and resolve (TTR): n, median, p90 in minutes, and the target.

    A median and a 90th percentile per level mean the same for one incident (both are its time) as for
    a hundred, and set against the level's target they say whether the team meets it.
    """
    import statistics

    out = []
    for level in LEVELS:
        for measure, attr, target in (
            ("acknowledge", "tta", settings.severity[level].response_time),
            ("resolve", "ttr", settings.severity[level].resolution_target),
        ):
            mins = sorted(getattr(r, attr).total_seconds() / 60 for r in rows if r.severity == level and getattr(r, attr))
            if not mins:
                continue
            p90 = mins[min(len(mins) - 1, max(0, round(0.9 * len(mins) + 0.5) - 1))]
            out.append(
                {
                    "level": level,
                    "measure": measure,
                    "n": len(mins),
                    "median": statistics.median(mins),
                    "p90": p90,
                    "target": target.total_seconds() / 60 if target else None,
                }
            )
    return out


def _charts(rows: list[Row], settings: Settings) -> dict[str, str]:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from irkit.plots import margins, png_bytes

    charts = {}
    fig = Figure(figsize=(4.2, 2.6))
    margins(fig, left=0.55, right=0.1, top=0.3, bottom=0.3)
    ax = fig.add_subplot()
    levels = [*LEVELS, "—"]
    counts = [sum(1 for r in rows if r.severity == lv) for lv in levels]
    bars = ax.bar(["none" if lv == "—" else lv for lv in levels], counts, color=[LEVEL_COLORS[lv] for lv in levels])
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=8, padding=2)
    ax.set_title(f"Incidents by severity ({len(rows)} in all)", fontsize=10)
    ax.set_ylabel("incidents", fontsize=8)
    ax.set_ylim(0, max([*counts, 1]) * 1.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    charts["severity"] = base64.b64encode(png_bytes(fig)).decode()

    stats = response_stats(rows, settings)
    fig = Figure(figsize=(7, 2.8))
    margins(fig, left=0.4, right=0.15, top=0.3, bottom=0.45, wspace=0.25)
    axes = fig.subplots(1, 2)
    for ax, measure in zip(axes, ("acknowledge", "resolve"), strict=True):
        mine = [s for s in stats if s["measure"] == measure]
        if not mine:
            ax.text(0.5, 0.5, f"no incident {measure}d yet", ha="center", va="center", fontsize=8, color="#666")
            ax.set_axis_off()
            continue
        ys = list(range(len(mine)))
        ax.barh(ys, [s["median"] for s in mine], color=[LEVEL_COLORS[s["level"]] for s in mine], height=0.55)
        ax.errorbar(
            [s["median"] for s in mine],
            ys,
            xerr=[[0] * len(mine), [s["p90"] - s["median"] for s in mine]],
            fmt="none",
            ecolor="#333",
            capsize=3,
            lw=0.8,
        )
        for y, s in zip(ys, mine, strict=True):
            if s["target"] is not None:
                ax.plot([s["target"]] * 2, [y - 0.4, y + 0.4], color="black", lw=1.5, ls="--")
            label = f"median {human(timedelta(minutes=s['median']))}, p90 {human(timedelta(minutes=s['p90']))}, n={s['n']}"
            ax.annotate(
                label,
                (0, y),
                xycoords=("axes fraction", "data"),
                xytext=(3, 9),
                textcoords="offset points",
                fontsize=6.5,
                va="bottom",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        ax.set_yticks(ys, [s["level"] for s in mine])
        ax.invert_yaxis()
        ax.set_xlabel("minutes (dashed: the level's target)", fontsize=7)
        ax.set_title(f"Time to {measure} (MT{'TA' if measure == 'acknowledge' else 'TR'})", fontsize=9)
        top = max(max(s["p90"] for s in mine), max((s["target"] or 0) for s in mine))
        low = min(s["median"] for s in mine)
        if low > 0 and top / low > 30:  # minutes next to days: a log axis keeps both readable
            ax.set_xscale("log")
            ax.set_xlim(low / 2, top * 2)
            ax.set_xlabel("minutes, log scale (dashed: the level's target)", fontsize=7)
        else:
            ax.set_xlim(0, top * 1.15 or 1)
        ax.set_ylim(len(mine) - 0.4, -0.9)
        ax.tick_params(labelsize=7)
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
        "charts": _charts(rows, settings),
        "generated": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    }
    html = templating.render("index.html.j2", "html", **ctx)
    out = base / "index.html"
    atomic_write_bytes(out, html.encode(), durable=False)
    return out
