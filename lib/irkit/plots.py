"""Matplotlib figures for runbooks and post-mortems: signals with the incident marked.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot global state), rendered to PNG bytes
for ``figures/`` and shown inline from those same bytes, so what a responder sees is what is saved.
Times are UTC; the incident window is shaded; the plan's thresholds are dashed lines; events (deploy,
alert, mitigation, resolved) are vertical markers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.transforms import ScaledTranslation

from irkit.metrics import GOLDEN_SIGNALS, IncidentMetrics
from irkit.severity import MetricRules
from irkit.times import parse_ts
from irkit.units import SIGNAL_UNITS

if TYPE_CHECKING:
    from irkit.record import Record

TITLES = {
    "request_rate": ("Request rate", "req/s"),
    "error_ratio": ("Error ratio (5xx)", "of requests"),
    "latency_p99": ("p99 latency", "seconds"),
    "saturation_cpu": ("CPU saturation", "of limit"),
    "saturation_memory": ("Memory saturation", "of limit"),
    "availability": ("Availability (healthy targets)", "of targets"),
}
MARKER_COLORS = {"deploy": "tab:purple", "alert": "tab:red", "mitigation": "tab:orange", "resolved": "tab:green"}


@dataclass(frozen=True)
class Marker:
    """A vertical line on every panel: something that happened at ``at``."""

    at: datetime
    label: str
    kind: str = "event"


def thresholds(signal: str, metrics: IncidentMetrics, rules: MetricRules) -> list[tuple[float, str]]:
    """The plan's thresholds for a signal, in its own units (latency ones scaled by the baseline)."""
    if signal == "error_ratio":
        return [(r.threshold, f"{r.level.value} {r.text.split()[0]} {r.threshold:.0%}") for r in rules.error_ratio]
    if signal == "latency_p99":
        normal = metrics.normal("latency_p99")
        if normal:
            return [(normal * r.threshold, f"{r.level.value} {r.threshold:g}x normal") for r in rules.latency_ratio]
    return []


def _panel(
    ax: Axes,
    metrics: IncidentMetrics,
    signal: str,
    markers: Sequence[Marker],
    window: tuple[datetime, datetime],
    rules: MetricRules,
    *,
    legend: bool | str,
    label_markers: bool = True,
) -> None:
    """One signal on ``ax``. ``legend``: True (inside, upper left), "above" (one row over the axes, in
    place of the panel title: a single-signal figure's title says what it shows), or False."""
    title, unit = TITLES.get(signal, (signal, ""))
    if legend != "above":
        ax.set_title(title, fontsize=10, y=1.0, parse_math=False)  # placed, not measured: auto placement re-measures every tick label
    ax.set_ylabel(unit, fontsize=8, parse_math=False)
    # Placed, not measured (as the title): automatic placement measures every tick label of this panel and
    # of its neighbours on each draw. 0.56 in left of the axes clears the widest value label ("100.0%").
    beside = ax.transAxes + ScaledTranslation(-0.56, 0, ax.figure.dpi_scale_trans)
    ax.yaxis.set_label_coords(0, 0.5, transform=beside)
    ax.xaxis.set_label_coords(0.5, -0.1)  # no x label is shown: nothing to measure for
    if SIGNAL_UNITS.get(signal) == "percent":  # 12 %, not 0.12
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.axvspan(date2num(window[0]), date2num(window[1]), color="tab:red", alpha=0.08, label="incident window")
    series = metrics.series.get(signal)
    if series is None or series.frame.empty:
        reason = metrics.unavailable.get(signal, "no data")
        ax.text(
            0.5,
            0.5,
            "could not check:\n" + "\n".join(textwrap.wrap(reason, 60)),
            parse_math=False,
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            color="tab:gray",
            bbox={"boxstyle": "square,pad=0.3", "fc": "white", "ec": "none", "alpha": 0.9},
            zorder=5,  # over the marker lines and their labels: the reason is what this panel says
        )
    else:
        x = date_numbers(series.frame.index)
        for col in series.frame.columns:
            ax.plot(x, series.frame[col].to_numpy(), lw=1.2, label=col if col != "value" else signal)
        base = metrics.baseline.get(signal)
        if base is not None and not base.frame.empty:
            shifted = base.total()
            shifted.index = shifted.index + metrics.baseline_offset
            ax.plot(
                date_numbers(shifted.index),
                shifted.to_numpy(),
                lw=0.9,
                ls=":",
                color="tab:gray",
                label="a week earlier",
            )
    for value, label in thresholds(signal, metrics, rules):
        ax.axhline(value, ls="--", lw=0.8, color="tab:red", alpha=0.6)
        ax.annotate(  # at the left: the right edge is where an incident's alert markers stand
            label,
            xy=(0.005, value),
            xycoords=("axes fraction", "data"),
            fontsize=6,
            color="tab:red",
            ha="left",
            va="bottom",
            parse_math=False,
        )
    _mark_events(ax, metrics, markers, labelled=label_markers)
    _time_axis(ax, metrics)
    if legend == "above":  # clear of the data and of the threshold labels at the left
        _legend(ax, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=6, frameon=False, borderaxespad=0.1)
    elif legend:
        _legend(ax, fontsize=6, loc="upper left")


