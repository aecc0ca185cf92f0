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
import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import stat as statmod
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irkit.errors import (
    BadInputError,
    IncidentExists,
    IncidentNotFound,
    InvalidIncidentId,
    IrkitError,
    RecordBroken,
    RecordError,
    StorageError,
    TransitionError,
)
from irkit.events import (
    SEALING_EVENTS,
    STAKEHOLDER_CHANNELS,
    Event,
    Status,
    check_transition,
    declared_problem,
    shape_problem,
)
from irkit.files import atomic_write_bytes, canonical_json, fsync_dir, sha256_file
from irkit.redact import Redactor
from irkit.severity import Level
from irkit.times import parse_ts, rfc3339, utcnow

if TYPE_CHECKING:
    from irkit.signing import Signer, Verifier
    from irkit.times import Clock

ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9-]{1,64}$")
GENESIS = "0" * 64
EVENT_KEYS = ("seq", "ts", "type", "actor", "data", "prev", "hash")
SIG_KEY = "sig"  # optional, outside the hash: an Ed25519 signature of "hash" (see irkit.signing)
MAX_TITLE = 200
MAX_TEXT = 64 * 1024
SUBDIRS = ("notebooks", "data", "figures", "comms")


def validate_incident_id(incident_id: object) -> str:
    """Return ``incident_id`` if it matches the id pattern; otherwise raise :class:`InvalidIncidentId`."""
    if not isinstance(incident_id, str) or not ID_PATTERN.fullmatch(incident_id):
        shown = repr(incident_id)[:80]
        raise InvalidIncidentId(f"invalid incident id {shown}: expected e.g. INC-20251120-1432 ({ID_PATTERN.pattern})")
    return incident_id


