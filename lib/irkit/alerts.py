"""Alertmanager notifications (webhook payload version 4) and how they open incidents.

Alert text is data, end to end: labels and annotations are validated as ``str -> str`` maps, stored in
events as JSON, and never formatted into code. The incident id is derived from the alert group's
start time and a hash of its ``groupKey``, so the same group always maps to the same id and no
alert text ever becomes part of a path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from irkit.errors import BadInputError
from irkit.record import Record
from irkit.redact import Redactor
from irkit.severity import Level
from irkit.times import Clock, rfc3339, utcnow

if TYPE_CHECKING:
    from irkit.signing import Signer



class Alert(BaseModel):
    """One alert inside a notification."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""

    def event_data(self) -> dict[str, Any]:
        """The alert as stored in the incident's events: labels, annotations, RFC 3339 times, no unset end."""
        ends = rfc3339(self.endsAt) if self.endsAt and self.endsAt.year > 1 else None
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.labels.get("alertname", ""),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": rfc3339(self.startsAt),
            "ends_at": ends,
            "generator_url": self.generatorURL,
        }


class Notification(BaseModel):
    """An Alertmanager webhook notification, version 4."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1)

    @property
    def started_at(self) -> datetime:
        """When the group started firing: the earliest ``startsAt`` among its alerts."""
        return min(a.startsAt for a in self.alerts)

    @property
    def title(self) -> str:
        """A one-line title: the first common summary/title/description annotation, else the alertname."""
        for key in ("summary", "title", "description"):
            if self.commonAnnotations.get(key):
                return self.commonAnnotations[key][:200]
        return self.commonLabels.get("alertname") or self.groupLabels.get("alertname") or "Alert"

    @property
    def severity(self) -> Level | None:
        """The alert's own severity label when it names a plan level (P0–P4)."""
        value = self.commonLabels.get("severity", "").upper()
        return Level(value) if value in Level.__members__ else None


def parse_notification(payload: bytes | str | Mapping[str, Any]) -> Notification:
    """Validate a webhook body; raise :class:`BadInputError` with one line naming the problem."""
    try:
        if isinstance(payload, bytes | str):
            return Notification.model_validate_json(payload)
        return Notification.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        raise BadInputError(f"not an Alertmanager v4 notification: {loc}: {err['msg']}") from exc


def incident_id_for(note: Notification, prefix: str = "INC") -> str:
    """``INC-<yyyymmdd>-<hhmm>-<8 hex of groupKey>``: stable for the group, safe as a path."""
    digest = hashlib.sha256(note.groupKey.encode()).hexdigest()[:8]
    return f"{prefix}-{note.started_at:%Y%m%d-%H%M}-{digest}"


def open_from_notification(
    root: str | Path,
    note: Notification,
    *,
    service: str,
    actor: str,
    incident_id: str | None = None,
    clock: Clock = utcnow,
    replay: bool = False,
    redactor: Redactor | None = None,
    signer: Signer | None = None,
) -> Record:
    """Open a new incident for a notification and record each alert as ``alert.firing``/``resolved``."""
    rec = Record.create(
        root,
        incident_id or incident_id_for(note),
        title=note.title,
        service=note.commonLabels.get("service", service),
        severity=note.severity,
        actor=actor,
        detected_at=note.started_at,
        data={
            "source": "alertmanager",
            "group_key": note.groupKey,
            "receiver": note.receiver,
            "alert_severity_label": note.commonLabels.get("severity"),
            "external_url": note.externalURL,
            **({"replay": True} if replay else {}),
        },
        clock=clock,
        redactor=redactor,
        signer=signer,
    )
    if note.severity is not None:
        rec.set_severity(note.severity, actor=actor, reason=f"alert severity label {note.severity.value}")
    record_alerts(rec, note, actor=actor)
    return rec


def record_alerts(rec: Record, note: Notification, *, actor: str) -> int:
    """Append an event per alert whose state changed; returns how many were appended.

    Alertmanager re-sends a group's notification every group/repeat interval, and a crashed intake
    may re-apply one: an alert already recorded in the same state (and with the same start) is not
    recorded again, so the timeline shows changes, not repetitions.
    """
    known = rec.state()["alerts"]
    n = 0
    for alert in note.alerts:
        data = alert.event_data()
        prev = known.get(data["fingerprint"] or data["alertname"])
        if prev and prev["status"] == alert.status and prev.get("starts_at") == data["starts_at"]:
            continue
        rec.append(f"alert.{alert.status}", data, actor=actor)
        n += 1
    return n


def load_notification_file(path: str | Path) -> Notification:
    """Read a saved notification (e.g. a recorded incident's ``alertmanager.json``)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    return parse_notification(raw)
