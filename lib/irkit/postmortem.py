"""The post-incident review, assembled from the record alone.

Every section of the plan's post-mortem template is filled from evidence: the timeline merges the
record's events, the alerts' own start/end times, the rollout history and the moments the signals
show impact starting and ending; impact numbers are computed from the recorded metric series; what
went well or wrong is judged against the severity policy's targets. Because only the record is read
(its ``data/`` snapshots, never a live server), the post-mortem can be rebuilt after Prometheus has
dropped the data. Rendered as Markdown (figures alongside) and as one self-contained HTML file.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from irkit import templating
from irkit.cluster import CLUSTER_DIR, RecordedCluster, capture
from irkit.config import Settings
from irkit.errors import BadInputError, RecordError, SourceUnavailable
from irkit.events import STAKEHOLDER_CHANNELS, Event
from irkit.metrics import IncidentMetrics, read_metrics
from irkit.record import Record, versioned
from irkit.severity import Level
from irkit.sources import SIGNALS_DIR, RecordedSource
from irkit.times import human, parse_ts, stamp

IMPACT_RATIO = 0.01  # the plan's "error rate < 1%" marks normal


@dataclass(frozen=True)
class Entry:
    """One timeline entry: when, what happened, and where that is known from (record, alertmanager, …)."""

    at: datetime
    event: str
    source: str

    def row(self, start: datetime) -> dict[str, str]:
        """The entry as a timeline row, with its time since ``start``."""
        return {
            "time": f"{self.at:%H:%M:%S}",
            "since start": human(self.at - start),
            "event": self.event,
            "source": self.source,
        }


@dataclass(frozen=True)
class Verdict:
    """One response measure (e.g. time to acknowledge) judged against its severity target."""

    measure: str
    value: str
    target: str
    ok: bool | None
    neutral: str = "not recorded"  # what ``ok is None`` means here: "not recorded", "not needed", "not applicable"

    @property
    def mark(self) -> str:
        """"met", "missed", or (neither) what this row's ``neutral`` says, as the post-mortem shows it."""
        return {True: "met", False: "missed"}.get(self.ok, self.neutral)  # type: ignore[arg-type]


@dataclass
class PostMortem:
    """Everything the template needs."""

    incident_id: str
    title: str
    service: str
    severity: str | None
    date: str
    start: datetime
    detected: datetime
    resolved: datetime | None
    summary: str
    timeline: list[Entry]
    root_cause: str
    candidates: list[str]
    contributing: list[str]
    impact: dict[str, str]
    verdicts: list[Verdict]
    went_well: list[str]
    went_wrong: list[str]
    action_items: list[dict[str, str]]
    lessons: list[str]
    review_due: str
    log_excerpts: list[tuple[str, int, str]]
    comms: list[dict[str, str]]
    figures: list[str] = field(default_factory=list)
    metrics: IncidentMetrics | None = field(default=None, repr=False)  # the recorded series, read once

    @property
    def duration(self) -> str:
        """Time from detection to resolution in human form, or "ongoing"."""
        return human(self.resolved - self.detected) if self.resolved else "ongoing"


# --------------------------------------------------------------------------- evidence


def impact_window(m: IncidentMetrics, detected: datetime) -> tuple[datetime | None, datetime | None]:
    """The contiguous stretch of error ratio ≥ 1% that the incident is about.

    The stretch containing detection (or, failing that, the last one that began before detection, or
    the first after it); a blip earlier in the window is not the incident. Ends at the first point
    back below 1%.
    """
    s = m.series.get("error_ratio")
    if s is None:
        return None, None
    ratio = s.total().dropna()
    above = ratio >= IMPACT_RATIO
    runs: list[tuple[Any, Any]] = []
    start = None
    for ts, flag in above.items():
        if flag and start is None:
            start = ts
        elif not flag and start is not None:
            runs.append((start, ts))
            start = None
    if start is not None:
        runs.append((start, None))
    if not runs:
        return None, None
    det = detected
    containing = [r for r in runs if r[0] <= det and (r[1] is None or r[1] > det)]
    before = [r for r in runs if r[0] <= det]
    chosen = (
        containing[0]
        if containing
        else (
            before[-1]
            if before and (det - before[-1][0].to_pydatetime()) <= timedelta(minutes=30)
            else runs[0]
            if runs[0][0] > det
            else before[-1]
        )
    )
    first, end = chosen
    return first.to_pydatetime(), end.to_pydatetime() if end is not None else None