def event_hash(prev: str, body: Mapping[str, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the event without prev/hash."""
    payload = {k: body[k] for k in ("seq", "ts", "type", "actor", "data")}
    return hashlib.sha256(prev.encode() + canonical_json(payload)).hexdigest()


def bounded_text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    """``value`` as text a record accepts: a string without NUL, at most ``limit`` characters."""
    if not isinstance(value, str):
        raise BadInputError(f"{what} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise BadInputError(f"{what} contains a NUL character")
    if len(value) > limit:
        raise BadInputError(f"{what} is {len(value)} characters; at most {limit} are accepted")
    return value


def versioned(rel: str, n: int) -> str:
    """Version ``n`` of a file path: ``figures/x.png``, then ``figures/x.r2.png``, ``figures/x.r3.png`` …"""
    if n == 1:
        return rel
    p = Path(rel)
    return (p.parent / f"{p.stem}.r{n}{p.suffix}").as_posix()


def versioned_dir(base: str, n: int) -> str:
    """Version ``n`` of a snapshot directory: ``data/cluster``, then ``data/cluster.r2`` …"""
    return base if n == 1 else f"{base}.r{n}"


class _LogUnchanged(StorageError):
    """Appending failed before one byte reached the log: no event names what the caller wrote for it."""


def _storage_error(exc: OSError, what: str) -> StorageError:
    return StorageError(f"cannot write {what}: {exc.strerror or exc} (nothing half-written was kept)")


# --------------------------------------------------------------------------- folding events into state


def initial_state() -> dict[str, Any]:
    """The derived state of a record with no events yet, which :func:`apply_event` folds events into."""
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
        "providers": {"jira": None, "jira_url": None, "statuspage": None, "pagerduty": []},
        "alerts": {},
        "alerts_resolved": False,
        "runs": [],
        "artifacts": {},
        "working_copies": {},
        "reserved": [],
        "resealed": [],
        "actions": [],
        "event_counts": {},
        "last_event_at": None,
        "head": {"seq": 0, "hash": GENESIS, "size": 0},
    }


PAGES = ("page", "page-commander")  # PagerDuty events that open an alert (acknowledge/resolve only sync it)


def _remember_provider(providers: dict[str, Any], d: Mapping[str, Any]) -> None:
    """Keep the ids the providers gave us: the ticket key, the status-page incident, every PagerDuty dedup key."""
    channel, rid = d.get("channel"), str(d["response_id"])
    if channel == "jira":
        providers["jira"], providers["jira_url"] = rid, d.get("url")
    elif channel == "statuspage":
        providers["statuspage"] = rid
    elif channel == "pagerduty" and d.get("action", "page") in PAGES and rid not in providers["pagerduty"]:
        providers["pagerduty"].append(rid)  # a trigger's dedup key; acknowledge/resolve sync events reuse it


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
    elif t in ("comms.sent", "escalation.paged"):
        if d.get("response_id"):
            _remember_provider(state["providers"], d)
        if t == "comms.sent" and d.get("channel") in STAKEHOLDER_CHANNELS:
            state["last_update_at"] = ts  # a page or a ticket is not a stakeholder update
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
    elif t in SEALING_EVENTS:
        if d.get("sha256"):
            if d["path"] in state["artifacts"]:  # write-once: verify() reports a path sealed twice
                state["resealed"].append(
                    {"path": d["path"], "seq": ev["seq"], "first": state["artifacts"][d["path"]]["seq"]}
                )
            else:
                state["artifacts"][d["path"]] = {"sha256": d["sha256"], "seq": ev["seq"]}
            state["working_copies"].pop(d["path"], None)
        if t in ("notebook.finished", "run.interrupted"):
            state["runs"].append(
                {
                    "runbook": d.get("runbook"),
                    "path": d.get("path"),
                    "outcome": d.get("outcome", "interrupted"),
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
    after_head: list[str] | None = None  # types of the events after a pinned head (--expect-head)
    unaccounted: list[str] = field(default_factory=list)  # files neither sealed nor working copies
    signed: str | None = None  # the key id every event was checked against (--public-key)

    @property
    def ok(self) -> bool:
        """True when verification found no problem."""
        return not self.problems

    def summary(self) -> str:
        """One line: ``OK <id>: …`` with counts, signing, unsealed files and head, or the first problem."""
        if self.ok:
            wc = f"; {len(self.working_copies)} unsealed working cop(ies)" if self.working_copies else ""
            sig = f"; every event signed by key {self.signed}" if self.signed else ""
            if self.unaccounted:
                wc += f"; {len(self.unaccounted)} file(s) not sealed"
            pinned = ""
            if self.after_head is not None:
                types = ", ".join(self.after_head) or "none"
                pinned = f"; {len(self.after_head)} event(s) after the pinned head ({types})"
            return (
                f"OK {self.incident_id}: {self.events} events, {self.artifacts} artifacts verified{wc}{sig}{pinned}; "
                f"head {self.head}"
            )
        return f"FAILED {self.incident_id}: {self.problems[0]}"


@dataclass
class _Scan:
    events: list[Event]
    size: int  # bytes of complete lines
    torn: bytes  # trailing bytes with no newline
    problem: str | None  # first chain break, if any
    first: int = 0  # events left out at the start (already known to the caller: Record._scan(after_known=True))
    base: str = GENESIS  # the hash of the last event left out


def _scan_events(raw: bytes, *, prev: str = GENESIS, first_seq: int = 1) -> _Scan:
    """Parse and check the chain; stop at the first break, and report a torn tail separately.

    ``prev`` and ``first_seq`` let a caller check only the lines after a known, intact event.
    """
    end = raw.rfind(b"\n") + 1
    body, torn = raw[:end], raw[end:]
    events: list[Event] = []
    offset = 0
    for lineno, line in enumerate(body.splitlines(keepends=True), start=first_seq):
        where = f"events.jsonl line {lineno}"
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _Scan(events, offset, torn, f"{where}: not valid JSON (event {lineno} was altered)")
        if not isinstance(ev, dict) or set(ev) - {SIG_KEY} != set(EVENT_KEYS):
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
        except (TypeError, ValueError, KeyError) as exc:
            return _Scan(events, offset, torn, f"{label}: cannot be hashed ({exc})")
        if computed != ev["hash"]:
            return _Scan(events, offset, torn, f"{label}: hash mismatch — its content was altered")
        if line != canonical_json(ev) + b"\n":
            return _Scan(events, offset, torn, f"{label}: not in canonical form — the line was rewritten")
        if not isinstance(ev["type"], str) or not isinstance(ev["data"], dict) or not isinstance(ev["ts"], str):
            return _Scan(events, offset, torn, f"{label}: type, ts or data has the wrong shape")
        try:
            parse_ts(ev["ts"])
        except (ValueError, TypeError):
            return _Scan(events, offset, torn, f"{label}: ts {str(ev['ts'])[:40]!r} is not an RFC 3339 time")
        if (shape := shape_problem(ev["type"], ev["data"])) is not None:
            return _Scan(events, offset, torn, f"{label}: {shape}")
        events.append(ev)
        prev = ev["hash"]
        offset += len(line)
    return _Scan(events, offset, torn, None)


def read_chain(raw: bytes) -> tuple[list[Event], str | None, int]:
    """An ``events.jsonl``'s chain-valid events, its first break (or None), and the bytes those events span."""
    scan = _scan_events(raw)
    return scan.events, scan.problem, scan.size


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


@dataclass
class _Tail:
    """What this process last saw of a log it wrote: the file's identity, the state at its end, and a
    running SHA-256 of its first ``size`` bytes (None when not known: the next foreign append rescans)."""

    sig: tuple[int, ...]
    size: int
    prefix: Any  # a hashlib.sha256 object, fed every byte up to ``size``
    state: dict[str, Any]


# Per process, per log file: appends by this process never re-read the log; a change by anyone else
# (another process's append, an edit) changes the file's stat signature and is re-checked.
_TAILS: dict[str, _Tail] = {}
_TAILS_LOCK = threading.Lock()


def _stat_sig(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Read:
    """A log this process read and checked: the file's stat signature and its chain-valid lines."""

    sig: tuple[int, ...]
    body: bytes  # the complete lines, every one checked
    torn: bytes
    count: int
    head: str
    folded: bytes | None = None  # the state folded from these events, as JSON (set by Record.state)

    def scan(self) -> _Scan:
        """The scan again, as fresh objects (callers may change what they get), without re-checking."""
        return _Scan([json.loads(line) for line in self.body.splitlines()], len(self.body), self.torn, None)


def _head(scan: _Scan) -> str:
    """The hash of the last event ``scan`` covers (those it left out included)."""
    return scan.events[-1]["hash"] if scan.events else scan.base


# Per process, the last few logs read: a runbook reads its record in nearly every cell, and checking
# every hash and line each time was a tenth of a triage run. Bounded, so a long-running serve does not
# keep every incident's log in memory. verify() never uses it: it always reads and checks everything.
_READS: dict[str, _Read] = {}
_READS_MAX = 32


class Record:
    """One incident's record directory; every write goes through :meth:`append` or :meth:`seal`."""

    def __init__(
        self,
        root: str | Path,
        incident_id: str,
        *,
        clock: Clock = utcnow,
        redactor: Redactor | None = None,
        signer: Signer | None = None,
        guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.redactor = redactor  # scrubs secrets from every event's data before it is written
        self.signer = signer  # signs every event this Record writes, when a key is configured
        # Held around every write, outside the file lock: on a shared store, the incident's row lock
        # (which also brings this cache up to the database and pushes what was written; irkit.store).
        self.guard = guard
        self.id = validate_incident_id(incident_id)
        self.root = Path(root).resolve()  # absolute: artifact paths are checked against it
        self._at(self.root / self.id)
        self.clock = clock

    def _at(self, path: Path) -> None:
        self.path = path
        self.events_path = self.path / "events.jsonl"
        self.state_path = self.path / "incident.json"

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
        signer: Signer | None = None,
    ) -> Record:
        """Create a record with its ``incident.opened`` event, atomically.

        The record is built in a hidden temporary directory and renamed into place once its first
        event is durable, so a crash leaves either no incident or a whole one — never a folder
        without events that would block the id.
        """
        rec = cls(root, incident_id, clock=clock, redactor=redactor, signer=signer)
        bounded_text(title, "title", MAX_TITLE)
        bounded_text(service, "service", MAX_TITLE)
        opened: dict[str, Any] = {
            "id": rec.id,
            "title": title,
            "service": service,
            "severity": Level(severity).value if severity else None,
            "detected_at": rfc3339(detected_at) if detected_at else None,
        }
        opened.update(data or {})
        canonical_json(opened)
        try:
            rec.root.mkdir(parents=True, exist_ok=True)
            if rec.path.is_symlink():
                raise BadInputError(f"{rec.path} is a symlink; records are never read or written through one")
            if rec.events_path.exists():
                raise IncidentExists(f"incident {rec.id} already exists at {rec.path}")
            # The name carries the creator's pid: remove_stale_creations() tells a crashed creation
            # (its process is gone) from a live one at any moment, even right after this mkdir.
            tmp = rec.root / f".creating.{rec.id}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            os.chmod(tmp, 0o755)  # noqa: S103  # a record is read by the whole team, whatever the umask
        except OSError as exc:
            raise _storage_error(exc, f"the records root {rec.root}") from exc
        final = rec.path
        try:
            for sub in SUBDIRS:
                (tmp / sub).mkdir()
            rec._at(tmp)
            rec.append("incident.opened", opened, actor=actor)
            fsync_dir(tmp)
            _install(tmp, final, rec.id)
        except OSError as exc:
            raise _storage_error(exc, f"incident {rec.id}") from exc
        finally:
            with _TAILS_LOCK:
                _TAILS.pop(str(tmp / "events.jsonl"), None)
            rec._at(final)
            shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; a leftover after a failure
        return rec

    @classmethod
    def open(
        cls,
        root: str | Path,
        incident_id: str,
        *,
        clock: Clock = utcnow,
        redactor: Redactor | None = None,
        signer: Signer | None = None,
        guard: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> Record:
        """Open an existing record (``guard``: see :meth:`__init__`)."""
        rec = cls(root, incident_id, clock=clock, redactor=redactor, signer=signer, guard=guard)
        if rec.path.is_symlink() or rec.events_path.is_symlink():
            raise BadInputError(f"{rec.path}: a symlink in the record; records are never read through one")
        if not rec.events_path.is_file():
            raise IncidentNotFound(f"no incident {rec.id} under {rec.root}")
        return rec

    # ---- locking and reading

    @contextlib.contextmanager
    def _flock(self, lock: Path, what: str, *, wait: bool) -> Iterator[bool]:
        """Hold an exclusive flock on ``lock`` (never through a symlink); yields False if busy and not ``wait``."""
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadInputError(f"{lock} is a symlink; refusing to use it") from None
            raise _storage_error(exc, f"{what} of {self.id}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        guard = self.guard() if self.guard is not None else contextlib.nullcontext()
        with guard, self._flock(self.path / ".lock", "the lock", wait=True):  # always in this order
            yield

    @contextlib.contextmanager
    def exclusive(self, name: str, *, wait: bool) -> Iterator[bool]:
        """Hold the record's ``.runs/<name>.lock`` (one holder across processes); yields False if busy and not ``wait``.

        For side effects outside the record (a page, a ticket) that must happen once even when two
        processes act on the same incident.
        """
        runs = self.path / ".runs"
        if runs.is_symlink():
            raise BadInputError(f"{runs} is a symlink; refusing to use it")
        runs.mkdir(exist_ok=True)
        with self._flock(runs / f"{name}.lock", f"the {name} lock", wait=wait) as mine:
            yield mine

    def _open_log(self) -> tuple[int, os.stat_result] | None:
        """The log opened for reading and its stat, or None when there is none yet. A symlink, directory,
        FIFO or device in its place is refused (opened non-blocking: a FIFO never makes a read wait)."""
        try:
            fd = os.open(self.events_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadInputError(f"{self.events_path} is a symlink; refusing to read it") from None
            raise RecordError(f"cannot read {self.events_path}: {exc.strerror}") from exc
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            os.close(fd)
            raise BadInputError(f"{self.events_path} is not a regular file; refusing to read it")
        return fd, st

    def _read_raw(self) -> bytes:
        opened = self._open_log()
        if opened is None:
            return b""
        with os.fdopen(opened[0], "rb") as fh:
            return fh.read()

    def _scan(self, *, after_known: bool = False) -> _Scan:
        """The log's chain-valid events, first break and torn tail, as :func:`_scan_events` finds them.

        Lines this process already checked are not checked again while the file's stat signature
        (inode, size, mtime, ctime) is unchanged; a log that only grew (every line seen is still there,
        byte for byte) has its new lines checked, chained from the last line seen. Anything else is read
        and checked in full, and so is a log with a break: only an intact chain is remembered.

        ``after_known``: when the lines already checked are still the log's first lines, leave their
        events out (``first`` says how many, ``base`` the last one's hash): only the new ones are parsed.
        """
        opened = self._open_log()
        if opened is None:
            return _Scan([], 0, b"", None)
        fd, st = opened
        key = str(self.events_path)
        with os.fdopen(fd, "rb") as fh:
            sig = _stat_sig(st)
            with _TAILS_LOCK:
                seen = _READS.get(key)
            if seen is not None and seen.sig == sig:
                return _Scan([], len(seen.body), seen.torn, None, seen.count, seen.head) if after_known else seen.scan()
            scan: _Scan | None = None
            raw: bytes | None = None
            if seen is not None and not seen.torn and seen.body and sig[:2] == seen.sig[:2] and sig[2] > seen.sig[2]:
                raw = fh.read()
                # Grown only if every byte checked before is still there: an edit in place followed by
                # an append is not growth (its break would go unseen by this process).
                if raw.startswith(seen.body):
                    new = raw[len(seen.body) :]
                    more = _scan_events(new, prev=seen.head, first_seq=seen.count + 1)
                    known = [] if after_known else seen.scan().events
                    first, base = (seen.count, seen.head) if after_known else (0, GENESIS)
                    scan = _Scan(known + more.events, len(seen.body) + more.size, more.torn, more.problem, first, base)
                    body = seen.body + new[: more.size]
            if scan is None:
                if raw is None:
                    raw = fh.read()
                scan = _scan_events(raw)
                body = raw[: scan.size]
            if scan.problem is None and _stat_sig(os.fstat(fh.fileno())) == sig:  # nobody wrote meanwhile
                with _TAILS_LOCK:
                    _READS.pop(key, None)
                    while len(_READS) >= _READS_MAX:
                        _READS.pop(next(iter(_READS)))
                    _READS[key] = _Read(sig, body, scan.torn, scan.first + len(scan.events), _head(scan))
            return scan

    def events(self) -> list[Event]:
        """Every complete, chain-valid event (stops at the first break; see :meth:`verify`)."""
        return self._scan().events

    def _fold(self, scan: _Scan) -> dict[str, Any]:
        state = initial_state()
        for ev in scan.events:
            apply_event(state, ev)
        state["head"]["size"] = scan.size
        return state

    def state(self) -> dict[str, Any]:
        """The current state, folded from the events themselves (``incident.json`` is never trusted).

        Folded once per version of the log in this process: while the log's stat signature is the one
        its events were checked under (see :meth:`_scan`), the fold is kept beside them as JSON (every
        caller gets its own copy), and a log that only grew has just its new events folded in. A runbook
        asks for the state in nearly every cell; folding every event each time was most of the asking.
        """
        key = str(self.events_path)
        opened = self._open_log()
        if opened is None:
            return self._fold(_Scan([], 0, b"", None))
        os.close(opened[0])
        with _TAILS_LOCK:
            seen = _READS.get(key)
        if seen is not None and seen.folded is not None and seen.sig == _stat_sig(opened[1]):
            state: dict[str, Any] = json.loads(seen.folded)
            return state
        base = seen.folded if seen is not None else None
        scan = self._scan(after_known=base is not None)
        if seen is not None and base is not None and (scan.first, scan.base) == (seen.count, seen.head):
            state = json.loads(base)  # the chain up to event ``first`` is the one folded: fold what follows
            for ev in scan.events:
                apply_event(state, ev)
            state["head"]["size"] = scan.size
        else:
            if scan.first:  # another thread's read replaced the fold's lines meanwhile: read them all
                scan = self._scan()
            state = self._fold(scan)
        self._keep_fold(key, scan, state)
        return state

    @staticmethod
    def _keep_fold(key: str, scan: _Scan, state: dict[str, Any]) -> None:
        """Keep ``state`` beside the checked log it was folded from, if that is what ``_READS`` holds."""
        text = json.dumps(state).encode()
        if json.loads(text) != state:  # not plain JSON (cannot happen for events read from JSON): do not keep
            return
        with _TAILS_LOCK:
            now = _READS.get(key)
            if now is not None and (now.count, now.head, len(now.body)) == (scan.first + len(scan.events), _head(scan), scan.size):
                now.folded = text

    def broken(self) -> str | None:
        """Why the chain does not verify (first break), or None; cheap enough for ``list``."""
        scan = self._scan()
        if not scan.events and not scan.torn and scan.problem is None:
            return "events.jsonl is missing or empty"
        return scan.problem

    def rebuild_state(self) -> dict[str, Any]:
        """Recompute ``incident.json`` from the events (it is only a cache)."""
        with self._locked():
            state = self._fold(_scan_events(self._read_raw()))
            self._write_state(state)
            return state

    def _write_state(self, state: dict[str, Any]) -> None:
        # For people and other tools only: irkit never decides anything from incident.json, so a
        # lost, torn or forged copy costs nothing; it is rewritten from the log on every append.
        with contextlib.suppress(OSError):
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
        if not actor or not isinstance(actor, str):
            raise RecordError("every event needs an actor (who or what did this)")
        bounded_text(actor, "actor", MAX_TITLE)
        data = dict(data or {})
        try:
            canonical_json(data)  # fail before writing on anything that cannot be serialized
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"event {type}: data cannot be recorded: {exc}") from None
        with self._locked():
            state = self._state_for_append()
            if check is not None:
                data.update(check(state) or {})
            return self._append_locked(state, type, data, actor)

    def _append_locked(self, state: dict[str, Any], type: str, data: dict[str, Any], actor: str) -> Event:
        return self._write_event(state, type, self._admitted(state, type, data), actor)

    def _admitted(self, state: dict[str, Any], type: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` as it may be written as a ``type`` event on ``state`` (redacted), or raise why not."""
        if (problem := declared_problem(type, data)) is not None:
            raise BadInputError(f"event {type}: {problem}")
        if self.clock is not utcnow and not (state["replay"] or (type == "incident.opened" and data.get("replay"))):
            raise RecordError(f"record {self.id} is not a replay: its events are stamped with the real time")
        if type in SEALING_EVENTS and data.get("sha256"):
            sealed = state["artifacts"].get(data.get("path"))
            if sealed is not None:
                raise RecordError(
                    f"{data.get('path')} was sealed at event {sealed['seq']}; sealed files are write-once"
                )
        if self.redactor is not None:
            data = dict(self.redactor.data(data))
        return data

    def _lstat_events(self) -> os.stat_result | None:
        try:
            st = os.lstat(self.events_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecordError(f"cannot read {self.events_path}: {exc.strerror}") from exc
        if not statmod.S_ISREG(st.st_mode):
            raise BadInputError(f"{self.events_path} is not a regular file (a symlink?); refusing to use it")
        return st

    def _state_for_append(self) -> dict[str, Any]:
        """The state to append to (caller holds the lock), with the chain's tail checked against the file.

        This process's own last append is trusted while the file's stat signature (inode, size, mtime,
        ctime) is unchanged; a log that only grew is checked from this process's last line on; anything
        else is rescanned in full. A broken chain, or events missing from the end, refuse the append;
        a torn tail is quarantined and the repair recorded. ``incident.json`` is never trusted.
        """
        st = self._lstat_events()
        key = str(self.events_path)
        with _TAILS_LOCK:
            tail = _TAILS.get(key)
        if st is not None and tail is not None:
            if tail.sig == _stat_sig(st):
                return tail.state
            grown = self._read_grown(tail, st)
            if grown is not None:
                return grown
        raw = self._read_raw()
        scan = _scan_events(raw)
        if scan.problem:
            raise RecordBroken(f"record {self.id} does not verify: {scan.problem}; refusing to append")
        stale = self._cache_head_seq()
        if stale is not None and stale > len(scan.events):
            raise RecordBroken(
                f"record {self.id} does not verify: events.jsonl ends at event {len(scan.events)} but "
                f"incident.json saw event {stale}: events were removed from the end; refusing to append"
            )
        state = self._fold(scan)
        if scan.torn:
            self._write_event(state, "record.repaired", self._quarantine_torn(scan), "irkit")
        elif st is not None:
            self._remember(st, scan.size, hashlib.sha256(raw[: scan.size]), state)
        return state

    def _read_grown(self, tail: _Tail, st: os.stat_result) -> dict[str, Any] | None:
        """Another process appended: check only the new lines, chained from this process's last line, once
        every byte before them is known to be what this process checked or wrote (its SHA-256)."""
        if (st.st_dev, st.st_ino) != tail.sig[:2] or st.st_size <= tail.size or tail.prefix is None:
            return None
        try:
            raw = self._read_raw()
        except (OSError, IrkitError):
            return None  # the full rescan that follows says what is wrong
        if len(raw) <= tail.size or hashlib.sha256(raw[: tail.size]).digest() != tail.prefix.digest():
            return None  # an earlier line changed (or went): rescan everything, and refuse if broken
        new = raw[tail.size :]
        head = tail.state["head"]
        scan = _scan_events(new, prev=head["hash"], first_seq=head["seq"] + 1)
        if scan.problem or scan.torn:
            return None
        state = tail.state
        for ev in scan.events:
            apply_event(state, ev)
        size = tail.size + scan.size
        state["head"]["size"] = size
        prefix = tail.prefix.copy()
        prefix.update(new[: scan.size])
        self._remember(st, size, prefix, state)
        return state

    def _remember(self, st: os.stat_result, size: int, prefix: Any, state: dict[str, Any]) -> None:
        with _TAILS_LOCK:
            _TAILS[str(self.events_path)] = _Tail(_stat_sig(st), size, prefix, state)

    def _cache_head_seq(self) -> int | None:
        try:
            cached = json.loads(self.state_path.read_bytes())
            seq = cached["head"]["seq"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return seq if isinstance(seq, int) else None

    def _quarantine_torn(self, scan: _Scan) -> dict[str, Any]:
        """Move a torn tail aside (kept for forensics) and truncate the log to its last full line."""
        n = 1
        while os.path.lexists(self.path / f"events.torn.{n}"):
            n += 1
        name = f"events.torn.{n}"
        try:
            atomic_write_bytes(self.path / name, scan.torn)
            fd = os.open(self.events_path, os.O_RDWR | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, scan.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _storage_error(exc, f"the repair of {self.id}'s torn tail") from exc
        return {
            "reason": "torn tail: an interrupted write left bytes without a newline",
            "bytes": len(scan.torn),
            "sha256": hashlib.sha256(scan.torn).hexdigest(),
            "quarantined_to": name,
            "after_seq": len(scan.events),
        }

    def _write_event(self, state: dict[str, Any], type: str, data: dict[str, Any], actor: str) -> Event:
        """Write one event at the end of the log (caller holds the lock) and update ``state``."""
        return self._write_lines(state, self._event_lines(state, [(type, data)], actor))[0]

    def _event_lines(
        self, state: dict[str, Any], items: list[tuple[str, dict[str, Any]]], actor: str
    ) -> list[tuple[Event, bytes]]:
        """The events for ``items`` after the log's head, stamped, chained, signed and serialized."""
        head = state["head"]
        seq, prev = head["seq"], head["hash"]
        out: list[tuple[Event, bytes]] = []
        for kind, data in items:
            seq += 1
            body: Event = {"seq": seq, "ts": rfc3339(self.clock()), "type": kind, "actor": actor, "data": data}
            body["prev"] = prev
            body["hash"] = prev = event_hash(prev, body)
            if self.signer is not None:
                body[SIG_KEY] = self.signer.sign(body["hash"])
            out.append((body, canonical_json(body) + b"\n"))
        return out

    def _write_lines(self, state: dict[str, Any], events: list[tuple[Event, bytes]]) -> list[Event]:
        """Append prepared events in one write and one fsync (caller holds the lock), then update ``state``.

        Raises :class:`_LogUnchanged` if not one byte reached the log."""
        head = state["head"]
        line = b"".join(text for _, text in events)
        what = ", ".join(dict.fromkeys(body["type"] for body, _ in events))
        try:
            fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadInputError(f"{self.events_path} is a symlink; refusing to write through it") from None
            raise _LogUnchanged(str(_storage_error(exc, f"event {what} to {self.id}"))) from exc
        try:
            try:
                written = os.write(fd, line)  # raises having written nothing, or returns what it wrote
            except OSError as exc:
                raise _LogUnchanged(str(_storage_error(exc, f"event {what} to {self.id}"))) from exc
            try:
                if written != len(line):
                    raise StorageError(f"short write appending to {self.events_path} ({written}/{len(line)} bytes)")
                os.fsync(fd)
            except OSError as exc:
                # A partial line is a torn tail: the next append quarantines it; the chain stays intact.
                with _TAILS_LOCK:
                    _TAILS.pop(str(self.events_path), None)
                raise _storage_error(exc, f"event {what} to {self.id}") from exc
            st = os.fstat(fd)
        finally:
            os.close(fd)
        with _TAILS_LOCK:
            tail = _TAILS.get(str(self.events_path))
        prefix = None  # the running hash goes on from this process's own view of the log, when ``state`` is it
        if tail is not None and tail.state is state and tail.prefix is not None and tail.size == head["size"]:
            prefix = tail.prefix.copy()
            prefix.update(line)
        size = head["size"] + len(line)
        for body, _ in events:
            apply_event(state, body)
        state["head"]["size"] = size
        self._remember(st, size, prefix, state)
        self._write_state(state)
        return [body for body, _ in events]

    # ---- writing artifacts: write-once

    def _checked_dir(self, directory: Path) -> None:
        """Create ``directory`` inside the record, refusing any symlinked component."""
        rel = directory.relative_to(self.path)
        cur = self.path
        for part in rel.parts:
            cur = cur / part
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                cur.mkdir(mode=0o755)
                fsync_dir(cur.parent)  # the new directory's name is durable before any event names a file in it
                continue
            if not statmod.S_ISDIR(st.st_mode):
                raise BadInputError(f"{cur} is not a directory (a symlink?); refusing to write through it")

    def write_new(self, relpath: str, data: bytes) -> Path:
        """Write a file that must not exist yet (never replaces anything, never follows a symlink)."""
        full = self._place(relpath, data)
        try:
            fsync_dir(full.parent)
        except OSError as exc:
            raise _storage_error(exc, f"{relpath} in {self.id}") from exc
        return full

    def _place(self, relpath: str, data: bytes) -> Path:
        """:meth:`write_new` up to the directory's fsync (the caller makes the new name durable)."""
        full = self.resolve_artifact(relpath)
        try:
            self._checked_dir(full.parent)
            fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=".new.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o644)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.link(tmp, full)  # fails if anything (file, symlink) is already at that name
            finally:
                with contextlib.suppress(OSError):  # once linked, a leftover temp name is only clutter
                    os.unlink(tmp)
        except FileExistsError:
            raise RecordError(f"{relpath} already exists in {self.id}; sealed files are never rewritten") from None
        except OSError as exc:
            raise _storage_error(exc, f"{relpath} in {self.id}") from exc
        return full

    def seal(
        self,
        files_for: Callable[[int], Mapping[str, bytes]],
        *,
        actor: str,
        kind: str,
        reuse_identical: bool = True,
        **extra: Any,
    ) -> list[str]:
        """Write and seal a set of new files, choosing their names under the record lock.

        ``files_for(n)`` gives version ``n`` of the set (path → bytes); the first version whose paths
        are all free (not sealed, reserved or present on disk) is written and sealed, one
        ``artifact.added`` per file. When the newest sealed version already has exactly these bytes,
        nothing is written and its paths are returned (a re-run does not pile up copies).
        """
        with self._locked():
            state = self._state_for_append()
            same: list[str] | None = None
            for n in itertools.count(1):
                if n > 10_000:
                    raise RecordError(f"no free name for {kind} in {self.id} after 10,000 versions")
                files = files_for(n)
                sealed = [state["artifacts"].get(rel) for rel in files]
                if all(sealed):
                    digests = [hashlib.sha256(data).hexdigest() for data in files.values()]
                    same = list(files) if all(s["sha256"] == d for s, d in zip(sealed, digests, strict=True)) else None
                    continue
                if any(sealed) or any(rel in state["reserved"] or os.path.lexists(self.path / rel) for rel in files):
                    same = None
                    continue
                if same is not None and reuse_identical:
                    return same
                items = [
                    (
                        "artifact.added",
                        self._admitted(
                            state,
                            "artifact.added",
                            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "kind": kind, **extra},
                        ),
                    )
                    for rel, data in files.items()
                ]
                try:  # stamped, signed and serialized before any file exists: a refusal leaves nothing
                    events = self._event_lines(state, items, actor)
                except (TypeError, ValueError) as exc:
                    raise BadInputError(f"{kind} files: event data cannot be recorded: {exc}") from None
                placed: list[Path] = []
                logging = False
                try:  # every file, then each directory once: durable before any event names them
                    for rel, data in files.items():
                        placed.append(self._place(rel, data))
                    for directory in dict.fromkeys(p.parent for p in placed):
                        fsync_dir(directory)
                    logging = True
                    self._write_lines(state, events)  # one write, one fsync, for the whole set
                except BaseException as exc:
                    # Removed only while no event can name them: a failure before the log was touched.
                    # After a short write or a failed fsync some events may be on disk: the files stay.
                    if not logging or isinstance(exc, _LogUnchanged):
                        for full in placed:
                            with contextlib.suppress(OSError):
                                full.unlink()
                    if isinstance(exc, OSError):
                        raise _storage_error(exc, f"{kind} files in {self.id}") from exc
                    raise
                return list(files)
        raise AssertionError("unreachable")  # pragma: no cover

    def seal_one(self, relpath: str, data: bytes, *, actor: str, kind: str, **extra: Any) -> str:
        """Seal one file at ``relpath`` or, when that is taken, at its next free version (``x.r2.png``)."""
        return self.seal(lambda n: {versioned(relpath, n): data}, actor=actor, kind=kind, **extra)[0]

    def seal_working_copy(self, relpath: str, data: bytes, *, actor: str) -> str:
        """Replace an unsealed working copy with ``data`` and seal it (``notebook.sealed``), under the lock."""
        with self._locked():
            state = self._state_for_append()
            if relpath not in state["working_copies"]:
                sealed = state["artifacts"].get(relpath)
                why = f"it was sealed at event {sealed['seq']}" if sealed else "it is not a working copy"
                raise RecordError(f"{relpath}: cannot seal, {why} of {self.id}")
            full = self.resolve_artifact(relpath)
            try:
                self._checked_dir(full.parent)
                atomic_write_bytes(full, data)
            except OSError as exc:
                raise _storage_error(exc, f"{relpath} in {self.id}") from exc
            digest = hashlib.sha256(data).hexdigest()
            self._append_locked(state, "notebook.sealed", {"path": relpath, "sha256": digest}, actor)
            return digest

    def latest_file(self, relpath: str) -> str | None:
        """The newest sealed version of a file (``postmortem.html``, ``postmortem.r2.html`` …), if any."""
        return _latest(self.state()["artifacts"], lambda n: versioned(relpath, n), lambda p, v: p == v)

    def latest_dir(self, base: str) -> Path:
        """The newest sealed version of a snapshot directory (``data/cluster``, ``data/cluster.r2`` …)."""
        found = _latest(self.state()["artifacts"], lambda n: versioned_dir(base, n) + "/", lambda p, v: p.startswith(v))
        return self.path / (found[:-1] if found else base)

    # ---- conveniences that every runbook needs

    def set_status(self, to: Status | str, *, actor: str, reason: str = "") -> Event:
        """Move the incident to ``to`` if the state machine allows it (checked under the lock)."""
        new = Status(to)
        bounded_text(reason, "reason")

        def _check(state: dict[str, Any]) -> dict[str, Any]:
            check_transition(state["status"], new)
            return {"from": state["status"]}

        return self.append("status.changed", {"to": new.value, "reason": reason}, actor=actor, check=_check)

    def set_severity(self, level: Level | str, *, actor: str, reason: str = "") -> Event:
        """Record a severity (re)assessment with its reason."""
        bounded_text(reason, "reason")
        return self.append("severity.set", {"level": Level(level).value, "reason": reason}, actor=actor)

    def note(self, text: str, *, actor: str) -> Event:
        """A free-text note in the timeline."""
        bounded_text(text, "note")
        return self.append("note", {"text": text}, actor=actor)

    def resolve_artifact(self, relpath: str) -> Path:
        """The absolute path of an artifact, refusing anything that would leave the record."""
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\x00" in relpath:
            raise RecordError(f"artifact path {relpath!r} must be relative and inside the record")
        full = (self.path / rel).resolve()
        if not full.is_relative_to(self.path.resolve()):
            raise RecordError(f"artifact path {relpath!r} leaves the record")
        return self.path / rel

    def add_artifact(self, relpath: str, *, actor: str, kind: str = "file", **extra: Any) -> Event:
        """Seal a file already in the record (once: a sealed path is never sealed again)."""
        full = self.resolve_artifact(relpath)
        if full.is_symlink() or not full.is_file():
            raise RecordError(f"artifact {relpath} is not a regular file in {self.path}")
        digest = sha256_file(full)
        return self.append(
            "artifact.added", {"path": Path(relpath).as_posix(), "sha256": digest, "kind": kind, **extra}, actor=actor
        )

    # ---- verification

    def verify(self, *, expect_head: str | None = None, verifier: Verifier | None = None) -> VerifyReport:
        """Recompute the chain and every sealed artifact's hash; list unsealed working copies.

        The chain proves that no event was changed, removed or reordered *relative to the head*.
        Someone able to rewrite the whole file could recompute every hash, so the head hash is
        reported: kept elsewhere (a ticket, a chat message) and passed back as ``expect_head``, it
        pins the whole history. With ``verifier`` (a public key) every event must carry a valid
        signature, which catches a forged append by anyone without the private key.
        """
        if expect_head is not None and not expect_head.strip():
            raise BadInputError("--expect-head: empty value (pass the head hash printed by an earlier verify)")
        report = VerifyReport(self.id)
        raw = self._read_raw()
        scan = _scan_events(raw)
        report.events = len(scan.events)
        report.head = scan.events[-1]["hash"] if scan.events else GENESIS
        if expect_head and not scan.problem:
            want = expect_head.strip().lower()
            matches = [e["seq"] for e in scan.events if e["hash"] == want]
            if not matches:
                report.problems.append(f"expected head {want[:16]}… is not an event of this record's chain")
            else:
                report.after_head = [e["type"] for e in scan.events[matches[0] :]]
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
        if verifier is not None:
            for ev in scan.events:
                why = verifier.problem(ev)
                if why:
                    report.problems.append(f"event {ev['seq']} ({ev['type']}): {why}")
                    break
            report.signed = verifier.key_id
        stale = self._cache_head_seq()
        if not scan.problem and stale is not None and stale > len(scan.events):
            report.problems.append(
                f"events.jsonl ends at event {len(scan.events)} but incident.json recorded event "
                f"{stale}: events were removed from the end"
            )
        problem = _replay_transitions(scan.events)
        if problem and not scan.problem:
            report.problems.append(problem)
        state = self._fold(scan)
        for again in state["resealed"]:
            report.problems.append(
                f"{again['path']}: sealed again at event {again['seq']} (first at event {again['first']}) — "
                "sealed files are write-once"
            )
        for rel, info in sorted(state["artifacts"].items()):
            report.artifacts += 1
            try:
                full = self.resolve_artifact(rel)
            except RecordError as exc:
                report.problems.append(str(exc))
                continue
            if full.is_symlink():
                report.problems.append(f"{rel}: sealed at event {info['seq']} but is now a symlink")
            elif not full.is_file():
                report.problems.append(f"{rel}: sealed at event {info['seq']} but the file is missing")
            elif sha256_file(full) != info["sha256"]:
                report.problems.append(f"{rel}: sha256 differs from the one sealed at event {info['seq']} — changed")
        report.working_copies = sorted(state["working_copies"])
        links, report.unaccounted = self._walk(state)
        report.problems += [f"{rel}: a symlink inside the record (records are never read through one)" for rel in links]
        return report

    def _walk(self, state: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Symlinks anywhere in the record, and files that are neither sealed, working copies nor bookkeeping."""
        links, loose = [], []
        known = set(state["artifacts"]) | set(state["working_copies"])
        for top, dirs, files in os.walk(self.path, followlinks=False):
            here = Path(top).relative_to(self.path)
            for name in dirs + files:
                rel = (here / name).as_posix()
                if os.path.islink(self.path / rel):
                    links.append(rel)
                elif name in files and rel not in known and not _bookkeeping(rel):
                    loose.append(rel)
        return sorted(links), sorted(loose)

    def remove_checkpoints(self) -> int:
        """Delete JupyterLab's ``.ipynb_checkpoints`` copies (unredacted) anywhere in the record."""
        n = 0
        for top, dirs, _files in os.walk(self.path, followlinks=False):
            for d in list(dirs):
                if d == ".ipynb_checkpoints":
                    target = Path(top) / d
                    if target.is_symlink():
                        target.unlink()
                    else:
                        shutil.rmtree(target, ignore_errors=True)
                    dirs.remove(d)
                    n += 1
        return n


def _latest(arts: Mapping[str, Any], name: Callable[[int], str], hit: Callable[[str, str], bool]) -> str | None:
    """The highest version ``name(n)`` that some sealed path hits (versions may skip a few numbers)."""
    best: str | None = None
    last = 0
    for n in itertools.count(1):
        v = name(n)
        if any(hit(p, v) for p in arts):
            best, last = v, n
        elif n > last + 20:
            return best
    return best  # pragma: no cover


def _bookkeeping(rel: str) -> bool:
    """irkit's own files in a record that are not evidence: the log, its cache and lock, run state, HTML."""
    first = rel.split("/", 1)[0]
    return (
        rel in ("events.jsonl", "incident.json", ".lock")
        or rel.startswith("events.torn.")
        or first in (".runs", "html")
    )


def _install(tmp: Path, final: Path, incident_id: str) -> None:
    """Rename a fully built record into place; a half-made folder (no events) left by a crash is replaced."""
    for _attempt in range(2):
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        # An older irkit (or a crash mid-mkdir) may have left a folder with nothing but empty
        # subfolders: replace that, and only that, under a lock on the root (two creators, one winner).
        fd = os.open(final.parent / ".create.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if final.is_symlink() or not _half_made(final):
                raise IncidentExists(f"incident {incident_id} already exists at {final}")
            for sub in final.iterdir():
                (sub.rmdir() if sub.is_dir() else sub.unlink())
            final.rmdir()
        finally:
            os.close(fd)
    raise IncidentExists(f"incident {incident_id}: could not replace the half-made folder {final}")


def _half_made(path: Path) -> bool:
    """A folder holding nothing but empty record subfolders (and perhaps a lock): no evidence in it."""
    try:
        for entry in path.iterdir():
            if entry.is_symlink():
                return False
            if entry.is_dir():
                if entry.name not in SUBDIRS or any(entry.iterdir()):
                    return False
            elif entry.name != ".lock":
                return False
    except OSError:
        return False
    return True


def _host() -> str:
    """This machine's (or container's) name, as a path-safe token: pids only mean something on it."""
    import socket

    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def remove_stale_creations(root: str | Path) -> int:
    """Remove hidden ``.creating.<id>.<host>.<pid>.<rand>`` folders whose creating process on this host is gone."""
    removed = 0
    base = Path(root)
    for d in base.glob(".creating.*") if base.is_dir() else []:
        parts = d.name.rsplit(".", 3)
        if d.is_symlink() or not d.is_dir() or len(parts) != 4 or not parts[2].isdigit() or parts[1] != _host():
            continue  # another host's (or container's) creation: its pid means nothing here
        try:
            os.kill(int(parts[2]), 0)
            continue  # its creator is alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


def list_incidents(root: str | Path) -> list[str]:
    """Ids of every record under ``root`` (directories whose name is a valid id and have events)."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if p.is_dir() and ID_PATTERN.fullmatch(p.name) and (p / "events.jsonl").is_file()
    )
