"""The team store: event chains in a real PostgreSQL, sealed files in a real S3-compatible server.

Every test gets its own database and bucket. Two "replicas" are two SharedStore objects with their
own local caches, as two machines would have.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from irkit.config import Settings
from irkit.errors import IncidentExists, IrkitError, StorageError
from irkit.record import Record
from irkit.store import SharedStore, open_store
from support import wait_for

ID = "INC-20251120-1432"


@pytest.fixture
def shared(team_store, tmp_path: Path) -> Iterator[Callable[[str], SharedStore]]:
    """Calling it opens the test's store with a local cache named ``name`` (one per "machine")."""
    settings = Settings.model_validate({"store": team_store.store})
    opened: list[SharedStore] = []

    def open_(cache: str) -> SharedStore:
        store = open_store(settings, team_store.env, tmp_path / cache)
        assert isinstance(store, SharedStore)
        opened.append(store)
        return store

    open_.settings = settings  # type: ignore[attr-defined]
    open_.env = team_store.env  # type: ignore[attr-defined]
    yield open_
    for store in opened:
        store.close()


def _create(store: SharedStore, incident_id: str = ID) -> None:
    with store.writing(incident_id, new=True) as root:
        rec = Record.create(root, incident_id, title="checkout 5xx", service="checkout", actor="ana")
        rec.set_severity("P1", actor="ana", reason="error ratio 16 %")
        rec.seal_one("data/evidence.txt", b"the pool is exhausted\n", actor="ana", kind="snapshot")


def test_a_record_written_on_one_replica_reads_the_same_on_another_and_verifies_offline(shared, tmp_path: Path) -> None:
    a, b = shared("a"), shared("b")
    _create(a)
    with b.writing(ID) as root:  # the other machine: its cache is filled from the database and the bucket
        rec = Record.open(root, ID)
        assert rec.state()["severity"] == "P1"
        assert (rec.path / "data/evidence.txt").read_bytes() == b"the pool is exhausted\n"
        rec.note("rolled back by hand", actor="bo")
    with a.writing(ID) as root:  # and back: a sees b's note, appended after its own events
        events = Record.open(root, ID).events()
        assert [e["type"] for e in events][-1] == "note" and events[-1]["actor"] == "bo"
    out = a.export(ID, tmp_path / "review")
    report = Record.open(out.parent, ID).verify()
    assert report.ok, report.problems
    assert report.events == len(events) and report.artifacts == 1
    with psycopg.connect(a.dsn) as conn:
        head = conn.execute("SELECT head_seq, head_hash FROM irkit_incidents WHERE id = %s", (ID,)).fetchone()
    assert head == (report.events, report.head)


def test_creating_the_same_incident_twice_is_refused_and_leaves_one_record(shared) -> None:
    a, b = shared("a"), shared("b")
    _create(a)
    with pytest.raises(IncidentExists):
        _create(b)
    assert a.ids() == [ID]


def test_a_writer_that_died_before_committing_leaves_no_trace_and_its_cache_is_set_aside(shared) -> None:
    a = shared("a")
    _create(a)
    # What a kill -9 between a local append and the commit leaves: the cache ahead of the database.
    Record.open(a.root, ID).note("never committed", actor="ghost")
    with a.writing(ID) as root:
        events = Record.open(root, ID).events()
    assert "ghost" not in {e["actor"] for e in events}
    aside = list((a.root / ".irkit" / "uncommitted").iterdir())
    assert len(aside) == 1 and b"never committed" in (aside[0] / "events.jsonl").read_bytes()


def test_an_error_inside_the_block_still_commits_what_happened_before_it(shared) -> None:
    a = shared("a")
    _create(a)
    with pytest.raises(RuntimeError), a.writing(ID) as root:
        Record.open(root, ID).note("paged the DB on-call", actor="irkit")
        raise RuntimeError("the runbook failed after paging")
    with a.reading(ID, artifacts=False) as root:
        assert Record.open(root, ID).events()[-1]["data"] == {"text": "paged the DB on-call"}