def affected_requests(m: IncidentMetrics, start: datetime, end: datetime) -> float | None:
    """Σ request_rate × error_ratio × step over [start, end]: failed requests during the impact."""
    rate, ratio = m.series.get("request_rate"), m.series.get("error_ratio")
    if rate is None or ratio is None:
        return None
    failed = (rate.total() * ratio.total()).dropna()
    failed = failed[(failed.index >= start) & (failed.index <= end)]
    return float(failed.sum() * rate.step_s)


def _timeline(events: list[Event], view: Any, start_candidates: list[tuple[datetime, str, str]]) -> list[Entry]:
    out = [Entry(at, what, src) for at, what, src in start_candidates]
    for e in events:
        d, t, ts = e["data"], e["type"], parse_ts(e["ts"])
        if t == "incident.opened":
            out.append(Entry(ts, f"Incident {d.get('id')} opened ({d.get('source', 'manual')})", "record"))
        elif t == "alert.firing":
            out.append(Entry(parse_ts(d["starts_at"]), f"Alert fired: {d.get('alertname')}", "alertmanager"))
        elif t == "alert.resolved":
            end = parse_ts(d["ends_at"]) if d.get("ends_at") else ts
            out.append(Entry(end, f"Alert resolved: {d.get('alertname')}", "alertmanager"))
        elif t == "status.changed":
            to = d.get("to")
            label = {
                "acknowledged": f"On-call acknowledged ({e['actor']})",
                "investigating": "Investigation started",
                "mitigating": "Mitigation started",
                "monitoring": "Monitoring",
                "resolved": "Resolved: monitoring confirmed stable",
                "reviewed": "Post-incident review held",
            }.get(to, f"Status → {to}")
            out.append(
                Entry(
                    ts,
                    label + (f" — {d['reason']}" if d.get("reason") and to not in ("acknowledged",) else ""),
                    "record",
                )
            )
        elif t == "severity.set":
            out.append(Entry(ts, f"Severity {d.get('level')}: {d.get('reason', '')}", "record"))
        elif t == "notebook.finished":
            out.append(Entry(ts, f"Runbook {d.get('runbook')}: {d.get('summary')}", "runbook"))
        elif t == "check.recorded" and d.get("status") == "problem found":
            out.append(Entry(ts, f"Check — {d.get('title')}: {d.get('evidence', '')}", e["actor"]))
        elif t == "action.executed":
            out.append(Entry(ts, f"Mitigation executed: {d.get('action')} (verified: {d.get('verified')})", e["actor"]))
        elif t == "action.planned":
            out.append(Entry(ts, f"Mitigation planned: {d.get('description')}", e["actor"]))
        elif t == "action.refused":
            out.append(Entry(ts, f"Mitigation refused: {d.get('reason')}", e["actor"]))
        elif t == "comms.sent":
            out.append(Entry(ts, f"Message sent: {d.get('kind')} via {d.get('channel')}", e["actor"]))
        elif t == "escalation.paged":
            out.append(Entry(ts, f"Escalated to {d.get('role')} ({d.get('who')})", e["actor"]))
    if view is not None:
        first = min((x.at for x in out), default=None)
        for c in view.changes():
            if first is None or first - timedelta(hours=6) <= c.at:
                out.append(Entry(c.at, f"Deploy: {c.what}", "kubernetes"))
    return sorted(out, key=lambda x: x.at)


