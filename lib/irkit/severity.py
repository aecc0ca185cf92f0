"""The P0–P4 severity policy of the incident response plan, as data plus the clocks it implies.

The plan's table (definition, examples, response time, resolution target, escalation, update cadence)
is the default :class:`SeverityPolicy`; a team overrides any field in ``irkit.yaml``. Everything that
asks "when is the next update due?" or "is the response late?" asks this module, so the answer is the
same in the CLI, the runbooks and the post-mortem.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irkit.events import Status
from irkit.times import human, parse_ts, rfc3339, stamp, utcnow


class Level(enum.StrEnum):
    """A severity level; P0 is the most severe."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def rank(self) -> int:
        """0 for P0 … 4 for P4: lower is more severe."""
        return int(self.value[1])


class LevelPolicy(BaseModel):
    """What one severity level means and what it obliges responders to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    definition: str
    examples: tuple[str, ...] = ()
    response_time: timedelta | None = Field(
        description="Time from detection to a responder engaged; None means best effort."
    )
    response_note: str = ""
    resolution_target: timedelta | None = Field(description="Time from detection to resolved; None = backlog.")
    escalation: str
    page: bool = Field(description="Whether the on-call SRE is paged (vs notified or ticketed).")
    update_every: timedelta | None = Field(description="Stakeholder update cadence; None = none required.")
    stakeholder_email: bool = False
    review_within: timedelta | None = Field(
        description="Post-incident review due this long after resolution; None = no review required."
    )
    review_earliest: timedelta | None = Field(
        default=None, description="Earliest sensible review time after resolution (the plan's 24 h of '24-48 h')."
    )
    business_hours: bool = Field(
        default=False, description="The response time runs on the business-hours calendar (plan: P2, P3)."
    )


def _h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def _m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


DEFAULT_LEVELS: dict[Level, LevelPolicy] = {
    Level.P0: LevelPolicy(
        name="Critical",
        definition="Complete service outage or data loss affecting all users",
        examples=(
            "Service completely unavailable (all pods down)",
            "Data corruption or loss",
            "Security breach actively occurring",
            "Database completely unavailable",
        ),
        response_time=_m(5),
        response_note="Immediate (< 5 minutes)",
        resolution_target=_h(1),
        escalation="Page on-call SRE + Engineering Manager immediately",
        page=True,
        update_every=_m(15),
        stakeholder_email=True,
        review_earliest=_h(24),
        review_within=_h(48),
    ),
    Level.P1: LevelPolicy(
        name="High",
        definition="Significant service degradation affecting majority of users",
        examples=(
            "Error rate > 10%",
            "Latency > 10x normal",
            "Critical feature completely broken",
            "Partial data loss (recoverable from backup)",
        ),
        response_time=_m(15),
        response_note="< 15 minutes",
        resolution_target=_h(4),
        escalation="Page on-call SRE",
        page=True,
        update_every=_m(30),
        stakeholder_email=True,
        review_earliest=_h(24),
        review_within=_h(48),
    ),
    Level.P2: LevelPolicy(
        name="Medium",
        definition="Service degradation affecting subset of users or features",
        examples=("Error rate 5-10%", "Latency 3-10x normal", "Non-critical feature broken", "Performance degradation"),
        response_time=_h(1),
        response_note="< 1 hour (business hours)",
        business_hours=True,
        resolution_target=_h(24),
        escalation="Notify on-call SRE (no page)",
        page=False,
        update_every=_h(1),
        review_within=timedelta(weeks=1),
    ),
    Level.P3: LevelPolicy(
        name="Low",
        definition="Minor issues with workarounds available",
        examples=("Error rate 1-5%", "Latency 2-3x normal", "Edge case bugs", "Non-urgent security vulnerabilities"),
        response_time=_h(4),
        response_note="< 4 hours (business hours)",
        business_hours=True,
        resolution_target=timedelta(weeks=1),
        escalation="Create ticket for team",
        page=False,
        update_every=timedelta(days=1),
        review_within=timedelta(weeks=1),
    ),
    Level.P4: LevelPolicy(
        name="Trivial",
        definition="Cosmetic issues or feature requests",
        examples=("Documentation errors", "UI/UX improvements", "Performance optimizations (non-urgent)"),
        response_time=None,
        response_note="Best effort",
        resolution_target=None,
        escalation="None",
        page=False,
        update_every=None,
        review_within=None,
    ),
}


class Rule(BaseModel):
    """``value > threshold`` (or ``>=`` when inclusive) means at least ``level``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Level
    threshold: float
    inclusive: bool = True

    def matches(self, value: float) -> bool:
        """Whether ``value`` implies this rule's level: ≥ the threshold, or > when not inclusive."""
        # Rounded so a ratio computed as 0.049999999999 by PromQL still counts as the plan's 5%.
        v = round(value, 9)
        return v >= self.threshold if self.inclusive else v > self.threshold

    @property
    def text(self) -> str:
        """The comparison as shown in reasons, e.g. ``≥ 0.05``."""
        return f"{'≥' if self.inclusive else '>'} {self.threshold:g}"


