"""Alert intake: a durable queue of notifications and runbook runs, and the workers that drain it.

An accepted notification is committed to SQLite (WAL, ``synchronous=FULL``) *before* the webhook
answers 200, so accepted work survives a crash. A single processor turns notifications into incident
records in arrival order (grouped by Alertmanager's ``groupKey`` or configured labels; a repeat
notification appends ``alert.*`` events; a re-firing within the relink window after all alerts
resolved joins the same incident) and queues one job per new incident. A bounded pool of workers runs
each job's runbooks in order, in batch mode. Every run is tagged with its job and runbook; on
restart, interrupted jobs resume and a runbook whose tagged ``notebook.finished`` is already in the
record is not run again — accepted work is never lost and never run twice to completion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from irkit.alerts import Notification, incident_id_for, open_from_notification, parse_notification, record_alerts
from irkit.config import Settings
from irkit.errors import IncidentExists, IncidentNotFound, IrkitError, StorageError
from irkit.record import Record
from irkit.store import FileStore, Store
from irkit.times import parse_ts, utcnow

BUSY_S = 5.0  # an incident held longer (a runbook run on a shared store) is retried later, not waited for
MAX_ATTEMPTS = 5  # a notification that failed this often (a bug, not bad input or a full disk) is marked failed
SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
  id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, payload BLOB NOT NULL, processed INTEGER NOT NULL DEFAULT 0,
  incident_id TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, retry_at TEXT);
CREATE TABLE IF NOT EXISTS groups (
  group_key TEXT PRIMARY KEY, incident_id TEXT NOT NULL, resolved_at TEXT);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY, incident_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL DEFAULT 'queued',
  attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, result TEXT);
"""


