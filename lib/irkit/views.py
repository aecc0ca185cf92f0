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

from irkit import units
from irkit.times import human, parse_ts, stamp

if TYPE_CHECKING:
    from irkit.cluster import ClusterView
    from irkit.config import Settings
    from irkit.events import Event
    from irkit.oncall import RotationSettings, StepState
    from irkit.probes import CheckResult
    from irkit.severity import Assessment, Clocks


def configure_display() -> None:
    """Show evidence whole in runbook tables: pandas cuts cell text at 50 characters by default
    (a rollout's change-cause, a log message, a Kubernetes error), and long tables to 60 rows."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.min_rows", 500)
    pd.set_option("display.max_columns", 50)
    pd.set_option("display.width", 200)


def _markdown_text(text: str) -> str:
    """``text`` shown literally in Markdown: HTML escaped, and every Markdown punctuation mark backslashed."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|~>" else ch for ch in escape(text, quote=False))


class Said(str):
    """What a runbook step did, shown as a sentence (not as a quoted Python string); a list as bullets."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        lines = self.split("\n")
        body = [_markdown_text(line) for line in lines]
        return "\n".join(f"- {b}" for b in body) if len(lines) > 1 else body[0]

    @classmethod
    def each(cls, items: Iterable[str], empty: str) -> Said:
        """Several sentences (one per line, bullets in JupyterLab), or ``empty`` when there are none."""
        items = [str(i) for i in items]
        return cls("\n".join(items) if items else empty)


def summary_table(state: Mapping[str, Any], clocks: Clocks, actor: str, batch: bool, *, known: bool = True) -> Any:
    """A one-column table: id, title, service, severity, status, who is acting, and the clocks."""
    import pandas as pd

    rows: list[tuple[str, str]] = [
        ("incident", state["id"]),
        ("title", state["title"] or "—"),
        ("service", state["service"] or "—"),
        ("severity", state["severity"] or "not yet assessed"),
        ("status", state["status"]),
        (
            "actor",
            f"{actor} ({'batch' if batch else 'interactive'})"
            + ("" if known else " — a login name, not a person: set IRKIT_ACTOR or actor: in irkit.yaml"),
        ),
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

    cols = ["alert", "status", "started", "ended", "summary", "labels", "fingerprint"]
    rows = [
        {
            "alert": d.get("alertname"),
            "status": ev["type"].split(".")[1],
            "started": stamp(d.get("starts_at")),
            "ended": stamp(d.get("ends_at")) if d.get("ends_at") else "—",
            "summary": d.get("annotations", {}).get("summary", ""),
            "labels": ", ".join(f"{k}={v}" for k, v in sorted(d.get("labels", {}).items())),
            "fingerprint": d.get("fingerprint"),
        }
        for ev in events
        if ev["type"] in ("alert.firing", "alert.resolved")
        for d in [ev["data"]]
    ]
    return pd.DataFrame(rows, columns=cols).drop_duplicates("fingerprint", keep="last").set_index("alert")


# File bookkeeping: what was saved where. Kept in the record (and in ``timeline(everything=True)``), not in
# the story a responder reads.
BOOKKEEPING = frozenset({"artifact.added", "notebook.prepared", "notebook.started", "record.repaired", "comms.rendered"})


def timeline_table(events: Iterable[Event], detected: datetime, *, everything: bool = False) -> Any:
    """The incident's story: time (to the second), time since detection, who, what — bookkeeping hidden.

    ``everything`` shows every event, with its type and sequence number, as the record holds it.
    """
    import pandas as pd

    evs = list(events)
    shown = evs if everything else [ev for ev in evs if ev["type"] not in BOOKKEEPING]
    rows = [
        {
            "#": ev["seq"],
            "time": stamp(ev["ts"]),
            "since detection": human(parse_ts(ev["ts"]) - detected),
            "who": ev["actor"],
            "what": describe_event(ev),
            "event": ev["type"],
        }
        for ev in shown
    ]
    return pd.DataFrame(rows, columns=["#", "time", "since detection", "who", "what", "event"]).set_index("#")


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
        return pd.DataFrame({"health": [f"not probed: replaying a recording (live: GET {url})"]}, index=["endpoint"])
    d = result.as_dict()
    row = {
        "status": d["status"],
        "evidence": d["evidence"],
        "latency": units.seconds(d["latency_ms"] / 1000) if d["latency_ms"] is not None else "—",
        "details": say(d["details"]),
    }
    return pd.DataFrame([row], index=[d["name"]])


def log_errors_table(view: ClusterView, patterns: tuple[str, ...] | None = None) -> Any:
    """Error lines in pod log tails grouped by message, or why no logs could be read."""
    import pandas as pd

    if not view.logs:
        reasons = {k: v for k, v in view.unavailable.items() if k.startswith("logs") or k == "pods"}
        return pd.DataFrame({"could not check": [next(iter(reasons.values()), "no pod logs read")]})
    return (view.log_errors(patterns) if patterns else view.log_errors()).table()


# The plan's operations runbooks, shipped with irkit (lib/irkit/operations/, linked from docs/runbooks/operations/).
OPERATIONS_DOCS = {"rollback": "rollback", "scale": "scaling"}


def operations_doc(action: str) -> tuple[str, str] | None:
    """The plan's operations runbook for ``action``: its path as the plan names it, and its text."""
    from importlib.resources import files

    name = OPERATIONS_DOCS.get(action)
    if name is None:
        return None
    text = (files("irkit") / "operations" / f"{name}.md").read_text(encoding="utf-8")
    return f"docs/runbooks/operations/{name}.md", text