class MetricRules(BaseModel):
    """The plan's metric examples as rules: "Error rate > 10%" is P1, "5-10%" P2, "1-5%" P3, …"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_ratio: tuple[Rule, ...] = (
        Rule(level=Level.P1, threshold=0.10, inclusive=False),
        Rule(level=Level.P2, threshold=0.05),
        Rule(level=Level.P3, threshold=0.01),
    )
    latency_ratio: tuple[Rule, ...] = (
        Rule(level=Level.P1, threshold=10.0, inclusive=False),
        Rule(level=Level.P2, threshold=3.0),
        Rule(level=Level.P3, threshold=2.0),
    )
    unavailable_at_or_below: float = Field(
        0.0, description="availability (share of healthy targets) at or below this is a complete outage: P0"
    )


class BusinessHours(BaseModel):
    """The working calendar that "(business hours)" response times run on: zone, working days, hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    days: tuple[int, ...] = Field((0, 1, 2, 3, 4), description="Working days, Monday = 0")
    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _valid(self) -> BusinessHours:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if not self.days or any(d not in range(7) for d in self.days):
            raise ValueError("days: working days as numbers 0 (Monday) … 6 (Sunday), at least one")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """``start`` plus ``duration`` of working time (time outside working hours does not count)."""
        tz = ZoneInfo(self.timezone)
        day = start.astimezone(tz).date()
        left = duration
        for _ in range(8 * 366):  # a duration longer than years of working time is a configuration error
            if day.weekday() in self.days:
                opens = datetime.combine(day, self.start, tz).astimezone(UTC)
                closes = datetime.combine(day, self.end, tz).astimezone(UTC)
                begin = max(start, opens)
                if begin < closes:
                    if begin + left <= closes:
                        return begin + left
                    left -= closes - begin
            day += timedelta(days=1)
        raise ValueError(f"{duration} of business hours does not fit in eight years of this calendar")


