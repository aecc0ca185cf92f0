"""The plan's clock: escalations and stakeholder-update reminders, evaluated with no notebook open.

``irkit serve`` runs :func:`tick` every ``serve.tick_s`` seconds (default 60); ``irkit tick [--at TIME]``
runs one pass from the command line (cron-friendly). A pass looks at every incident that is not
resolved:

- **The escalation ladder of its level** (:class:`irkit.oncall.EscalationSettings`): each step whose
  time has come is paged through PagerDuty, notified on Slack (P2: "notify, no page") or ticketed in
  Jira (P3: "create ticket"). The secondary on-call is paged only when the primary has not
  acknowledged within the level's response time.
- **Stakeholder updates**: when an update is due, a reminder goes to the incident channel; when it
  is a whole cadence overdue, the incident commander is paged. Only stakeholder messages (Slack,
  status page, email) reset the update clock; pages and tickets never do.

Every firing is an event that carries a key (``escalation:<role>``, ``update:<due time>``,
``update-late:<due time>``); a key already in the record never fires again, so a restart or a second
``irkit serve`` never pages twice. One process evaluates an incident at a time (a lock in the
record's ``.runs/``). A delivery that fails is a ``comms.failed`` event and is retried after five
minutes; a step with no channel configured is an ``escalation.unsent`` event and is not retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from irkit.comms import PagerDutySender, Rendered, SenderFactory, open_ticket, sender_for
from irkit.config import Settings
from irkit.errors import IrkitError
from irkit.events import Event, Status
from irkit.oncall import OPEN_STATUSES, acknowledged_by, ladder, on_call
from irkit.record import Record
from irkit.severity import Level
from irkit.store import FileStore, Store
from irkit.times import human, parse_ts, rfc3339, utcnow

RETRY_AFTER = timedelta(minutes=5)
DONE_EVENTS = (
    "escalation.paged",
    "escalation.unsent",
    "update.reminded",
    "update.escalated",
    "comms.sent",
    "comms.skipped",
)
TICKET_EVENTS = ("comms.sent", "escalation.paged")


@dataclass(frozen=True)
class Firing:
    """One thing the plan's clock says must happen now, and the key that makes it happen once."""

    key: str
    action: str  # page | notify | ticket | remind | page-commander
    role: str
    who: str
    due_at: datetime
    text: str

    def describe(self) -> str:
        """What this firing is, as a responder says it (the key stays in the record for machines)."""
        due = f"due {self.due_at:%H:%M} UTC"
        return {
            "page": f"page {self.role} ({self.who}), {due}",
            "notify": f"notify {self.role} ({self.who}), {due}",
            "ticket": f"incident ticket, {due}",
            "remind": f"stakeholder update reminder in {self.who}, {due}",
            "page-commander": f"stakeholder update overdue: page the Incident Commander ({self.who})",
        }.get(self.action, self.key)


def fired_keys(events: Sequence[Event], now: datetime) -> set[str]:
    """Keys that must not fire now: done, or failed less than :data:`RETRY_AFTER` ago."""
    keys = {e["data"].get("key") for e in events if e["type"] in DONE_EVENTS}
    keys |= {
        e["data"].get("key")
        for e in events
        if e["type"] == "comms.failed" and e["data"].get("key") and now - parse_ts(e["ts"]) < RETRY_AFTER
    }
    return {k for k in keys if k}


