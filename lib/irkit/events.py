"""Every event type a record may hold, with the fields it carries, and the incident state machine.

This is the one place event types are declared. :meth:`irkit.record.Record.append` refuses a type
that is not here, a declared field that is missing, and (for closed types) a field that is not
declared, so a typo in a module becomes a failing test instead of a silently different timeline.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from irkit.errors import TransitionError

Event = dict[str, Any]  # {seq, ts, type, actor, data, prev, hash[, sig]} as read from events.jsonl


class Status(enum.StrEnum):
    """Where an incident is in its life."""

    DETECTED = "detected"
    ACKNOWLEDGED = "acknowledged"
    INVESTIGATING = "investigating"
    MITIGATING = "mitigating"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    REVIEWED = "reviewed"


# The forward path of the plan, plus the steps back that real incidents take: a mitigation that did
# not hold sends the incident back to investigating; a regression reopens a resolved incident.
TRANSITIONS: dict[Status, tuple[Status, ...]] = {
    Status.DETECTED: (Status.ACKNOWLEDGED,),
    Status.ACKNOWLEDGED: (Status.INVESTIGATING,),
    Status.INVESTIGATING: (Status.MITIGATING, Status.MONITORING),
    Status.MITIGATING: (Status.MONITORING, Status.INVESTIGATING),
    Status.MONITORING: (Status.RESOLVED, Status.INVESTIGATING, Status.MITIGATING),
    Status.RESOLVED: (Status.REVIEWED, Status.INVESTIGATING),
    Status.REVIEWED: (),
}


def check_transition(current: Status | str, to: Status | str) -> None:
    """Raise :class:`TransitionError` unless ``current -> to`` is allowed."""
    cur, new = Status(current), Status(to)
    allowed = TRANSITIONS[cur]
    if new not in allowed:
        choices = ", ".join(s.value for s in allowed) or "none (final state)"
        raise TransitionError(f"cannot change status from {cur.value} to {new.value}; allowed next: {choices}")


@dataclass(frozen=True)
class EventType:
    """One kind of event: the fields it must carry (non-empty text), the others it may, and whether more are allowed."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    open: bool = False  # carries fields chosen elsewhere (a provider's answer, an opener's labels)
    seals: bool = False  # vouches for a file by its sha256

    def problem(self, data: Mapping[str, Any]) -> str | None:
        """Why ``data`` cannot be an event of this type, or None."""
        for name in self.required:
            if not isinstance(data.get(name), str) or not data[name]:
                return f"data.{name} must be a non-empty string"
        if not self.open:
            unknown = sorted(set(data) - set(self.required) - set(self.optional))
            if unknown:
                return f"undeclared field(s) {', '.join(unknown)} (declare them in irkit.events)"
        return None


_ACTION = ("key", "action")
_NOTEBOOK = ("runbook", "parameters")

EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in (
        # the incident
        EventType(
            "incident.opened",
            ("id",),
            ("title", "service", "severity", "detected_at", "alert_severity_label", "replay"),
            open=True,
        ),
        EventType("severity.set", ("level",), ("reason",)),
        EventType(
            "severity.assessed",
            (),
            ("level", "summary", "reasons", "unavailable", "alert_severity_label", "source"),
        ),
        EventType("status.changed", ("to",), ("from", "reason")),
        EventType("note", ("text",)),
        # alerts
        EventType(
            "alert.firing",
            (),
            ("fingerprint", "alertname", "labels", "annotations", "starts_at", "ends_at", "generator_url"),
        ),
        EventType(
            "alert.resolved",
            (),
            ("fingerprint", "alertname", "labels", "annotations", "starts_at", "ends_at", "generator_url"),
        ),
        # runbook runs and the files they seal
        EventType("notebook.prepared", ("path",), _NOTEBOOK),
        EventType(
            "notebook.started", ("path",), (*_NOTEBOOK, "batch", "source", "run_id", "workdir", "tag", "host")
        ),
        EventType(
            "notebook.finished",
            (),
            (
                "runbook",
                "path",
                "sha256",
                "outcome",
                "summary",
                "cell",
                "ename",
                "evalue",
                "duration_s",
                "tag",
            ),
            seals=True,
        ),
        EventType("notebook.sealed", ("path",), ("sha256",), seals=True),
        EventType(
            "run.interrupted",
            ("path",),
            ("runbook", "outcome", "started_seq", "sha256", "partial", "reason"),
            seals=True,
        ),
        EventType("artifact.added", ("path",), ("sha256", "kind"), open=True, seals=True),
        EventType("record.repaired", (), open=True),
        # readings
        EventType("metrics.read", (), ("source", "window", "evaluation", "signals", "unavailable")),
        EventType("cluster.read", (), ("source", "unavailable")),
        EventType(
            "check.recorded",
            ("item",),
            ("title", "name", "status", "evidence", "details", "latency_ms", "automated"),
        ),
        # mitigations
        EventType(
            "action.planned",
            _ACTION,
            ("args", "target", "description", "before", "after", "cost", "diff", "body", "approve_requested", "batch"),
        ),
        EventType("action.dry_run", _ACTION, ("ok", "result")),
        EventType("action.approved", _ACTION, ("approved_by",)),
        EventType("action.refused", _ACTION, ("reason",)),
        EventType("action.failed", _ACTION, ("error", "before")),
        EventType("action.executed", _ACTION, ("before", "after", "result", "verified", "post_state")),
        # resolution, communication, review
        EventType(
            "resolution.checked",
            (),
            ("as_of", "source", "watch_minutes", "criteria", "decision", "refused", "forced", "watch_until", "key"),
        ),
        EventType("comms.rendered", ("kind",), ("path", "files", "substance")),
        EventType("comms.sent", ("channel",), ("kind", "path", "attempts", "response_id"), open=True),
        EventType(
            "comms.failed", ("channel",), ("kind", "path", "attempts", "error", "role", "key", "who", "action"), open=True
        ),
        EventType("comms.skipped", ("channel",), ("kind", "reason", "key")),
        EventType("escalation.paged", ("role",), ("who", "response_id", "key", "action", "channel"), open=True),
        EventType("escalation.unsent", ("key", "role"), ("who", "action", "channel", "reason")),
        EventType(
            "update.reminded", ("key",), ("role", "who", "action", "channel", "delivered", "reason", "response_id")
        ),
        EventType(
            "update.escalated", ("key",), ("role", "who", "action", "channel", "delivered", "reason", "response_id")
        ),
        EventType("postmortem.rendered", (), ("markdown", "html", "root_cause_given", "action_items")),
    )
}
# Messages that reach stakeholders and so reset the plan's update clock (a page or a ticket does not).
STAKEHOLDER_CHANNELS = ("slack", "statuspage", "smtp")
SEALING_EVENTS = tuple(name for name, t in EVENT_TYPES.items() if t.seals)
SHA256 = re.compile(r"[0-9a-f]{64}")
# The fields the state fold reads without a default: checked again by verify on every stored event.
FOLD_FIELDS: dict[str, tuple[str, ...]] = {
    name: EVENT_TYPES[name].required
    for name in ("incident.opened", "severity.set", "status.changed", "notebook.started", "notebook.prepared")
}


def declared_problem(type: str, data: Mapping[str, Any]) -> str | None:
    """Why a NEW event of ``type`` with ``data`` may not be written: undeclared type or fields, or :func:`shape_problem`."""
    spec = EVENT_TYPES.get(type)
    if spec is None:
        return f"undeclared event type {type!r} (declare it in irkit.events)"
    return spec.problem(data) or shape_problem(type, data)


def shape_problem(type: str, data: Mapping[str, Any]) -> str | None:
    """Why ``data`` cannot be read back as an event of ``type`` (what the state fold and verify rely on), or None.

    Verify applies this to events already written (an older irkit may have declared other fields);
    new events also pass :func:`declared_problem`.
    """
    for name in FOLD_FIELDS.get(type, ()):
        if not isinstance(data.get(name), str) or not data[name]:
            return f"data.{name} must be a non-empty string"
    if type in SEALING_EVENTS and data.get("sha256") is not None:
        if not isinstance(data.get("path"), str) or not data["path"]:
            return "data.path must be a non-empty string"
        if not isinstance(data["sha256"], str) or not SHA256.fullmatch(data["sha256"]):
            return "data.sha256 must be 64 lowercase hex digits"
    if type in ("alert.firing", "alert.resolved") and not isinstance(data.get("labels", {}), dict):
        return "data.labels must be an object"
    return None