class SeverityPolicy(BaseModel):
    """The whole P0–P4 table; every level must be present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: dict[Level, LevelPolicy] = Field(default_factory=lambda: dict(DEFAULT_LEVELS))
    metric_rules: MetricRules = MetricRules()
    calendar: BusinessHours = BusinessHours()

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: object) -> object:
        # A config file may override a few fields of a few levels; the rest keep the plan's values.
        if isinstance(data, dict) and isinstance(data.get("levels"), dict):
            merged: dict[str, object] = {}
            for level in Level:
                base = DEFAULT_LEVELS[level].model_dump()
                override = data["levels"].get(level.value) or data["levels"].get(level) or {}
                if not isinstance(override, dict):
                    merged[level.value] = override
                    continue
                merged[level.value] = {**base, **override}
            unknown = set(map(str, data["levels"])) - {lv.value for lv in Level}
            if unknown:
                raise ValueError(f"unknown severity level(s) {sorted(unknown)}; expected P0..P4")
            return {**data, "levels": merged}
        return data

    def __getitem__(self, level: Level | str) -> LevelPolicy:
        return self.levels[Level(level)]

    def response_due(self, level: Level | str, detected_at: datetime) -> datetime | None:
        """When a responder must be engaged; None when the level is best effort."""
        pol = self[level]
        if pol.response_time is None:
            return None
        if pol.business_hours:
            return self.calendar.add(detected_at, pol.response_time)
        return detected_at + pol.response_time

    def resolution_due(self, level: Level | str, detected_at: datetime) -> datetime | None:
        """When the incident must be resolved; None when it goes to the backlog."""
        rt = self[level].resolution_target
        return detected_at + rt if rt is not None else None

    def next_update_due(
        self, level: Level | str, detected_at: datetime, last_update_at: datetime | None
    ) -> datetime | None:
        """When the next stakeholder update is due: one cadence after the last update (or detection)."""
        every = self[level].update_every
        if every is None:
            return None
        return (last_update_at or detected_at) + every

    def missed_updates(
        self, level: Level | str, detected_at: datetime, updates: list[datetime], end: datetime
    ) -> list[tuple[datetime, datetime | None]]:
        """Every stakeholder update that was due before ``end`` and not given in time: (due, given late or None).

        After a late update the cadence restarts from it; with none, the next one is due a cadence after
        the missed one. At most 100 are listed.
        """
        given = sorted(updates)
        missed: list[tuple[datetime, datetime | None]] = []
        last: datetime | None = None
        while len(missed) < 100:
            due = self.next_update_due(level, detected_at, last)
            if due is None or due > end:
                break
            after = last or detected_at
            nxt = next((u for u in given if u > after), None)
            if nxt is not None and nxt <= due:
                last = nxt
                continue
            late = nxt if nxt is not None and nxt <= end else None
            missed.append((due, late))
            last = late or due
        return missed

    def review_due(self, level: Level | str, resolved_at: datetime) -> tuple[datetime, datetime] | None:
        """The post-incident review window (earliest, latest) after resolution; None when not required."""
        pol = self[level]
        if pol.review_within is None:
            return None
        return resolved_at + (pol.review_earliest or timedelta(0)), resolved_at + pol.review_within


# --------------------------------------------------------------------------- the clocks of one incident


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
    reviewed_at: datetime | None = None

    @property
    def review_overdue(self) -> bool:
        """Resolved, a review is required, it has not been held, and its window has closed."""
        return self.review_due is not None and self.reviewed_at is None and self.now > self.review_due[1]

    @property
    def response_overdue(self) -> bool:
        """No acknowledgement and the response target has passed (or it was acknowledged late)."""
        if self.response_due is None:
            return False
        return (self.acknowledged_at or self.now) > self.response_due

    @property
    def resolution_overdue(self) -> bool:
        """Not resolved by the resolution target (or resolved after it)."""
        if self.resolution_due is None:
            return False
        return (self.resolved_at or self.now) > self.resolution_due

    @property
    def update_overdue(self) -> bool:
        """Still open and the next stakeholder update is late."""
        return self.resolved_at is None and self.next_update_due is not None and self.now > self.next_update_due

    def rows(self, *, machine: bool = False) -> list[tuple[str, str, str]]:
        """(clock, when, state) rows for tables and ``irkit show``: times to the second, or RFC 3339 with ``machine``."""

        def fmt(dt: datetime | None) -> str:
            if machine:
                return rfc3339(dt) if dt else ""
            return stamp(dt) if dt else "—"

        def state(due: datetime | None, overdue: bool, done: datetime | None) -> str:
            if due is None:
                return "no target"
            if overdue:
                return "OVERDUE" if done is None else "missed"
            return "met" if done is not None else f"due in {human(due - self.now)}"

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
            review = "held" if self.reviewed_at else ("OVERDUE" if self.review_overdue else f"due by {fmt(self.review_due[1])}")
            rows.append(("review window", f"{fmt(self.review_due[0])} .. {fmt(self.review_due[1])}", review))
        return rows


def judged_at(state: Mapping[str, Any]) -> datetime:
    """Now — or, for a replayed incident, its own last moment (it is not judged against today's date)."""
    return parse_ts(state["last_event_at"]) if state.get("replay") and state.get("last_event_at") else utcnow()


def compute_clocks(state: Mapping[str, Any], policy: SeverityPolicy, now: datetime) -> Clocks:
    """Response, resolution, update and review clocks from the record's state and the policy."""
    level = Level(state["severity"]) if state.get("severity") else None
    detected = parse_ts(state["detected_at"])
    times = state.get("status_times", {})
    acked = parse_ts(times["acknowledged"]) if times.get("acknowledged") else None
    # A reopened incident (resolved → investigating) is not resolved, whatever it once was.
    closed = state.get("status") in (Status.RESOLVED, Status.REVIEWED)
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
        reviewed_at=parse_ts(times["reviewed"]) if times.get("reviewed") else None,
    )