@dataclass
class MitigationView:
    """A mitigation as the runbook shows it: plan, dry run, outcome, post-state, next steps."""

    outcome: Any  # irkit.mitigate.Outcome

    def next_steps(self) -> list[str]:
        """What to do next: the action's operations doc, then resolution checks, or how to approve a plan."""
        steps = []
        if doc := operations_doc(self.outcome.plan.action):
            steps.append(f"Follow the operations runbook {doc[0]} (shown below).")
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

        rows = [
            {"field": d["field"], "before": say(d["before"]), "after": say(d["after"])} for d in self.outcome.plan.diff()
        ]  # an env dict reads "DB_POOL_SIZE: 5; CIRCUIT_BREAKER_ENABLED: false", not a Python repr
        return pd.DataFrame(rows or [{"field": "(no change)", "before": "—", "after": "—"}])

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
        if doc := operations_doc(o.plan.action):
            parts.append(
                f"<details><summary>Operations runbook: {escape(doc[0])}</summary>"
                f"<pre style='white-space: pre-wrap'>{escape(doc[1])}</pre></details>"
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
            if not r.new:
                sent = " — unchanged since it was written: not rendered again" + (" nor re-sent" if res is None else "") + sent
            parts.append(
                f"<h4>{escape(r.kind.replace('_', ' '))} <small>{escape(r.path)}{escape(sent)}</small></h4>"
                f"<pre style='background:#f7f7f7;padding:.6em'>{escape(r.text)}</pre>"
            )
        return "".join(parts) or "<p>no messages apply</p>"

    def __repr__(self) -> str:
        return "\n\n".join(
            f"--- {r.kind} ({r.path}{'' if r.new else ', unchanged: not rendered again'})\n{r.text}" for r in self.rendered
        ) or "no messages apply"


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
            {
                "signal": r.signal.replace("_", " "),
                "value": _reason_value(r.signal, r.value),
                "threshold": _reason_threshold(r.signal, r.threshold),
                "implies": r.level.value,
                "reason": r.text,
            }
            for r in self.assessment.reasons
        ]
        rows += [
            {"signal": k.replace("_", " "), "value": "—", "threshold": "—", "implies": "—", "reason": f"could not check: {v}"}
            for k, v in self.assessment.unavailable.items()
        ]
        return pd.DataFrame(rows, columns=["signal", "value", "threshold", "implies", "reason"]).set_index("signal")

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


def _reason_value(signal: str, value: float) -> str:
    if signal == "latency_ratio":
        return units.times(value)
    if signal == "pods ready":
        return units.count(value)
    return units.signal_value(signal, value)


def _reason_threshold(signal: str, threshold: str) -> str:
    """``> 0.1`` → ``> 10 %`` for a ratio signal; other thresholds are already in words."""
    import re

    if signal == "latency_ratio" and threshold[-1:].isdigit():
        return f"{threshold}x normal"
    if units.SIGNAL_UNITS.get(signal) != "percent" or "%" in threshold:
        return threshold
    return re.sub(r"(\d+(?:\.\d+)?)", lambda m: units.percent(float(m.group(1))).replace(".0 %", " %"), threshold)


@dataclass
class PostMortemReport:
    """The rendered post-mortem and its sections as tables, for the runbook."""

    pm: Any  # irkit.postmortem.PostMortem
    markdown: Path
    html: Path

    def timeline(self) -> Any:
        """The post-mortem timeline as a table, with time since the incident started."""
        import pandas as pd

        columns = ["time", "since start", "event", "source"]
        return pd.DataFrame([e.row(self.pm.start) for e in self.pm.timeline], columns=columns).set_index("time")

    def impact(self) -> Any:
        """The impact measures (impact window, failed requests, peak error ratio, …) as a table."""
        import pandas as pd

        return pd.DataFrame(list(self.pm.impact.items()), columns=["measure", "value"]).set_index("measure")

    def verdicts(self) -> Any:
        """Each response measure with its value, target and whether it was met."""
        import pandas as pd

        return pd.DataFrame(
            [{"measure": v.measure, "value": v.value, "target": v.target, "verdict": v.mark} for v in self.pm.verdicts],
            columns=["measure", "value", "target", "verdict"],
        ).set_index("measure")

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