def _mark_events(ax: Axes, metrics: IncidentMetrics, markers: Sequence[Marker], *, labelled: bool) -> None:
    """A vertical line per marker inside the reading's span; with ``labelled``, each cluster named once."""
    for m in markers:
        if metrics.start <= m.at <= metrics.end:
            ax.axvline(date2num(m.at), lw=1.0, color=MARKER_COLORS.get(m.kind, "tab:blue"), alpha=0.8)
    span = (metrics.end - metrics.start) or timedelta(hours=1)
    for at, label, kind in marker_labels(markers, metrics.start, metrics.end) if labelled else ():
        # Text beside its line, inside the axes (right of the line near the left edge), on a white box.
        left = (at - metrics.start) / span < 0.12
        ax.annotate(
            label,
            xy=(at, 0.97),
            xycoords=("data", "axes fraction"),
            xytext=(2 if left else -2, 0),
            textcoords="offset points",
            rotation=90,
            fontsize=6,
            va="top",
            ha="left" if left else "right",
            color=MARKER_COLORS.get(kind, "tab:blue"),
            parse_math=False,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
            annotation_clip=False,
        )


def _time_axis(ax: Axes, metrics: IncidentMetrics) -> None:
    """The reading's span on x, as UTC clock times, with a light grid."""
    ax.set_xlim(date2num(metrics.start), date2num(metrics.end))
    _locate_ticks(ax)
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz="UTC"))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _legend(ax: Axes, **kwargs: Any) -> None:
    """``ax.legend``, its labels (series names from the data) drawn as text, never as mathtext."""
    for text in ax.legend(**kwargs).get_texts():
        text.set_parse_math(False)


def _locate_ticks(ax: Axes) -> None:
    """At most 6 times and 6 values per axis: enough to read, and every tick is an artist (most of the draw)."""
    ax.xaxis.set_major_locator(AutoDateLocator(tz="UTC", minticks=3, maxticks=6))  # x is in date numbers
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))


def date_numbers(index: Any) -> Any:
    """Matplotlib date numbers for a pandas DatetimeIndex, converted in one vectorized step.

    Plotting the index itself makes Matplotlib convert one ``datetime`` at a time, on every draw.
    """
    import numpy as np

    if getattr(index, "tz", None) is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return date2num(np.asarray(index, dtype="datetime64[ns]"))


def margins(fig: Figure, *, left: float, right: float, top: float, bottom: float, **space: float) -> None:
    """Fixed margins in inches (room for the titles, tick labels and y label), whatever the figure's size.

    Constrained layout would measure every text on two extra draws: it doubled the render time.
    """
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h, **space)


