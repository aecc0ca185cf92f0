"""The incident record: chain, lock, torn tails, state machine, tamper detection through the CLI."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import irkit.record
from irkit.errors import BadInputError, IncidentExists, InvalidIncidentId, RecordError, TransitionError
from irkit.events import Status
from irkit.files import canonical_json
from irkit.record import GENESIS, Record, event_hash, validate_incident_id

ID = "INC-TEST-1"


def new(records: Path, incident_id: str = ID) -> Record:
    return Record.create(records, incident_id, title="t", service="svc", severity="P2", actor="tester")


def lines(rec: Record) -> list[bytes]:
    return rec.events_path.read_bytes().splitlines(keepends=True)


def test_create_writes_layout_and_chained_genesis(records: Path) -> None:
    rec = new(records)
    for sub in ("notebooks", "data", "figures", "comms"):
        assert (rec.path / sub).is_dir()
    ev = rec.events()[0]
    assert ev["type"] == "incident.opened" and ev["seq"] == 1 and ev["prev"] == GENESIS
    assert ev["hash"] == event_hash(GENESIS, ev)
    assert ev["ts"].endswith("Z")
    state = json.loads(rec.state_path.read_text())
    assert state["status"] == "detected" and state["severity"] == "P2"
    with pytest.raises(IncidentExists):
        new(records)


def test_each_event_chains_to_the_previous(records: Path) -> None:
    rec = new(records)
    for i in range(5):
        rec.note(f"n{i}", actor="a")
    evs = rec.events()
    assert [e["seq"] for e in evs] == [1, 2, 3, 4, 5, 6]
    for a, b in itertools.pairwise(evs):
        assert b["prev"] == a["hash"]
    assert rec.verify().ok


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "", "A-" + "x" * 199, "inc-lowercase", "INC-../../etc", "INC-a b", None]
)
def test_bad_ids_are_refused(records: Path, bad: object) -> None:
    with pytest.raises(InvalidIncidentId):
        validate_incident_id(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "A-" + "x" * 199, "garbage"])
def test_cli_refuses_bad_ids_with_exit_2(cli, records: Path, bad: str) -> None:
    for verb in (["show", bad], ["verify", bad], ["run", bad, "triage"]):
        res = cli(*verb, "--records", str(records))
        assert res.exit_code == 2, (verb, res.stderr)
        assert "invalid incident id" in res.stderr
        assert res.stderr.count("\n") == 1
    assert list(records.iterdir()) == []


def test_state_machine_allows_the_plan_path_and_refuses_skips(records: Path) -> None:
    rec = new(records)
    with pytest.raises(TransitionError, match="from detected to resolved; allowed next: acknowledged"):
        rec.set_status(Status.RESOLVED, actor="a")
    for s in ("acknowledged", "investigating", "mitigating", "monitoring", "resolved", "reviewed"):
        ev = rec.set_status(s, actor="a")
        assert ev["data"]["to"] == s
    assert rec.state()["status"] == "reviewed"
    with pytest.raises(TransitionError, match="final state"):
        rec.set_status("investigating", actor="a")
    # refused transitions wrote nothing
    assert [e["type"] for e in rec.events()].count("status.changed") == 6


def test_state_is_derivable_from_events_alone(records: Path) -> None:
    rec = new(records)
    rec.set_status("acknowledged", actor="a")
    rec.set_severity("P1", actor="a", reason="error ratio 15%")
    cached = rec.state()
    rec.state_path.unlink()
    assert rec.state() == cached
    rec.state_path.write_text("{not json")
    assert rec.rebuild_state() == cached


def test_artifacts_are_sealed_and_paths_cannot_escape(records: Path) -> None:
    rec = new(records)
    (rec.path / "data" / "x.csv").write_text("a,b\n1,2\n")
    ev = rec.add_artifact("data/x.csv", actor="a", kind="csv")
    assert len(ev["data"]["sha256"]) == 64
    for bad in ("../outside", "/etc/passwd", "data/../../x"):
        with pytest.raises(RecordError):
            rec.resolve_artifact(bad)
    assert rec.verify().ok


def test_append_refuses_unserializable_data_without_writing(records: Path) -> None:
    rec = new(records)
    before = rec.events_path.read_bytes()
    with pytest.raises(BadInputError, match="cannot be recorded"):
        rec.append("note", {"text": object()}, actor="a")
    with pytest.raises(BadInputError, match="cannot be recorded"):
        rec.append("note", {"text": "n", "x": float("nan")}, actor="a")
    assert rec.events_path.read_bytes() == before


# --------------------------------------------------------------------------- tampering, via the CLI


@pytest.fixture
def sealed(records: Path) -> Record:
    rec = new(records)
    rec.set_status("acknowledged", actor="a")
    nb = rec.path / "notebooks" / "01-triage.ipynb"
    nb.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    rec.add_artifact("notebooks/01-triage.ipynb", actor="a", kind="notebook")
    rec.note("third", actor="a")
    rec.note("fourth", actor="a")
    return rec


def verify_cli(cli, records: Path):
    return cli("verify", ID, "--records", str(records))


def test_untouched_record_verifies(cli, records: Path, sealed: Record) -> None:
    res = verify_cli(cli, records)
    assert res.exit_code == 0 and res.stdout.startswith(f"OK {ID}: 5 events, 1 artifacts")


def test_one_byte_changed_in_an_event_is_named(cli, records: Path, sealed: Record) -> None:
    raw = bytearray(sealed.events_path.read_bytes())
    i = raw.index(b'"third"') + 2
    raw[i] = ord("T")
    sealed.events_path.write_bytes(bytes(raw))
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "event 4 (note)" in res.stdout and "hash mismatch" in res.stdout
    assert "did not verify" in res.stderr


def test_one_byte_changed_in_a_sealed_notebook_is_named(cli, records: Path, sealed: Record) -> None:
    nb = sealed.path / "notebooks" / "01-triage.ipynb"
    nb.write_bytes(nb.read_bytes().replace(b'"cells"', b'"Cells"'))
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "notebooks/01-triage.ipynb" in res.stdout and "changed" in res.stdout


def test_deleted_line_is_named(cli, records: Path, sealed: Record) -> None:
    ls = lines(sealed)
    sealed.events_path.write_bytes(b"".join(ls[:2] + ls[3:]))
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "event 4" in res.stdout and "expected seq 3" in res.stdout


def test_deleted_last_line_is_caught_by_the_head(cli, records: Path, sealed: Record) -> None:
    ls = lines(sealed)
    sealed.events_path.write_bytes(b"".join(ls[:-1]))
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "removed from the end" in res.stdout


def test_reordered_lines_are_named(cli, records: Path, sealed: Record) -> None:
    ls = lines(sealed)
    ls[3], ls[4] = ls[4], ls[3]
    sealed.events_path.write_bytes(b"".join(ls))
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "event 5 (note) at events.jsonl line 4" in res.stdout


def test_a_fully_rewritten_chain_is_caught_by_the_anchored_head(cli, records: Path, sealed: Record) -> None:
    # Someone able to rewrite the whole log can recompute every hash; the head hash kept elsewhere
    # (printed by verify) pins the history.
    anchored = verify_cli(cli, records).stdout.split("head ")[1].strip()
    evs = sealed.events()
    evs[2]["data"]["text"] = "rewritten"
    prev = GENESIS
    out = b""
    for ev in evs:
        ev["prev"] = prev
        ev["hash"] = event_hash(prev, ev)
        prev = ev["hash"]
        out += canonical_json(ev) + b"\n"
    sealed.events_path.write_bytes(out)
    sealed.state_path.unlink()
    assert verify_cli(cli, records).exit_code == 0  # the chain alone cannot tell …
    res = cli("verify", ID, "--records", str(records), "--expect-head", anchored)
    assert res.exit_code == 1 and "expected head" in res.stdout  # … the anchor can


def test_reformatted_line_is_caught(cli, records: Path, sealed: Record) -> None:
    ls = lines(sealed)
    ls[2] = ls[2].replace(b'"seq":3', b'"seq": 3')
    sealed.events_path.write_bytes(b"".join(ls))
    res = verify_cli(cli, records)
    assert res.exit_code == 1 and "not in canonical form" in res.stdout


def test_a_forged_cache_cannot_smuggle_an_illegal_transition(cli, records: Path, sealed: Record) -> None:
    forged = json.loads(sealed.state_path.read_text())
    forged["status"] = "resolved"
    sealed.state_path.write_text(json.dumps(forged))
    assert sealed.state()["status"] == "acknowledged"  # reads fold the events, never the cache
    before = sealed.events_path.read_bytes()
    for fresh_process in (False, True):
        if fresh_process:
            irkit.record._TAILS.clear()  # what a new `irkit status` process starts with
        with pytest.raises(TransitionError, match="from acknowledged to reviewed"):
            sealed.set_status("reviewed", actor="mallory")
    assert sealed.events_path.read_bytes() == before
    assert verify_cli(cli, records).exit_code == 0


def test_events_removed_from_the_end_block_the_next_append(cli, records: Path, sealed: Record) -> None:
    ls = lines(sealed)
    sealed.events_path.write_bytes(b"".join(ls[:-1]))
    with pytest.raises(RecordError, match="removed from the end"):
        sealed.note("covering it up", actor="mallory")
    assert len(lines(sealed)) == len(ls) - 1


def test_events_are_redacted_before_they_are_written(records: Path) -> None:
    from irkit.redact import Redactor

    rec = Record.open(records, new(records).id, redactor=Redactor(['pa"ss\\word-42'], []))
    rec.note('the password is pa"ss\\word-42', actor="a")
    assert b"word-42" not in rec.events_path.read_bytes()
    assert rec.events()[-1]["data"]["text"] == "the password is [REDACTED]"


# --------------------------------------------------------------------------- concurrency and crashes


def _writer(root: str, n: int, tag: int) -> None:
    rec = Record.open(root, ID)
    for i in range(n):
        rec.append("note", {"text": f"{tag}:{i}"}, actor=f"w{tag}")


def test_eight_processes_append_concurrently(records: Path) -> None:
    new(records)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(records), 200, t)) for t in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rec = Record.open(records, ID)
    report = rec.verify()
    assert report.ok, report.problems
    assert report.events == 1 + 8 * 200
    per_writer = {t: [int(e["data"]["text"].split(":")[1]) for e in rec.events() if e["actor"] == f"w{t}"] for t in range(8)}
    assert all(v == list(range(200)) for v in per_writer.values())
    assert rec.state()["head"]["seq"] == 1601


APPENDER = """
import sys, time
import irkit.record as r
rec = r.Record.open(sys.argv[1], sys.argv[2])
if sys.argv[3] == "hang-before-cache":
    # Freeze right after the event reached the log, before incident.json is updated.
    def hang(*a, **k):
        print("written", flush=True)
        time.sleep(60)
    r.atomic_write_bytes = hang
    rec.append("note", {"text": "last"}, actor="loop")