def _first_line(text: object, limit: int = 200) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_event(ev: Event) -> str:
    """One human sentence for an event in a timeline (never a Python repr of its data)."""
    d = ev["data"]
    t = ev["type"]
    action = d.get("action", "")
    described = {
        "incident.opened": lambda: f"opened: {d.get('title') or d.get('id')}"
        + (f" ({d['severity']})" if d.get("severity") else ""),
        "severity.set": lambda: f"severity {d.get('level')}" + (f": {d['reason']}" if d.get("reason") else ""),
        "severity.assessed": lambda: f"metrics assessed: {d.get('summary') or d.get('level') or 'no level'}",
        "status.changed": lambda: f"{d.get('from', '?')} → {d.get('to')}" + (f": {d['reason']}" if d.get("reason") else ""),
        "note": lambda: str(d.get("text", "")),
        "notebook.finished": lambda: f"{d.get('runbook', 'runbook')} run {d.get('summary') or d.get('outcome', '')}: {d.get('path', '')}",
        "notebook.sealed": lambda: f"working copy sealed: {d.get('path')}",
        "run.interrupted": lambda: f"{d.get('runbook', 'runbook')} run interrupted: {d.get('reason') or d.get('path')}",
        "metrics.read": lambda: f"metrics read ({d.get('source', '?')})"
        + (f"; could not read {', '.join(d['unavailable'])}" if d.get("unavailable") else ""),
        "cluster.read": lambda: f"cluster read ({d.get('source', '?')})"
        + (f"; could not read {', '.join(d['unavailable'])}" if d.get("unavailable") else ""),
        "check.recorded": lambda: f"checklist {d.get('title') or d.get('item')}: {d.get('status')} — {_first_line(d.get('evidence'))}",
        "action.planned": lambda: f"{action} planned: {d.get('description') or d.get('target', '')}",
        "action.dry_run": lambda: f"{action} dry run {'passed' if d.get('ok') else 'failed'}: {_first_line(d.get('result'))}",
        "action.approved": lambda: f"{action} approved by {d.get('approved_by')}",
        "action.refused": lambda: f"{action} refused: {d.get('reason')}",
        "action.failed": lambda: f"{action} FAILED: {_first_line(d.get('error'))}",
        "action.executed": lambda: f"{action} executed"
        + (f"; verified: {_first_line(d.get('post_state'))}" if d.get("verified") else "; not verified"),
        "resolution.checked": lambda: f"resolution check: {d.get('decision', '?')}"
        + (f" ({_first_line(d['refused'])})" if isinstance(d.get("refused"), str) and d.get("refused") else ""),
        "comms.rendered": lambda: f"{d.get('kind')} message written",
        "comms.sent": lambda: f"{d.get('kind', 'message')} sent to {d.get('channel')}",
        "comms.failed": lambda: f"{d.get('kind') or d.get('action') or 'message'} NOT delivered to {d.get('channel')}: {_first_line(d.get('error'))}",
        "comms.skipped": lambda: f"{d.get('kind', 'message')} to {d.get('channel')} skipped: {d.get('reason', '')}",
        "escalation.paged": lambda: f"paged {d.get('role')} ({d.get('who', '?')}) via {d.get('channel', '?')}",
        "escalation.unsent": lambda: f"page to {d.get('role')} ({d.get('who', '?')}) NOT sent: {d.get('reason', '')}",
        "update.reminded": lambda: f"stakeholder update reminder to {d.get('who') or d.get('role')}",
        "update.escalated": lambda: f"stakeholder update late: told {d.get('who') or d.get('role')}",
        "postmortem.rendered": lambda: f"post-mortem written: {d.get('markdown', '')}",
        "artifact.added": lambda: f"saved {d.get('kind', 'file')}: {d.get('path')}",
        "notebook.prepared": lambda: f"working copy prepared: {d.get('path')}",
        "notebook.started": lambda: f"{d.get('runbook', 'runbook')} run started: {d.get('path')}",
    }
    if t in described:
        return described[t]().strip()
    if t.startswith("alert."):
        summary = (d.get("annotations") or {}).get("summary")
        return f"alert {d.get('alertname')} {t.split('.')[1]} (since {stamp(d.get('starts_at'))})" + (
            f": {summary}" if summary else ""
        )
    return "; ".join(f"{k}: {say(v)}" for k, v in list(d.items())[:3])


def say(value: Any) -> str:
    """A value as a person reads it: ``yes``/``no``, ``—`` for nothing, lists joined, times to the second."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return stamp(value)
    if isinstance(value, timedelta):
        return human(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {say(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return "; ".join(say(v) for v in value)
    return str(value)


def facts_table(facts: Mapping[str, Any]) -> Any:
    """The facts glued for later runbooks, as a two-column table of readable values."""
    import pandas as pd

    rows = [
        (name.replace("_", " "), stamp(value) if name.endswith("_at") and value else say(value))
        for name, value in facts.items()
    ]
    return pd.DataFrame(rows, columns=["fact", "value"]).set_index("fact")


def ask_name() -> str | None:
    """Ask the responder at the keyboard for their name; None when no one can answer (papermill, no stdin)."""
    try:
        answer = input("Your name for the incident record (or set IRKIT_ACTOR / actor: in irkit.yaml): ")
    except (EOFError, OSError, NotImplementedError, RuntimeError):  # ipykernel's StdinNotImplementedError
        return None  # is a NotImplementedError: papermill and batch kernels have no stdin, nobody to ask
    answer = " ".join(answer.split())[:100]
    return answer or None
