"""What runbooks and the CLI show: tables and rich display objects built from the record and settings.

Nothing here decides or writes; every function takes what it shows and returns a pandas frame or an
object with ``_repr_html_`` (JupyterLab) and ``__repr__`` (a terminal, a batch log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irkit.times import human, parse_ts

if TYPE_CHECKING:
    from irkit.cluster import ClusterView
    from irkit.config import Settings
    from irkit.events import Event
    from irkit.oncall import RotationSettings, StepState
    from irkit.probes import CheckResult
    from irkit.severity import Assessment, Clocks


def summary_table(state: Mapping[str, Any], clocks: Clocks, actor: str, batch: bool) -> Any:
    """A one-column table: id, title, service, severity, status, who is acting, and the clocks."""
    import pandas as pd

    rows: list[tuple[str, str]] = [
        ("incident", state["id"]),
        ("title", state["title"] or "—"),
        ("service", state["service"] or "—"),
        ("severity", state["severity"] or "not yet assessed"),
        ("status", state["status"]),
        ("actor", f"{actor} ({'batch' if batch else 'interactive'})"),
    ]
    rows += [(name, f"{when} {st}".strip()) for name, when, st in clocks.rows()]
    return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")


def policy_table(settings: Settings, severity: str | None) -> Any:
    """What a severity obliges responders to do, straight from the policy."""
    import pandas as pd

    if not severity:
        return pd.DataFrame({"policy": ["severity not yet assessed"]})
    pol = settings.severity[severity]
    rows = {
        "name": pol.name,
        "definition": pol.definition,
        "examples": "; ".join(pol.examples),
        "response time": pol.response_note or "—",
        "resolution target": human(pol.resolution_target) if pol.resolution_target else "backlog",
        "escalation": pol.escalation,
        "stakeholder updates": f"every {human(pol.update_every)}" if pol.update_every else "none required",
        "stakeholder email": "yes" if pol.stakeholder_email else "no",
    }
    return pd.DataFrame({severity: list(rows.values())}, index=list(rows))


def alerts_table(events: Iterable[Event]) -> Any:
    """The alerts recorded for an incident, latest status per alert."""
    import pandas as pd

    cols = ["alert", "status", "starts_at", "ends_at", "summary", "labels", "fingerprint"]
    rows = [
        {
            "alert": d.get("alertname"),
            "status": ev["type"].split(".")[1],
            "starts_at": d.get("starts_at"),
            "ends_at": d.get("ends_at") or "",
            "summary": d.get("annotations", {}).get("summary", ""),
            "labels": ", ".join(f"{k}={v}" for k, v in sorted(d.get("labels", {}).items())),
            "fingerprint": d.get("fingerprint"),
        }
        for ev in events
        if ev["type"] in ("alert.firing", "alert.resolved")
        for d in [ev["data"]]
    ]
    return pd.DataFrame(rows, columns=cols).drop_duplicates("fingerprint", keep="last").reset_index(drop=True)


def timeline_table(events: Iterable[Event], detected: datetime) -> Any:
    """Every event: time, offset from detection, type, actor, a short description."""
    import pandas as pd

    rows = [
        {
            "seq": ev["seq"],
            "ts": ev["ts"],
            "since detection": human(parse_ts(ev["ts"]) - detected),
            "type": ev["type"],
            "actor": ev["actor"],
            "detail": describe_event(ev),
        }
        for ev in events
    ]
    return pd.DataFrame(rows).set_index("seq")


def escalation_table(steps: list[StepState], severity: str | None) -> Any:
    """The escalation ladder now: who should be engaged, who is overdue."""
    import pandas as pd

    if not steps:
        return pd.DataFrame({"escalation": [f"no ladder for severity {severity or 'unassessed'}"]})
    return pd.DataFrame([s.row() for s in steps]).set_index("role")


def on_call_table(rotation: RotationSettings, now: datetime, days: int = 21) -> Any:
    """Who is on call now and the next handovers."""
    import pandas as pd

    from irkit.oncall import handovers, on_call

    oc = on_call(rotation, now)
    rows = [
        {
            "when": "now",
            "primary": oc.primary,
            "secondary": oc.secondary,
            "shift": f"{oc.shift_start:%Y-%m-%d %H:%M %Z} → {oc.shift_end:%Y-%m-%d %H:%M %Z}",
        }
    ]
    rows += [
        {"when": f"{at:%Y-%m-%d %H:%M %Z}", "primary": to, "secondary": oc.secondary, "shift": f"handover from {frm}"}
        for at, frm, to in handovers(rotation, now, now + timedelta(days=days))
    ]
    return pd.DataFrame(rows).set_index("when")


def health_table(result: CheckResult | None, url: str) -> Any:
    """The health endpoint's answer, or why it was not probed (replaying a recording)."""
    import pandas as pd

    if result is None:
        return pd.DataFrame({"health": [f"not probed: replaying a recording (live: GET {url})"]})
    return pd.DataFrame([result.as_dict()]).set_index("name")