def due(
    record_id: str, state: Mapping[str, Any], events: Sequence[Event], settings: Settings, now: datetime
) -> list[Firing]:
    """What the escalation ladder and the update cadence require at ``now`` that has not happened yet."""
    if not state.get("severity") or state.get("status") in (Status.RESOLVED, Status.REVIEWED):
        return []
    level = Level(state["severity"])
    pol = settings.severity[level]
    title = f"[{level.value}] {state.get('title') or record_id} ({record_id})"
    skip = fired_keys(events, now)
    out: list[Firing] = []
    if state.get("status") in OPEN_STATUSES:
        for step in ladder(settings.escalation, settings.rotation, state, events, now):
            # The level's `page` setting wins: a primary that must not be paged is notified instead.
            action = "notify" if step.action == "page" and step.who == "primary" and not pol.page else step.action
            # The key names the action: a P2 notification must not stand in for the page a raise to P1 needs.
            key = "ticket" if action == "ticket" else f"escalation:{action}:{step.role}"
            if now < step.due_at or step.engaged_at is not None or not step.needed or key in skip:
                continue
            text = {
                "page": f"Escalation to {step.role} ({step.who}): {title}",
                "notify": f"{title}: on-call {step.who}, please take a look (notify, no page)",
                "ticket": f"{title}: incident ticket for the team",
            }[action]
            out.append(Firing(key, action, step.role, step.who, step.due_at, text))
        # Plan 1.2, "create incident ticket": every level but the backlog, once, when Jira is configured.
        has_ticket = any(e["data"].get("channel") == "jira" for e in events if e["type"] in TICKET_EVENTS)
        wanted = settings.comms.jira and level != Level.P4 and not has_ticket and "ticket" not in skip
        if wanted and not any(f.key == "ticket" for f in out):
            detected = parse_ts(state["detected_at"])
            project = settings.comms.jira.project if settings.comms.jira else "?"
            out.append(Firing("ticket", "ticket", "Team", project, detected, title))
    last = parse_ts(state["last_update_at"]) if state.get("last_update_at") else None
    update_due = settings.severity.next_update_due(level, parse_ts(state["detected_at"]), last)
    if update_due is None or pol.update_every is None or now < update_due:
        return out
    when = rfc3339(update_due)
    if f"update:{when}" not in skip:
        channel = settings.comms.slack.channel if settings.comms.slack else "#incidents"
        out.append(
            Firing(
                f"update:{when}",
                "remind",
                "Incident channel",
                channel,
                update_due,
                f"⏰ {title}: a stakeholder update was due at {update_due:%H:%M} UTC "
                f"(every {human(pol.update_every)}). Send it with: irkit comms {record_id} send initial",
            )
        )
    late = update_due + pol.update_every
    if now >= late and f"update-late:{when}" not in skip:
        commander = acknowledged_by(events) or on_call(settings.rotation, now).primary
        text = f"Stakeholder update overdue since {update_due:%H:%M} UTC: {title}"
        out.append(Firing(f"update-late:{when}", "page-commander", "Incident Commander", commander, late, text))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fire(
    record: Record,
    firing: Firing,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    actor: str,
    senders: Mapping[str, SenderFactory] | None = None,
) -> str:
    """Deliver one firing on its channel and record what happened; returns one line for a log."""
    if firing.action == "ticket":
        res = open_ticket(record, settings, environ, now=record.clock(), actor=actor, key=firing.key, senders=senders)
        if res.ok:
            return f"{firing.describe()}: ticket {res.response_id}"
        return f"{firing.describe()}: no ticket: {res.error}"
    channel = {"page": "pagerduty", "page-commander": "pagerduty", "notify": "slack", "remind": "slack"}.get(
        firing.action, "jira"
    )
    sender = sender_for(channel, settings, environ, senders)
    done_type = {"remind": "update.reminded", "page-commander": "update.escalated"}.get(
        firing.action, "escalation.paged"
    )
    base = {"key": firing.key, "role": firing.role, "who": firing.who, "action": firing.action, "channel": channel}
    if sender is None:
        reason = f"{channel} is not configured (comms.{channel})"
        if done_type == "escalation.paged":
            record.append("escalation.unsent", {**base, "reason": reason}, actor=actor)
        else:
            record.append(done_type, {**base, "delivered": False, "reason": reason}, actor=actor)
        return f"{firing.describe()}: due, not sent: {reason}"
    state = record.state()
    if isinstance(sender, PagerDutySender):
        result = sender.event(
            "trigger",
            f"{record.id}-{_slug(firing.key)}",
            firing.text,
            state.get("severity"),
            settings.service.component,
            {"incident": record.id, "who": firing.who, "due": rfc3339(firing.due_at)},
        )
    else:
        message = Rendered(firing.action, firing.text, None, "", {})
        result = sender.send(message, record.id)
    if not result.ok:
        record.append("comms.failed", {**base, "kind": "escalation", "error": result.error}, actor=actor)
        return f"{firing.describe()}: {channel} failed: {result.error} (retried in {human(RETRY_AFTER)})"
    extra = {"delivered": True} if done_type != "escalation.paged" else {}
    record.append(done_type, {**base, **extra, "response_id": result.response_id, **result.extra}, actor=actor)
    return f"{firing.describe()}: {firing.action} {firing.who} via {channel} ({result.response_id})"