def _candidates(view: Any, impact_start: datetime | None, events: list[Event]) -> list[str]:
    out = []
    if view is not None and impact_start is not None:
        for c in view.recent_changes(impact_start, timedelta(hours=6)):
            minutes = (impact_start - c.at).total_seconds() / 60
            kind = "deployment revision" if c.kind == "rollout" else "Helm release"
            out.append(
                f"{kind} {c.revision} at {c.at:%H:%M} UTC preceded the error spike by {minutes:.0f} minutes ({c.what})"
            )
    for e in events:
        if (
            e["type"] == "check.recorded"
            and e["data"].get("status") == "problem found"
            and e["data"].get("item") in ("error_logs", "database", "redis", "sentry")
        ):
            out.append(f"{e['data'].get('title')}: {e['data'].get('evidence')}")
    return out


def communication_log(record: Record, events: list[Event]) -> list[dict[str, str]]:
    """One row per message written: when, what kind, its first line, and what became of it (sent where, or why not)."""
    rows: dict[str, dict[str, str]] = {}
    for e in events:
        d = e["data"]
        if e["type"] == "comms.rendered" and d.get("path"):
            try:
                text = record.resolve_artifact(d["path"]).read_text(encoding="utf-8", errors="replace")
            except (OSError, RecordError):
                text = ""
            first = next((line.strip() for line in text.splitlines() if line.strip()), "(empty)")
            rows[d["path"]] = {
                "time": stamp(e["ts"]),
                "kind": str(d.get("kind", "")).replace("_", " "),
                "message": first if len(first) <= 160 else first[:159] + "…",
                "delivery": "written, not sent",
                "path": d["path"],
            }
        elif e["type"] in ("comms.sent", "comms.failed", "comms.skipped") and d.get("path") in rows:
            row = rows[d["path"]]
            said = {
                "comms.sent": f"sent via {d.get('channel')} at {stamp(e['ts'])}",
                "comms.failed": f"NOT sent via {d.get('channel')}: {d.get('error', '')}",
                "comms.skipped": f"skipped ({d.get('channel')}): {d.get('reason', '')}",
            }[e["type"]]
            row["delivery"] = said if row["delivery"] == "written, not sent" else f"{row['delivery']}; {said}"
    return list(rows.values())


