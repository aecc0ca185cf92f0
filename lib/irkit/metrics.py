"""The golden signals for an incident window: read, snapshot, reduce to evidence, classify.

One reading covers the incident window (for plots) and the same window a week earlier (the baseline,
so "latency > 10x normal" is computed). Evidence is the *worst* value over the evaluation window (the
last 15 minutes of a live incident; the first 15 minutes after detection when replaying a recording):
peak error ratio, peak p99 latency against the baseline's median, lowest availability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from irkit import units
from irkit.errors import BadInputError, ConfigError, SourceUnavailable
from irkit.severity import Assessment, Evidence, MetricRules, classify
from irkit.sources import (
    SIGNALS_DIR,
    RecordedSource,
    SignalSeries,
    SignalSource,
    baseline_window,
    fetch_all,
    snapshot,
)
from irkit.times import parse_ts
from irkit.units import signal_value

if TYPE_CHECKING:
    import pandas as pd

    from irkit.config import Settings
    from irkit.record import Record

GOLDEN_SIGNALS = ("request_rate", "error_ratio", "latency_p99", "saturation_cpu", "saturation_memory", "availability")
EVALUATION = timedelta(minutes=15)
KEY_SIGNALS = ("error_ratio", "latency_p99", "availability")  # the ones severity is judged on
SATURATED = 0.8  # a resource at or above this share of its limit is a finding (plan: resource utilization)
# The signal a severity reason is about, where the two names differ.
SIGNAL_OF_REASON = {"latency_ratio": "latency_p99"}


@dataclass
class IncidentMetrics:
    """Every signal read for one incident window, its baseline, and what could not be read."""

    source: str
    start: datetime
    end: datetime
    eval_start: datetime
    eval_end: datetime
    baseline_offset: timedelta
    series: dict[str, SignalSeries] = field(default_factory=dict)
    baseline: dict[str, SignalSeries] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    misconfigured: dict[str, str] = field(default_factory=dict)  # signals whose query the server rejected

    def _eval(self, s: SignalSeries, shift: timedelta = timedelta(0)) -> pd.Series:
        total = s.total().dropna()
        return total[(total.index >= self.eval_start - shift) & (total.index <= self.eval_end - shift)]

    def worst(self, signal: str, *, lowest: bool = False) -> float | None:
        """The signal's peak (or, with ``lowest``, its minimum) in the evaluation window; None without data."""
        s = self.series.get(signal)
        if s is None:
            return None
        values = self._eval(s)
        if values.empty:
            return None
        return float(values.min() if lowest else values.max())

    def normal(self, signal: str) -> float | None:
        """The baseline's median over the evaluation window shifted back by the baseline offset."""
        s = self.baseline.get(signal)
        if s is None:
            return None
        values = self._eval(s, self.baseline_offset)
        return float(values.median()) if not values.empty else None

    def evidence(self) -> Evidence:
        """Reduce the signals to severity evidence: peak error ratio and p99 against baseline, lowest availability."""
        unavailable = dict(self.unavailable)
        for sig in ("error_ratio", "latency_p99", "availability"):
            if sig in self.series and self.worst(sig, lowest=sig == "availability") is None:
                unavailable.setdefault(sig, "no data in the evaluation window")
        return Evidence(
            error_ratio=self.worst("error_ratio"),
            latency_p99=self.worst("latency_p99"),
            latency_baseline=self.normal("latency_p99"),
            availability=self.worst("availability", lowest=True),
            unavailable=unavailable,
        )

    def assess(
        self, rules: MetricRules | None = None, *, health_ok: bool | None = None, pods_ready: int | None = None
    ) -> Assessment:
        """Classify the evidence (with the health endpoint and ready pods, when known) into a level with its reasons."""
        evidence = dataclasses.replace(self.evidence(), health_ok=health_ok, pods_ready=pods_ready)
        return classify(evidence, rules)

    def signal_rows(self, assessment: Assessment | None = None) -> list[dict[str, Any]]:
        """One row per golden signal with machine values: worst, normal, ratio, and the verdict on it.

        The verdict is what the value means, not whether it was read: the level a severity signal
        implies (``P1``), ``below the plan's thresholds``, ``degraded`` availability above the P0
        threshold, ``high`` for saturation at or above 80 % of a limit, ``context`` for traffic, or
        ``could not check: <why>``.
        """
        a = assessment or self.assess()
        implied: dict[str, list[str]] = {}
        for r in a.reasons:
            implied.setdefault(SIGNAL_OF_REASON.get(r.signal, r.signal), []).append(r.level.value)
        rows: list[dict[str, Any]] = []
        shown = (set(self.series) | set(self.unavailable)) & set(GOLDEN_SIGNALS)
        for sig in sorted(shown, key=_order):
            lowest = sig == "availability"
            worst = self.worst(sig, lowest=lowest) if sig in self.series else None
            normal = self.normal(sig) if sig in self.series else None
            ratio = worst / normal if worst is not None and normal else None
            if sig in implied:
                verdict = min(implied[sig])  # "P0" < "P1": the most severe level this signal implies
            elif worst is None:
                why = self.unavailable.get(sig) or a.unavailable.get(sig) or "no data in the evaluation window"
                verdict = f"could not check: {why}"
            elif sig.startswith("saturation_"):
                verdict = f"high (≥ {SATURATED:.0%} of limit)" if worst >= SATURATED else f"below {SATURATED:.0%} of limit"
            elif sig == "request_rate":
                verdict = "context (not a severity signal)"
            elif sig == "latency_p99" and normal is None:
                verdict = "could not compare: no baseline a week earlier"
            elif sig == "availability" and worst < 1.0:
                verdict = "degraded, above the P0 threshold"
            else:
                verdict = "below the plan's thresholds"
            rows.append({"signal": sig, "worst": worst, "normal": normal, "x normal": ratio, "verdict": verdict})
        return rows

    def table(self, rules: MetricRules | None = None) -> pd.DataFrame:
        """The golden signals as people read them: worst and normal in each signal's unit, ratio, verdict."""
        import pandas as pd

        rows = [
            {
                "signal": r["signal"].replace("_", " "),
                "worst (eval window)": signal_value(r["signal"], r["worst"]),
                "normal (week before)": signal_value(r["signal"], r["normal"]),
                "vs normal": units.times(r["x normal"]),
                "verdict": r["verdict"],
            }
            for r in self.signal_rows(self.assess(rules))
        ]
        columns = ["signal", "worst (eval window)", "normal (week before)", "vs normal", "verdict"]
        return pd.DataFrame(rows, columns=columns).set_index("signal")

    def describe(self) -> dict[str, Any]:
        """Source, windows, signals read and unavailable ones, as ``metrics.read`` event data."""
        return {
            "source": self.source,
            "window": [self.start.isoformat(), self.end.isoformat()],
            "evaluation": [self.eval_start.isoformat(), self.eval_end.isoformat()],
            "signals": sorted(self.series),
            "unavailable": self.unavailable,
        }

    def fingerprint(self) -> str:
        """A digest of everything in this reading (windows, every series' values, labels and index, what
        was unavailable): equal fingerprints draw equal figures."""
        import hashlib
        import json

        import numpy as np

        h = hashlib.sha256(json.dumps([self.describe(), self.misconfigured, str(self.baseline_offset)], sort_keys=True).encode())
        for group in (self.series, self.baseline):
            for name in sorted(group):
                s = group[name]
                h.update(json.dumps([name, s.meta(), str(s.frame.index.dtype)], sort_keys=True).encode())  # role, query, window, columns
                h.update(np.ascontiguousarray(s.frame.index.asi8).tobytes())
                h.update(np.ascontiguousarray(s.frame.to_numpy(dtype="float64")).tobytes())
        return h.hexdigest()