class Queue:
    """The SQLite-backed queue; safe to share between threads (one connection per call)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)
            columns = {row[1] for row in c.execute("PRAGMA table_info(notifications)")}
            if "attempts" not in columns:  # a queue made by an older irkit
                c.execute("ALTER TABLE notifications ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
            if "retry_at" not in columns:
                c.execute("ALTER TABLE notifications ADD COLUMN retry_at TEXT")

    def _conn(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA busy_timeout=30000")
        return c

    def accept(self, payload: bytes, group: str = "") -> int:
        """Persist one notification (durably) and return its id (``group`` is for the shared queue)."""
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO notifications (received_at, payload) VALUES (?, ?)", (utcnow().isoformat(), payload)
            )
            return int(cur.lastrowid or 0)

    def pending_notifications(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Unprocessed notifications whose backoff has expired, oldest first, as ``(id, payload)``."""
        with self._conn() as c:
            return list(
                c.execute(
                    "SELECT id, payload FROM notifications WHERE processed = 0 AND (retry_at IS NULL OR retry_at <= ?) "
                    "ORDER BY id LIMIT ?",
                    (utcnow().isoformat(), limit),
                )
            )

    def mark_processed(self, nid: int, incident_id: str | None, error: str | None = None) -> None:
        """Mark a notification done, with the incident it went to or the error that rules it out for good."""
        with self._conn() as c:
            c.execute(
                "UPDATE notifications SET processed = 1, incident_id = ?, error = ? WHERE id = ?",
                (incident_id, error, nid),
            )

    def attempt_failed(self, nid: int, error: str, max_attempts: int | None) -> bool:
        """Count a failed attempt and back off (2, 4, 8 … s, at most 5 min) before the next one.

        After ``max_attempts`` (None: never) it is marked processed with its error. True if given up.
        """
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            row = c.execute("SELECT attempts FROM notifications WHERE id = ?", (nid,)).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            give_up = max_attempts is not None and attempts >= max_attempts
            retry_at = (utcnow() + timedelta(seconds=min(300, 2**attempts))).isoformat()
            c.execute(
                "UPDATE notifications SET attempts = ?, processed = ?, error = ?, retry_at = ? WHERE id = ?",
                (attempts, 1 if give_up else 0, error, retry_at, nid),
            )
            c.execute("COMMIT")
            return give_up

    def oldest_pending_s(self) -> float:
        """Seconds the oldest unprocessed notification has waited (0 when none)."""
        with self._conn() as c:
            row = c.execute("SELECT min(received_at) FROM notifications WHERE processed = 0").fetchone()
        if not row or not row[0]:
            return 0.0
        return max(0.0, (utcnow() - parse_ts(row[0])).total_seconds())

    def group(self, key: str) -> tuple[str, str | None] | None:
        """The incident an alert group maps to and when its alerts all resolved (None while firing), if known."""
        with self._conn() as c:
            row = c.execute("SELECT incident_id, resolved_at FROM groups WHERE group_key = ?", (key,)).fetchone()
            return (row[0], row[1]) if row else None

    def set_group(self, key: str, incident_id: str, resolved_at: str | None) -> None:
        """Point an alert group at its incident and record when it resolved (None while still firing)."""
        with self._conn() as c:
            c.execute(
                "INSERT INTO groups (group_key, incident_id, resolved_at) VALUES (?, ?, ?) "
                "ON CONFLICT(group_key) DO UPDATE SET incident_id = excluded.incident_id, "
                "resolved_at = excluded.resolved_at",
                (key, incident_id, resolved_at),
            )

    def enqueue(self, incident_id: str) -> None:
        """Queue a runbook job for an incident; a no-op if that incident already has one."""
        with self._conn() as c:
            c.execute(
                "INSERT OR IGNORE INTO jobs (incident_id, created_at) VALUES (?, ?)",
                (incident_id, utcnow().isoformat()),
            )

    def claim(self) -> tuple[int, str] | None:
        """Atomically take the oldest queued job."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            row = c.execute("SELECT id, incident_id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                c.execute("COMMIT")
                return None
            c.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? WHERE id = ?",
                (utcnow().isoformat(), row[0]),
            )
            c.execute("COMMIT")
            return int(row[0]), str(row[1])

    def finish(self, job_id: int, state: str, result: str) -> None:
        """Close a job as ``done`` or ``failed`` with its one-line result."""
        with self._conn() as c:
            c.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, result = ? WHERE id = ?",
                (state, utcnow().isoformat(), result, job_id),
            )

    def requeue_interrupted(self) -> int:
        """Jobs left 'running' by a previous process go back to the queue (they resume, not restart)."""
        with self._conn() as c:
            return c.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'").rowcount

    def counts(self) -> dict[str, int]:
        """Jobs per state and pending/total/failed notification counts, for the health endpoint."""
        with self._conn() as c:
            out = {f"jobs_{state}": n for state, n in c.execute("SELECT state, count(*) FROM jobs GROUP BY state")}
            out["notifications_pending"] = c.execute(
                "SELECT count(*) FROM notifications WHERE processed = 0"
            ).fetchone()[0]
            out["notifications_total"] = c.execute("SELECT count(*) FROM notifications").fetchone()[0]
            out["notifications_failed"] = c.execute(
                "SELECT count(*) FROM notifications WHERE processed = 1 AND error IS NOT NULL"
            ).fetchone()[0]
            return out

    def last_failure(self) -> dict[str, Any] | None:
        """The most recent notification that could not be applied, with why."""
        with self._conn() as c:
            row = c.execute(
                "SELECT id, received_at, error FROM notifications WHERE processed = 1 AND error IS NOT NULL "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return {"id": row[0], "received_at": row[1], "error": row[2]} if row else None


class PgQueue:
    """The same queue in PostgreSQL, shared by every ``irkit serve`` replica on one store.

    A notification is stored once (a unique sha256 of its body: Alertmanager's retries to another
    replica are the same row). Replicas take notifications only at the head of their alert group,
    with ``FOR UPDATE SKIP LOCKED`` and a lease, so a group's notifications are applied in arrival
    order by one replica at a time; jobs are claimed the same way. A replica killed with kill -9
    holds its claims only until their lease ends; another replica then takes them again.
    """

    def __init__(self, dsn: str, *, lease_s: float = 60, owner: str | None = None) -> None:
        from irkit.store import prepare

        self.dsn = dsn
        self.lease_s = lease_s
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._local = threading.local()
        with self._tx() as c:
            prepare(c)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            from irkit.store import connect

            conn = self._local.conn = connect(self.dsn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        import psycopg

        conn = self._conn()
        try:
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            if conn.broken:
                self._local.conn = None
            raise StorageError(f"the shared queue failed: {str(exc).strip().splitlines()[0][:200]}") from None

    def accept(self, payload: bytes, group: str = "") -> int:
        """Persist one notification (or find the identical one already stored) and return its id."""
        digest = hashlib.sha256(payload).hexdigest()
        with self._tx() as c:
            row = c.execute(
                "INSERT INTO irkit_notifications (digest, group_key, payload) VALUES (%s, %s, %s) "
                "ON CONFLICT (digest) DO NOTHING RETURNING id",
                (digest, group, payload),
            ).fetchone()
            if row is None:
                row = c.execute("SELECT id FROM irkit_notifications WHERE digest = %s", (digest,)).fetchone()
            return int(row[0])

    def pending_notifications(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Claim (lease) the oldest notification of each group that nobody holds, oldest first."""
        with self._tx() as c:
            rows = c.execute(
                "WITH heads AS (SELECT DISTINCT ON (group_key) id FROM irkit_notifications WHERE NOT processed "
                "ORDER BY group_key, id) "
                "SELECT n.id FROM irkit_notifications n JOIN heads h ON h.id = n.id "
                "WHERE (n.retry_at IS NULL OR n.retry_at <= now()) "
                "AND (n.claim_until IS NULL OR n.claim_until < now() OR n.claimed_by = %s) "
                "ORDER BY n.id LIMIT %s FOR UPDATE OF n SKIP LOCKED",
                (self.owner, limit),
            ).fetchall()
            if not rows:
                return []
            return [
                (int(i), bytes(p))
                for i, p in c.execute(
                    "UPDATE irkit_notifications SET claimed_by = %s, claim_until = now() + %s * interval '1 second' "
                    "WHERE id = ANY(%s) RETURNING id, payload",
                    (self.owner, self.lease_s, [r[0] for r in rows]),
                ).fetchall()
            ]

    def mark_processed(self, nid: int, incident_id: str | None, error: str | None = None) -> None:
        """Mark a notification done, with the incident it went to or the error that rules it out for good."""
        with self._tx() as c:
            c.execute(
                "UPDATE irkit_notifications SET processed = true, incident_id = %s, error = %s, claim_until = NULL "
                "WHERE id = %s",
                (incident_id, error, nid),
            )

    def attempt_failed(self, nid: int, error: str, max_attempts: int | None) -> bool:
        """Count a failed attempt and back off (2, 4, 8 … s, at most 5 min); True if given up."""
        with self._tx() as c:
            row = c.execute("SELECT attempts FROM irkit_notifications WHERE id = %s FOR UPDATE", (nid,)).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            give_up = max_attempts is not None and attempts >= max_attempts
            c.execute(
                "UPDATE irkit_notifications SET attempts = %s, processed = %s, error = %s, claim_until = NULL, "
                "retry_at = now() + %s * interval '1 second' WHERE id = %s",
                (attempts, give_up, error, min(300, 2**attempts), nid),
            )
            return give_up

    def oldest_pending_s(self) -> float:
        """Seconds the oldest unprocessed notification has waited (0 when none)."""
        with self._tx() as c:
            row = c.execute(
                "SELECT extract(epoch FROM now() - min(received_at)) FROM irkit_notifications WHERE NOT processed"
            ).fetchone()
        return max(0.0, float(row[0])) if row and row[0] is not None else 0.0

    def group(self, key: str) -> tuple[str, str | None] | None:
        """The incident an alert group maps to and when its alerts all resolved (None while firing), if known."""
        with self._tx() as c:
            row = c.execute("SELECT incident_id, resolved_at FROM irkit_groups WHERE group_key = %s", (key,)).fetchone()
            return (row[0], row[1]) if row else None

    def set_group(self, key: str, incident_id: str, resolved_at: str | None) -> None:
        """Point an alert group at its incident and record when it resolved (None while still firing)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO irkit_groups (group_key, incident_id, resolved_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (group_key) DO UPDATE SET incident_id = excluded.incident_id, "
                "resolved_at = excluded.resolved_at",
                (key, incident_id, resolved_at),
            )

    def enqueue(self, incident_id: str) -> None:
        """Queue a runbook job for an incident; a no-op if that incident already has one."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO irkit_jobs (incident_id) VALUES (%s) ON CONFLICT (incident_id) DO NOTHING", (incident_id,)
            )

    def claim(self) -> tuple[int, str] | None:
        """Take the oldest queued job, or one whose owner's lease ran out (a replica that died)."""
        with self._tx() as c:
            row = c.execute(
                "UPDATE irkit_jobs SET state = 'running', owner = %s, attempts = attempts + 1, started_at = now(), "
                "lease_until = now() + %s * interval '1 second' WHERE id = (SELECT id FROM irkit_jobs "
                "WHERE state = 'queued' OR (state = 'running' AND lease_until < now()) "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, incident_id",
                (self.owner, self.lease_s),
            ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def renew(self, job_id: int) -> bool:
        """Extend this replica's lease on a running job; False if another replica has taken it."""
        with self._tx() as c:
            return bool(
                c.execute(
                    "UPDATE irkit_jobs SET lease_until = now() + %s * interval '1 second' "
                    "WHERE id = %s AND owner = %s AND state = 'running'",
                    (self.lease_s, job_id, self.owner),
                ).rowcount
            )

    def finish(self, job_id: int, state: str, result: str) -> None:
        """Close a job as ``done`` or ``failed`` with its one-line result (only while this replica holds it)."""
        with self._tx() as c:
            c.execute(
                "UPDATE irkit_jobs SET state = %s, finished_at = now(), result = %s, lease_until = NULL "
                "WHERE id = %s AND owner = %s",
                (state, result, job_id, self.owner),
            )

    def requeue_interrupted(self) -> int:
        """Nothing to do at start: another replica's running jobs are taken back only when their lease ends."""
        return 0

    def counts(self) -> dict[str, int]:
        """Jobs per state and pending/total/failed notification counts, for the health endpoint."""
        with self._tx() as c:
            out = {f"jobs_{st}": n for st, n in c.execute("SELECT state, count(*) FROM irkit_jobs GROUP BY state")}
            row = c.execute(
                "SELECT count(*) FILTER (WHERE NOT processed), count(*), "
                "count(*) FILTER (WHERE processed AND error IS NOT NULL) FROM irkit_notifications"
            ).fetchone()
        out["notifications_pending"], out["notifications_total"], out["notifications_failed"] = (int(v) for v in row)
        return out

    def last_failure(self) -> dict[str, Any] | None:
        """The most recent notification that could not be applied, with why."""
        with self._tx() as c:
            row = c.execute(
                "SELECT id, received_at, error FROM irkit_notifications WHERE processed AND error IS NOT NULL "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return {"id": row[0], "received_at": row[1].isoformat(), "error": row[2]} if row else None


def group_key(note: Notification, labels: tuple[str, ...] | None) -> str:
    """Alertmanager's groupKey, or a key over the configured labels."""
    if not labels:
        return note.groupKey
    values = {k: note.commonLabels.get(k) or note.groupLabels.get(k, "") for k in labels}
    return json.dumps(values, sort_keys=True)


@dataclass
class Intake:
    """Applies notifications to records and runs queued jobs."""

    settings: Settings
    environ: Mapping[str, str]
    records: Path
    queue: Queue | PgQueue
    run: Callable[..., Any]  # irkit.runner.run_runbook (or a test double with the same signature)
    actor: str = "irkit-serve"
    pool: Any = None  # irkit.kernels.KernelPool, when runs use warm kernels
    on_event: Callable[[str, dict[str, Any]], None] = lambda _kind, _data: None
    store: Store = None  # type: ignore[assignment]  # where records live (default: a FileStore on ``records``)

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = FileStore(self.records)

    # ---- notifications → records

    def apply(self, note: Notification) -> str:
        """Open or update the incident for one notification; return its id."""
        key = group_key(note, self.settings.serve.group_by)
        known = self.queue.group(key)
        if known is not None:
            incident_id, resolved_at = known
            relink = self.settings.serve.relink_window
            try:
                with self.store.writing(incident_id, timeout_s=BUSY_S) as root:
                    rec = Record.open(root, incident_id, **self._options())
                    st = rec.state()
                    recent = resolved_at is None or utcnow() - parse_ts(resolved_at) <= relink
                    closed_at = st["status_times"].get("resolved") if st["status"] in ("resolved", "reviewed") else None
                    if closed_at is not None and note.status == "firing" and utcnow() - parse_ts(closed_at) > relink:
                        recent = False  # a person closed it long ago: this firing is a new incident
                    if recent or note.status == "resolved":
                        record_alerts(rec, note, actor="alertmanager")
                        if note.status == "firing":
                            self.queue.enqueue(incident_id)  # a no-op once it has its job (see below)
                        self._track(key, rec)
                        return incident_id
            except IncidentNotFound:
                pass  # mapped by a writer that died before its incident was committed: open it now
        derived = (
            incident_id_for(note)
            if not self.settings.serve.group_by
            else f"INC-{note.started_at:%Y%m%d-%H%M}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        )
        try:
            with self.store.writing(derived, new=True) as root:
                rec = open_from_notification(
                    root,
                    note,
                    service=self.settings.service.name,
                    actor="alertmanager",
                    incident_id=derived,
                    **self._options(),
                )
        except IncidentExists:  # reprocessing after a crash, or the same group re-firing much later
            with self.store.writing(derived, timeout_s=BUSY_S) as root:
                rec = Record.open(root, derived, **self._options())
                record_alerts(rec, note, actor="alertmanager")
        # Its job before its group: a crash between the two replays this notification, which finds the
        # group unknown, the incident existing, and queues the job again (one per incident: a no-op).
        # The other way round, the replay found the group known and the job was never queued.
        if note.status == "firing":
            self.queue.enqueue(rec.id)
        self._track(key, rec)  # only once the incident is committed: a group never points at nothing
        if note.status == "firing":
            self.on_event("incident_opened", {"incident": rec.id})
        return rec.id

    def _options(self) -> dict[str, Any]:
        return self.settings.record_options(self.environ)

    def _track(self, key: str, rec: Record) -> None:
        st = rec.state()
        self.queue.set_group(key, rec.id, st["last_event_at"] if st["alerts_resolved"] else None)

    def process_pending(self) -> int:
        """Apply every pending notification in arrival order.

        A notification is marked processed only after its incident's events are durable. One that can
        never apply (bad input, a record that does not verify) is marked with its error and counted;
        one that failed for a reason that may pass (a full disk) stays pending and is tried again.
        """
        done = 0
        tried: set[int] = set()  # failed in this pass: retried on the next wake-up, never spun on
        while batch := [(n, p) for n, p in self.queue.pending_notifications(limit=100 + len(tried)) if n not in tried]:
            for nid, payload in batch:
                try:
                    incident_id = self.apply(parse_notification(payload))
                except StorageError as exc:  # may pass (a full disk): retried with backoff, never given up
                    self._failed(nid, "storage", str(exc), tried, give_up_after=None)
                    continue
                except IrkitError as exc:  # can never apply: bad input, a record that does not verify
                    self.queue.mark_processed(nid, None, str(exc))
                    self.on_event("intake_failed", {"reason": type(exc).__name__, "error": str(exc)})
                except Exception as exc:  # a bug: one notification must not stall the ones behind it
                    self._failed(nid, "error", f"{type(exc).__name__}: {exc}", tried)
                    continue
                else:
                    self.queue.mark_processed(nid, incident_id)
                done += 1
        return done

    def _failed(
        self, nid: int, reason: str, error: str, tried: set[int], *, give_up_after: int | None = MAX_ATTEMPTS
    ) -> None:
        tried.add(nid)
        gave_up = self.queue.attempt_failed(nid, error[:500], give_up_after)
        self.on_event("intake_failed", {"reason": reason if not gave_up else f"{reason}, gave up", "error": error})

    # ---- jobs → runbook runs

    def run_job(self, job_id: int, incident_id: str) -> str:
        """Run the configured runbooks for an incident, skipping any already finished for this job.

        Each run holds the incident for writing (on a shared store, a database lock), and the check for
        a finished run is made under it: two replicas that both took the job never both run a runbook.
        """
        outcomes = []
        for runbook in self.settings.serve.runbooks:
            tag = f"job{job_id}:{runbook}"
            with self.store.writing(incident_id) as root:
                rec = Record.open(root, incident_id, **self._options())
                done = [e for e in rec.events() if e["type"] == "notebook.finished" and e["data"].get("tag") == tag]
                if done:
                    outcomes.append(f"{runbook}: already {done[-1]['data'].get('outcome')}")
                    continue
                t0 = time.monotonic()
                kw = {"pool": self.pool} if self.pool is not None else {}
                result = self.run(
                    rec,
                    runbook,
                    None,
                    settings=self.settings,
                    environ=self.environ,
                    actor=self.actor,
                    batch=True,
                    tag=tag,
                    **kw,
                )
            self.on_event(
                "run_finished",
                {"incident": incident_id, "runbook": runbook, "ok": result.ok, "seconds": time.monotonic() - t0},
            )
            outcomes.append(f"{runbook}: {result.summary()}")
        return "; ".join(outcomes)


class Workers:
    """A bounded pool of threads: one processes notifications, N run jobs."""

    def __init__(self, intake: Intake, size: int | None = None, poll_s: float = 0.1) -> None:
        self.intake = intake
        self.size = size or intake.settings.serve.workers or os.cpu_count() or 2
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._jobs = threading.Event()  # set when the intake thread may have queued a job
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Requeue jobs interrupted by a previous process, then start the intake thread and the job workers."""
        self.intake.queue.requeue_interrupted()
        self._threads = [threading.Thread(target=self._process_loop, name="irkit-intake", daemon=True)]
        self._threads += [
            threading.Thread(target=self._job_loop, name=f"irkit-worker-{i}", daemon=True) for i in range(self.size)
        ]
        for t in self._threads:
            t.start()

    def notify(self) -> None:
        """Wake the intake thread now (a notification was just accepted) instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        """Signal every thread to stop and wait up to ``timeout`` seconds for each."""
        self._stop.set()
        self._wake.set()
        self._jobs.set()
        for t in self._threads:
            t.join(timeout)

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.intake.process_pending()
            except Exception as exc:  # keep intake alive; the notification stays pending and is retried
                self.intake.on_event("intake_error", {"error": f"{type(exc).__name__}: {exc}"})
            self._jobs.set()  # a job just queued is taken now, not at a worker's next poll

    def _job_loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.intake.queue.claim()
            except IrkitError as exc:  # the shared queue is unreachable: try again shortly
                self.intake.on_event("intake_error", {"error": str(exc)})
                self._stop.wait(max(self.poll_s, 1.0))
                continue
            if job is None:
                self._jobs.wait(self.poll_s)
                self._jobs.clear()
                continue
            job_id, incident_id = job
            try:
                with self._leased(job_id):
                    result = self.intake.run_job(job_id, incident_id)
                self.intake.queue.finish(job_id, "done", result)
            except Exception as exc:
                with contextlib.suppress(IrkitError):
                    self.intake.queue.finish(job_id, "failed", f"{type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def _leased(self, job_id: int) -> Iterator[None]:
        """While a job runs, renew its lease on a shared queue (a third of the lease at a time)."""
        queue = self.intake.queue
        if not isinstance(queue, PgQueue):
            yield
            return
        done = threading.Event()

        def beat() -> None:
            while not done.wait(queue.lease_s / 3):
                with contextlib.suppress(IrkitError):
                    queue.renew(job_id)

        t = threading.Thread(target=beat, name=f"irkit-lease-{job_id}", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join(5)


def default_queue_path(settings: Settings, records: Path) -> Path:
    """The queue database: ``serve.queue_path`` from settings, else ``<records>/.irkit/queue.sqlite``."""
    return Path(settings.serve.queue_path) if settings.serve.queue_path else records / ".irkit" / "queue.sqlite"