def build(
    record: Record,
    settings: Settings,
    *,
    root_cause: str = "",
    action_items: list[dict[str, Any]] | None = None,
    contributing: list[str] | None = None,
    lessons: list[str] | None = None,
    title: str = "",
) -> PostMortem:
    """Assemble the post-mortem for ``record`` from its events and snapshots."""
    st = record.state()
    events = record.events()
    detected = parse_ts(st["detected_at"])
    times = st["status_times"]
    acked = parse_ts(times["acknowledged"]) if times.get("acknowledged") else None
    # Time to mitigate counts an EXECUTED mitigation only: a plan, a dry run or a status change is not one.
    mitigated = next((parse_ts(e["ts"]) for e in events if e["type"] == "action.executed"), None)
    planned = [e["data"] for e in events if e["type"] == "action.planned"]
    resolved = parse_ts(times["resolved"]) if times.get("resolved") else None
    src = RecordedSource(record.latest_dir(SIGNALS_DIR))
    try:
        w_start, w_end = src.window()
        m = read_metrics(src, start=w_start, end=w_end, eval_end=w_end, baseline_offset=settings.baseline_offset)
    except SourceUnavailable as exc:  # no recordings: the post-mortem still has the timeline and verdicts
        m = IncidentMetrics(
            "recorded",
            detected,
            detected,
            detected,
            detected,
            settings.baseline_offset,
            unavailable={"all": f"no recorded metric series in this record: {exc}"},
        )
    impact_start, impact_end = impact_window(m, detected)
    cluster_dir = record.latest_dir(CLUSTER_DIR)
    view = capture(RecordedCluster(cluster_dir)) if (cluster_dir / "meta.json").is_file() else None
    marks = []
    if impact_start:
        marks.append((impact_start, "Error ratio above 1%: impact began", "metrics"))
    if impact_end:
        marks.append((impact_end, "Error ratio back below 1%: service restored", "metrics"))
    timeline = _timeline(events, view, marks)
    start = min([detected, *(x for x in (impact_start,) if x)])
    level = Level(st["severity"]) if st.get("severity") else None
    policy = settings.severity
    # ---- impact
    impact: dict[str, str] = {}
    if impact_start:
        end = impact_end or resolved or m.end
        failed = affected_requests(m, impact_start, end)
        ratio = m.series["error_ratio"].total().dropna()
        window = ratio[(ratio.index >= impact_start) & (ratio.index <= end)]
        impact["impact window"] = f"{impact_start:%H:%M}–{end:%H:%M} UTC ({human(end - impact_start)})"
        if failed is not None:
            impact["affected requests (failed)"] = f"{failed:,.0f}"
        impact["peak error ratio"] = f"{window.max():.1%}"
        impact["mean error ratio"] = f"{window.mean():.1%}"
        if "request_rate" in m.series:
            total = m.series["request_rate"].total().dropna()
            total = total[(total.index >= impact_start) & (total.index <= end)]
            if failed is not None and not total.empty:
                impact["share of requests failed"] = (
                    f"{failed / float(total.sum() * m.series['request_rate'].step_s):.1%}"
                )
    else:
        impact["affected requests"] = m.unavailable.get("all", "no error-ratio impact found in the recorded series")
    impact["duration (detected → resolved)"] = human(resolved - detected) if resolved else "ongoing"
    # ---- verdicts against the policy
    verdicts: list[Verdict] = []
    missed_updates: list[str] = []
    if level is not None:
        pol = policy[level]
        if impact_start:
            verdicts.append(
                Verdict(
                    "time to detect",
                    human(detected - impact_start),
                    "≤ 5m (plan: 0–5 minutes)",
                    detected - impact_start <= timedelta(minutes=5),
                )
            )
        if pol.response_time is not None:
            verdicts.append(
                Verdict(
                    "time to acknowledge (response)",
                    human(acked - detected) if acked else "never",
                    f"≤ {human(pol.response_time)}",
                    (acked - detected) <= pol.response_time if acked else False,
                )
            )
        if mitigated is not None:
            verdicts.append(Verdict("time to mitigate", human(mitigated - detected), "no target in the plan", None, "no target"))
        else:
            what = (
                f"planned, never executed ({', '.join(sorted({str(p.get('action')) for p in planned}))})"
                if planned
                else "no mitigation executed"
            )
            verdicts.append(Verdict("time to mitigate", what, "no target in the plan", None, "not applicable"))
        if pol.resolution_target is not None:
            ok = (resolved - detected) <= pol.resolution_target if resolved else None
            verdicts.append(
                Verdict(
                    "time to resolve (SLA)",
                    human(resolved - detected) if resolved else "not resolved",
                    f"≤ {human(pol.resolution_target)}",
                    ok,
                )
            )
        from irkit.oncall import ladder

        end = resolved or parse_ts(st["last_event_at"])
        for step in ladder(settings.escalation, settings.rotation, st, events, end):
            ok = (
                True
                if step.state.startswith("engaged") and "late" not in step.state
                else (False if step.state.startswith(("missed", "OVERDUE")) or "late" in step.state else None)
            )
            neutral = "not needed" if step.state.startswith("not needed") else "not recorded"
            verdicts.append(Verdict(f"escalation: {step.role}", step.state, f"by {step.due_at:%H:%M} UTC", ok, neutral))
        if pol.update_every is not None:
            updates = [
                parse_ts(e["ts"])
                for e in events
                if e["type"] == "comms.sent" and e["data"].get("channel") in STAKEHOLDER_CHANNELS
            ]
            missed = policy.missed_updates(level, detected, updates, end)
            verdicts.append(
                Verdict(
                    "stakeholder updates",
                    f"{len(updates)} sent; {len(missed)} missed" if missed else f"{len(updates)} sent, each in time",
                    f"every {human(pol.update_every)}",
                    not missed,
                )
            )
            missed_updates = [
                f"stakeholder update due {due:%H:%M} UTC " + (f"sent late at {late:%H:%M}" if late else "never sent")
                for due, late in missed
            ]
    else:
        missed_updates = []
    sla = next((v for v in verdicts if v.measure.startswith("time to resolve")), None)
    impact["response target"] = next((v.mark for v in verdicts if v.measure.startswith("time to acknowledge")), "—")
    impact["resolution target (SLA)"] = "breached" if sla and sla.ok is False else ("met" if sla and sla.ok else "—")
    well = [f"{v.measure}: {v.value} ({v.target})" for v in verdicts if v.ok is True]
    # Missed updates are listed one by one below, not also as their summary row.
    wrong = [f"{v.measure}: {v.value} (target {v.target})" for v in verdicts if v.ok is False and v.measure != "stakeholder updates"]
    wrong += missed_updates
    wrong += [f"unchecked at the end: {r['item']}" for r in _unchecked(events)]
    refused = [e["data"].get("reason", "") for e in events if e["type"] == "action.refused"]
    wrong += [f"mitigation refused: {r}" for r in refused]
    review = policy.review_due(level, resolved) if (level and resolved) else None
    review_text = (
        f"{review[0]:%Y-%m-%d %H:%M} – {review[1]:%Y-%m-%d %H:%M} UTC"
        if review
        else "not required"
        if level == Level.P4
        else "after resolution"
    )
    candidates = _candidates(view, impact_start, events)
    summary = (
        f"{st['service']} ({settings.service.component}) {'was' if resolved else 'is'} degraded: "
        f"{impact.get('peak error ratio', 'unknown')} peak errors"
        + (
            f", {impact['affected requests (failed)']} failed requests"
            if "affected requests (failed)" in impact
            else ""
        )
        + f". Detected {detected:%H:%M} UTC by alert, {'resolved after ' + human(resolved - detected) if resolved else 'not yet resolved'}."
        + (
            f" Root cause: {root_cause}"
            if root_cause
            else (f" Leading candidate: {candidates[0]}." if candidates else "")
        )
    )
    logs = []
    if view is not None and view.logs:
        errors = (
            view.log_errors(settings.kubernetes.log_patterns or ())
            if settings.kubernetes.log_patterns
            else view.log_errors()
        )
        logs = [(msg, n, errors.examples.get(msg, "")) for msg, n in errors.top[:5]]
    comms = communication_log(record, events)
    return PostMortem(
        incident_id=st["id"],
        title=title or st["title"] or st["id"],
        service=st["service"] or "",
        severity=st["severity"],
        date=f"{detected:%Y-%m-%d}",
        start=start,
        detected=detected,
        resolved=resolved,
        summary=summary,
        timeline=timeline,
        root_cause=root_cause or "not yet written — see the candidates below",
        candidates=candidates,
        contributing=list(contributing or []),
        impact=impact,
        verdicts=verdicts,
        went_well=well,
        went_wrong=wrong,
        action_items=[{k: str(v) for k, v in item.items()} for item in (action_items or [])],
        lessons=list(lessons or []),
        review_due=review_text,
        log_excerpts=logs,
        comms=comms,
        metrics=m,
    )