def marker_labels(
    markers: Sequence[Marker], start: datetime, end: datetime, *, min_gap: float = 0.04
) -> list[tuple[datetime, str, str]]:
    """One label per cluster of markers closer than ``min_gap`` of the axis width (their labels joined,
    so "monitoring" and "resolved" a minute apart read "monitoring / resolved", never overprinted);
    markers outside [start, end] get no label on this axis."""
    span = (end - start).total_seconds() or 1.0
    inside = sorted((m for m in markers if start <= m.at <= end), key=lambda m: m.at)
    out: list[tuple[datetime, list[str], str]] = []
    for m in inside:
        if out and (m.at - out[-1][0]).total_seconds() / span < min_gap:
            if m.label not in out[-1][1]:
                out[-1][1].append(m.label)
            continue
        out.append((m.at, [m.label], m.kind))
    return [(at, " / ".join(labels), kind) for at, labels, kind in out]


def signal_figure(
    metrics: IncidentMetrics,
    signal: str,
    *,
    service: str,
    window: tuple[datetime, datetime],
    markers: Sequence[Marker] = (),
    rules: MetricRules | None = None,
) -> Figure:
    """One signal over time, with incident window, thresholds and event markers."""
    fig, (ax,) = _layout(1, 1)
    _panel(ax, metrics, signal, markers, window, rules or MetricRules(), legend="above")
    fig.suptitle(f"{service} — {TITLES.get(signal, (signal,))[0]} ({metrics.source}; times UTC)", fontsize=11, parse_math=False)
    return fig


