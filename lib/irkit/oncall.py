"""Who is on call, and who should be engaged now: the rotation and the escalation ladder.

The rotation is weekly and anchored in its own time zone: handover happens at the same local time
every week, so across a DST change the handover moves by an hour in UTC, as people expect.

The escalation ladder is per level. The plan's defaults: P0 pages the on-call SRE **and** the
Engineering Manager at once, the secondary on-call at 5 min if nobody has acknowledged, the
Engineering Lead at 15 and the CTO at 60; P1 pages the on-call SRE, the secondary at 15 min if
unacknowledged, the Engineering Lead at 15 and the Engineering Manager at 30 (the escalation path's
"CTO at 60 min" is for P0 only, as the rotation section says); P2 notifies the on-call SRE without a
page; P3 creates a ticket for the team; P4 does nothing. Each step is due at detection plus its
delay, engaged when acknowledged (the primary) or paged, overdue when due and not engaged while the
incident is still open. :mod:`irkit.scheduler` acts on it; this module only computes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irkit.events import Event
from irkit.severity import Level
from irkit.times import parse_ts


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Model):
    """An escalation contact: display name and, optionally, email and Slack handle."""

    name: str
    email: str | None = None
    slack: str | None = None


class RotationSettings(_Model):
    """Weekly primary rotation (plan: Engineer A–D), a secondary, and escalation contacts by role."""

    primary: tuple[str, ...] = ("Engineer A", "Engineer B", "Engineer C", "Engineer D")
    start: datetime = Field(datetime(2025, 11, 3, 9, 0), description="First handover, local time in timezone")
    timezone: str = "UTC"
    shift: timedelta = timedelta(days=7)
    secondary: str = "SRE Team Lead"
    contacts: dict[str, Contact] = Field(
        default_factory=lambda: {
            "Engineering Lead": Contact(name="Engineering Lead"),
            "Engineering Manager": Contact(name="Engineering Manager"),
            "CTO": Contact(name="CTO"),
        }
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("primary")
    @classmethod
    def _someone(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("the rotation needs at least one person")
        return v


class LadderStep(_Model):
    """One rung of an escalation ladder: who is engaged, how, and how long after detection."""

    role: str
    after: timedelta
    who: str | None = Field(None, description="'primary', 'secondary' or a contacts role; default: the role")
    action: Literal["page", "notify", "ticket"] = Field("page", description="page (PagerDuty), notify (Slack), ticket (Jira)")
    unless_acknowledged: bool = Field(False, description="Only when the incident is still unacknowledged by then")


def _plan_ladders() -> dict[Level, tuple[LadderStep, ...]]:
    """The plan's escalation: per-level rules, the escalation path (P0/P1) and the rotation's "CTO (for P0 only)"."""
    sre = LadderStep(role="On-call SRE", after=timedelta(0), who="primary")
    lead = LadderStep(role="Engineering Lead", after=timedelta(minutes=15))
    manager_now = LadderStep(role="Engineering Manager", after=timedelta(0))
    manager = LadderStep(role="Engineering Manager", after=timedelta(minutes=30))
    cto = LadderStep(role="CTO", after=timedelta(minutes=60))

    def secondary(after: timedelta) -> LadderStep:
        return LadderStep(role="Secondary on-call", after=after, who="secondary", unless_acknowledged=True)

    return {
        # "Page on-call SRE + Engineering Manager immediately"; the manager's 30-minute rung is then met.
        Level.P0: (sre, manager_now, secondary(timedelta(minutes=5)), lead, cto),
        Level.P1: (sre, secondary(timedelta(minutes=15)), lead, manager),
        Level.P2: (LadderStep(role="On-call SRE", after=timedelta(0), who="primary", action="notify"),),
        Level.P3: (LadderStep(role="Team", after=timedelta(0), action="ticket"),),
        Level.P4: (),
    }


class EscalationSettings(_Model):
    """Escalation ladders per severity level (a level left out of ``ladders`` keeps the plan's)."""

    ladders: dict[Level, tuple[LadderStep, ...]] = Field(default_factory=_plan_ladders)

    @field_validator("ladders")
    @classmethod
    def _complete(cls, v: dict[Level, tuple[LadderStep, ...]]) -> dict[Level, tuple[LadderStep, ...]]:
        return {**_plan_ladders(), **v}

    def for_level(self, level: Level | None) -> tuple[LadderStep, ...]:
        """The ladder of ``level`` (empty when unassessed)."""
        return self.ladders.get(level, ()) if level is not None else ()


@dataclass(frozen=True)
class OnCall:
    """Who holds the pager at a moment: primary and secondary, and the shift's start and end."""

    primary: str
    secondary: str
    shift_start: datetime
    shift_end: datetime


def _local_handover(cfg: RotationSettings, n: int) -> datetime:
    """The n-th handover as an aware datetime: same local wall time every shift (DST-safe)."""
    tz = ZoneInfo(cfg.timezone)
    start = cfg.start.replace(tzinfo=None)
    local = start + n * cfg.shift  # wall-clock arithmetic, then localized
    return local.replace(tzinfo=tz)


def on_call(cfg: RotationSettings, at: datetime) -> OnCall:
    """Who is primary (and secondary) at ``at``."""
    tz = ZoneInfo(cfg.timezone)
    local = at.astimezone(tz).replace(tzinfo=None)
    n = int((local - cfg.start.replace(tzinfo=None)) // cfg.shift)
    # Adjust for the boundary itself being compared in local wall time
    while _local_handover(cfg, n + 1) <= at:
        n += 1
    while _local_handover(cfg, n) > at:
        n -= 1
    return OnCall(
        cfg.primary[n % len(cfg.primary)], cfg.secondary, _local_handover(cfg, n), _local_handover(cfg, n + 1)
    )


def handovers(cfg: RotationSettings, start: datetime, end: datetime) -> list[tuple[datetime, str, str]]:
    """Every handover in [start, end]: (when, from, to)."""
    out = []
    cur = on_call(cfg, start)
    t = cur.shift_end
    while t <= end:
        nxt = on_call(cfg, t)
        out.append((t, cur.primary, nxt.primary))
        cur, t = nxt, nxt.shift_end
    return out


@dataclass(frozen=True)
class StepState:
    """One ladder step for an incident at a moment: who, how, when due, whether engaged, and what that means."""

    role: str
    who: str
    action: str  # page | notify | ticket
    due_at: datetime
    engaged_at: datetime | None
    state: str  # engaged | OVERDUE | due later | not needed (…) | missed
    needed: bool  # False: acknowledged before an "unless acknowledged" step, or the incident closed first

    def row(self) -> dict[str, Any]:
        """The step as a table row."""
        return {
            "role": self.role,
            "who": self.who,
            "how": self.action,
            "due": self.due_at.strftime("%H:%M:%S"),
            "engaged": self.engaged_at.strftime("%H:%M:%S") if self.engaged_at else "—",
            "state": self.state,
        }


OPEN_STATUSES = ("detected", "acknowledged", "investigating", "mitigating")
RESPONSE_GRACE = timedelta(minutes=5)  # the plan's "On-Call SRE ◄── 0-5 minutes"


def acknowledged_by(events: Sequence[Event]) -> str | None:
    """Who acknowledged the incident (the actor of the move to acknowledged), if anyone."""
    for e in events:
        if e["type"] == "status.changed" and e["data"].get("to") == "acknowledged":
            return str(e["actor"])
    return None


def ladder(
    esc: EscalationSettings, rota: RotationSettings, state: Mapping[str, Any], events: Sequence[Event], now: datetime
) -> list[StepState]:
    """Each ladder step of the incident's level at ``now``: due time, who, and whether it is engaged or overdue.

    The primary on-call is engaged by acknowledging; every other step by being paged, notified or
    ticketed (``escalation.paged``). A step marked ``unless_acknowledged`` is not needed once the
    incident was acknowledged before it came due.
    """
    level = Level(state["severity"]) if state.get("severity") else None
    detected = parse_ts(state["detected_at"])
    acked_text = state.get("status_times", {}).get("acknowledged")
    acked = parse_ts(acked_text) if acked_text else None
    paged = {
        (e["data"].get("role"), e["data"].get("action", "page")): parse_ts(e["ts"])
        for e in events
        if e["type"] == "escalation.paged"
    }
    ticketed = next(
        (parse_ts(e["ts"]) for e in events if e["type"] == "comms.sent" and e["data"].get("channel") == "jira"), None
    )
    open_now = state.get("status") in OPEN_STATUSES
    oc = on_call(rota, detected)
    out = []
    for step in esc.for_level(level):
        who = {"primary": oc.primary, "secondary": oc.secondary}.get(step.who or "")
        if who is None:
            contact = rota.contacts.get(step.who or step.role)
            who = contact.name if contact else step.role
        due = detected + step.after
        grace = RESPONSE_GRACE if step.who == "primary" else timedelta(0)
        engaged = (
            acked
            if step.who == "primary"
            else (ticketed if step.action == "ticket" else paged.get((step.role, step.action)))
        )
        needed = True
        if engaged is not None:
            text = "engaged" + (" (late)" if engaged > due + grace else "")
        elif step.unless_acknowledged and acked is not None:
            needed = False
            text = "not needed (acknowledged in time)" if acked <= due else f"missed (acknowledged {acked:%H:%M})"
        elif not open_now:
            closed = _closed_at(state, now)
            needed = due <= closed
            text = "missed" if needed else "not needed (incident no longer open)"
        elif now >= due + grace:
            text = "OVERDUE"
        else:
            text = "due later" if now < due else "due now"
        out.append(StepState(step.role, who, step.action, due, engaged, text, needed))
    return out


def _closed_at(state: Mapping[str, Any], now: datetime) -> datetime:
    times = state.get("status_times", {})
    for s in ("monitoring", "resolved", "reviewed"):
        if times.get(s):
            return parse_ts(times[s])
    return now