def _unchecked(events: list[Event]) -> list[dict[str, Any]]:
    from irkit.checklist import checklist_rows

    rows = checklist_rows(events)
    if not any(e["type"] == "check.recorded" for e in events):
        return []
    return [r for r in rows if r["status"] in ("unchecked", "awaiting a human")]


# --------------------------------------------------------------------------- rendering


def figures(record: Record, pm: PostMortem, settings: Settings, *, actor: str) -> list[str]:
    """Plots from the recorded series with the incident window shaded and events marked (sealed)."""
    from irkit.plots import Marker, golden_signals_figure, png_bytes, signal_figure

    m = pm.metrics
    if m is None or not m.series:
        return []
    end = m.end
    kinds = {
        "Alert fired": ("alert", "alert"),
        "Mitigation": ("mitigation", "mitigation"),
        "Deploy: revision": ("deploy", "deploy"),
        "Error ratio back below": ("resolved", "restored"),
        "Resolved": ("resolved", "resolved"),
    }
    markers = []
    for e in pm.timeline:
        for prefix, (kind, label) in kinds.items():
            if e.event.startswith(prefix):
                markers.append(Marker(e.at, label, kind))
    window = (pm.start, pm.resolved or end)
    out = []
    for name, fig in (
        (
            "postmortem-golden-signals",
            golden_signals_figure(
                m, service=pm.service, window=window, markers=markers, rules=settings.severity.metric_rules
            ),
        ),
        (
            "postmortem-error-ratio",
            signal_figure(
                m,
                "error_ratio",
                service=pm.service,
                window=window,
                markers=markers,
                rules=settings.severity.metric_rules,
            ),
        ),
    ):
        out.append(record.seal_one(f"figures/{name}.png", png_bytes(fig), actor=actor, kind="figure"))
    return out