def most_severe(levels: list[Level]) -> Level:
    """The most severe of several levels (P0 beats P1)."""
    return min(levels, key=lambda lv: lv.rank)


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Reason:
    """One piece of evidence and the level it implies."""

    signal: str
    value: float
    threshold: str
    level: Level
    text: str

    def as_dict(self) -> dict[str, object]:
        """The reason as JSON-ready data, level as its name (``P1``)."""
        return {
            "signal": self.signal,
            "value": self.value,
            "threshold": self.threshold,
            "level": self.level.value,
            "text": self.text,
        }


@dataclass(frozen=True)
class Evidence:
    """What the signals showed (worst values over the evaluation window); None = could not read."""

    error_ratio: float | None = None
    latency_p99: float | None = None
    latency_baseline: float | None = None
    availability: float | None = None
    health_ok: bool | None = None  # the service's health endpoint answered OK (None: not probed)
    pods_ready: int | None = None  # ready pods of the workload (None: could not read the pods)
    unavailable: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def latency_ratio(self) -> float | None:
        """p99 latency as a multiple of its baseline; None when either is missing."""
        if self.latency_p99 is None or not self.latency_baseline:
            return None
        return self.latency_p99 / self.latency_baseline


@dataclass(frozen=True)
class Assessment:
    """A severity level with every reason that decided it, and what could not be checked."""

    level: Level | None
    reasons: tuple[Reason, ...]
    unavailable: dict[str, str]
    alert_label: str | None = None

    def summary(self) -> str:
        """One line: the level and the reasons that decided it, or why no level was assigned."""
        if self.level is None:
            if self.unavailable and not self.reasons:
                return "could not assess from metrics: " + "; ".join(f"{k}: {v}" for k, v in self.unavailable.items())
            return "no metric evidence of impact (all signals below the plan's thresholds)"
        deciding = [r.text for r in self.reasons if r.level == self.level]
        return f"{self.level.value}: " + "; ".join(deciding)


def classify(evidence: Evidence, rules: MetricRules | None = None) -> Assessment:
    """The most severe level the evidence supports, with every reason (signal, value, threshold)."""
    rules = rules or MetricRules()
    reasons: list[Reason] = []
    unavailable = dict(evidence.unavailable)
    if evidence.availability is not None and evidence.availability <= rules.unavailable_at_or_below:
        reasons.append(
            Reason(
                "availability",
                evidence.availability,
                f"≤ {rules.unavailable_at_or_below:g}",
                Level.P0,
                f"no healthy targets (availability {evidence.availability:.0%}): service completely unavailable",
            )
        )
    if evidence.health_ok is False and evidence.pods_ready == 0:
        reasons.append(
            Reason(
                "pods ready",
                0.0,
                "0 and health endpoint failing",
                Level.P0,
                "all pods down: no ready pod and the health endpoint does not answer",
            )
        )
    if evidence.error_ratio is not None:
        for rule in rules.error_ratio:
            if rule.matches(evidence.error_ratio):
                reasons.append(
                    Reason(
                        "error_ratio",
                        evidence.error_ratio,
                        rule.text,
                        rule.level,
                        f"error ratio {evidence.error_ratio:.1%} {rule.text.split()[0]} {rule.threshold:.0%}",
                    )
                )
                break
    ratio = evidence.latency_ratio
    if ratio is not None:
        for rule in rules.latency_ratio:
            if rule.matches(ratio):
                reasons.append(
                    Reason(
                        "latency_ratio",
                        ratio,
                        rule.text,
                        rule.level,
                        f"p99 latency {ratio:.1f}x normal {rule.text.split()[0]} {rule.threshold:g}x "
                        f"({evidence.latency_p99:.3g}s vs {evidence.latency_baseline:.3g}s)",
                    )
                )
                break
    elif evidence.latency_p99 is not None and "latency_baseline" not in unavailable:
        unavailable["latency_baseline"] = "no baseline data for the same window a week earlier"
    level = most_severe([r.level for r in reasons]) if reasons else None
    return Assessment(level, tuple(sorted(reasons, key=lambda r: r.level.rank)), unavailable)
