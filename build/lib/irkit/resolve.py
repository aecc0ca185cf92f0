"""Resolution: the plan's criteria checked with evidence, smoke tests, and the decision they allow.

"Verify metrics back to normal — error rate < 1%, latency at baseline, no active alerts — run smoke
tests, monitor for stability." Each criterion passes, fails, or could not be checked, with the
numbers. An incident moves to *monitoring* when every criterion passes, and to *resolved* when they
have also held over a watch period; a failing or unchecked criterion refuses resolution unless a
person forces it with a reason, which is recorded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from irkit.config import Settings
from irkit.errors import SourceUnavailable
from irkit.metrics import IncidentMetrics

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Criterion:
    """One resolution criterion: passed (True), failed (False) or could not check (None)."""

    name: str
    passed: bool | None
    evidence: str

    @property
    def state(self) -> str:
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
    import requests

    try:
        resp = requests.get(
            f"{url.rstrip('/')}/api/v2/alerts",
            params={
                "active": "true",
                "silenced": "false",
                "inhibited": "false",
                "filter": f'service="{_matcher_value(service)}"',
            },
            timeout=timeout_s,
        )
    except requests.exceptions.RequestException as exc:
        raise SourceUnavailable(f"Alertmanager at {url} unreachable ({type(exc).__name__})") from exc
    if resp.status_code != 200:
        raise SourceUnavailable(f"Alertmanager answered HTTP {resp.status_code}")
    alerts: list[dict[str, Any]] = resp.json()
    return alerts


def recorded_alerts(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Alerts still firing according to the record's own alert events (for replayed incidents)."""
    return [{"labels": a["labels"]} for a in state.get("alerts", {}).values() if a["status"] == "firing"]


def smoke_criteria(settings: Settings, environ: Mapping[str, str]) -> list[Criterion]:
    """Configured HTTP smoke tests and the smoke-test command (``./scripts/smoke-test.sh production``)."""
    import requests

    res = settings.resolution
    out = []
    for t in res.smoke_tests:
        try:
            resp = requests.get(t.url, timeout=t.timeout_s)
            out.append(
                Criterion(
                    f"smoke: {t.name}",
                    resp.status_code == t.expect_status,
                    f"HTTP {resp.status_code} (expected {t.expect_status})",
                )
            )
        except requests.exceptions.RequestException as exc:
            out.append(Criterion(f"smoke: {t.name}", None, f"no answer: {type(exc).__name__}"))
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

    @property
    def passed(self) -> bool:
        return all(c.passed is True for c in self.criteria)

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{"criterion": c.name, "result": c.state, "evidence": c.evidence} for c in self.criteria])

    def lines(self) -> list[str]:
        if self.refused:
            return [f"resolution refused: {self.refused}"]
        out = [f"status → {self.moved_to}"] if self.moved_to else ["status unchanged"]
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