def tick_incident(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    now: datetime,
    actor: str,
    senders: Mapping[str, SenderFactory] | None = None,
) -> list[str]:
    """One evaluation of one incident: fire what is due, once; returns a line per firing."""
    with record.exclusive("tick", wait=False) as mine:
        if not mine:
            return ["another process is evaluating this incident"]
        state = record.state()
        firings = due(record.id, state, record.events(), settings, now)
        lines = [fire(record, f, settings, environ, actor=actor, senders=senders) for f in firings]
        lines += sync_pagerduty(record, settings, environ, now=now, actor=actor, senders=senders)
        if not state.get("replay"):
            lines += decide_watch(record, settings, environ, now=now, actor=actor)
        return lines


def sync_pagerduty(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    now: datetime,
    actor: str,
    senders: Mapping[str, SenderFactory] | None = None,
) -> list[str]:
    """Acknowledge every PagerDuty alert this incident opened once it is acknowledged; resolve them once it is resolved."""
    state = record.state()
    keys = state["providers"]["pagerduty"]
    status = state.get("status")
    if not keys or status == Status.DETECTED:
        return []
    action = "resolve" if status in (Status.RESOLVED, Status.REVIEWED) else "acknowledge"
    pager = sender_for("pagerduty", settings, environ, senders)
    if not isinstance(pager, PagerDutySender):
        return []
    events = record.events()
    skip = fired_keys(events, now)
    acked = state["status_times"].get("acknowledged")
    # An escalation paged after the acknowledgement is someone else being called in: it stays open in
    # PagerDuty (and keeps notifying) until the incident is resolved.
    opened_at: dict[str, str] = {}
    for e in events:
        d = e["data"]
        is_trigger = d.get("action", "page") not in ("acknowledge", "resolve")
        if e["type"] in ("escalation.paged", "comms.sent") and d.get("channel") == "pagerduty" and is_trigger:
            opened_at.setdefault(str(d.get("response_id")), e["ts"])
    lines = []
    for dedup in keys:
        key = f"pagerduty-{action}:{dedup}"
        if key in skip:
            continue
        if action == "acknowledge" and acked and parse_ts(opened_at.get(dedup, acked)) > parse_ts(acked):
            continue
        res = pager.event(action, dedup, "", state.get("severity"), settings.service.component)
        base = {"kind": f"pagerduty_{action}", "channel": "pagerduty", "action": action, "key": key}
        if res.ok:
            record.append("comms.sent", {**base, "response_id": dedup}, actor=actor)
            lines.append(f"{key}: done")
        else:
            record.append("comms.failed", {**base, "error": res.error}, actor=actor)
            lines.append(f"{key}: failed: {res.error} (retried in {human(RETRY_AFTER)})")
    return lines