def _order(signal: str) -> int:
    return GOLDEN_SIGNALS.index(signal) if signal in GOLDEN_SIGNALS else len(GOLDEN_SIGNALS)


def configured_signals(settings: Settings, *extra: str) -> tuple[str, ...]:
    """The golden signals (and ``extra``) the settings define; one set to null in config is left out."""
    return tuple(s for s in (*GOLDEN_SIGNALS, *extra) if s in settings.signals)


def read_metrics(
    source: SignalSource,
    *,
    signals: tuple[str, ...] = GOLDEN_SIGNALS,
    start: datetime,
    end: datetime,
    eval_end: datetime,
    baseline_offset: timedelta = timedelta(days=7),
    evaluation: timedelta = EVALUATION,
    step_s: float | None = None,
) -> IncidentMetrics:
    """Read ``signals`` over [start, end] and the baseline window, concurrently; never raises for a source."""
    m = IncidentMetrics(source.name, start, end, max(start, eval_end - evaluation), eval_end, baseline_offset)
    b_start, b_end = baseline_window(start, end, baseline_offset)
    got = fetch_all(source, signals, start, end, step_s=step_s)
    base = fetch_all(source, signals, b_start, b_end, step_s=step_s, role="baseline")
    for name in signals:
        cur = got[name]
        if isinstance(cur, ConfigError):
            m.misconfigured[name] = str(cur)
            m.unavailable[name] = f"configuration error: {cur}"
        elif isinstance(cur, SourceUnavailable):
            m.unavailable[name] = str(cur)
        else:
            m.series[name] = cur
        prev = base[name]
        if isinstance(prev, SignalSeries):
            m.baseline[name] = prev
    return m


