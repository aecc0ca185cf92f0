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

from irkit.errors import IncidentExists, InvalidIncidentId, RecordError, TransitionError
from irkit.record import GENESIS, Record, Status, event_hash, validate_incident_id

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
    with pytest.raises((TypeError, ValueError)):
        rec.append("note", {"x": object()}, actor="a")
    with pytest.raises(ValueError):
        rec.append("note", {"x": float("nan")}, actor="a")
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


def test_rewritten_chain_with_recomputed_hashes_still_breaks_at_the_artifact(
    cli, records: Path, sealed: Record
) -> None:
    # An attacker who edits a sealed notebook cannot fix the chain without rewriting every later hash;
    # here they only rewrote the notebook, so the artifact check names it.
    nb = sealed.path / "notebooks" / "01-triage.ipynb"
    nb.write_text(nb.read_text() + " ")
    assert "sha256 differs" in verify_cli(cli, records).stdout


# --------------------------------------------------------------------------- concurrency and crashes


def _writer(root: str, n: int, tag: int) -> None:
    rec = Record.open(root, ID)
    for i in range(n):
        rec.append("note", {"writer": tag, "i": i}, actor=f"w{tag}")


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
    per_writer = {t: [e["data"]["i"] for e in rec.events() if e["data"].get("writer") == t] for t in range(8)}
    assert all(v == list(range(200)) for v in per_writer.values())
    assert rec.state()["head"]["seq"] == 1601


APPENDER = """
import sys
from irkit.record import Record
rec = Record.open(sys.argv[1], sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    rec.append("note", {"i": i, "pad": "x" * 4000}, actor="loop")
    i += 1
"""


def test_writer_killed_mid_append_leaves_a_verifiable_record(records: Path) -> None:
    new(records)
    for delay in (0.05, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(records), ID], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rec = Record.open(records, ID)
        report = rec.verify()
        # Either the record verifies, or the only problem is a reported torn tail — never silence.
        assert report.ok or (len(report.problems) == 1 and "torn tail" in report.problems[0]), report.problems
    rec.note("after the kills", actor="a")
    assert rec.verify().ok
    assert rec.verify().events > 4


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
    assert verify_cli(cli, records).exit_code == 0


def test_append_refuses_a_broken_chain(records: Path) -> None:
    rec = new(records)
    rec.note("x", actor="a")
    raw = rec.events_path.read_bytes().replace(b'"x"', b'"y"')
    rec.events_path.write_bytes(raw)
    rec.state_path.unlink()
    with pytest.raises(RecordError, match="does not verify"):
        rec.note("more", actor="a")
