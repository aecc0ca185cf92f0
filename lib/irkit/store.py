"""Where records live: a directory on this machine, or a team's PostgreSQL and S3-compatible bucket.

:class:`FileStore` is today's layout: ``<records_dir>/<id>/events.jsonl`` plus the sealed files,
appends serialized by the record's own ``flock``. :class:`SharedStore` keeps the same records in
engines a team already runs:

* PostgreSQL holds each incident's event chain, one row per event with primary key
  ``(incident, seq)`` and the event's canonical JSON line byte for byte, so the hash chain and
  ``irkit verify`` mean exactly what they mean in a directory.
* The bucket holds every sealed file under ``<prefix>/sha256/<aa>/<digest>``: addressed by its
  content, so a sealed file cannot be replaced by other bytes.
* ``records_dir`` becomes this machine's working cache. A writer holds the incident (a session-level
  advisory lock, and the incident's row lock, ``SELECT … FOR UPDATE``, in each of its
  transactions), brings the cache up to the database's head (events, then any sealed file it
  lacks), works on it with the ordinary :class:`~irkit.record.Record` (runbook kernels included),
  then uploads the files its new events seal and inserts those events, and commits; a runner also
  commits its start at once (:func:`checkpoint`). Appends to one incident are serialized by the
  database on every replica; a writer that dies (kill -9) loses what it had not committed, its hold
  is released with its connection, and the next writer finds the cache ahead of the database and
  rebuilds it from the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat as statmod
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from irkit.errors import BadInputError, ConfigError, IncidentExists, IncidentNotFound, RecordError, StorageError
from irkit.events import SEALING_EVENTS, Status
from irkit.files import atomic_write_bytes
from irkit.record import SUBDIRS, Record, apply_event, initial_state, list_incidents, read_chain, validate_incident_id

if TYPE_CHECKING:
    from irkit.config import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS irkit_incidents (
  id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), head_seq integer NOT NULL DEFAULT 0,
  head_hash text, status text, active boolean NOT NULL DEFAULT true);
CREATE TABLE IF NOT EXISTS irkit_events (
  incident text NOT NULL REFERENCES irkit_incidents (id), seq integer NOT NULL, type text NOT NULL,
  hash text NOT NULL, prev text NOT NULL, line bytea NOT NULL, PRIMARY KEY (incident, seq));
CREATE TABLE IF NOT EXISTS irkit_notifications (
  id bigserial PRIMARY KEY, digest text NOT NULL UNIQUE, group_key text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(), payload bytea NOT NULL, processed boolean NOT NULL DEFAULT false,
  incident_id text, error text, attempts integer NOT NULL DEFAULT 0, retry_at timestamptz,
  claimed_by text, claim_until timestamptz);
CREATE INDEX IF NOT EXISTS irkit_notifications_pending ON irkit_notifications (group_key, id) WHERE NOT processed;
CREATE TABLE IF NOT EXISTS irkit_groups (group_key text PRIMARY KEY, incident_id text NOT NULL, resolved_at text);
CREATE TABLE IF NOT EXISTS irkit_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS irkit_jobs (
  id bigserial PRIMARY KEY, incident_id text NOT NULL UNIQUE, state text NOT NULL DEFAULT 'queued',
  attempts integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz,
  finished_at timestamptz, result text, owner text, lease_until timestamptz);
"""
SCHEMA_LOCK = 0x69726B6974  # "irkit": two replicas starting at once create the tables once
SCHEMA_VERSION = 1  # raised with every change to the tables; an older irkit refuses a newer store
SCHEDULER_LOCK = 0x69726B6974 + 1  # held by the one replica that runs the plan's timers