print("ready", flush=True)
i = 0
while True:
    rec.append("note", {"text": f"{i} " + "x" * 4000}, actor="loop")
    i += 1
"""


def _kill_appender(records: Path, mode: str, delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(records), ID, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() in ("ready", "written")
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_writer_killed_between_log_and_cache_leaves_a_verifiable_record(records: Path) -> None:
    new(records)
    _kill_appender(records, "hang-before-cache", 0.1)
    rec = Record.open(records, ID)
    assert rec.events()[-1]["data"] == {"text": "last"}  # the event is in the log …
    assert json.loads(rec.state_path.read_text())["head"]["seq"] == 1  # … the cache never saw it
    assert rec.verify().ok
    ev = rec.note("next", actor="a")  # the stale cache is detected and the chain continues
    assert ev["seq"] == 3 and rec.verify().ok


@pytest.mark.parametrize("delay", [0.02, 0.07, 0.15])
def test_writer_killed_at_random_points_leaves_a_verifiable_record(records: Path, delay: float) -> None:
    new(records)
    _kill_appender(records, "loop", delay)
    rec = Record.open(records, ID)
    assert rec.verify().ok, rec.verify().problems
    rec.note("after the kill", actor="a")
    report = rec.verify()
    assert report.ok and report.events >= 2


def test_torn_tail_is_reported_then_quarantined_by_the_next_append(cli, records: Path) -> None:
    rec = new(records)
    rec.note("complete", actor="a")
    with rec.events_path.open("ab") as fh:
        fh.write(b'{"seq":3,"ts":"2025-11-20T14:40:00Z","type":"no')  # a write cut short
    res = verify_cli(cli, records)
    assert res.exit_code == 1
    assert "torn tail after event 2" in res.stdout
    assert rec.events()[-1]["data"] == {"text": "complete"}  # never taken for an event
    ev = rec.note("next", actor="a")
    assert ev["seq"] == 4
    types = [e["type"] for e in rec.events()]
    assert types[-2:] == ["record.repaired", "note"]
    repaired = rec.events()[-2]["data"]
    assert (rec.path / repaired["quarantined_to"]).read_bytes().startswith(b'{"seq":3')
    assert sorted(p.name for p in rec.path.glob("events.torn.*")) == ["events.torn.1"]
    assert verify_cli(cli, records).exit_code == 0


def test_append_refuses_a_broken_chain(records: Path) -> None:
    rec = new(records)
    rec.note("x", actor="a")
    raw = rec.events_path.read_bytes().replace(b'"x"', b'"y"')
    rec.events_path.write_bytes(raw)  # the cache is left as it was: its head no longer matches the log
    with pytest.raises(RecordError, match="does not verify"):
        rec.note("more", actor="a")


def test_a_replay_clock_cannot_backdate_a_live_record(records: Path) -> None:
    from datetime import UTC, datetime

    from irkit.times import ReplayClock

    live = new(records)
    backdated = Record.open(records, live.id, clock=ReplayClock(datetime(2025, 1, 1, tzinfo=UTC)))
    with pytest.raises(RecordError, match="not a replay"):
        backdated.note("pretend this happened last year", actor="mallory")
    replay = Record.create(
        records,
        "INC-REPLAY-2",
        title="t",
        service="s",
        actor="demo",
        clock=ReplayClock(datetime(2025, 11, 20, 14, 32, tzinfo=UTC)),
        data={"replay": True},
    )
    ev = replay.note("replayed", actor="demo")
    assert ev["ts"].startswith("2025-11-20T14:32")


def test_a_relative_records_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from irkit.cluster import RecordedCluster, capture, snapshot
    from irkit.demo import SCENARIO_DIR

    monkeypatch.chdir(tmp_path)
    rec = Record.create("reports", "INC-REL-1", title="t", service="s", actor="a")
    assert rec.path.is_absolute()
    assert snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor="a")
    assert rec.verify().ok


def test_a_set_whose_events_cannot_be_recorded_leaves_no_file(records: Path) -> None:
    rec = new(records)
    before = len(rec.events())
    with pytest.raises(BadInputError, match="cannot be recorded"):
        rec.seal(lambda n: {"data/x/a.csv": b"a", "data/x/b.csv": b"b"}, actor="a", kind="signal", extra=object())
    assert len(rec.events()) == before
    assert not (rec.path / "data" / "x").exists()  # refused before any file was placed
    report = rec.verify()
    assert report.ok and not report.unaccounted, report.summary()