def test_appends_from_two_replicas_at_once_are_serialized_by_the_row_lock(shared) -> None:
    a, b = shared("a"), shared("b")
    _create(a)
    errors: list[Exception] = []

    def writer(store: SharedStore, who: str) -> None:
        try:
            for i in range(15):
                with store.writing(ID) as root:
                    Record.open(root, ID).note(f"{who} {i}", actor=who)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, w)) for s, w in ((a, "ana"), (b, "bo"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with a.reading(ID) as root:
        rec = Record.open(root, ID)
        notes = [e for e in rec.events() if e["type"] == "note"]
        assert len(notes) == 30 and rec.verify().ok


def test_a_file_altered_in_the_bucket_is_never_taken_for_the_sealed_one(shared) -> None:
    a = shared("a")
    _create(a)
    blobs = a.blobs
    digest = hashlib.sha256(b"the pool is exhausted\n").hexdigest()
    assert blobs.key(digest) in [o["Key"] for o in blobs.client.list_objects_v2(Bucket=blobs.bucket)["Contents"]]
    blobs.client.put_object(Bucket=blobs.bucket, Key=blobs.key(digest), Body=b"nothing to see\n")
    with pytest.raises(StorageError, match="does not hash to its name"):
        shared("fresh").export(ID, a.root.parent / "review")


def test_import_loads_a_directory_record_and_refuses_a_second_import(shared, tmp_path: Path) -> None:
    Record.create(tmp_path / "laptop", ID, title="checkout 5xx", service="checkout", actor="ana").seal_one(
        "notebooks/triage.ipynb", b"{}", actor="ana", kind="notebook"
    )
    a = shared("a")
    assert a.import_record(tmp_path / "laptop" / ID) == (ID, 2)
    with pytest.raises(IncidentExists):
        a.import_record(tmp_path / "laptop" / ID)
    out = a.export(ID, tmp_path / "back")
    assert (out / "events.jsonl").read_bytes() == (tmp_path / "laptop" / ID / "events.jsonl").read_bytes()
    assert Record.open(out.parent, ID).verify().ok


def test_an_unreachable_database_is_one_line(shared, tmp_path: Path) -> None:
    from servers import free_port

    settings = shared.settings.model_copy(  # type: ignore[attr-defined]
        update={"store": shared.settings.store.model_copy(update={"url": f"postgresql://x@127.0.0.1:{free_port()}/x"})}  # type: ignore[attr-defined]
    )
    with pytest.raises(IrkitError, match=r"^cannot reach the shared store at 127\.0\.0\.1:\d+/x: ") as err:
        open_store(settings, shared.env, tmp_path / "c")  # type: ignore[attr-defined]
    assert "\n" not in str(err.value)


def test_one_replica_runs_the_timers_and_another_takes_over_when_it_goes(shared) -> None:
    a, b = shared("a"), shared("b")
    assert a.leader() is True
    assert b.leader() is False and a.leader() is True  # asked again: still a
    a.close()  # a replica that stops (or dies: its session ends) releases the advisory lock
    assert b.leader() is True and a.leader() is False


def test_a_symlink_planted_in_a_cache_is_never_written_through(shared, tmp_path: Path) -> None:
    a, b = shared("a"), shared("b")
    _create(a)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (b.root / ID).mkdir(parents=True)
    (b.root / ID / "data").symlink_to(elsewhere)  # where the sealed evidence would be fetched to
    with b.writing(ID) as root:
        rec = Record.open(root, ID)
        assert (rec.path / "data").is_dir() and not (rec.path / "data").is_symlink()
        assert (rec.path / "data/evidence.txt").read_bytes() == b"the pool is exhausted\n"
    assert list(elsewhere.iterdir()) == []
    (b.root / ID / "events.jsonl").unlink()
    (b.root / ID / "events.jsonl").symlink_to(tmp_path / "elsewhere" / "events")
    with b.writing(ID) as root:
        assert Record.open(root, ID).verify().ok
    assert list(elsewhere.iterdir()) == []


def test_two_tickers_on_one_store_one_leads_and_the_other_takes_over_when_it_stops(shared) -> None:
    from irkit.scheduler import Ticker

    a, b = shared("a"), shared("b")
    _create(a)
    settings = shared.settings  # type: ignore[attr-defined]
    ta = Ticker(a.root, settings, shared.env, interval_s=0.1, store=a)  # type: ignore[attr-defined]
    tb = Ticker(b.root, settings, shared.env, interval_s=0.1, store=b)  # type: ignore[attr-defined]
    ta.start()
    wait_for(lambda: ta.passes >= 2, 20, "the tickers")
    tb.start()
    wait_for(lambda: tb.passes >= 3, 20, "the tickers")
    assert (ta.leading, tb.leading) == (True, False) and ta.last_error is None
    ta.stop()  # its advisory lock goes with it
    wait_for(lambda: tb.leading, 20, "the tickers")
    tb.stop()
    assert tb.last_error is None




def test_intake_never_waits_long_on_an_incident_a_runbook_run_holds(shared) -> None:
    import json
    import time

    from irkit.alerts import parse_notification
    from irkit.intake import Intake, PgQueue, group_key
    from irkit.scenarios.launch import storm_notification

    a, b = shared("a"), shared("b")
    settings = shared.settings.model_copy(  # type: ignore[attr-defined]
        update={"serve": shared.settings.serve.model_copy(update={"runbooks": ()})}  # type: ignore[attr-defined]
    )
    queue = PgQueue(a.dsn)
    intake = Intake(settings, shared.env, a.root, queue, run=None, store=a)  # type: ignore[attr-defined]

    def accept(note: dict) -> None:
        body = json.dumps(note).encode()
        queue.accept(body, group_key(parse_notification(body), None))

    accept(storm_notification(1, 0))
    assert intake.process_pending() == 1
    incident = queue.group(group_key(parse_notification(json.dumps(storm_notification(1)).encode()), None))[0]
    held, release = threading.Event(), threading.Event()

    def runbook_run() -> None:  # another replica holds the incident for a whole run
        with b.writing(incident):
            held.set()
            release.wait(30)

    t = threading.Thread(target=runbook_run)
    t.start()
    try:
        assert held.wait(10)
        resolved = storm_notification(1, 1)
        resolved["status"] = "resolved"
        accept(resolved)  # for the held incident
        accept(storm_notification(2, 0))  # another group: must not wait behind it
        t0 = time.monotonic()
        intake.process_pending()
        waited = time.monotonic() - t0
        assert len(a.ids()) == 2  # the other group's incident opened meanwhile
        assert queue.counts()["notifications_pending"] == 1  # the held incident's: retried later, in order
        (error,) = queue._conn().execute("SELECT error FROM irkit_notifications WHERE NOT processed").fetchone()
        assert "is busy" in error
        assert waited < 15  # the busy timeout (5 s), not the run's length
    finally:
        release.set()
        t.join()


def test_a_store_laid_out_by_a_newer_irkit_is_refused_in_one_line(shared, tmp_path: Path) -> None:
    from irkit.errors import ConfigError
    from irkit.store import SCHEMA_VERSION

    a = shared("a")
    with psycopg.connect(a.dsn) as conn:
        assert conn.execute("SELECT version FROM irkit_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE irkit_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match=rf"schema {SCHEMA_VERSION + 1}, this irkit knows {SCHEMA_VERSION}: upgrade"):
        shared("b")


def test_a_checkpoint_commits_while_the_writer_goes_on_holding_the_incident(shared) -> None:
    from irkit.store import checkpoint

    a, b = shared("a"), shared("b")
    _create(a)
    with a.writing(ID) as root:
        rec = Record.open(root, ID)
        rec.note("run started", actor="runner")
        assert checkpoint(rec) == 1
        with b.reading(ID, artifacts=False) as seen:  # committed: another machine reads it now
            assert Record.open(seen, ID).events()[-1]["data"] == {"text": "run started"}
        with b.try_writing(ID) as busy:  # and still held: nobody else writes in between
            assert busy is None
        rec.note("run finished", actor="runner")
    with b.writing(ID) as root:
        notes = [e["data"]["text"] for e in Record.open(root, ID).events() if e["type"] == "note"]
        assert notes == ["run started", "run finished"] and Record.open(root, ID).verify().ok