class Store(Protocol):
    """What intake, the scheduler and the CLI need from wherever records live."""

    root: Path  # the records directory (file store) or this machine's working cache (shared store)
    shared: bool

    def writing(
        self, incident_id: str, *, new: bool = False, timeout_s: float | None = None
    ) -> contextlib.AbstractContextManager[Path]:
        """Hold the incident for writing; yields the directory its :class:`Record` lives under.

        ``timeout_s``: give up (StorageError, "busy") when another writer holds it that long.
        """
        ...

    def try_writing(self, incident_id: str) -> contextlib.AbstractContextManager[Path | None]:
        """Like :meth:`writing`, or None at once when another writer holds the incident."""
        ...

    def reading(self, incident_id: str, *, artifacts: bool = True) -> contextlib.AbstractContextManager[Path]:
        """A directory to read the record under (with its sealed files when ``artifacts``)."""
        ...

    def ids(self, *, active: bool = False) -> list[str]:
        """Every incident id (``active``: only those the plan's timers still concern, where known)."""
        ...

    def export(self, incident_id: str, dest: Path) -> Path:
        """Write the record in the directory layout under ``dest/<id>``."""
        ...

    def leader(self) -> bool:
        """Whether this process runs the plan's timers."""
        ...


# --------------------------------------------------------------------------- a directory


class FileStore:
    """Records in one directory on this machine (the default; no server needed)."""

    shared = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @contextlib.contextmanager
    def writing(self, incident_id: str, *, new: bool = False, timeout_s: float | None = None) -> Iterator[Path]:
        """The records root: a :class:`Record` serializes its own appends (briefly) with its lock file."""
        validate_incident_id(incident_id)
        yield self.root

    def try_writing(self, incident_id: str) -> contextlib.AbstractContextManager[Path | None]:
        """The same as :meth:`writing` (a directory's writers wait on the record's lock, briefly)."""
        return self.writing(incident_id)

    @contextlib.contextmanager
    def reading(self, incident_id: str, *, artifacts: bool = True) -> Iterator[Path]:
        """The records root itself."""
        validate_incident_id(incident_id)
        yield self.root

    def ids(self, *, active: bool = False) -> list[str]:
        """Every record under the root (``active`` is decided by the caller from each state)."""
        return list_incidents(self.root)

    def export(self, incident_id: str, dest: Path) -> Path:
        """Copy the record (events, sealed files, working copies) to ``dest/<id>``."""
        src = Record.open(self.root, incident_id).path
        out = _fresh_target(dest, incident_id)
        shutil.copytree(src, out, symlinks=True, ignore=shutil.ignore_patterns(".lock", ".runs", "html"))
        return out

    def leader(self) -> bool:
        """One process serves a directory: it always runs the timers."""
        return True


# --------------------------------------------------------------------------- PostgreSQL + a bucket


class Blobs:
    """Sealed files in an S3-compatible bucket, keyed by their sha256 (write-once by construction)."""

    def __init__(self, url: str, *, endpoint: str | None, access_key: str | None, secret_key: str | None) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint}" if endpoint else "")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
        )
        self._known: set[str] = set()  # digests this process has seen in the bucket

    def key(self, digest: str) -> str:
        """Where a file with this sha256 lives in the bucket."""
        return "/".join(p for p in (self.prefix, "sha256", digest[:2], digest) if p)

    def _error(self, exc: Exception, what: str) -> StorageError:
        return StorageError(f"cannot {what} {self.where}: {str(exc).splitlines()[0][:200]}")

    def put(self, digest: str, path: Path) -> None:
        """Upload ``path`` as ``digest`` unless the bucket already has it; refuse bytes that do not match."""
        from botocore.exceptions import BotoCoreError, ClientError

        if digest in self._known:
            return
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise RecordError(f"{path.name}: its bytes no longer match the sha256 sealed for it; not uploaded")
        try:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
                self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "upload to") from None
        self._known.add(digest)

    def get(self, digest: str, dest: Path) -> None:
        """Download ``digest`` to ``dest`` (atomically), checking the bytes against the digest."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            data = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"download {digest[:12]}… from") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise StorageError(f"{self.key(digest)} in {self.where} does not hash to its name: the bucket was altered")
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, data)
        self._known.add(digest)


def prepare(conn: Any) -> None:
    """Create the tables if they are missing (once, whoever starts first), and refuse a store that a
    newer irkit laid out: its rows may mean things this irkit does not know."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    conn.execute(SCHEMA)
    row = conn.execute("SELECT max(version) FROM irkit_schema").fetchone()
    if row[0] is None:
        conn.execute("INSERT INTO irkit_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    elif row[0] > SCHEMA_VERSION:
        raise ConfigError(
            f"the shared store is at schema {row[0]}, this irkit knows {SCHEMA_VERSION}: upgrade irkit on this machine"
        )


def connect(dsn: str) -> Any:
    """A new PostgreSQL connection (not in autocommit), or one line saying why there is none."""
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=5, application_name="irkit")
    except psycopg.Error as exc:
        where = dsn.split("@")[-1]
        raise StorageError(
            f"cannot reach the shared store at {where}: {str(exc).strip().splitlines()[0][:200]}"
        ) from None