def log_errors_table(view: ClusterView, patterns: tuple[str, ...] | None = None) -> Any:
    """Error lines in pod log tails grouped by message, or why no logs could be read."""
    import pandas as pd

    if not view.logs:
        reasons = {k: v for k, v in view.unavailable.items() if k.startswith("logs") or k == "pods"}
        return pd.DataFrame({"could not check": [next(iter(reasons.values()), "no pod logs read")]})
    return (view.log_errors(patterns) if patterns else view.log_errors()).table()


NEXT_STEPS = {
    "rollback": "See docs/runbooks/operations/rollback.md.",
    "scale": "See docs/runbooks/operations/scaling.md.",
}


@dataclass
class MitigationView:
    """A mitigation as the runbook shows it: plan, dry run, outcome, post-state, next steps."""

    outcome: Any  # irkit.mitigate.Outcome

    def next_steps(self) -> list[str]:
        """What to do next: the action's operations doc, then resolution checks, or how to approve a plan."""
        steps = []
        if self.outcome.plan.action in NEXT_STEPS:
            steps.append(NEXT_STEPS[self.outcome.plan.action])
        if self.outcome.status == "executed":
            steps += [
                "Run the resolution runbook: error rate < 1%, latency at baseline, no active alerts, smoke tests.",
                "Monitor for stability (30–60 minutes); watch the dashboards for regressions.",
            ]
        elif self.outcome.status == "planned":
            steps.append("To execute: re-run with approve=True and actor=<your name> (recorded as the approver).")
        return steps

    def plan_table(self) -> Any:
        """The plan's before → after changes as a table ("(no change)" when nothing differs)."""
        import pandas as pd

        return pd.DataFrame(self.outcome.plan.diff() or [{"field": "(no change)", "before": None, "after": None}])

    def _repr_html_(self) -> str:
        o = self.outcome
        parts = [
            f"<h4>{escape(o.plan.action)} → {escape(o.plan.target)}</h4>",
            f"<p>{escape(o.plan.description)}<br><i>cost:</i> {escape(o.plan.cost)}</p>",
            str(self.plan_table().to_html(index=False)),
            f"<p><b>dry run:</b> {escape(o.dry_run or '—')}</p>",
            f"<p><b>outcome:</b> {escape(o.status)}{(' — ' + escape(o.reason)) if o.reason else ''}</p>",
        ]
        if o.post_state:
            parts.append(f"<p><b>post-state:</b> {escape(o.post_state)} (verified: {o.verified})</p>")
        parts.append(
            "<p><b>next steps:</b></p><ul>" + "".join(f"<li>{escape(s)}</li>" for s in self.next_steps()) + "</ul>"
        )
        return "".join(parts)

    def __repr__(self) -> str:
        o = self.outcome
        return f"{o.plan.action}: {o.status} {o.reason}".strip()


@dataclass
class CommsView:
    """Rendered messages and, when sent, what each provider answered."""

    rendered: list[Any]
    results: list[Any]

    def _repr_html_(self) -> str:
        parts = []
        for i, r in enumerate(self.rendered):
            res = self.results[i] if i < len(self.results) else None
            sent = (
                ""
                if res is None
                else (f" — sent via {res.channel} ({res.response_id})" if res.ok else f" — NOT sent: {res.error}")
            )
            parts.append(
                f"<h4>{escape(r.kind)} <small>{escape(r.path)}{escape(sent)}</small></h4>"
                f"<pre style='background:#f7f7f7;padding:.6em'>{escape(r.text)}</pre>"
            )
        return "".join(parts) or "<p>no messages apply</p>"

    def __repr__(self) -> str:
        return "\n\n".join(f"--- {r.kind} ({r.path})\n{r.text}" for r in self.rendered)


