"""The runbook-facing handle on one incident: its record, settings, actor and clocks.

A runbook's first code cell builds a :class:`Session` from its papermill parameters; every later cell
calls one method and displays what it returns. The kernel is an entry point, so this is where the
kernel's environment is read (actor, batch flag, secrets) — nowhere deeper.

Batch runs (started from alerts, ``IRKIT_BATCH=1``) observe and record but never act for a human:
they do not acknowledge, and (in later runbooks) never execute mitigations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irkit.cluster import CLUSTER_DIR, OBJECTS, ClusterSource, ClusterView, RecordedCluster, capture
from irkit.cluster import snapshot as cluster_snapshot
from irkit.config import Settings, load_config
from irkit.errors import BadInputError, SourceUnavailable
from irkit.metrics import EVALUATION, GOLDEN_SIGNALS, IncidentMetrics, read_metrics
from irkit.record import Clock, Event, Record, ReplayClock, Status, parse_ts, rfc3339, utcnow
from irkit.severity import Assessment, Level, SeverityPolicy
from irkit.sources import SIGNALS_DIR, RecordedSource, SignalSource, snapshot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from irkit.plots import Marker


@dataclass(frozen=True)
class Clocks:
    """The policy clocks of an incident at a moment ``now``."""

    now: datetime
    severity: Level | None
    detected_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    response_due: datetime | None
    resolution_due: datetime | None
    next_update_due: datetime | None
    review_due: tuple[datetime, datetime] | None

    @property
    def response_overdue(self) -> bool:
        """No acknowledgement and the response target has passed (or it was acknowledged late)."""
        if self.response_due is None:
            return False
        return (self.acknowledged_at or self.now) > self.response_due

    @property
    def resolution_overdue(self) -> bool:
        if self.resolution_due is None:
            return False
        return (self.resolved_at or self.now) > self.resolution_due

    @property
    def update_overdue(self) -> bool:
        return self.resolved_at is None and self.next_update_due is not None and self.now > self.next_update_due

    def rows(self) -> list[tuple[str, str, str]]:
        """(clock, when, state) rows for tables and ``irkit show``."""

        def fmt(dt: datetime | None) -> str:
            return rfc3339(dt) if dt else "—"

        def state(due: datetime | None, overdue: bool, done: datetime | None) -> str:
            if due is None:
                return "no target"
            if overdue:
                return "OVERDUE" if done is None else "missed"
            return "met" if done is not None else f"due in {_human(due - self.now)}"

        rows = [
            ("detected", fmt(self.detected_at), ""),
            (
                "response due",
                fmt(self.response_due),
                state(self.response_due, self.response_overdue, self.acknowledged_at),
            ),
            (
                "resolution due",
                fmt(self.resolution_due),
                state(self.resolution_due, self.resolution_overdue, self.resolved_at),
            ),
        ]
        if self.resolved_at is None:
            rows.append(
                ("next update due", fmt(self.next_update_due), state(self.next_update_due, self.update_overdue, None))
            )
        if self.review_due:
            rows.append(("review window", f"{fmt(self.review_due[0])} .. {fmt(self.review_due[1])}", ""))
        return rows


def _human(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 0:
        return "0m"
    days, rem = divmod(secs, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m"


def compute_clocks(state: Mapping[str, Any], policy: SeverityPolicy, now: datetime) -> Clocks:
    """Response, resolution, update and review clocks from the record's state and the policy."""
    level = Level(state["severity"]) if state.get("severity") else None
    detected = parse_ts(state["detected_at"])
    times = state.get("status_times", {})
    acked = parse_ts(times["acknowledged"]) if times.get("acknowledged") else None
    # A reopened incident (resolved → investigating) is not resolved, whatever it once was.
    closed = state.get("status") in (Status.RESOLVED.value, Status.REVIEWED.value)
    resolved = parse_ts(times["resolved"]) if times.get("resolved") and closed else None
    last_update = parse_ts(state["last_update_at"]) if state.get("last_update_at") else None
    if level is None:
        return Clocks(now, None, detected, acked, resolved, None, None, None, None)
    return Clocks(
        now=now,
        severity=level,
        detected_at=detected,
        acknowledged_at=acked,
        resolved_at=resolved,
        response_due=policy.response_due(level, detected),
        resolution_due=policy.resolution_due(level, detected),
        next_update_due=policy.next_update_due(level, detected, last_update),
        review_due=policy.review_due(level, resolved) if resolved else None,
    )


