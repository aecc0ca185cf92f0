"""Resolution: the plan's criteria checked with evidence, smoke tests, and the decision they allow.

"Verify metrics back to normal — error rate < 1%, latency at baseline, no active alerts — run smoke
tests, monitor for stability." Each criterion passes, fails, or could not be checked, with the
numbers. An incident moves to *monitoring* when every criterion passes, and to *resolved* when they
have also held over a watch period; a failing or unchecked criterion refuses resolution unless a
person forces it with a reason, which is recorded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from irkit.config import Settings
from irkit.errors import BadInputError, SourceUnavailable
from irkit.events import Event, Status
from irkit.http import Http
from irkit.metrics import IncidentMetrics
from irkit.times import human, parse_ts, rfc3339

if TYPE_CHECKING:
    import pandas as pd

    from irkit.record import Record


@dataclass(frozen=True)
class Criterion:
    """One resolution criterion: passed (True), failed (False) or could not check (None)."""

    name: str
    passed: bool | None
    evidence: str

    @property
    def state(self) -> str:
        """"pass", "FAIL" or "could not check", as the criteria table shows it."""
        return {True: "pass", False: "FAIL", None: "could not check"}[self.passed]


def _window(m: IncidentMetrics, signal: str, start: datetime, end: datetime) -> pd.Series | None:
    s = m.series.get(signal)
    if s is None:
        return None
    total = s.total().dropna()
    return total[(total.index >= start) & (total.index <= end)]


def metric_criteria(m: IncidentMetrics, settings: Settings, start: datetime, end: datetime) -> list[Criterion]:
    """Error rate below the threshold and p99 latency at baseline over [start, end]."""
    res = settings.resolution
    out = []
    err = _window(m, "error_ratio", start, end)
    if err is None or err.empty:
        out.append(
            Criterion(
                f"error rate < {res.error_ratio_below:.0%}",
                None,
                m.unavailable.get("error_ratio", "no error-ratio data in the window"),
            )
        )
    else:
        worst = float(err.max())
        out.append(
            Criterion(
                f"error rate < {res.error_ratio_below:.0%}",
                worst < res.error_ratio_below,
                f"max {worst:.2%} over {start:%H:%M}–{end:%H:%M} UTC ({len(err)} points)",
            )
        )
    lat = _window(m, "latency_p99", start, end)
    base = m.baseline.get("latency_p99")
    name = f"latency at baseline (p99 ≤ {1 + res.latency_tolerance:g}x normal)"
    if lat is None or lat.empty or base is None:
        out.append(Criterion(name, None, m.unavailable.get("latency_p99", "no latency or baseline data")))
    else:
        b = base.total().dropna()
        b = b[(b.index >= start - m.baseline_offset) & (b.index <= end - m.baseline_offset)]
        if b.empty:
            out.append(Criterion(name, None, "no baseline data a week earlier"))
        else:
            normal, worst = float(b.median()), float(lat.max())
            limit = normal * (1 + res.latency_tolerance)
            out.append(
                Criterion(name, worst <= limit, f"max p99 {worst:.3g}s vs normal {normal:.3g}s (limit {limit:.3g}s)")
            )
    return out


def alerts_criterion(active: list[dict[str, Any]] | None, error: str | None = None) -> Criterion:
    """No active alerts for the service."""
    if active is None:
        return Criterion("no active alerts", None, error or "no alert source")
    if active:
        names = ", ".join(sorted({a.get("labels", {}).get("alertname", "?") for a in active}))
        return Criterion("no active alerts", False, f"{len(active)} firing: {names}")
    return Criterion("no active alerts", True, "none firing for the service")


def _matcher_value(value: str) -> str:
    """A label value as a quoted Alertmanager matcher value (backslash and quote escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alertmanager_alerts(url: str, service: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Active, unsilenced alerts with ``service=<service>`` from Alertmanager's v2 API."""
    alerts = Http(timeout_s=timeout_s).get_json(
        f"{url.rstrip('/')}/api/v2/alerts",
        what="Alertmanager",
        params={
            "active": "true",
            "silenced": "false",
            "inhibited": "false",
            "filter": f'service="{_matcher_value(service)}"',
        },
    )
    if not isinstance(alerts, list):
        raise SourceUnavailable(f"Alertmanager answered {str(alerts)[:80]!r}, not a list of alerts")
    return alerts


def recorded_alerts(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Alerts still firing according to the record's own alert events (for replayed incidents)."""
    return [{"labels": a["labels"]} for a in state.get("alerts", {}).values() if a["status"] == "firing"]


def smoke_criteria(settings: Settings, environ: Mapping[str, str]) -> list[Criterion]:
    """Configured HTTP smoke tests and the smoke-test command (``./scripts/smoke-test.sh production``)."""
    res = settings.resolution
    if not res.smoke_tests and not res.smoke_command:
        # The plan runs ./scripts/smoke-test.sh: with none configured that step could not be checked.
        return [Criterion("smoke tests", None, "none configured (resolution.smoke_tests or resolution.smoke_command)")]
    out = []
    for t in res.smoke_tests:
        try:
            reply = Http(timeout_s=t.timeout_s).get(t.url)
            out.append(
                Criterion(
                    f"smoke: {t.name}",
                    reply.status == t.expect_status,
                    f"HTTP {reply.status} (expected {t.expect_status})",
                )
            )
        except SourceUnavailable as exc:
            out.append(Criterion(f"smoke: {t.name}", None, str(exc)))
    if res.smoke_command:
        try:
            proc = subprocess.run(
                list(res.smoke_command),
                capture_output=True,
                text=True,
                timeout=res.smoke_command_timeout_s,
                env=dict(environ),
            )
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
            out.append(
                Criterion(
                    f"smoke: {' '.join(res.smoke_command)[:60]}",
                    proc.returncode == 0,
                    f"exit {proc.returncode}: {tail[0][:160]}",
                )
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.append(Criterion(f"smoke: {res.smoke_command[0]}", None, f"could not run: {exc}"))
    return out


@dataclass
class Decision:
    """What the criteria allow, and what was done."""

    criteria: list[Criterion]
    watched: timedelta
    forced: str = ""
    moved_to: str | None = None
    refused: str = ""
    watch_until: datetime | None = None  # set when this check started a watch
    watching_until: datetime | None = None  # set when the watch is still running (nothing decided)

    @property
    def passed(self) -> bool:
        """True only when every criterion passed; one that could not be checked does not pass."""
        return all(c.passed is True for c in self.criteria)

    def table(self) -> pd.DataFrame:
        """The criteria as a table: name, result and evidence."""
        import pandas as pd

        return pd.DataFrame([{"criterion": c.name, "result": c.state, "evidence": c.evidence} for c in self.criteria])

    def lines(self) -> list[str]:
        """What was decided: the refusal, or the status moved to (and any forcing reason), for display."""
        if self.watching_until:
            return [f"watching: resolution is decided after {self.watching_until:%H:%M} UTC (irkit serve decides then)"]
        if self.refused:
            return [f"resolution refused: {self.refused}"]
        out = [f"status → {self.moved_to}"] if self.moved_to else ["status unchanged"]
        if self.watch_until:
            out.append(f"watch until {self.watch_until:%H:%M} UTC; then irkit serve (or this runbook again) decides")
        if self.forced:
            out.append(f"FORCED despite failing criteria: {self.forced}")
        return out

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<p><b>{escape(line)}</b></p>" for line in self.lines())
        return head + str(self.table().to_html(index=False))

    def __repr__(self) -> str:
        return "\n".join(self.lines())


def decide(criteria: list[Criterion], *, watched: timedelta, watch_required: timedelta, force_reason: str) -> Decision:
    """monitoring when all pass; resolved when they also held for ``watch_required``; else refused."""
    d = Decision(criteria, watched, forced=force_reason.strip())
    failing = [c for c in criteria if c.passed is not True]
    if failing and not d.forced:
        d.refused = "; ".join(f"{c.name}: {c.state} ({c.evidence})" for c in failing)
        return d
    d.moved_to = "resolved" if (d.forced or (watch_required and watched >= watch_required)) else "monitoring"
    return d


def check_resolution(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    source: str,
    *,
    now: Callable[[], datetime],
    actor: str,
    as_of: str = "",
    watch_minutes: float = 0,
    force_reason: str = "",
    key: str = "",
) -> Decision:
    """Check the plan's criteria, record them, and move to monitoring or resolved — or refuse, with the reasons.

    Nothing here waits. Live, the first passing check moves the incident to *monitoring* and names the
    moment its watch ends (at least ``resolution.min_watch``, the plan's 30–60 minutes); a check after
    that moment judges the metrics over the whole watch and resolves, or refuses if they did not hold.
    ``irkit serve`` makes that second check itself. With ``as_of`` or a recording the whole window is in
    the past, so one check decides. A forced resolution needs a reason, which is recorded.
    """
    from irkit.metrics import signal_source

    res = settings.resolution
    forced = force_reason.strip()
    asked = timedelta(minutes=watch_minutes)
    if asked and asked < res.min_watch and not forced:
        raise BadInputError(
            f"watch_minutes {watch_minutes:g} is shorter than the plan's watch ({human(res.min_watch)}, "
            "resolution.min_watch); give a force_reason to resolve anyway"
        )
    watch = max(asked, res.min_watch)
    live = source == "live" and not as_of
    src = signal_source(source, record, settings, environ)
    state = record.state()
    watch_until: datetime | None = None
    if live:
        at = now()
        since = monitoring_since(record.events()) if state["status"] == Status.MONITORING else None
        if since is None:
            start, watched, required = at - res.window, timedelta(0), watch  # first check: monitoring at most
        else:
            watch_until = _watch_end(record.events(), since, res.min_watch)
            start, watched, required = since, at - since, watch_until - since
    else:
        at = parse_ts(as_of) if as_of else src.window()[1]  # type: ignore[attr-defined]
        start = at - max(res.window, asked)
        watched, required = asked, (res.min_watch if asked else timedelta(days=3650))
    if live and watch_until is not None and at < watch_until and not forced:
        decision = Decision([], watched, refused="", watching_until=watch_until)
    else:
        criteria = _criteria(record, settings, environ, src, start, at, live=source == "live")
        decision = decide(criteria, watched=watched, watch_required=required, force_reason=forced)
        if decision.moved_to == "monitoring":
            decision.watch_until = at + watch
    record.append(
        "resolution.checked",
        {
            "as_of": rfc3339(at),
            "source": source,
            "watch_minutes": watch_minutes,
            "criteria": [{"name": c.name, "result": c.state, "evidence": c.evidence} for c in decision.criteria],
            "decision": "watching" if decision.watching_until else (decision.moved_to or "refused"),
            "refused": decision.refused,
            "forced": decision.forced,
            "watch_until": rfc3339(until) if (until := decision.watch_until or decision.watching_until) else None,
            **({"key": key} if key else {}),
        },
        actor=actor,
    )
    if decision.moved_to and decision.moved_to != state["status"]:
        advance_to(record, Status(decision.moved_to), decision, actor=actor)
    return decision


def _criteria(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    src: Any,
    start: datetime,
    at: datetime,
    *,
    live: bool,
) -> list[Criterion]:
    """Every resolution criterion over [start, at]: metrics, alerts, and (live) the smoke tests."""
    from irkit.metrics import read_metrics

    m = read_metrics(
        src,
        signals=("error_ratio", "latency_p99"),
        start=start,
        end=at,
        eval_end=at,
        baseline_offset=settings.baseline_offset,
        evaluation=max(settings.resolution.window, at - start),
    )
    criteria = metric_criteria(m, settings, start, at)
    if live:
        criteria.append(_live_alerts(record, settings, environ))
        criteria += smoke_criteria(settings, environ)
    else:
        criteria.append(alerts_criterion(recorded_alerts(record.state())))
    return criteria


def monitoring_since(events: Sequence[Event]) -> datetime | None:
    """When the incident last entered monitoring (the start of its watch)."""
    moves = [e for e in events if e["type"] == "status.changed" and e["data"].get("to") == Status.MONITORING]
    return parse_ts(moves[-1]["ts"]) if moves else None


def watch_window(events: Sequence[Event], minimum: timedelta) -> tuple[datetime, datetime] | None:
    """(start, end) of the watch of an incident in monitoring, or None when it is not being watched."""
    since = monitoring_since(events)
    if since is None or Status(_status(events)) != Status.MONITORING:
        return None
    return since, _watch_end(events, since, minimum)


def _status(events: Sequence[Event]) -> str:
    moves = [e["data"]["to"] for e in events if e["type"] == "status.changed"]
    return moves[-1] if moves else Status.DETECTED.value


def _watch_end(events: Sequence[Event], since: datetime, minimum: timedelta) -> datetime:
    """The end of the watch that began at ``since``: as the check that started it said, and never shorter than the minimum."""
    named = [
        parse_ts(e["data"]["watch_until"])
        for e in events
        if e["type"] == "resolution.checked" and e["data"].get("watch_until") and e["data"].get("decision") == "monitoring"
    ]
    return max([since + minimum, *[w for w in named if w >= since]])


def _live_alerts(record: Record, settings: Settings, environ: Mapping[str, str]) -> Criterion:
    """"No active alerts" from Alertmanager when configured, else from Prometheus."""
    service = record.state()["service"] or settings.service.name
    try:
        if settings.alertmanager_url:
            return alerts_criterion(alertmanager_alerts(settings.alertmanager_url, service))
        from irkit.prom import PrometheusSource

        return alerts_criterion(PrometheusSource(settings, environ).active_alerts(service))
    except SourceUnavailable as exc:
        return alerts_criterion(None, str(exc))


FORWARD = (Status.DETECTED, Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MONITORING, Status.RESOLVED)


def advance_to(record: Record, target: Status, decision: Decision, *, actor: str) -> None:
    """Move forward along the plan's path to ``target`` (never back through investigating)."""
    reason = "criteria passed" + (f" and held for {human(decision.watched)}" if target == Status.RESOLVED else "")
    if decision.forced:
        reason = f"FORCED: {decision.forced}"
    current = Status(record.state()["status"])
    if current == Status.MITIGATING:
        current = Status.INVESTIGATING  # mitigating → monitoring is the next forward step
    if current not in FORWARD:
        return
    for step in FORWARD[FORWARD.index(current) + 1 : FORWARD.index(target) + 1]:
        record.set_status(step, actor=actor, reason=reason)