@dataclass(frozen=True)
class Assessed:
    """A severity assessment as a runbook shows it: level, reasons, and what changed."""

    assessment: Assessment
    alert_label: str | None
    previous: str | None
    changed: str | None

    def table(self) -> Any:
        """One row per reason (signal, value, threshold, implied level), then one per signal not checked."""
        import pandas as pd

        rows: list[dict[str, Any]] = [
            {"signal": r.signal, "value": r.value, "threshold": r.threshold, "implies": r.level.value, "reason": r.text}
            for r in self.assessment.reasons
        ]
        rows += [
            {"signal": k, "value": None, "threshold": None, "implies": None, "reason": f"could not check: {v}"}
            for k, v in self.assessment.unavailable.items()
        ]
        return pd.DataFrame(rows, columns=["signal", "value", "threshold", "implies", "reason"])

    def lines(self) -> list[str]:
        """What metrics say, the alert's own severity label, and whether the incident's severity changed."""
        out = [f"metrics say: {self.assessment.summary()}", f"alert's own severity label: {self.alert_label or 'none'}"]
        out.append(self.changed or f"incident severity stays {self.previous or 'unassessed'}")
        return out

    def _repr_html_(self) -> str:
        head = "".join(f"<p>{escape(line)}</p>" for line in self.lines())
        return head + str(self.table().to_html(index=False, na_rep="—"))

    def __repr__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class PostMortemReport:
    """The rendered post-mortem and its sections as tables, for the runbook."""

    pm: Any  # irkit.postmortem.PostMortem
    markdown: Path
    html: Path

    def timeline(self) -> Any:
        """The post-mortem timeline as a table, with time since the incident started."""
        import pandas as pd

        return pd.DataFrame([e.row(self.pm.start) for e in self.pm.timeline])

    def impact(self) -> Any:
        """The impact measures (impact window, failed requests, peak error ratio, …) as a table."""
        import pandas as pd

        return pd.DataFrame(list(self.pm.impact.items()), columns=["measure", "value"]).set_index("measure")

    def verdicts(self) -> Any:
        """Each response measure with its value, target and whether it was met."""
        import pandas as pd

        return pd.DataFrame(
            [{"measure": v.measure, "value": v.value, "target": v.target, "verdict": v.mark} for v in self.pm.verdicts]
        )

    def _repr_html_(self) -> str:
        pm = self.pm
        lis = "".join(f"<li>{escape(c)}</li>" for c in pm.candidates) or "<li>none found</li>"
        return (
            f"<p><b>{escape(pm.title)}</b> — {escape(pm.severity or '?')}, {escape(pm.duration)}</p>"
            f"<p>{escape(pm.summary)}</p><p><b>Root-cause candidates:</b></p><ul>{lis}</ul>"
            f"<p>Written: <code>{escape(str(self.markdown))}</code>, <code>{escape(str(self.html))}</code></p>"
        )

    def __repr__(self) -> str:
        return f"post-mortem: {self.markdown} {self.html}"


def describe_event(ev: Event) -> str:
    """A short human line for an event in a timeline."""
    d = ev["data"]
    t = ev["type"]
    if t == "incident.opened":
        return f"opened: {d.get('title')}"
    if t == "severity.set":
        return f"{d.get('level')}: {d.get('reason', '')}"
    if t == "status.changed":
        return f"{d.get('from')} → {d.get('to')} {d.get('reason', '')}".strip()
    if t.startswith("alert."):
        return f"{d.get('alertname')} {t.split('.')[1]} (since {d.get('starts_at')})"
    if t.startswith("notebook."):
        return f"{d.get('runbook', '')} {d.get('path', '')} {d.get('summary', '')}".strip()
    if t == "note":
        return str(d.get("text", ""))
    return ", ".join(f"{k}={v}" for k, v in list(d.items())[:3])