BROKEN_ROUTE_RATIO = 0.05


def impact(m: IncidentMetrics) -> pd.DataFrame:
    """Plan 2 "assess impact": failed requests per minute, share of traffic affected, broken endpoints."""
    import pandas as pd

    rows: list[tuple[str, str]] = []
    rate, ratio = m.series.get("request_rate"), m.series.get("error_ratio")
    if rate is not None and ratio is not None:
        failed = (rate.total() * ratio.total()).dropna()
        window = failed[(failed.index >= m.eval_start) & (failed.index <= m.eval_end)]
        if not window.empty:
            rows.append(("failed requests per minute (peak)", f"{window.max() * 60:,.0f}"))
            rows.append(("failed requests per minute (mean)", f"{window.mean() * 60:,.0f}"))
        share = m.worst("error_ratio")
        if share is not None:
            rows.append(("share of traffic affected (peak)", f"{share:.1%}"))
    else:
        missing = [s for s in ("request_rate", "error_ratio") if s not in m.series]
        rows.append(("failed requests", f"could not check: no {', '.join(missing)}"))
    by_route = m.series.get("error_ratio_by_route")
    if by_route is None:
        rows.append(("broken endpoints", m.unavailable.get("error_ratio_by_route", "no per-route signal configured")))
    else:
        frame = by_route.frame[(by_route.frame.index >= m.eval_start) & (by_route.frame.index <= m.eval_end)]
        peaks = frame.max().dropna().sort_values(ascending=False)
        broken = [f"{_route(str(col))} ({v:.0%})" for col, v in peaks.items() if v >= BROKEN_ROUTE_RATIO]
        rows.append(("broken endpoints (≥ 5% errors)", ", ".join(broken) or "none"))
    rows.append(("evaluated", f"{m.eval_start:%H:%M}–{m.eval_end:%H:%M} UTC ({m.source})"))
    return pd.DataFrame(rows, columns=["impact", "value"]).set_index("impact")


def _route(column: str) -> str:
    """``{route="/subjects"}`` → ``/subjects``."""
    return column.split("=", 1)[-1].strip('{}"')


# --------------------------------------------------------------------------- reading an incident's metrics

RETROSPECTIVE_AFTER = timedelta(hours=1)