class SharedStore:
    """Records in PostgreSQL (events) and a bucket (sealed files), worked on through a local cache."""

    shared = True

    def __init__(self, dsn: str, blobs: Blobs, cache: str | Path) -> None:
        self.dsn = dsn
        self.blobs = blobs
        self.root = Path(cache)
        self._leader: Any = None  # the connection holding the scheduler's advisory lock
        self._leader_lock = threading.Lock()
        self._idle: list[Any] = []  # connections not in use (see :meth:`transaction`)
        self._idle_lock = threading.Lock()
        with self.transaction() as conn:
            prepare(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection in a transaction: committed when the block ends, rolled back if it raises.

        Connections are reused (a few idle ones are kept); a nested block gets a second one.
        """
        import psycopg

        conn = self._take()
        try:
            yield conn
            conn.commit()
        except psycopg.Error as exc:
            raise StorageError(f"the shared store failed: {str(exc).strip().splitlines()[0][:200]}") from None
        finally:
            self._give(conn)

    def _take(self) -> Any:
        with self._idle_lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and not conn.broken:
                    return conn
        return connect(self.dsn)

    def _give(self, conn: Any) -> None:
        import psycopg

        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()  # whatever the block left open (nothing, after a commit)
                with self._idle_lock:
                    if len(self._idle) < 4:
                        self._idle.append(conn)
                        return
        with contextlib.suppress(psycopg.Error):
            conn.close()

    # ---- reading

    def ids(self, *, active: bool = False) -> list[str]:
        """Every incident id (``active``: only those the plan's timers still concern)."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT id FROM irkit_incidents WHERE active OR NOT %s ORDER BY id", (active,))
            return [r[0] for r in rows]

    def lines(self, conn: Any, incident_id: str) -> list[bytes]:
        """The incident's event lines, in order."""
        return [
            bytes(r[0])
            for r in conn.execute("SELECT line FROM irkit_events WHERE incident = %s ORDER BY seq", (incident_id,))
        ]

    @contextlib.contextmanager
    def reading(self, incident_id: str, *, artifacts: bool = True) -> Iterator[Path]:
        """A private, temporary copy of the record as the database has it (deleted afterwards)."""
        tmp = Path(tempfile.mkdtemp(prefix="irkit-read-"))
        try:
            self.export(incident_id, tmp, artifacts=artifacts)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def export(self, incident_id: str, dest: Path, *, artifacts: bool = True) -> Path:
        """Write the record in the directory layout under ``dest/<id>`` (``irkit verify --records dest``)."""
        validate_incident_id(incident_id)
        with self.transaction() as conn:
            lines = self.lines(conn, incident_id)
        if not lines:
            raise IncidentNotFound(f"no incident {incident_id} in the shared store")
        out = _fresh_target(dest, incident_id)
        for sub in SUBDIRS:
            (out / sub).mkdir(parents=True, exist_ok=True)
        raw = b"".join(lines)
        atomic_write_bytes(out / "events.jsonl", raw)
        if artifacts:
            for rel, info in _fold(raw)["artifacts"].items():
                self.blobs.get(info["sha256"], _inside(out, rel))
        return out

    # ---- writing

    def writing(
        self, incident_id: str, *, new: bool = False, timeout_s: float | None = None
    ) -> contextlib.AbstractContextManager[Path]:
        """Hold the incident (waiting for another writer, at most ``timeout_s``) and yield the local
        cache; see :meth:`_hold`. A runbook run holds it for the whole run, so intake, which must
        not stall every alert group behind one busy incident, passes a timeout and retries later."""
        return self._hold(incident_id, new=new, wait=True, timeout_s=timeout_s)  # type: ignore[return-value]

    def try_writing(self, incident_id: str) -> contextlib.AbstractContextManager[Path | None]:
        """Like :meth:`writing`, but yields None at once when another writer holds the incident."""
        return self._hold(incident_id, new=False, wait=False)

    @contextlib.contextmanager
    def _hold(
        self, incident_id: str, *, new: bool, wait: bool, timeout_s: float | None = None
    ) -> Iterator[Path | None]:
        """Hold the incident and yield the local cache, brought up to the database's head.

        The hold is an advisory lock on the session (see :func:`checkpoint`); each transaction under
        it also locks the incident's row. Whatever the block appends is pushed when it ends — also
        when it raises, since those events happened (a page sent, a run that failed) — and committed.
        ``new``: the incident must not exist yet (its row is inserted, and any stale cache is set
        aside). ``wait=False`` yields None instead of waiting for another writer.
        """
        validate_incident_id(incident_id)
        with self.transaction() as conn:
            # The hold is a session-level advisory lock, taken before anything else by every writer: it
            # outlives the commits a run makes on its way (checkpoint), and ends with the connection.
            if not self._take_hold(conn, incident_id, wait=wait, timeout_s=timeout_s):
                yield None
                return
            try:
                if new:
                    got = conn.execute(
                        "INSERT INTO irkit_incidents (id) VALUES (%s) ON CONFLICT (id) DO NOTHING RETURNING id",
                        (incident_id,),
                    ).fetchone()
                    if got is None:
                        raise IncidentExists(f"incident {incident_id} already exists in the shared store")
                    self._set_aside(incident_id)
                    base: list[bytes] = []
                else:
                    if self._lock_row(conn, incident_id) is None:
                        raise IncidentNotFound(f"no incident {incident_id} in the shared store")
                    base = self.lines(conn, incident_id)
                    self._sync(incident_id, base)
                hold = _Hold(self, conn, incident_id, base)
                key = (str(self.root.resolve()), incident_id)
                _HOLDS[key] = hold
                failure: BaseException | None = None
                try:
                    yield self.root
                except BaseException as exc:  # pushed and committed first, then raised again
                    failure = exc
                finally:
                    _HOLDS.pop(key, None)
                pushed = self._push(conn, incident_id, hold.base, self.root / incident_id)
                if new and not pushed and not hold.checkpoints:
                    conn.rollback()  # the create never happened: no row without its incident.opened
                else:
                    conn.commit()
                if failure is not None:
                    raise failure
            finally:
                self._release_hold(conn, incident_id)

    def _take_hold(self, conn: Any, incident_id: str, *, wait: bool, timeout_s: float | None) -> bool:
        import psycopg

        if not wait:  # a session lock: it stays when this transaction ends
            got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (incident_id,)).fetchone()[0]
            return bool(got)
        if timeout_s is not None:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(timeout_s * 1000))}ms",))
        try:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (incident_id,))
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            raise StorageError(
                f"incident {incident_id} is busy: another writer has held it for {timeout_s:g} s (a runbook run?)"
            ) from None
        finally:
            if timeout_s is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT set_config('lock_timeout', '0', false)")
        return True

    def _release_hold(self, conn: Any, incident_id: str) -> None:
        import psycopg

        try:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (incident_id,))
            conn.commit()
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # never pooled while it may still hold the incident

    def checkpoint(self, hold: _Hold) -> int:
        """Commit what the holder has appended so far, and go on holding the incident."""
        pushed = self._push(hold.conn, hold.incident_id, hold.base, self.root / hold.incident_id)
        hold.conn.commit()
        hold.base = self.lines(hold.conn, hold.incident_id)
        self._lock_row(hold.conn, hold.incident_id)
        hold.checkpoints += 1
        return pushed

    def _lock_row(self, conn: Any, incident_id: str) -> Any:
        """Lock the incident's row for this transaction (the hold's advisory lock is already ours)."""
        return conn.execute("SELECT head_seq FROM irkit_incidents WHERE id = %s FOR UPDATE", (incident_id,)).fetchone()

    def _set_aside(self, incident_id: str) -> None:
        """Move a cache that is not the database's (work that was never committed) out of the way."""
        here = self.root / incident_id
        if os.path.lexists(here):
            aside = (
                self.root
                / ".irkit"
                / "uncommitted"
                / f"{incident_id}.{time.strftime('%Y%m%dT%H%M%S')}.{uuid.uuid4().hex[:6]}"
            )
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(here, aside)

    def _sync(self, incident_id: str, lines: list[bytes], *, again: bool = True) -> None:
        """Make the cache's events exactly the database's, and fetch the sealed files it lacks.

        Nothing is ever written through a symlink: a cache with one where a file is to be written is
        set aside and rebuilt from the database and the bucket.
        """
        here = self.root / incident_id
        want = b"".join(lines)
        have = _read_plain(here, "events.jsonl")
        if have == want:
            return
        if have is None or not want.startswith(have):
            self._set_aside(incident_id)  # ahead of the database (never committed), or not ours at all
            have = b""
        known = _fold(have)["artifacts"] if have else {}
        fetch = {
            rel: info["sha256"]
            for rel, info in _fold(want)["artifacts"].items()
            if known.get(rel, {}).get("sha256") != info["sha256"]
        }
        if not all(_plain(here, rel) for rel in [*SUBDIRS, "events.jsonl", *fetch]):
            if not again:
                raise RecordError(f"{here}: keeps gaining symlinks; records are never written through one")
            self._set_aside(incident_id)
            return self._sync(incident_id, lines, again=False)
        for sub in SUBDIRS:
            (here / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(here / "events.jsonl", want)
        for rel, digest in fetch.items():
            target = _inside(here, rel)
            if _read_plain(here, rel) is not None and _sha256(target) == digest:
                continue
            self.blobs.get(digest, target)

    def _push(self, conn: Any, incident_id: str, base: list[bytes], here: Path) -> int:
        """Upload what the new events seal, then insert those events and move the head; returns how many.

        Runs in the caller's transaction, under the incident's hold and row lock.
        """
        try:
            raw = (here / "events.jsonl").read_bytes()
        except FileNotFoundError:
            return 0  # nothing was created (a refused create)
        events, problem, size = read_chain(raw)
        if problem:
            raise RecordError(f"{incident_id}: the working copy does not verify, nothing was pushed: {problem}")
        lines = raw[:size].splitlines(keepends=True)
        if lines[: len(base)] != base:
            raise RecordError(
                f"{incident_id}: the working copy no longer starts with the shared history; nothing pushed"
            )
        new = list(zip(events[len(base) :], lines[len(base) :], strict=True))
        if not new:
            return 0
        for ev, _line in new:
            if ev["type"] in SEALING_EVENTS and ev["data"].get("sha256") and ev["data"].get("path"):
                self.blobs.put(ev["data"]["sha256"], _inside(here, ev["data"]["path"]))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO irkit_events (incident, seq, type, hash, prev, line) VALUES (%s, %s, %s, %s, %s, %s)",
                [(incident_id, ev["seq"], ev["type"], ev["hash"], ev["prev"], line) for ev, line in new],
            )
        state = _fold(raw[:size])
        active = not state.get("replay") and (
            state["status"] not in (Status.RESOLVED, Status.REVIEWED) or bool(state["providers"]["pagerduty"])
        )
        conn.execute(
            "UPDATE irkit_incidents SET head_seq = %s, head_hash = %s, status = %s, active = %s WHERE id = %s",
            (events[-1]["seq"], events[-1]["hash"], state["status"], active, incident_id),
        )
        return len(new)

    def import_record(self, src: Path) -> tuple[str, int]:
        """Load a verified record directory into the store; returns ``(id, events)``. Never overwrites."""
        from irkit.record import Record

        rec = Record.open(src.parent, src.name)
        report = rec.verify()
        if not report.ok:
            raise RecordError(f"{rec.id} does not verify, not imported: {report.problems[0]}")
        events = rec.events()
        with self.transaction() as conn:
            got = conn.execute(
                "INSERT INTO irkit_incidents (id) VALUES (%s) ON CONFLICT (id) DO NOTHING RETURNING id", (rec.id,)
            ).fetchone()
            if got is None:
                raise IncidentExists(f"incident {rec.id} already exists in the shared store; nothing imported")
            self._push(conn, rec.id, [], rec.path)
        return rec.id, len(events)

    # ---- one scheduler across replicas

    def leader(self) -> bool:
        """Whether this process runs the plan's timers: it holds (or now takes) the scheduler's advisory lock.

        The lock belongs to a session: when the replica holding it dies, PostgreSQL releases it and
        the next replica to ask becomes the leader (failover within one tick).
        """
        import psycopg

        with self._leader_lock:
            if self._leader is not None:
                try:
                    self._leader.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    with contextlib.suppress(psycopg.Error):
                        self._leader.close()
                    self._leader = None
            try:
                conn = connect(self.dsn)
            except StorageError:
                return False
            conn.autocommit = True
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (SCHEDULER_LOCK,)).fetchone()[0]:
                self._leader = conn
                return True
            conn.close()
            return False

    def close(self) -> None:
        """Give up the scheduler lock (another replica takes over at its next tick) and close connections."""
        with self._leader_lock:
            if self._leader is not None:
                self._leader.close()
                self._leader = None
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --------------------------------------------------------------------------- holds and checkpoints