def decide_watch(
    record: Record, settings: Settings, environ: Mapping[str, str], *, now: datetime, actor: str
) -> list[str]:
    """Once a live incident's watch has ended, decide its resolution from the metrics over the whole watch (once)."""
    from irkit.resolve import check_resolution, watch_window

    events = record.events()
    window = watch_window(events, settings.resolution.min_watch)
    if window is None or now < window[1]:
        return []
    key = f"watch:{rfc3339(window[0])}"
    if any(e["type"] == "resolution.checked" and e["data"].get("key") == key for e in events):
        return []
    decision = check_resolution(record, settings, environ, "live", now=lambda: now, actor=actor, key=key)
    return [f"{key}: " + "; ".join(decision.lines())]


def tick(
    root: str | Path,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    now: datetime | None = None,
    actor: str = "irkit",
    senders: Mapping[str, SenderFactory] | None = None,
    open_record: Callable[[str], Record] | None = None,
    store: Store | None = None,
) -> dict[str, list[str]]:
    """One pass over every incident under ``root``; ``now`` (a replayed moment) applies to replayed records only.

    A record that cannot be evaluated (broken chain, unreadable) is reported in its lines; the others go on.
    On a shared ``store`` only incidents the timers still concern are visited, each under its row
    lock; one that another writer holds (a runbook running) is left for the next pass.
    """
    store = store or FileStore(root)
    out: dict[str, list[str]] = {}
    for iid in store.ids(active=now is None):
        try:
            with store.try_writing(iid) as here:
                if here is None:
                    continue
                record = open_record(iid) if open_record else Record.open(here, iid, **settings.record_options(environ))
                lines = _tick_one(record, settings, environ, now=now, actor=actor, senders=senders)
        except IrkitError as exc:
            lines = [f"could not evaluate: {exc}"]
        if lines:
            out[iid] = lines
    return out


def _tick_one(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    now: datetime | None,
    actor: str,
    senders: Mapping[str, SenderFactory] | None,
) -> list[str]:
    problem = record.broken()
    if problem:
        return [f"does not verify, nothing done: {problem}"]
    state = record.state()
    if state.get("status") in (Status.RESOLVED, Status.REVIEWED) and not state["providers"]["pagerduty"]:
        return []  # nothing left to do for it: no escalation, no update, no PagerDuty alert to resolve
    at = utcnow()
    if now is None and state.get("replay"):
        return []  # a replay lives on its own recorded clock: evaluated only with --at, never paged today
    if now is not None:
        if not state.get("replay"):
            return ["not a replay: evaluated at the real time only"]
        at = now
        record.clock = lambda at=at: at  # type: ignore[misc]
    return tick_incident(record, settings, environ, now=at, actor=actor, senders=senders)


class Ticker:
    """Runs :func:`tick` every ``interval_s`` seconds in a daemon thread (``irkit serve``'s clock)."""

    def __init__(
        self,
        root: Path,
        settings: Settings,
        environ: Mapping[str, str],
        *,
        interval_s: float,
        actor: str = "irkit-serve",
        on_lines: Callable[[dict[str, list[str]]], None] | None = None,
        store: Store | None = None,
    ) -> None:
        import threading

        self.root, self.settings, self.environ, self.actor = root, settings, environ, actor
        self.store = store or FileStore(root)
        self.leading = False  # whether this replica runs the timers (on a shared store, one replica does)
        self.interval_s = interval_s
        self.on_lines = on_lines
        self.passes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="irkit-tick", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.leading = self.store.leader()
                lines = (
                    tick(self.root, self.settings, self.environ, actor=self.actor, store=self.store)
                    if self.leading
                    else {}
                )
                self.last_error = None
                if self.on_lines and lines:
                    self.on_lines(lines)
            except (IrkitError, OSError) as exc:  # a bad pass is reported on /healthz; the next one runs
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.passes += 1
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Start ticking (the first pass runs at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pass in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        close = getattr(self.store, "close", None)
        if close is not None:
            close()  # a shared store's scheduler lock goes to another replica at once