def render(record: Record, pm: PostMortem, *, actor: str) -> tuple[Path, Path]:
    """Write ``postmortem.md`` and a self-contained ``postmortem.html``; seal both and the figures."""
    images = {rel: base64.b64encode((record.path / rel).read_bytes()).decode() for rel in pm.figures}
    ctx = {
        "pm": pm,
        "rows": [e.row(pm.start) for e in pm.timeline],
        "images": images,
        "generated": stamp(record.clock()),
    }
    md = templating.render("postmortem.md.j2", "markdown", **ctx)
    html = templating.render("postmortem.html.j2", "html", **ctx)
    files = {"postmortem.md": md.encode(), "postmortem.html": html.encode()}
    md_rel, html_rel = record.seal(
        lambda n: {versioned(name, n): data for name, data in files.items()}, actor=actor, kind="postmortem"
    )
    return record.path / md_rel, record.path / html_rel


ACTION_ITEM_KEYS = ("item", "owner", "due", "priority")


def load_action_items(path: Path) -> list[dict[str, Any]]:
    """Action items from YAML: a list of {item, owner, due, priority}."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"{path}: cannot read action items: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise BadInputError(f"{path}: expected a list of {{item, owner, due, priority}}")
    for d in data:
        unknown = set(d) - set(ACTION_ITEM_KEYS)
        if unknown or "item" not in d:
            raise BadInputError(f"{path}: action item {d!r}: needs 'item'; allowed keys {ACTION_ITEM_KEYS}")
    return [{k: str(v) for k, v in d.items()} for d in data]


def write(
    record: Record,
    settings: Settings,
    *,
    actor: str,
    root_cause: str = "",
    action_items: list[dict[str, Any]] | None = None,
    action_items_file: str = "",
    contributing: list[str] | None = None,
    lessons: list[str] | None = None,
    title: str = "",
) -> tuple[PostMortem, Path, Path]:
    """Build, plot and render the post-mortem from the record, and record ``postmortem.rendered``."""
    items = list(action_items or [])
    if action_items_file:
        items += load_action_items(Path(action_items_file))
    pm = build(
        record,
        settings,
        root_cause=root_cause,
        action_items=items,
        contributing=contributing,
        lessons=lessons,
        title=title,
    )
    pm.figures = figures(record, pm, settings, actor=actor)
    md, html = render(record, pm, actor=actor)
    record.append(
        "postmortem.rendered",
        {
            "markdown": md.relative_to(record.path).as_posix(),
            "html": html.relative_to(record.path).as_posix(),
            "root_cause_given": bool(root_cause),
            "action_items": len(items),
        },
        actor=actor,
    )
    return pm, md, html