class _Hold:
    """One writer's hold on an incident: its connection and the database's lines its cache started from."""

    def __init__(self, store: SharedStore, conn: Any, incident_id: str, base: list[bytes]) -> None:
        self.store, self.conn, self.incident_id, self.base = store, conn, incident_id, base
        self.checkpoints = 0


_HOLDS: dict[tuple[str, str], _Hold] = {}  # (cache root, incident) -> the hold this process has on it


def checkpoint(record: Record) -> int:
    """Commit what has been appended to ``record`` so far, while its writer goes on holding it.

    A runner calls it right after ``notebook.started``: on a shared store the run is then on record
    even if its runner dies (another machine seals it as interrupted). A no-op on a directory.
    """
    hold = _HOLDS.get((str(record.root), record.id))
    return hold.store.checkpoint(hold) if hold is not None else 0


# --------------------------------------------------------------------------- helpers


def _fold(raw: bytes) -> dict[str, Any]:
    state = initial_state()
    for ev in read_chain(raw)[0]:
        apply_event(state, ev)
    return state


def _plain(root: Path, rel: str) -> bool:
    """Whether no component of ``root/rel`` (``root`` included) is a symlink; missing ones are fine."""
    cur = root
    for part in ("", *Path(rel).parts):
        cur = cur / part if part else cur
        try:
            if statmod.S_ISLNK(os.lstat(cur).st_mode):
                return False
        except FileNotFoundError:
            return True
    return True