def golden_signals_figure(
    metrics: IncidentMetrics,
    *,
    service: str,
    window: tuple[datetime, datetime],
    markers: Sequence[Marker] = (),
    rules: MetricRules | None = None,
) -> Figure:
    """All golden signals, one panel each, sharing the time axis.

    If not one signal has data (Prometheus unreachable, say), one panel says why instead of six empty
    ones each saying the same thing.
    """
    names = [s for s in GOLDEN_SIGNALS if s in metrics.series or s in metrics.unavailable]
    if not any(_has_data(metrics, s) for s in names):
        return _nothing_to_plot(metrics, names, service=service, window=window, markers=markers)
    cols = 2
    rows = max(1, (len(names) + 1) // cols)
    fig, axes = _layout(rows, cols)
    for i, name in enumerate(names):  # markers are named on the top row only: the lines below line up with them
        _panel(axes[i], metrics, name, markers, window, rules or MetricRules(), legend=i == 0, label_markers=i < cols)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    start, end = metrics.start, metrics.end
    fig.suptitle(f"{service} — golden signals {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC ({metrics.source})", fontsize=12, parse_math=False)
    return fig


def _has_data(metrics: IncidentMetrics, signal: str) -> bool:
    series = metrics.series.get(signal)
    return series is not None and not series.frame.empty


def _nothing_to_plot(
    metrics: IncidentMetrics,
    names: Sequence[str],
    *,
    service: str,
    window: tuple[datetime, datetime],
    markers: Sequence[Marker],
) -> Figure:
    """One panel over the incident's time axis: why no golden signal could be checked, and the events."""
    reasons: dict[str, list[str]] = {}
    for name in names or GOLDEN_SIGNALS:
        why = metrics.unavailable.get(name) or metrics.unavailable.get("all") or "no data"  # "all": no source at all
        reasons.setdefault(why, []).append(TITLES.get(name, (name,))[0])
    if len(reasons) == 1:
        lines = ["could not check any golden signal:", *textwrap.wrap(next(iter(reasons)), 90)]
    else:
        lines = ["could not check any golden signal:"]
        for reason, signals in reasons.items():
            lines += textwrap.wrap(f"{', '.join(signals)}: {reason}", 110)
    fig, (ax,) = _layout(1, 1)
    ax.axvspan(date2num(window[0]), date2num(window[1]), color="tab:red", alpha=0.08, label="incident window")
    _mark_events(ax, metrics, markers, labelled=True)
    ax.text(
        0.5,
        0.25,
        "\n".join(lines),
        parse_math=False,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9,
        bbox={"boxstyle": "square,pad=0.4", "fc": "white", "ec": "tab:gray", "alpha": 0.95},
        zorder=5,
    )
    _time_axis(ax, metrics)
    ax.set_yticks([])
    _legend(ax, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=6, frameon=False, borderaxespad=0.1)
    start, end = metrics.start, metrics.end
    fig.suptitle(
        f"{service} — golden signals {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC ({metrics.source}): no data",
        fontsize=11,
        parse_math=False,
    )
    return fig


# Layouts built ahead of need, one use each (see prepare_layouts).
_SPARE: dict[tuple[int, int], tuple[Figure, list[Axes]]] = {}
PREPARED = ((3, 2), (1, 1))  # the golden signals' grid, and one signal


def _new_layout(rows: int, cols: int) -> tuple[Figure, list[Axes]]:
    if (rows, cols) == (1, 1):
        fig = Figure(figsize=(9, 3.6))
        margins(fig, left=0.75, right=0.2, top=0.55, bottom=0.4)
        return fig, [fig.add_subplot()]
    fig = Figure(figsize=(12, 2.8 * rows))
    margins(fig, left=0.75, right=0.2, top=0.65, bottom=0.4, hspace=0.35, wspace=0.15)
    return fig, list(fig.subplots(rows, cols, sharex=True, squeeze=False).ravel())


def _layout(rows: int, cols: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows`` x ``cols`` empty panels sharing x: a prepared one if there is one (taken,
    never given out twice), else a new one."""
    spare = _SPARE.pop((rows, cols), None)
    return spare if spare is not None else _new_layout(rows, cols)


def prepare_layouts() -> None:
    """Build the usual figure layouts now and draw each once, empty, so their axes and ticks exist.

    Creating six panels and their tick artists is a third of drawing the golden signals. The kernel
    pool's fork server calls this once: every kernel forked from it finds the layouts ready and uses
    each at most once, and drawing data over a layout that has only been drawn empty gives the same
    pixels as a new one (a unit test compares the PNG bytes).
    """
    t0 = date2num(datetime(2000, 1, 1))
    for key in PREPARED:
        if key in _SPARE:
            continue
        fig, axes = _new_layout(*key)
        for ax in axes:
            ax.set_xlim(t0, t0 + 1 / 12)  # two hours: about as many ticks as an incident's panels
            _locate_ticks(ax)
        png_bytes(fig)
        for ax in axes:  # back to what a new layout has: the next user sets its own limits
            ax.set_xlim(auto=True)
            ax.set_autoscalex_on(True)
        _SPARE[key] = (fig, axes)


def drawing_settings() -> dict[str, Any]:
    """Matplotlib's settings as they stand (a responder may change them between cells), read as plain
    values: going through ``rcParams[...]`` would resolve the backend."""
    import copy

    import matplotlib

    settings: dict[str, Any] = matplotlib.rcParams  # type: ignore[assignment]  # a dict subclass
    # By value (list settings are edited in place); the backend (a sentinel until resolved) does not
    # draw a PNG: figures are rendered by Agg.
    return {k: copy.deepcopy(v) for k, v in dict.items(settings) if k != "backend"}


def render_locks() -> list[Any]:
    """The lock Matplotlib holds while any figure draws (a private name: none if it is gone)."""
    lock = getattr(Figure, "_render_lock", None)
    return [lock] if lock is not None else []


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a Matplotlib figure to PNG bytes (for sealing into the record or embedding in HTML).

    What ``fig.savefig(format="png", dpi=dpi)`` draws (Agg, at ``dpi``, on a canvas of its own for the
    drawing), encoded by :func:`encode_png`. The figure is drawn as built: the ``savefig.*`` settings
    (another face colour, transparency, a tight bounding box) are not applied.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    previous, own_dpi = fig.canvas, fig.dpi
    try:
        # The canvas first: a dpi change resizes the current canvas's window (pyplot, ipympl), and
        # this one has none. Saving: as in savefig, animated artists are drawn too.
        canvas = FigureCanvasAgg(fig)
        canvas._is_saving = True  # type: ignore[attr-defined]  # what savefig sets: not in the stubs
        fig.dpi = dpi
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())  # keeps the renderer, and so its pixels, alive
    finally:
        fig.dpi = own_dpi
        fig.set_canvas(previous)
    return encode_png(pixels, dpi=dpi)


def encode_png(rgba: Any, *, dpi: float | None = None) -> bytes:
    """A PNG of an RGBA image (a ``(height, width, 4)`` array of uint8), every row unfiltered, zlib level 1.

    Pillow, which ``savefig`` encodes with, tries all five PNG row filters on every row and keeps the
    best: for a golden-signals figure that is 40-70 ms of a drawing's 400, on the critical path of
    every triage. A plot is mostly flat colour, which deflate compresses well without a filter: 23 ms,
    for a file about 7 % larger (192 KB against 180 KB). The file is plain PNG (signature, IHDR, pHYs
    with the resolution, a tEXt naming the software, one IDAT, IEND); a unit test decodes it with
    Pillow and compares every pixel.
    """
    import struct
    import zlib

    import matplotlib
    import numpy as np

    pixels = np.asarray(rgba)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4 or 0 in pixels.shape:
        raise ValueError(
            f"encode_png needs a non-empty RGBA image of uint8, shape (height, width, 4), not {pixels.dtype} {pixels.shape}"
        )
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + 4 * width), dtype=np.uint8)  # column 0: filter type 0 (none) per row
    rows[:, 1:] = pixels.reshape(height, 4 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))]
    if dpi:
        per_metre = round(dpi / 0.0254)
        parts.append(chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)))
    parts.append(chunk(b"tEXt", b"Software\0" + f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/".encode("latin-1")))
    parts.append(chunk(b"IDAT", zlib.compress(rows.data, 1)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def incident_markers(record: Record) -> list[Marker]:
    """Event markers for an incident's plots: each alert's start, mitigation, restoration, resolution, rollouts."""
    from irkit.cluster import CLUSTER_DIR, RecordedCluster, capture

    out: list[Marker] = []
    seen_alerts: set[str] = set()
    for ev in record.events():
        d = ev["data"]
        if ev["type"] == "alert.firing" and d.get("fingerprint") not in seen_alerts:
            seen_alerts.add(d.get("fingerprint", ""))
            out.append(Marker(parse_ts(d["starts_at"]), f"alert {d.get('alertname', '')}", "alert"))
        elif ev["type"] == "status.changed" and d.get("to") in ("mitigating", "monitoring", "resolved"):
            kind = {"mitigating": "mitigation", "monitoring": "resolved", "resolved": "resolved"}[d["to"]]
            out.append(Marker(parse_ts(ev["ts"]), d["to"], kind))
    recorded = RecordedCluster(record.latest_dir(CLUSTER_DIR))
    if (recorded.directory / "meta.json").is_file():
        view = capture(recorded, kinds=("replicasets",), logs=False)  # only rollouts become markers
        detected = parse_ts(record.state()["detected_at"])
        for change in view.recent_changes(detected, timedelta(hours=6)):
            if change.kind == "rollout":
                out.append(Marker(change.at, f"deploy rev {change.revision}", "deploy"))
    return out


def incident_window(state: Mapping[str, Any], metrics: IncidentMetrics) -> tuple[datetime, datetime]:
    """The span to shade: detection until resolution (or the end of the reading), within the reading."""
    resolved = state["status_times"].get("resolved")
    end = parse_ts(resolved) if resolved else metrics.end
    return parse_ts(state["detected_at"]), min(end, metrics.end)