RETROSPECTIVE_AFTER = timedelta(hours=1)
PLAN_KINDS = ("deployment", "replicasets", "helm-releases")  # what mitigations plan against (no logs)


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


class Session:
    """One incident as a runbook sees it."""

    def __init__(
        self,
        record: Record,
        settings: Settings,
        *,
        actor: str,
        batch: bool,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utcnow,
    ):
        self.record = record
        self.settings = settings
        self.actor = actor
        self.batch = batch
        self.environ = dict(environ or {})
        self.clock = clock
        self._views: dict[str, ClusterView] = {}

    @classmethod
    def from_parameters(
        cls,
        incident_id: str,
        records_dir: str = "reports",
        config_path: str = "irkit.yaml",
        environ: Mapping[str, str] | None = None,
    ) -> Session:
        """Build from a runbook's papermill parameters and the kernel's environment."""
        from irkit.runner import default_actor

        env = dict(os.environ if environ is None else environ)
        settings = load_config(config_path, env)
        clock: Clock = ReplayClock(parse_ts(env["IRKIT_CLOCK"])) if env.get("IRKIT_CLOCK") else utcnow
        record = Record.open(records_dir, incident_id, clock=clock, **settings.record_options(env))
        return cls(
            record, settings, actor=default_actor(env), batch=env.get("IRKIT_BATCH") == "1", environ=env, clock=clock
        )

    # ---- reading

    def state(self) -> dict[str, Any]:
        return self.record.state()

    def clocks(self) -> Clocks:
        return compute_clocks(self.state(), self.settings.severity, self.clock())

    def summary(self) -> Any:
        """A one-column table: id, title, service, severity, status, who is acting, and the clocks."""
        import pandas as pd

        st = self.state()
        rows: list[tuple[str, str]] = [
            ("incident", st["id"]),
            ("title", st["title"] or "—"),
            ("service", st["service"] or "—"),
            ("severity", st["severity"] or "not yet assessed"),
            ("status", st["status"]),
            ("actor", f"{self.actor} ({'batch' if self.batch else 'interactive'})"),
        ]
        rows += [(name, f"{when} {state}".strip()) for name, when, state in self.clocks().rows()]
        return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")

    def policy(self) -> Any:
        """What the current severity obliges us to do, straight from the policy."""
        import pandas as pd

        st = self.state()
        if not st.get("severity"):
            return pd.DataFrame({"policy": ["severity not yet assessed"]})
        pol = self.settings.severity[st["severity"]]
        return pd.DataFrame(
            {
                st["severity"]: [
                    pol.name,
                    pol.definition,
                    "; ".join(pol.examples),
                    pol.response_note or "—",
                    _human(pol.resolution_target) if pol.resolution_target else "backlog",
                    pol.escalation,
                    f"every {_human(pol.update_every)}" if pol.update_every else "none required",
                    "yes" if pol.stakeholder_email else "no",
                ]
            },
            index=[
                "name",
                "definition",
                "examples",
                "response time",
                "resolution target",
                "escalation",
                "stakeholder updates",
                "stakeholder email",
            ],
        )

    def alerts(self) -> Any:
        """The alerts recorded for this incident, latest status per alert."""
        import pandas as pd

        rows = []
        for ev in self.events("alert.firing", "alert.resolved"):
            d = ev["data"]
            rows.append(
                {
                    "alert": d.get("alertname"),
                    "status": ev["type"].split(".")[1],
                    "starts_at": d.get("starts_at"),
                    "ends_at": d.get("ends_at") or "",
                    "summary": d.get("annotations", {}).get("summary", ""),
                    "labels": ", ".join(f"{k}={v}" for k, v in sorted(d.get("labels", {}).items())),
                    "fingerprint": d.get("fingerprint"),
                }
            )
        df = pd.DataFrame(rows, columns=["alert", "status", "starts_at", "ends_at", "summary", "labels", "fingerprint"])
        return df.drop_duplicates("fingerprint", keep="last").reset_index(drop=True)

    def events(self, *types: str) -> list[Event]:
        evs = self.record.events()
        return [e for e in evs if not types or e["type"] in types]

    def timeline(self) -> Any:
        """Every event so far: time, offset from detection, type, actor, a short description."""
        import pandas as pd

        detected = parse_ts(self.state()["detected_at"])
        rows = []
        for ev in self.record.events():
            ts = parse_ts(ev["ts"])
            rows.append(
                {
                    "seq": ev["seq"],
                    "ts": ev["ts"],
                    "since detection": _human(ts - detected),
                    "type": ev["type"],
                    "actor": ev["actor"],
                    "detail": describe_event(ev),
                }
            )
        return pd.DataFrame(rows).set_index("seq")

    # ---- acting (each writes an event; batch runs never act for a human)

    def acknowledge(self) -> str:
        """Acknowledge the incident (plan step 1.1) unless this is a batch run or it is already done."""
        status = self.state()["status"]
        if self.batch:
            return "batch run: acknowledgement is left to the on-call responder"
        if status != Status.DETECTED.value:
            return f"already acknowledged (status {status})"
        self.record.set_status(Status.ACKNOWLEDGED, actor=self.actor, reason="acknowledged in triage runbook")
        return f"acknowledged by {self.actor}"

    def begin_investigation(self) -> str:
        """Move an acknowledged incident to investigating (plan step 1.4)."""
        status = self.state()["status"]
        if status == Status.ACKNOWLEDGED.value:
            self.record.set_status(Status.INVESTIGATING, actor=self.actor, reason="triage complete")
            return "status: investigating"
        return f"status stays {status}"

    def set_severity(self, level: Level | str, reason: str) -> str:
        """Record a severity assessment, with the reason that decided it."""
        self.record.set_severity(level, actor=self.actor, reason=reason)
        return f"severity {Level(level).value}: {reason}"

    def note(self, text: str) -> str:
        self.record.note(text, actor=self.actor)
        return "noted"

    # ---- metrics (plan 1.3 "assess severity", 2 "check metrics")

    def signal_source(self, kind: str) -> SignalSource:
        """``live`` (Prometheus from config) or ``recorded`` (this record's snapshots)."""
        if kind == "live":
            from irkit.prom import PrometheusSource

            return PrometheusSource(self.settings, self.environ)
        if kind == "recorded":
            return RecordedSource(self.record.latest_dir(SIGNALS_DIR))
        raise BadInputError(f"metrics source must be 'live' or 'recorded', not {kind!r}")

    def _no_metrics(self, source: str, detected: datetime, lookback: timedelta, exc: Exception) -> IncidentMetrics:
        """An empty reading that says why nothing could be read (runbooks go on and show it)."""
        return IncidentMetrics(
            source,
            detected - lookback,
            detected,
            detected,
            detected,
            self.settings.baseline_offset,
            unavailable={"all": str(exc)},
        )

    def metrics(self, source: str = "live", *, lookback: timedelta = timedelta(hours=1)) -> IncidentMetrics:
        """Read the golden signals and their baseline; live readings are snapshotted into the record."""
        detected = parse_ts(self.state()["detected_at"])
        try:
            src = self.signal_source(source)
        except SourceUnavailable as exc:
            return self._no_metrics(source, detected, lookback, exc)
        if isinstance(src, RecordedSource):
            try:
                start, end = src.window()
            except SourceUnavailable as exc:
                return self._no_metrics(source, detected, lookback, exc)
            at = min(end, detected + EVALUATION)
        else:
            start, end, at = live_window(detected, self.clock(), lookback)
        signals = tuple(s for s in (*GOLDEN_SIGNALS, "error_ratio_by_route") if s in self.settings.signals)
        m = read_metrics(
            src, signals=signals, start=start, end=end, eval_end=at, baseline_offset=self.settings.baseline_offset
        )
        if not isinstance(src, RecordedSource):
            snapshot(self.record, [*m.series.values(), *m.baseline.values()], actor=self.actor)
        self.record.append("metrics.read", m.describe(), actor=self.actor)
        return m

    def assess(self, metrics: IncidentMetrics) -> Assessed:
        """Classify severity from the metrics; record it, and raise (never lower) the incident's severity."""
        st = self.state()
        a = metrics.assess(self.settings.severity.metric_rules)
        label = st.get("alert_severity_label")
        self.record.append(
            "severity.assessed",
            {
                "level": a.level.value if a.level else None,
                "summary": a.summary(),
                "reasons": [r.as_dict() for r in a.reasons],
                "unavailable": a.unavailable,
                "alert_severity_label": label,
                "source": metrics.source,
            },
            actor=self.actor,
        )
        current = st.get("severity")
        changed = None
        if a.level is not None and (current is None or a.level.rank < Level(current).rank):
            self.record.set_severity(a.level, actor=self.actor, reason=f"metrics: {a.summary()}")
            changed = f"severity raised {current or 'unassessed'} → {a.level.value}"
        return Assessed(a, label, current, changed)

    def markers(self) -> list[Marker]:
        """Event markers for plots: the alert, mitigation, restoration, resolution."""
        from irkit.plots import Marker

        out: list[Marker] = []
        seen_alerts: set[str] = set()
        for ev in self.record.events():
            d = ev["data"]
            if ev["type"] == "alert.firing" and d.get("fingerprint") not in seen_alerts:
                seen_alerts.add(d.get("fingerprint", ""))
                out.append(Marker(parse_ts(d["starts_at"]), f"alert {d.get('alertname', '')}", "alert"))
            elif ev["type"] == "status.changed" and d.get("to") in ("mitigating", "monitoring", "resolved"):
                kind = {"mitigating": "mitigation", "monitoring": "resolved", "resolved": "resolved"}[d["to"]]
                out.append(Marker(parse_ts(ev["ts"]), d["to"], kind))
        recorded = RecordedCluster(self.record.latest_dir(CLUSTER_DIR))
        if (recorded.directory / "meta.json").is_file():
            view = capture(recorded, kinds=("replicasets",), logs=False)  # only rollouts become markers
            detected = parse_ts(self.state()["detected_at"])
            for change in view.recent_changes(detected, timedelta(hours=6)):
                if change.kind == "rollout":
                    out.append(Marker(change.at, f"deploy rev {change.revision}", "deploy"))
        return out

    def _incident_window(self, metrics: IncidentMetrics) -> tuple[datetime, datetime]:
        st = self.state()
        resolved = st["status_times"].get("resolved")
        end = parse_ts(resolved) if resolved else metrics.end
        return parse_ts(st["detected_at"]), min(end, metrics.end)

    def _figure(self, fig: Figure, name: str) -> Any:
        from IPython.display import Image

        from irkit.plots import png_bytes

        data = png_bytes(fig)
        self.record.seal_one(f"figures/{name}.png", data, actor=self.actor, kind="figure")
        return Image(data=data, format="png")

    def plot_golden_signals(self, metrics: IncidentMetrics) -> Any:
        """All golden signals with the incident shaded and events marked; saved to figures/."""
        from irkit.plots import golden_signals_figure

        fig = golden_signals_figure(
            metrics,
            service=self.state()["service"] or self.settings.service.name,
            window=self._incident_window(metrics),
            markers=self.markers(),
            rules=self.settings.severity.metric_rules,
        )
        return self._figure(fig, "golden-signals")

    def plot_signal(self, metrics: IncidentMetrics, signal: str) -> Any:
        """One signal with the plan's thresholds; saved to figures/<signal>.png."""
        from irkit.plots import signal_figure

        fig = signal_figure(
            metrics,
            signal,
            service=self.state()["service"] or self.settings.service.name,
            window=self._incident_window(metrics),
            markers=self.markers(),
            rules=self.settings.severity.metric_rules,
        )
        return self._figure(fig, signal)

    def impact(self, metrics: IncidentMetrics) -> Any:
        """Plan 2 "assess impact": failed requests/min, share of traffic, broken endpoints."""
        from irkit.metrics import impact

        return impact(metrics)

    # ---- cluster and dependencies (plan 2 "quick health check", 4 "investigation")

    def cluster(self, source: str = "live", *, refresh: bool = False) -> ClusterView:
        """Pods, deployment, rollouts, Helm history, events, logs, usage; live reads are snapshotted.

        Read once per runbook session (the checklist and the evidence cells share it) unless ``refresh``.
        """
        if not refresh and source in self._views:
            return self._views[source]
        view = self._read_cluster(source)
        self._views[source] = view
        return view

    def _read_cluster(self, source: str) -> ClusterView:
        if source == "recorded":
            src: ClusterSource = RecordedCluster(self.record.latest_dir(CLUSTER_DIR))
        elif source == "live":
            from irkit.k8s import LiveCluster

            try:
                src = LiveCluster(self.settings)
            except SourceUnavailable as exc:
                view = ClusterView(source="kubernetes", taken_at=self.clock())
                view.unavailable = {kind: str(exc) for kind in OBJECTS}
                self.record.append(
                    "cluster.read", {"source": "kubernetes", "unavailable": view.unavailable}, actor=self.actor
                )
                return view
        else:
            raise BadInputError(f"cluster source must be 'live' or 'recorded', not {source!r}")
        view = capture(src, tail_lines=self.settings.kubernetes.log_tail_lines)
        if source == "live":
            cluster_snapshot(self.record, view, actor=self.actor)
        self.record.append("cluster.read", {"source": view.source, "unavailable": view.unavailable}, actor=self.actor)
        return view

    def health(self, metrics_source: str = "live") -> Any:
        """The service's health endpoint (plan 2 `curl …/health`); not probed when replaying a recording."""
        import pandas as pd

        url = self.settings.service.health_url
        if metrics_source == "recorded":
            return pd.DataFrame({"health": [f"not probed: replaying a recording (live: GET {url})"]})
        from irkit.config import Dependency
        from irkit.probes import probe_http

        r = probe_http(Dependency(name="health", kind="http", url=url), self.environ)
        self.record.append(
            "check.recorded",
            {"item": "health", "title": "Health endpoint", **r.as_dict(), "automated": True},
            actor=self.actor,
        )
        return pd.DataFrame([r.as_dict()]).set_index("name")

    def log_errors(self, view: ClusterView) -> Any:
        """Error lines in pod log tails, grouped by message."""
        import pandas as pd

        if not view.logs:
            reasons = {k: v for k, v in view.unavailable.items() if k.startswith("logs") or k == "pods"}
            return pd.DataFrame({"could not check": [next(iter(reasons.values()), "no pod logs read")]})
        patterns = self.settings.kubernetes.log_patterns
        return (view.log_errors(patterns) if patterns else view.log_errors()).table()

    def run_checklist(self, cluster_source: str = "live", metrics_source: str = "live") -> Any:
        """Run every automated checklist item, record each result, and show the checklist."""
        from irkit.checklist import Evidence, record_result, run_checklist
        from irkit.probes import default_registry

        view = self.cluster(cluster_source)
        query = None
        saturation: dict[str, float | None] = {}
        if metrics_source == "live":
            from irkit.prom import PrometheusSource

            prom = PrometheusSource(self.settings, self.environ)

            def query(promql: str) -> float | None:
                frame = prom.query(promql)
                return float(frame.iloc[0].sum()) if not frame.empty else None

        ev = Evidence(
            self.settings,
            self.environ,
            parse_ts(self.state()["detected_at"]),
            view,
            probes={},
            saturation=saturation,
            query=query,
        )
        for result in run_checklist(ev, default_registry()):
            record_result(self.record, result, actor=self.actor, automated=True)
        return self.checklist()

    def answer(self, item: str, status: str, evidence: str) -> str:
        """Record a responder's answer to a checklist item (it takes precedence over automation)."""
        from irkit.checklist import ITEMS, record_result
        from irkit.probes import CheckResult, CheckStatus

        if item not in ITEMS:
            raise BadInputError(f"no checklist item {item!r}; items: {', '.join(ITEMS)}")
        try:
            st = CheckStatus(status)
        except ValueError:
            raise BadInputError(f"status must be one of {[s.value for s in CheckStatus]}") from None
        if not evidence.strip():
            raise BadInputError("an answer needs evidence: what did you look at?")
        record_result(self.record, CheckResult(item, st, evidence), actor=self.actor, automated=False)
        return f"{ITEMS[item].title}: {st.value} ({self.actor})"

    def record_answers(self, answers: Mapping[str, Any]) -> list[str]:
        """``{"sentry": ["ok", "checked the Sentry project: nothing new"]}`` → one answer each."""
        return [self.answer(item, str(v[0]), str(v[1])) for item, v in answers.items()]

    def checklist(self) -> Any:
        """The investigation checklist as it stands (latest answer per item; unanswered items say so)."""
        from irkit.checklist import checklist_table

        return checklist_table(self.record.events())

    # ---- mitigation (plan 4 "common mitigation actions")

    def mitigate(
        self,
        action: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        approve: bool = False,
        actor: str = "",
        cluster_source: str = "live",
        window_minutes: float = 10,
    ) -> MitigationView:
        """Plan, dry-run and — only with ``approve`` and a named ``actor`` — execute one mitigation."""
        from irkit.mitigate import Context, Outcome, Plan, default_actions, run_action

        act = default_actions().get(action)
        ctx = Context(self.settings, self.environ, now=self.clock())
        if action in ("rollback", "scale", "restart", "set_env"):
            if cluster_source == "live":
                from irkit.k8s import LiveCluster

                try:
                    ctx.cluster = LiveCluster(self.settings)
                    ctx.view = capture(ctx.cluster, kinds=PLAN_KINDS, logs=False)
                except SourceUnavailable as exc:
                    ctx.view = ClusterView("kubernetes", self.clock(), unavailable={"all": str(exc)})
            elif cluster_source == "recorded":
                ctx.view = capture(RecordedCluster(self.record.latest_dir(CLUSTER_DIR)), kinds=PLAN_KINDS, logs=False)
            else:
                raise BadInputError(f"cluster source must be 'live' or 'recorded', not {cluster_source!r}")
        try:
            outcome = run_action(
                self.record,
                act,
                arguments or {},
                ctx,
                approve=approve,
                approver=actor.strip(),
                actor=self.actor,
                batch=self.batch,
                window=timedelta(minutes=window_minutes),
            )
        except SourceUnavailable as exc:
            plan = Plan(action, dict(arguments or {}), "?", act.title, {}, {}, "")
            self.record.append(
                "action.failed",
                {"key": plan.key, "action": action, "error": f"could not plan: {exc}"},
                actor=self.actor,
            )
            return MitigationView(Outcome(plan, "could not plan", "", reason=str(exc)))
        return MitigationView(outcome)

    # ---- resolution (plan 5)

    def resolve(
        self,
        metrics_source: str = "live",
        *,
        as_of: str = "",
        watch_minutes: float = 0,
        force_reason: str = "",
    ) -> Any:
        """Check the plan's criteria, then move to monitoring or resolved — or refuse, with the reasons."""
        import time

        from irkit.resolve import (
            alertmanager_alerts,
            alerts_criterion,
            decide,
            metric_criteria,
            recorded_alerts,
            smoke_criteria,
        )

        res = self.settings.resolution
        watch = timedelta(minutes=watch_minutes)
        live = metrics_source == "live"
        if as_of:
            at = parse_ts(as_of)
        elif live:
            if watch:  # watch the live signals for the period before judging it
                time.sleep(watch.total_seconds())
            at = self.clock()
        else:
            at = self.signal_source("recorded").window()[1]  # type: ignore[attr-defined]
        start = at - max(res.window, watch)
        src = self.signal_source(metrics_source)
        m = read_metrics(
            src,
            signals=("error_ratio", "latency_p99"),
            start=start,
            end=at,
            eval_end=at,
            baseline_offset=self.settings.baseline_offset,
            evaluation=max(res.window, watch),
        )
        criteria = metric_criteria(m, self.settings, start, at)
        if live:
            try:
                service = self.state()["service"] or self.settings.service.name
                if self.settings.alertmanager_url:
                    active = alertmanager_alerts(self.settings.alertmanager_url, service)
                else:
                    from irkit.prom import PrometheusSource

                    active = PrometheusSource(self.settings, self.environ).active_alerts(service)
                criteria.append(alerts_criterion(active))
            except SourceUnavailable as exc:
                criteria.append(alerts_criterion(None, str(exc)))
            criteria += smoke_criteria(self.settings, self.environ)
        else:
            criteria.append(alerts_criterion(recorded_alerts(self.state())))
        decision = decide(
            criteria, watched=watch, watch_required=watch if watch else timedelta(0), force_reason=force_reason
        )
        self.record.append(
            "resolution.checked",
            {
                "as_of": rfc3339(at),
                "source": metrics_source,
                "watch_minutes": watch_minutes,
                "criteria": [{"name": c.name, "result": c.state, "evidence": c.evidence} for c in criteria],
                "decision": decision.moved_to or "refused",
                "refused": decision.refused,
                "forced": decision.forced,
            },
            actor=self.actor,
        )
        if decision.moved_to:
            self._advance_to(decision.moved_to, decision)
        return decision

    def _advance_to(self, target: str, decision: Any) -> None:
        """Move forward along the plan's path to ``target`` (never back through investigating)."""
        reason = "criteria passed" + (f" and held for {decision.watched}" if target == "resolved" else "")
        if decision.forced:
            reason = f"FORCED: {decision.forced}"
        path = [Status.DETECTED, Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MONITORING, Status.RESOLVED]
        current = Status(self.state()["status"])
        if current == Status.MITIGATING:
            current = Status.INVESTIGATING  # mitigating → monitoring is the next forward step
        if current not in path:
            return
        for step in path[path.index(current) + 1 : path.index(Status(target)) + 1]:
            self.record.set_status(step, actor=self.actor, reason=reason)

    # ---- post-incident review (plan 7)

    def postmortem(
        self,
        *,
        root_cause: str = "",
        action_items: list[dict[str, Any]] | None = None,
        action_items_file: str = "",
        contributing: list[str] | None = None,
        lessons: list[str] | None = None,
        title: str = "",
    ) -> Any:
        """Build, plot and render the post-mortem from the record; returns the report with its sections."""
        from irkit import postmortem as pmod

        items = list(action_items or [])
        if action_items_file:
            items += load_action_items(Path(action_items_file))
        pm = pmod.build(
            self.record,
            self.settings,
            root_cause=root_cause,
            action_items=items,
            contributing=contributing,
            lessons=lessons,
            title=title,
        )
        pm.figures = pmod.figures(self.record, pm, self.settings, actor=self.actor)
        md, html = pmod.render(self.record, pm, actor=self.actor)
        self.record.append(
            "postmortem.rendered",
            {
                "markdown": md.relative_to(self.record.path).as_posix(),
                "html": html.relative_to(self.record.path).as_posix(),
                "root_cause_given": bool(root_cause),
                "action_items": len(items),
            },
            actor=self.actor,
        )
        return PostMortemReport(pm, md, html)

    # ---- communication, escalation, on-call (plan 3, 6, escalation path, rotation)

    def communicate(self, which: str = "initial", *, send: bool = False, root_cause: str = "") -> Any:
        """Render the plan's messages (``initial`` or ``resolved``) into comms/; deliver them when ``send``."""
        from irkit import comms

        kinds = {"initial": comms.INITIAL, "resolved": comms.RESOLVED}.get(which)
        if kinds is None:
            raise BadInputError("which must be 'initial' or 'resolved'")
        rendered = comms.render_set(
            self.record, self.settings, kinds, now=self.clock(), actor=self.actor, root_cause=root_cause
        )
        results = (
            [comms.deliver(self.record, self.settings, self.environ, r, actor=self.actor) for r in rendered]
            if send
            else []
        )
        return CommsView(rendered, results)

    def escalation(self) -> Any:
        """The escalation ladder now: who should be engaged, who is overdue."""
        import pandas as pd

        from irkit.oncall import ladder

        steps = ladder(
            self.settings.escalation, self.settings.rotation, self.state(), self.record.events(), self.clock()
        )
        if not steps:
            return pd.DataFrame(
                {"escalation": [f"no ladder for severity {self.state().get('severity') or 'unassessed'}"]}
            )
        return pd.DataFrame([s.row() for s in steps]).set_index("role")

    def page_due_escalations(self) -> list[str]:
        """Page every overdue ladder step through PagerDuty (when configured) and record it."""
        from irkit.comms import PagerDutySender, sender_for
        from irkit.oncall import ladder

        pager = sender_for("pagerduty", self.settings, self.environ)
        steps = ladder(
            self.settings.escalation, self.settings.rotation, self.state(), self.record.events(), self.clock()
        )
        overdue = [s for s in steps if s.state == "OVERDUE" and s.role != "On-call SRE"]
        if not overdue:
            return ["no escalation due"]
        if not isinstance(pager, PagerDutySender):
            return [f"{s.role} ({s.who}) is due: no pager configured (comms.pagerduty)" for s in overdue]
        st = self.state()
        out = []
        for s in overdue:
            res = pager.event(
                "trigger",
                f"{self.record.id}-{s.role.lower().replace(' ', '-')}",
                f"Escalation to {s.role}: [{st.get('severity')}] {st.get('title')}",
                st.get("severity"),
                self.settings.service.component,
                {"incident": self.record.id, "who": s.who},
            )
            if res.ok:
                self.record.append(
                    "escalation.paged", {"role": s.role, "who": s.who, "response_id": res.response_id}, actor=self.actor
                )
                out.append(f"paged {s.role} ({s.who})")
            else:
                self.record.append(
                    "comms.failed",
                    {"kind": "escalation", "channel": "pagerduty", "role": s.role, "error": res.error},
                    actor=self.actor,
                )
                out.append(f"could not page {s.role}: {res.error}")
        return out

    def on_call(self) -> Any:
        """Who is on call now and the next handovers (plan: weekly primary, SRE lead secondary)."""
        import pandas as pd

        from irkit.oncall import handovers, on_call

        now = self.clock()
        oc = on_call(self.settings.rotation, now)
        rows = [
            {
                "when": "now",
                "primary": oc.primary,
                "secondary": oc.secondary,
                "shift": f"{oc.shift_start:%Y-%m-%d %H:%M %Z} → {oc.shift_end:%Y-%m-%d %H:%M %Z}",
            }
        ]
        for at, frm, to in handovers(self.settings.rotation, now, now + timedelta(days=21)):
            rows.append(
                {
                    "when": f"{at:%Y-%m-%d %H:%M %Z}",
                    "primary": to,
                    "secondary": oc.secondary,
                    "shift": f"handover from {frm}",
                }
            )
        return pd.DataFrame(rows).set_index("when")

    def glue(self) -> dict[str, Any]:
        """The facts other runbooks and reports need, as scrapbook scraps."""
        import scrapbook as sb

        st = self.state()
        c = self.clocks()
        facts = {
            "incident_id": st["id"],
            "severity": st["severity"],
            "status": st["status"],
            "detected_at": st["detected_at"],
            "response_overdue": c.response_overdue,
            "update_overdue": c.update_overdue,
        }
        for name, value in facts.items():
            sb.glue(name, value)
        return facts


