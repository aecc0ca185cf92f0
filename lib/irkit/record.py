"""The incident record: an append-only, hash-chained event log plus the artifacts it vouches for.

``events.jsonl`` is the source of truth. Each line is one event
``{"seq", "ts", "type", "actor", "data", "prev", "hash"}`` with
``hash = sha256(prev + canonical_json({seq, ts, type, actor, data}))`` and ``prev`` the previous
event's hash (64 zeros for the first). Changing, deleting or reordering any line breaks the chain at
that line, and :meth:`Record.verify` names it. Artifacts (executed notebooks, snapshots, figures) are
sealed by an event carrying their sha256, so editing a sealed file is caught the same way.

Concurrency and crashes: appends are serialized by an exclusive ``flock`` on ``.lock``; each event is
written with one ``write`` on an ``O_APPEND`` descriptor and ``fsync``-ed before the call returns. A
write cut short (power loss, a full disk) leaves a *torn tail*: bytes without a final newline. Verify
reports it; the next append moves those bytes to ``events.torn.N`` and records a ``record.repaired``
event, so a torn tail is never silently taken for an event. ``incident.json`` is a cache of the
folded state, replaced atomically (temp + rename); it is rebuilt whenever it disagrees with the log.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from irkit.errors import (
    IncidentExists,
    IncidentNotFound,
    InvalidIncidentId,
    RecordError,
    TransitionError,
)
from irkit.redact import Redactor
from irkit.severity import Level

ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9-]{1,64}$")
GENESIS = "0" * 64
EVENT_KEYS = ("seq", "ts", "type", "actor", "data", "prev", "hash")
SUBDIRS = ("notebooks", "data", "figures", "comms")
Event = dict[str, Any]
Clock = Callable[[], datetime]


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


def validate_incident_id(incident_id: object) -> str:
    """Return ``incident_id`` if it matches the id pattern; otherwise raise :class:`InvalidIncidentId`."""
    if not isinstance(incident_id, str) or not ID_PATTERN.fullmatch(incident_id):
        shown = repr(incident_id)[:80]
        raise InvalidIncidentId(f"invalid incident id {shown}: expected e.g. INC-20251120-1432 ({ID_PATTERN.pattern})")
    return incident_id


def canonical_json(obj: Any) -> bytes:
    """The one byte form used for hashing: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_hash(prev: str, body: Mapping[str, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the event without prev/hash."""
    payload = {k: body[k] for k in ("seq", "ts", "type", "actor", "data")}
    return hashlib.sha256(prev.encode() + canonical_json(payload)).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


class ReplayClock:
    """A clock that starts at a recorded moment and runs at real speed: for replaying an incident.

    Only a record opened as a replay (``incident.opened`` with ``replay: true``) accepts events
    stamped by it, so a live incident's audit trail can never be backdated.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("naive datetime: irkit keeps every time in UTC")
        self.start = start.astimezone(UTC)
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._t0)


def rfc3339(dt: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: irkit keeps every time in UTC")
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (Z or offset) into an aware UTC datetime."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {value!r}")
    return dt.astimezone(UTC)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file and rename, so readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide records from the team's other responders
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- folding events into state


def initial_state() -> dict[str, Any]:
    return {
        "id": None,
        "title": None,
        "service": None,
        "severity": None,
        "severity_reason": None,
        "alert_severity_label": None,
        "replay": False,
        "status": None,
        "opened_at": None,
        "detected_at": None,
        "status_times": {},
        "last_update_at": None,
        "alerts": {},
        "alerts_resolved": False,
        "runs": [],
        "artifacts": {},
        "working_copies": {},
        "reserved": [],
        "actions": [],
        "event_counts": {},
        "last_event_at": None,
        "head": {"seq": 0, "hash": GENESIS, "size": 0},
    }


def apply_event(state: dict[str, Any], ev: Event) -> dict[str, Any]:
    """Fold one event into the derived state (pure apart from mutating ``state``)."""
    t, d, ts = ev["type"], ev["data"], ev["ts"]
    counts = state["event_counts"]
    counts[t] = counts.get(t, 0) + 1
    state["last_event_at"] = ts
    if t == "incident.opened":
        state.update(
            id=d.get("id"),
            title=d.get("title"),
            service=d.get("service"),
            severity=d.get("severity"),
            status=Status.DETECTED.value,
            opened_at=ts,
            detected_at=d.get("detected_at") or ts,
            alert_severity_label=d.get("alert_severity_label"),
            replay=bool(d.get("replay")),
        )
        state["status_times"][Status.DETECTED.value] = state["detected_at"]
    elif t == "severity.set":
        state["severity"] = d["level"]
        state["severity_reason"] = d.get("reason")
    elif t == "status.changed":
        state["status"] = d["to"]
        state["status_times"].setdefault(d["to"], ts)
    elif t in ("action.approved", "action.executed", "action.failed"):
        state["actions"].append({"key": d.get("key"), "action": d.get("action"), "event": t, "ts": ts})
    elif t == "comms.sent":
        state["last_update_at"] = ts
    elif t in ("alert.firing", "alert.resolved"):
        fp = d.get("fingerprint") or d.get("alertname") or "alert"
        state["alerts"][fp] = {
            "status": t.split(".")[1],
            "labels": d.get("labels", {}),
            "ts": ts,
            "starts_at": d.get("starts_at"),
        }
        state["alerts_resolved"] = all(a["status"] == "resolved" for a in state["alerts"].values())
    elif t == "notebook.started":
        state["reserved"].append(d["path"])
    elif t == "notebook.prepared":
        state["reserved"].append(d["path"])
        state["working_copies"][d["path"]] = {"runbook": d.get("runbook"), "prepared_at": ts}
    elif t in ("notebook.finished", "notebook.sealed", "artifact.added"):
        if d.get("sha256"):
            state["artifacts"][d["path"]] = {"sha256": d["sha256"], "seq": ev["seq"]}
            state["working_copies"].pop(d["path"], None)
        if t == "notebook.finished":
            state["runs"].append(
                {
                    "runbook": d.get("runbook"),
                    "path": d.get("path"),
                    "outcome": d.get("outcome"),
                    "ts": ts,
                    "duration_s": d.get("duration_s"),
                }
            )
    state["head"] = {"seq": ev["seq"], "hash": ev["hash"], "size": state["head"]["size"]}
    return state


# --------------------------------------------------------------------------- verification


@dataclass
class VerifyReport:
    """What :meth:`Record.verify` found; ``ok`` only when there is no problem at all."""

    incident_id: str
    events: int = 0
    artifacts: int = 0
    problems: list[str] = field(default_factory=list)
    working_copies: list[str] = field(default_factory=list)
    head: str = GENESIS

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            wc = f"; {len(self.working_copies)} unsealed working cop(ies)" if self.working_copies else ""
            return (
                f"OK {self.incident_id}: {self.events} events, {self.artifacts} artifacts verified{wc}; "
                f"head {self.head}"
            )
        return f"FAILED {self.incident_id}: {self.problems[0]}"


@dataclass
class _Scan:
    events: list[Event]
    size: int  # bytes of complete lines
    torn: bytes  # trailing bytes with no newline
    problem: str | None  # first chain break, if any


def _scan_events(raw: bytes) -> _Scan:
    """Parse and check the chain; stop at the first break, and report a torn tail separately."""
    end = raw.rfind(b"\n") + 1
    body, torn = raw[:end], raw[end:]
    events: list[Event] = []
    prev = GENESIS
    offset = 0
    for lineno, line in enumerate(body.splitlines(keepends=True), start=1):
        where = f"events.jsonl line {lineno}"
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _Scan(events, offset, torn, f"{where}: not valid JSON (event {lineno} was altered)")
        if not isinstance(ev, dict) or tuple(sorted(ev)) != tuple(sorted(EVENT_KEYS)):
            return _Scan(events, offset, torn, f"{where}: not an event object (event {lineno} was altered)")
        label = f"event {ev.get('seq')} ({ev.get('type')}) at {where}"
        if ev["seq"] != lineno:
            return _Scan(
                events, offset, torn, f"{label}: expected seq {lineno} — events were deleted, inserted or reordered"
            )
        if ev["prev"] != prev:
            return _Scan(events, offset, torn, f"{label}: prev does not match the hash of event {lineno - 1}")
        try:
            computed = event_hash(prev, ev)
        except (TypeError, ValueError) as exc:
            return _Scan(events, offset, torn, f"{label}: cannot be hashed ({exc})")
        if computed != ev["hash"]:
            return _Scan(events, offset, torn, f"{label}: hash mismatch — its content was altered")
        if line != canonical_json(ev) + b"\n":
            return _Scan(events, offset, torn, f"{label}: not in canonical form — the line was rewritten")
        events.append(ev)
        prev = ev["hash"]
        offset += len(line)
    return _Scan(events, offset, torn, None)


def _replay_transitions(events: list[Event]) -> str | None:
    """The first status change that the state machine would have refused, if any."""
    status: str | None = None
    for ev in events:
        if ev["type"] == "incident.opened":
            status = Status.DETECTED.value
        elif ev["type"] == "status.changed" and status is not None:
            d = ev["data"]
            try:
                check_transition(status, d.get("to", ""))
            except (TransitionError, ValueError):
                return f"event {ev['seq']} (status.changed): {status} → {d.get('to')} is not an allowed transition"
            if d.get("from") not in (None, status):
                return f"event {ev['seq']} (status.changed): says from {d.get('from')} but the status was {status}"
            status = d["to"]
    return None


# --------------------------------------------------------------------------- the record


class Record:
    """One incident's record directory; every write goes through :meth:`append`."""

    def __init__(
        self, root: str | Path, incident_id: str, *, clock: Clock = utcnow, redactor: Redactor | None = None
    ) -> None:
        self.redactor = redactor  # scrubs secrets from every event's data before it is written
        self.id = validate_incident_id(incident_id)
        self.root = Path(root).resolve()  # absolute: artifact paths are checked against it
        self.path = self.root / self.id
        self.events_path = self.path / "events.jsonl"
        self.state_path = self.path / "incident.json"
        self.clock = clock

    # ---- lifecycle

    @classmethod
    def create(
        cls,
        root: str | Path,
        incident_id: str,
        *,
        title: str,
        service: str,
        severity: Level | str | None = None,
        actor: str,
        detected_at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        clock: Clock = utcnow,
        redactor: Redactor | None = None,
    ) -> Record:
        """Create the record and its ``incident.opened`` event; refuse if it exists."""
        rec = cls(root, incident_id, clock=clock, redactor=redactor)
        rec.root.mkdir(parents=True, exist_ok=True)
        try:
            rec.path.mkdir()
        except FileExistsError:
            raise IncidentExists(f"incident {rec.id} already exists at {rec.path}") from None
        for sub in SUBDIRS:
            (rec.path / sub).mkdir()
        opened: dict[str, Any] = {
            "id": rec.id,
            "title": title,
            "service": service,
            "severity": Level(severity).value if severity else None,
            "detected_at": rfc3339(detected_at) if detected_at else None,
        }
        opened.update(data or {})
        try:
            rec.append("incident.opened", opened, actor=actor)
        except BaseException:
            shutil.rmtree(rec.path, ignore_errors=True)  # no half-made record blocks the id
            raise
        return rec

    @classmethod
    def open(
        cls, root: str | Path, incident_id: str, *, clock: Clock = utcnow, redactor: Redactor | None = None
    ) -> Record:
        """Open an existing record."""
        rec = cls(root, incident_id, clock=clock, redactor=redactor)
        if not rec.events_path.is_file():
            raise IncidentNotFound(f"no incident {rec.id} under {rec.root}")
        return rec

    # ---- locking and reading

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read_raw(self) -> bytes:
        try:
            return self.events_path.read_bytes()
        except FileNotFoundError:
            return b""

    def events(self) -> list[Event]:
        """Every complete, chain-valid event (stops at the first break; see :meth:`verify`)."""
        return _scan_events(self._read_raw()).events

    def _fold(self, scan: _Scan) -> dict[str, Any]:
        state = initial_state()
        for ev in scan.events:
            apply_event(state, ev)
        state["head"]["size"] = scan.size
        return state

    def _cached_state(self) -> dict[str, Any] | None:
        try:
            cached = json.loads(self.state_path.read_bytes())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(cached, dict) or not isinstance(cached.get("head"), dict):
            return None
        try:
            size = self.events_path.stat().st_size
        except FileNotFoundError:
            return None
        return cached if cached["head"].get("size") == size else None

    def state(self) -> dict[str, Any]:
        """The current state, folded from the events themselves (``incident.json`` is never trusted)."""
        return self._fold(_scan_events(self._read_raw()))

    def rebuild_state(self) -> dict[str, Any]:
        """Recompute ``incident.json`` from the events (it is only a cache)."""
        with self._locked():
            state = self._fold(_scan_events(self._read_raw()))
            self._write_state(state)
            return state

    def _write_state(self, state: dict[str, Any]) -> None:
        # The cache need not be durable: a lost or torn incident.json is detected (size mismatch or bad
        # JSON) and rebuilt from the log, so skipping fsync here costs nothing in safety.
        atomic_write_bytes(self.state_path, json.dumps(state, indent=2).encode(), durable=False)

    # ---- writing

    def append(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        actor: str,
        check: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None,
    ) -> Event:
        """Append one event under the lock and return it.

        ``check(state)`` runs under the same lock before writing, so a decision made from the state
        (e.g. "this transition is legal") cannot race with another writer; it may raise to refuse, or
        return fields to add to the event's data.
        """
        if not type or not isinstance(type, str):
            raise RecordError("event type must be a non-empty string")
        if not actor:
            raise RecordError("every event needs an actor (who or what did this)")
        data = dict(data or {})
        canonical_json(data)  # fail before writing on anything that cannot be serialized
        with self._locked():
            state = self._state_for_append()
            if self.clock is not utcnow and not (state["replay"] or (type == "incident.opened" and data.get("replay"))):
                raise RecordError(f"record {self.id} is not a replay: its events are stamped with the real time")
            if check is not None:
                data.update(check(state) or {})
            if self.redactor is not None:
                data = dict(self.redactor.data(data))
            return self._write_event(state, type, data, actor)

    def _state_for_append(self) -> dict[str, Any]:
        """The state to append to (caller holds the lock): the cache if its head is the log's last event.

        Otherwise the log is rescanned: a broken chain or events missing from the end (the cache saw
        a later head) refuse the append; a torn tail is quarantined and the repair recorded.
        """
        cached = self._cached_state()
        if cached is not None and self._last_event_matches(cached["head"]):
            return cached
        scan = _scan_events(self._read_raw())
        if scan.problem:
            raise RecordError(f"record {self.id} does not verify, refusing to append: {scan.problem}")
        stale = self._cache_head_seq()
        if stale is not None and stale > len(scan.events):
            raise RecordError(
                f"record {self.id}: events.jsonl ends at event {len(scan.events)} but incident.json saw event "
                f"{stale}: events were removed from the end; refusing to append"
            )
        state = self._fold(scan)
        if scan.torn:
            self._write_event(state, "record.repaired", self._quarantine_torn(scan), "irkit")
        return state

    def _last_event_matches(self, head: Mapping[str, Any]) -> bool:
        """Whether the last line of the log is, intact, the event the cache calls its head.

        Appends trust the cache only this far: changes to earlier lines are found by :meth:`verify`.
        """
        if head.get("seq", 0) == 0:
            return head.get("size") == 0
        try:
            with self.events_path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                chunk = 4096
                while True:
                    start = max(0, size - chunk)
                    fh.seek(start)
                    tail = fh.read(size - start)
                    cut = tail.rstrip(b"\n").rfind(b"\n")
                    if cut >= 0 or start == 0:
                        break
                    chunk *= 4
            last = json.loads(tail[cut + 1 :])
        except (OSError, ValueError):
            return False
        if not isinstance(last, dict) or last.get("hash") != head.get("hash") or last.get("seq") != head.get("seq"):
            return False
        # The last line must also still hash to itself; earlier lines are left to verify().
        try:
            return set(last) == set(EVENT_KEYS) and event_hash(last["prev"], last) == last["hash"]
        except (TypeError, ValueError, KeyError):
            return False

    def _cache_head_seq(self) -> int | None:
        try:
            cached = json.loads(self.state_path.read_bytes())
            seq = cached["head"]["seq"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return seq if isinstance(seq, int) else None

    def _quarantine_torn(self, scan: _Scan) -> dict[str, Any]:
        """Move a torn tail aside (kept for forensics) and truncate the log to its last full line."""
        n = 1
        while (self.path / f"events.torn.{n}").exists():
            n += 1
        name = f"events.torn.{n}"
        atomic_write_bytes(self.path / name, scan.torn)
        with self.events_path.open("r+b") as fh:
            fh.truncate(scan.size)
            os.fsync(fh.fileno())
        return {
            "reason": "torn tail: an interrupted write left bytes without a newline",
            "bytes": len(scan.torn),
            "sha256": hashlib.sha256(scan.torn).hexdigest(),
            "quarantined_to": name,
            "after_seq": len(scan.events),
        }

    def _write_event(self, state: dict[str, Any], type: str, data: dict[str, Any], actor: str) -> Event:
        """Write one event at the end of the log (caller holds the lock) and update ``state``."""
        head = state["head"]
        body: Event = {"seq": head["seq"] + 1, "ts": rfc3339(self.clock()), "type": type, "actor": actor, "data": data}
        body["prev"] = head["hash"]
        body["hash"] = event_hash(head["hash"], body)
        line = canonical_json({k: body[k] for k in EVENT_KEYS}) + b"\n"
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise RecordError(f"short write appending to {self.events_path} ({written}/{len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        size = head["size"] + len(line)
        apply_event(state, body)
        state["head"]["size"] = size
        self._write_state(state)
        return body

    # ---- conveniences that every runbook needs

    def set_status(self, to: Status | str, *, actor: str, reason: str = "") -> Event:
        """Move the incident to ``to`` if the state machine allows it (checked under the lock)."""
        new = Status(to)

        def _check(state: dict[str, Any]) -> dict[str, Any]:
            check_transition(state["status"], new)
            return {"from": state["status"]}

        return self.append("status.changed", {"to": new.value, "reason": reason}, actor=actor, check=_check)

    def set_severity(self, level: Level | str, *, actor: str, reason: str = "") -> Event:
        """Record a severity (re)assessment with its reason."""
        return self.append("severity.set", {"level": Level(level).value, "reason": reason}, actor=actor)

    def note(self, text: str, *, actor: str) -> Event:
        """A free-text note in the timeline."""
        return self.append("note", {"text": text}, actor=actor)

    def resolve_artifact(self, relpath: str) -> Path:
        """The absolute path of an artifact, refusing anything that would leave the record."""
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise RecordError(f"artifact path {relpath!r} must be relative and inside the record")
        full = (self.path / rel).resolve()
        if not full.is_relative_to(self.path.resolve()):
            raise RecordError(f"artifact path {relpath!r} leaves the record")
        return full

    def add_artifact(self, relpath: str, *, actor: str, kind: str = "file", **extra: Any) -> Event:
        """Seal an existing file in the record: record its sha256 in an ``artifact.added`` event."""
        full = self.resolve_artifact(relpath)
        if not full.is_file():
            raise RecordError(f"artifact {relpath} does not exist in {self.path}")
        digest = sha256_file(full)
        return self.append(
            "artifact.added", {"path": Path(relpath).as_posix(), "sha256": digest, "kind": kind, **extra}, actor=actor
        )

    # ---- verification

    def verify(self, *, expect_head: str | None = None) -> VerifyReport:
        """Recompute the chain and every sealed artifact's hash; list unsealed working copies.

        The chain proves that no event was changed, removed or reordered *relative to the head*.
        Someone able to rewrite the whole file could recompute every hash, so the head hash is
        reported: kept elsewhere (a ticket, a chat message) and passed back as ``expect_head``, it
        pins the whole history.
        """
        report = VerifyReport(self.id)
        raw = self._read_raw()
        scan = _scan_events(raw)
        report.events = len(scan.events)
        report.head = scan.events[-1]["hash"] if scan.events else GENESIS
        if expect_head and not scan.problem:
            matches = [e["seq"] for e in scan.events if e["hash"] == expect_head.lower()]
            if not matches:
                report.problems.append(f"expected head {expect_head[:16]}… is not an event of this record's chain")
        if not raw:
            report.problems.append("events.jsonl is missing or empty")
            return report
        if scan.problem:
            report.problems.append(scan.problem)
        elif scan.torn:
            report.problems.append(
                f"events.jsonl: torn tail after event {len(scan.events)}: {len(scan.torn)} bytes without a "
                "newline (an interrupted write; the next append quarantines it)"
            )
        cached = None
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            cached = json.loads(self.state_path.read_bytes())
        if (
            not scan.problem
            and isinstance(cached, dict)
            and isinstance(cached.get("head"), dict)
            and isinstance(cached["head"].get("seq"), int)
            and cached["head"]["seq"] > len(scan.events)
        ):
            report.problems.append(
                f"events.jsonl ends at event {len(scan.events)} but incident.json recorded event "
                f"{cached['head']['seq']}: events were removed from the end"
            )
        problem = _replay_transitions(scan.events)
        if problem and not scan.problem:
            report.problems.append(problem)
        state = self._fold(scan)
        for rel, info in sorted(state["artifacts"].items()):
            report.artifacts += 1
            try:
                full = self.resolve_artifact(rel)
            except RecordError as exc:
                report.problems.append(str(exc))
                continue
            if not full.is_file():
                report.problems.append(f"{rel}: sealed at event {info['seq']} but the file is missing")
            elif sha256_file(full) != info["sha256"]:
                report.problems.append(f"{rel}: sha256 differs from the one sealed at event {info['seq']} — changed")
        report.working_copies = sorted(state["working_copies"])
        return report


def list_incidents(root: str | Path) -> list[str]:
    """Ids of every record under ``root`` (directories whose name is a valid id and have events)."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if p.is_dir() and ID_PATTERN.fullmatch(p.name) and (p / "events.jsonl").is_file()
    )