def live_window(
    detected: datetime, now: datetime, lookback: timedelta = timedelta(hours=1)
) -> tuple[datetime, datetime, datetime]:
    """(start, end, evaluate-at) for reading live metrics about an incident.

    While the incident is young (under an hour) the window runs to now and severity is judged on the
    last 15 minutes. Later — a retrospective read — it covers two hours from detection and severity
    is judged on the first 15 minutes after detection, as triage would have seen it.
    """
    if now - detected <= RETROSPECTIVE_AFTER:
        return min(detected - lookback, now - lookback), now, now
    return detected - lookback, min(now, detected + timedelta(hours=2)), detected + EVALUATION


def signal_source(kind: str, record: Record, settings: Settings, environ: Mapping[str, str]) -> SignalSource:
    """``live`` (Prometheus from config) or ``recorded`` (the record's newest snapshots)."""
    if kind == "live":
        from irkit.prom import PrometheusSource

        return PrometheusSource(settings, environ)
    if kind == "recorded":
        return RecordedSource(record.latest_dir(SIGNALS_DIR))
    raise BadInputError(f"metrics source must be 'live' or 'recorded', not {kind!r}")


def read_incident_metrics(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    source: str,
    *,
    now: datetime,
    actor: str,
    lookback: timedelta = timedelta(hours=1),
    on_read: Callable[[IncidentMetrics], None] | None = None,
) -> IncidentMetrics:
    """The golden signals and their baseline for an incident; live readings are snapshotted into the record.

    A source that cannot be reached gives an empty reading that says why (runbooks go on and show it).
    ``on_read`` gets the reading as soon as it is read, before it is snapshotted (a figure can start).
    """
    detected = parse_ts(record.state()["detected_at"])

    def nothing(exc: Exception) -> IncidentMetrics:
        return IncidentMetrics(
            source, detected - lookback, detected, detected, detected, settings.baseline_offset, unavailable={"all": str(exc)}
        )

    try:
        src = signal_source(source, record, settings, environ)
        if isinstance(src, RecordedSource):
            start, end = src.window()
            if record.state().get("replay") and start < now < end:
                end = now  # a replay shows what was known at its moment, not the recording's future
            at = min(end, detected + EVALUATION)
        else:
            start, end, at = live_window(detected, now, lookback)
    except SourceUnavailable as exc:
        return nothing(exc)
    m = read_metrics(src, signals=configured_signals(settings, "error_ratio_by_route"), start=start, end=end, eval_end=at, baseline_offset=settings.baseline_offset)
    if on_read is not None:
        on_read(m)
    if not isinstance(src, RecordedSource):
        snapshot(record, [*m.series.values(), *m.baseline.values()], actor=actor)
    record.append("metrics.read", m.describe(), actor=actor)
    return m


def assess_and_record(
    record: Record,
    reading: IncidentMetrics,
    settings: Settings,
    *,
    actor: str,
    pods_ready: int | None = None,
) -> tuple[Assessment, str | None, str | None, str | None]:
    """Classify severity from a reading (plus the health probe and ready pods) and record it; raise, never lower.

    The health endpoint's latest recorded probe joins the evidence: with no ready pod it is "all pods
    down" (P0). Returns the assessment, the alert's own severity label, the severity before, and what
    changed (or None).
    """
    from irkit.severity import Level

    st = record.state()
    probes = [e["data"] for e in record.events() if e["type"] == "check.recorded" and e["data"].get("item") == "health"]
    health_ok = {"ok": True, "problem found": False}.get(probes[-1]["status"]) if probes else None
    a = reading.assess(settings.severity.metric_rules, health_ok=health_ok, pods_ready=pods_ready)
    label = st.get("alert_severity_label")
    record.append(
        "severity.assessed",
        {
            "level": a.level.value if a.level else None,
            "summary": a.summary(),
            "reasons": [r.as_dict() for r in a.reasons],
            "unavailable": a.unavailable,
            "alert_severity_label": label,
            "source": reading.source,
        },
        actor=actor,
    )
    current = st.get("severity")
    changed = None
    if a.level is not None and (current is None or a.level.rank < Level(current).rank):
        record.set_severity(a.level, actor=actor, reason=f"metrics: {a.summary()}")
        changed = f"severity raised {current or 'unassessed'} → {a.level.value}"
    return a, label, current, changed
