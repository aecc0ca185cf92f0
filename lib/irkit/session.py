"""The runbook-facing handle on one incident: its record, settings, actor and clock.

A runbook's first code cell builds a :class:`Session` from its papermill parameters; every later cell
calls one method and displays what it returns. Each method is a few lines: it hands the session's
record, settings, environment, actor and clock to the library function that does the work and wraps
the answer in a display object from :mod:`irkit.views`. The kernel is an entry point, so this is where
the kernel's environment is read (actor, batch flag, secrets) — nowhere deeper.

Batch runs (started from alerts, ``IRKIT_BATCH=1``) observe and record but never act for a human:
they do not acknowledge, and never execute mitigations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irkit import checklist, cluster, comms, forked, metrics, mitigate, plots, postmortem, resolve, views
from irkit.config import Settings, load_config
from irkit.errors import BadInputError
from irkit.events import Event, Status
from irkit.record import Record
from irkit.severity import Clocks, Level, compute_clocks
from irkit.store import record_guard
from irkit.times import Clock, ReplayClock, parse_ts, utcnow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from irkit.cluster import ClusterView
    from irkit.comms import SenderFactory
    from irkit.metrics import IncidentMetrics
    from irkit.mitigate import ActionRegistry
    from irkit.probes import ProbeRegistry

GOLDEN_SIGNALS_FIGURE = "golden-signals"  # figures/golden-signals.png; other figures are named after their signal


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
        actions: ActionRegistry | None = None,
        probes: ProbeRegistry | None = None,
        senders: Mapping[str, SenderFactory] | None = None,
    ):
        self.record = record
        self.settings = settings
        self.actor = actor
        self.batch = batch
        self.environ = dict(environ or {})
        self.clock = clock
        self.actions, self.probes, self.senders = actions, probes, senders
        self._views: dict[str, ClusterView] = {}
        self._ahead: dict[str, tuple[tuple[str, dict[str, Any], dict[str, Any]], forked.Forked]] = {}  # figures being drawn
        self._not_ahead: dict[str, str] = {}  # figures asked to be drawn ahead that were not, and why
        self.actor_known = True  # False: the actor is only the login name (see from_parameters)

    @property
    def _on(self) -> tuple[Record, Settings, dict[str, str]]:
        """(record, settings, environ): what most library calls take first."""
        return self.record, self.settings, self.environ

    @classmethod
    def from_parameters(
        cls,
        incident_id: str,
        records_dir: str = "reports",
        config_path: str = "irkit.yaml",
        environ: Mapping[str, str] | None = None,
    ) -> Session:
        """Build from a runbook's papermill parameters and the kernel's environment.

        The actor is ``IRKIT_ACTOR``, else the settings' ``actor``. When neither names a person and a
        responder is at the keyboard (JupyterLab), the notebook asks for a name once per kernel; a
        batch run, or a kernel with no one to ask, goes on as the login name and says so.
        """
        from irkit.config import resolve_actor

        views.configure_display()
        env = dict(os.environ if environ is None else environ)
        settings = load_config(config_path, env)
        # A replayed run happens at one moment (IRKIT_CLOCK): every event and "now" in it reads that
        # moment, so re-executing the sealed notebook (irkit.replay.reexecutions) gives the same outputs.
        clock: Clock = ReplayClock(parse_ts(env["IRKIT_CLOCK"]), frozen=True) if env.get("IRKIT_CLOCK") else utcnow
        guard = record_guard(settings, env, Path(records_dir), incident_id)  # a shared store, not held by a runner
        record = Record.open(records_dir, incident_id, clock=clock, guard=guard, **settings.record_options(env))
        batch = env.get("IRKIT_BATCH") == "1"
        actor, known = resolve_actor(env, settings)
        if not known and not batch and (asked := views.ask_name()):
            actor, known = asked, True
            os.environ["IRKIT_ACTOR"] = asked  # later sessions in this kernel do not ask again
            env["IRKIT_ACTOR"] = asked
        session = cls(record, settings, actor=actor, batch=batch, environ=env, clock=clock)
        session.actor_known = known
        return session

    # ---- reading

    def state(self) -> dict[str, Any]:
        """The incident's folded state."""
        return self.record.state()

    def clocks(self) -> Clocks:
        """Response, resolution, update and review clocks now."""
        return compute_clocks(self.state(), self.settings.severity, self.clock())

    def summary(self) -> Any:
        """A one-column table: id, title, service, severity, status, who is acting, and the clocks."""
        return views.summary_table(self.state(), self.clocks(), self.actor, self.batch, known=self.actor_known)

    def policy(self) -> Any:
        """What the current severity obliges us to do, straight from the policy."""
        return views.policy_table(self.settings, self.state().get("severity"))

    def alerts(self) -> Any:
        """The alerts recorded for this incident, latest status per alert."""
        return views.alerts_table(self.record.events())

    def events(self, *types: str) -> list[Event]:
        """The record's events, optionally only those of ``types``."""
        return [e for e in self.record.events() if not types or e["type"] in types]

    def timeline(self, *, everything: bool = False) -> Any:
        """The story so far: time, since detection, who, what (file bookkeeping hidden unless ``everything``)."""
        return views.timeline_table(self.record.events(), parse_ts(self.state()["detected_at"]), everything=everything)

    # ---- acting (each writes an event; batch runs never act for a human)

    def acknowledge(self) -> views.Said:
        """Acknowledge the incident (plan step 1.1) unless this is a batch run or it is already done."""
        status = self.state()["status"]
        if self.batch:
            return views.Said("batch run: acknowledgement is left to the on-call responder")
        if status != Status.DETECTED:
            return views.Said(f"already acknowledged (status {status})")
        self.record.set_status(Status.ACKNOWLEDGED, actor=self.actor, reason="acknowledged in triage runbook")
        return views.Said(f"acknowledged by {self.actor}")

    def begin_investigation(self) -> views.Said:
        """Move an acknowledged incident to investigating (plan step 1.4)."""
        status = self.state()["status"]
        if status != Status.ACKNOWLEDGED:
            return views.Said(f"status stays {status}; next: {self._next_command('investigation')}")
        self.record.set_status(Status.INVESTIGATING, actor=self.actor, reason="triage complete")
        return views.Said(f"status: investigating; next: {self._next_command('investigation')}")

    def _next_command(self, runbook: str) -> str:
        return f"irkit open {self.record.id} {runbook} (in JupyterLab) or irkit run {self.record.id} {runbook}"

    def set_severity(self, level: Level | str, reason: str) -> views.Said:
        """Record a severity assessment, with the reason that decided it."""
        self.record.set_severity(level, actor=self.actor, reason=reason)
        return views.Said(f"severity {Level(level).value}: {reason}")

    def note(self, text: str) -> views.Said:
        """Add a responder's note to the timeline."""
        self.record.note(text, actor=self.actor)
        return views.Said(f"noted by {self.actor}")

    # ---- metrics (plan 1.3 "assess severity", 2 "check metrics")

    def metrics(
        self, source: str = "live", *, lookback: timedelta = timedelta(hours=1), draw: Sequence[str] = ()
    ) -> IncidentMetrics:
        """Read the golden signals and their baseline; live readings are snapshotted into the record.

        ``draw``: figures this runbook will plot from the reading ("golden-signals" or a signal's name),
        started now on another core (:mod:`irkit.forked`) so they are ready when their cell comes. The
        plotting cell still decides: it uses the early drawing only if the reading, window, markers,
        rules and Matplotlib's settings are unchanged, and otherwise draws anew.
        """
        for name in draw:
            if name != GOLDEN_SIGNALS_FIGURE and name not in self.settings.signals:
                raise BadInputError(
                    f"draw: {name!r} is neither {GOLDEN_SIGNALS_FIGURE!r} nor a configured signal "
                    f"({', '.join(sorted(self.settings.signals))})"
                )

        def draw_ahead(reading: IncidentMetrics) -> None:  # before the reading is snapshotted: the sooner the better
            for name in draw:
                self._draw_ahead(reading, name)

        return metrics.read_incident_metrics(
            *self._on, source, now=self.clock(), actor=self.actor, lookback=lookback, on_read=draw_ahead
        )

    def signals(self, reading: IncidentMetrics) -> Any:
        """The golden signals as people read them: worst and normal in their units, ratio, and the verdict on each."""
        return reading.table(self.settings.severity.metric_rules)

    def assess(self, reading: IncidentMetrics) -> views.Assessed:
        """Classify severity from the metrics; record it, and raise (never lower) the incident's severity."""
        ready = next((v.ready_pods() for v in self._views.values()), None)  # the pods this runbook read
        found = metrics.assess_and_record(self.record, reading, self.settings, actor=self.actor, pods_ready=ready)
        return views.Assessed(*found)

    def plot_golden_signals(self, reading: IncidentMetrics) -> Any:
        """All golden signals with the incident shaded and events marked; saved to figures/."""
        return self._plot(reading, GOLDEN_SIGNALS_FIGURE)

    def plot_signal(self, reading: IncidentMetrics, signal: str) -> Any:
        """One signal with the plan's thresholds; saved to figures/<signal>.png."""
        return self._plot(reading, signal)

    def _plot(self, reading: IncidentMetrics, name: str) -> Any:
        from IPython.display import Image

        args = self._plot_args(reading)
        data = None
        drawn = "here"  # how it was drawn goes into the figure's event: "ahead", or "here" and why
        ahead = self._ahead.pop(name, None)
        why_not = self._not_ahead.pop(name, None)
        if why_not is not None:
            drawn = f"here: {why_not}"
        if ahead is not None:
            inputs, job = ahead
            if inputs == self._drawing_inputs(reading, args):
                data = job.result()
                drawn = "ahead" if data is not None else f"here: the drawing ahead {job.outcome}"
            else:
                job.cancel()
                drawn = "here: its inputs changed after it was drawn ahead"
        if data is None:  # nothing drawn ahead, its inputs changed since, or the child failed or warned
            data = plots.png_bytes(self._figure(reading, name, args))
        self.record.seal_one(f"figures/{name}.png", data, actor=self.actor, kind="figure", drawn=drawn)
        return Image(data=data, format="png")

    @staticmethod
    def _figure(reading: IncidentMetrics, name: str, args: Mapping[str, Any]) -> Figure:
        if name == GOLDEN_SIGNALS_FIGURE:
            return plots.golden_signals_figure(reading, **args)
        return plots.signal_figure(reading, name, **args)

    @staticmethod
    def _drawing_inputs(
        reading: IncidentMetrics, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Everything a figure is drawn from: equal inputs draw the same PNG."""
        return reading.fingerprint(), args, plots.drawing_settings()

    def _draw_ahead(self, reading: IncidentMetrics, name: str) -> None:
        """Start drawing ``name`` in a child, or note why not; never raises (drawing ahead is only speed: it
        never costs the reading)."""
        previous = self._ahead.pop(name, None)
        if previous is not None:
            previous[1].cancel()
        why = "no child could be started (Matplotlib drawing in another thread, or no fork here)"
        try:
            inputs = self._drawing_inputs(reading, self._plot_args(reading))
            job = forked.start(lambda: plots.png_bytes(self._figure(reading, name, inputs[1])), locks=plots.render_locks())
        except Exception as exc:
            job, why = None, f"drawing it ahead failed to start ({type(exc).__name__})"
        if job is None:
            self._not_ahead[name] = why
            return
        self._ahead[name] = (inputs, job)
        self._not_ahead.pop(name, None)

    def _plot_args(self, reading: IncidentMetrics) -> dict[str, Any]:
        st = self.state()
        return {
            "service": st["service"] or self.settings.service.name,
            "window": plots.incident_window(st, reading),
            "markers": plots.incident_markers(self.record),
            "rules": self.settings.severity.metric_rules,
        }

    def impact(self, reading: IncidentMetrics) -> Any:
        """Plan 2 "assess impact": failed requests/min, share of traffic, broken endpoints."""
        return metrics.impact(reading)

    # ---- cluster and dependencies (plan 2 "quick health check", 4 "investigation")

    def cluster(self, source: str = "live", *, refresh: bool = False) -> ClusterView:
        """Pods, deployment, rollouts, Helm history, events, logs, usage; live reads are snapshotted.

        Read once per runbook session (the checklist and the evidence cells share it) unless ``refresh``.
        """
        if refresh or source not in self._views:
            _, self._views[source] = cluster.read_cluster(
                self.record, self.settings, source, now=self.clock(), actor=self.actor
            )
        return self._views[source]

    def health(self, metrics_source: str = "live") -> Any:
        """The service's health endpoint (plan 2 `curl …/health`); not probed when replaying a recording."""
        live = metrics_source != "recorded"
        result = checklist.health_check(*self._on, actor=self.actor) if live else None
        return views.health_table(result, self.settings.service.health_url)

    def log_errors(self, view: ClusterView) -> Any:
        """Error lines in pod log tails, grouped by message."""
        return views.log_errors_table(view, self.settings.kubernetes.log_patterns)

    def run_checklist(self, cluster_source: str = "live", metrics_source: str = "live") -> Any:
        """Run every automated checklist item, record each result, and show the checklist."""
        view = self.cluster(cluster_source)
        checklist.run_automated(*self._on, view, metrics_source=metrics_source, actor=self.actor, probes=self.probes)
        return self.checklist()

    def answer(self, item: str, status: str, evidence: str) -> views.Said:
        """Record a responder's answer to a checklist item (it takes precedence over automation)."""
        return views.Said(checklist.answer(self.record, item, status, evidence, actor=self.actor))

    def record_answers(self, answers: Mapping[str, Any]) -> views.Said:
        """``{"sentry": ["ok", "checked the Sentry project: nothing new"]}`` → one answer each."""
        return views.Said.each(
            (self.answer(item, str(v[0]), str(v[1])) for item, v in answers.items()), "no answers given"
        )

    def checklist(self) -> Any:
        """The investigation checklist as it stands (latest answer per item; unanswered items say so)."""
        return checklist.checklist_table(self.record.events())

    # ---- mitigation (plan 4), resolution (plan 5), review (plan 7)

    def mitigate(
        self,
        action: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        approve: bool = False,
        actor: str = "",
        cluster_source: str = "live",
        window_minutes: float = 10,
    ) -> views.MitigationView:
        """Plan, dry-run and — only with ``approve`` and a named ``actor`` — execute one mitigation."""
        outcome = mitigate.mitigate(
            *self._on,
            action,
            arguments,
            approve=approve,
            approver=actor.strip(),
            actor=self.actor,
            batch=self.batch,
            now=self.clock(),
            cluster_source=cluster_source,
            window=timedelta(minutes=window_minutes),
            actions=self.actions,
        )
        return views.MitigationView(outcome)

    def resolve(
        self, metrics_source: str = "live", *, as_of: str = "", watch_minutes: float = 0, force_reason: str = ""
    ) -> resolve.Decision:
        """Check the plan's criteria, then move to monitoring or resolved — or refuse, with the reasons."""
        return resolve.check_resolution(
            *self._on,
            metrics_source,
            now=self.clock,
            actor=self.actor,
            as_of=as_of,
            watch_minutes=watch_minutes,
            force_reason=force_reason,
        )

    def postmortem(self, **given: Any) -> views.PostMortemReport:
        """Build, plot and render the post-mortem from the record.

        Takes ``root_cause``, ``action_items`` (a list of {item, owner, due, priority}), ``action_items_file``
        (YAML), ``contributing``, ``lessons`` and ``title``; see :func:`irkit.postmortem.write`.
        """
        return views.PostMortemReport(*postmortem.write(self.record, self.settings, actor=self.actor, **given))

    # ---- communication, escalation, on-call (plan 3, 6, escalation path, rotation)

    def communicate(self, which: str = "initial", *, send: bool = False, root_cause: str = "") -> views.CommsView:
        """Render the plan's messages (``initial`` or ``resolved``) into comms/; deliver them when ``send``."""
        rendered, results = comms.communicate(
            *self._on,
            which,
            send=send,
            now=self.clock(),
            actor=self.actor,
            root_cause=root_cause,
            senders=self.senders,
        )
        return views.CommsView(rendered, results)

    def escalation(self) -> Any:
        """The escalation ladder now: who should be engaged, who is overdue."""
        from irkit.oncall import ladder

        st = self.state()
        steps = ladder(self.settings.escalation, self.settings.rotation, st, self.record.events(), self.clock())
        return views.escalation_table(steps, st.get("severity"))

    def open_ticket(self) -> views.Said:
        """Plan 1.2: create the incident ticket (Jira) once; its key becomes every message's ticket."""
        if self.settings.comms.jira is None:
            return views.Said(
                "no ticket system configured (comms.jira); messages show comms.ticket_url or 'not yet created'"
            )
        res = comms.open_ticket(*self._on, now=self.clock(), actor=self.actor, senders=self.senders)
        if not res.ok:
            return views.Said(f"ticket NOT created: {res.error} (recorded; irkit serve retries)")
        return views.Said(f"ticket {res.response_id}" + (" (already open)" if res.extra.get("existing") else ""))

    def page_due_escalations(self) -> views.Said:
        """Run the plan's clock for this incident now (what irkit serve does every minute): due pages, reminders."""
        from irkit.scheduler import tick_incident

        said = tick_incident(*self._on, now=self.clock(), actor=self.actor, senders=self.senders)
        return views.Said.each(said, "nothing due now: no page, reminder or update")

    def on_call(self) -> Any:
        """Who is on call now and the next handovers (plan: weekly primary, SRE lead secondary)."""
        return views.on_call_table(self.settings.rotation, self.clock())

    def glue(self) -> Any:
        """Record the facts other runbooks and reports need as scrapbook scraps; show them as a table.

        A fact not known yet (no severity before triage) is not glued: scrapbook has no null, and a
        reader's "no such scrap" is the truth. The table says what is still unknown.
        """
        import scrapbook as sb

        st, c = self.state(), self.clocks()
        facts = {
            "incident_id": st["id"],
            "severity": st["severity"],
            "status": st["status"],
            "detected_at": st["detected_at"],
            "response_overdue": c.response_overdue,
            "update_overdue": c.update_overdue,
        }
        for name, value in facts.items():
            if value is not None:
                sb.glue(name, value)
        return views.facts_table(facts)
