"""Who is on call, and who should be engaged now: the rotation and the escalation ladder.

The rotation is weekly and anchored in its own time zone: handover happens at the same local time
every week, so across a DST change the handover moves by an hour in UTC, as people expect. The
ladder (plan defaults: on-call SRE at once, Engineering Lead at 15 min, Engineering Manager at 30,
CTO at 60, for P0/P1) is computed from detection and acknowledgement: each step is due at detection
plus its delay, engaged when it acknowledged or was paged, overdue when due and not engaged while
the incident is still open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
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
    """One escalation step: the role to engage, how long after detection, and who fills it."""

    role: str
    after: timedelta
    who: str | None = Field(None, description="'primary', 'secondary' or a contacts role; default: the role")


class EscalationSettings(_Model):
    """The plan's ladder for P0/P1 incidents."""

    levels: tuple[Level, ...] = (Level.P0, Level.P1)
    ladder: tuple[LadderStep, ...] = (
        LadderStep(role="On-call SRE", after=timedelta(0), who="primary"),
        LadderStep(role="Engineering Lead", after=timedelta(minutes=15)),
        LadderStep(role="Engineering Manager", after=timedelta(minutes=30)),
        LadderStep(role="CTO", after=timedelta(minutes=60)),
    )


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
    """One ladder step for an incident: who, when due, when engaged, and its state (engaged, OVERDUE, …)."""

    role: str
    who: str
    due_at: datetime
    engaged_at: datetime | None
    state: str  # engaged | overdue | due later | not needed

    def row(self) -> dict[str, Any]:
        """The step as a table row, times as HH:MM:SS ("—" when not engaged)."""
        return {
            "role": self.role,
            "who": self.who,
            "due": self.due_at.strftime("%H:%M:%S"),
            "engaged": self.engaged_at.strftime("%H:%M:%S") if self.engaged_at else "—",
            "state": self.state,
        }


OPEN_STATUSES = ("detected", "acknowledged", "investigating", "mitigating")
RESPONSE_GRACE = timedelta(minutes=5)  # the plan's "On-Call SRE ◄── 0-5 minutes"


def ladder(
    esc: EscalationSettings, rota: RotationSettings, state: Mapping[str, Any], events: Sequence[Event], now: datetime
) -> list[StepState]:
    """Each ladder step for this incident at ``now``: due time, who, and whether it is engaged or overdue."""
    level = Level(state["severity"]) if state.get("severity") else None
    detected = parse_ts(state["detected_at"])
    if level not in esc.levels:
        return []
    acked = state.get("status_times", {}).get("acknowledged")
    paged = {e["data"].get("role"): parse_ts(e["ts"]) for e in events if e["type"] == "escalation.paged"}
    open_now = state.get("status") in OPEN_STATUSES
    oc = on_call(rota, detected)
    out = []
    for step in esc.ladder:
        who = {"primary": oc.primary, "secondary": oc.secondary}.get(step.who or "")
        if who is None:
            contact = rota.contacts.get(step.who or step.role)
            who = contact.name if contact else step.role
        due = detected + step.after
        engaged = parse_ts(acked) if (step.who == "primary" and acked) else paged.get(step.role)
        if engaged is not None:
            state_text = "engaged" + (
                " (late)" if engaged > due + (RESPONSE_GRACE if step.after == timedelta(0) else timedelta(0)) else ""
            )
        elif not open_now:
            state_text = "not needed (incident no longer open)" if due > _closed_at(state, now) else "missed"
        elif now >= due + (RESPONSE_GRACE if step.after == timedelta(0) else timedelta(0)):
            state_text = "OVERDUE"
        else:
            state_text = "due later"
        out.append(StepState(step.role, who, due, engaged, state_text))
    return out


def _closed_at(state: Mapping[str, Any], now: datetime) -> datetime:
    times = state.get("status_times", {})
    for s in ("monitoring", "resolved", "reviewed"):
        if times.get(s):
            return parse_ts(times[s])
    return now