NEXT_STEPS = {
    "rollback": "See docs/runbooks/operations/rollback.md.",
    "scale": "See docs/runbooks/operations/scaling.md.",
}


@dataclass
class MitigationView:
    """A mitigation as the runbook shows it: plan, dry run, outcome, post-state, next steps."""

    outcome: Any  # irkit.mitigate.Outcome

    def next_steps(self) -> list[str]:
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
        import pandas as pd

        return pd.DataFrame(self.outcome.plan.diff() or [{"field": "(no change)", "before": None, "after": None}])

    def _repr_html_(self) -> str:
        from html import escape

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
        from html import escape

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
        out = [f"metrics say: {self.assessment.summary()}", f"alert's own severity label: {self.alert_label or 'none'}"]
        out.append(self.changed or f"incident severity stays {self.previous or 'unassessed'}")
        return out

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<p>{escape(line)}</p>" for line in self.lines())
        return head + str(self.table().to_html(index=False, na_rep="—"))

    def __repr__(self) -> str:
        return "\n".join(self.lines())


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


@dataclass
class PostMortemReport:
    """The rendered post-mortem and its sections as tables, for the runbook."""

    pm: Any  # irkit.postmortem.PostMortem
    markdown: Path
    html: Path

    def timeline(self) -> Any:
        import pandas as pd

        return pd.DataFrame([e.row(self.pm.start) for e in self.pm.timeline])

    def impact(self) -> Any:
        import pandas as pd

        return pd.DataFrame(list(self.pm.impact.items()), columns=["measure", "value"]).set_index("measure")

    def verdicts(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            [{"measure": v.measure, "value": v.value, "target": v.target, "verdict": v.mark} for v in self.pm.verdicts]
        )

    def _repr_html_(self) -> str:
        from html import escape

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