def _read_plain(root: Path, rel: str) -> bytes | None:
    """The bytes of ``root/rel`` if it is a regular file reached without a symlink, else None."""
    if not _plain(root, rel):
        return None
    try:
        return (root / rel).read_bytes()
    except OSError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inside(root: Path, rel: str) -> Path:
    """``root/rel``, refusing any path that would leave ``root``."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\x00" in rel:
        raise RecordError(f"artifact path {rel!r} must be relative and inside the record")
    return root / p


def _fresh_target(dest: Path, incident_id: str) -> Path:
    out = Path(dest) / incident_id
    if os.path.lexists(out):
        raise BadInputError(f"{out} already exists; export into an empty place")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


HELD = "IRKIT_STORE_HELD"  # set in a kernel whose runner already holds the incident (runs never wait on themselves)


def record_guard(
    settings: Settings, environ: Mapping[str, str], records: Path, incident_id: str
) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    """For a process that writes a record outside any held lock (a JupyterLab kernel, plain papermill):
    on a shared store, hold the incident around each write, so each append or seal is its
    own short transaction that starts from the database's head. None on a directory, or when held.
    """
    if not settings.store.shared or environ.get(HELD) == "1":
        return None
    store = open_store(settings, environ, records)
    return lambda: store.writing(incident_id)


def open_store(settings: Settings, environ: Mapping[str, str], records: Path) -> FileStore | SharedStore:
    """The store the settings name (``store.url``), with ``records`` as the directory or the local cache."""
    cfg = settings.store
    if not cfg.shared:
        return FileStore(records)  # the CLI resolves file:///path into ``records`` (see irkit.cli.build)
    if not cfg.artifacts:
        raise ConfigError("store.artifacts: a postgresql:// store needs a bucket for sealed files (s3://bucket/prefix)")
    blobs = Blobs(
        cfg.artifacts,
        endpoint=environ.get(cfg.endpoint_env),
        access_key=environ.get(cfg.access_key_env),
        secret_key=environ.get(cfg.secret_key_env),
    )
    return SharedStore(cfg.url, blobs, records)
