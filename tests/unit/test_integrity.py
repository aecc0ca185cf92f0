"""The record under attack: write-once evidence, appends that check the chain, signatures, one corrupt record."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

import irkit.errors
import irkit.record
import irkit.times
from irkit.config import load_config
from irkit.errors import BadInputError, RecordBroken, RecordError
from irkit.files import canonical_json
from irkit.record import Record, event_hash

ID = "INC-SEAL-1"


def new(records: Path, incident_id: str = ID, **kw: object) -> Record:
    return Record.create(records, incident_id, title="t", service="svc", actor="tester", **kw)  # type: ignore[arg-type]


def forge_append(rec: Record, type_: str = "note", data: dict | None = None) -> None:
    """What anyone who can write the file can do: append an event with the public hash function."""
    last = rec.events()[-1]
    body = {"seq": last["seq"] + 1, "ts": last["ts"], "type": type_, "actor": "mallory", "data": data or {"x": 1}}
    body["prev"] = last["hash"]
    body["hash"] = event_hash(last["hash"], body)
    with rec.events_path.open("ab") as fh:
        fh.write(canonical_json(body) + b"\n")


# --------------------------------------------------------------------------- write-once artifacts


def test_a_sealed_figure_is_never_overwritten_by_a_rerun(records: Path) -> None:
    rec = new(records)
    first = rec.seal_one("figures/error_ratio.png", b"run one", actor="a", kind="figure")
    again = rec.seal_one("figures/error_ratio.png", b"run one", actor="a", kind="figure")
    second = rec.seal_one("figures/error_ratio.png", b"run two", actor="a", kind="figure")
    assert first == again == "figures/error_ratio.png"  # identical bytes: no second copy
    assert second == "figures/error_ratio.r2.png"
    assert (rec.path / first).read_bytes() == b"run one"
    assert (rec.path / second).read_bytes() == b"run two"
    assert rec.latest_file("figures/error_ratio.png") == second
    assert rec.verify().ok


def test_sealing_a_path_twice_is_refused_and_verify_names_it(records: Path) -> None:
    rec = new(records)
    rec.seal_one("figures/x.png", b"a", actor="a", kind="figure")
    with pytest.raises(RecordError, match="write-once"):
        rec.append("artifact.added", {"path": "figures/x.png", "sha256": "0" * 64}, actor="a")
    (rec.path / "figures/x.png").chmod(0o644)
    forge_append(rec, "artifact.added", {"path": "figures/x.png", "sha256": "1" * 64, "kind": "figure"})
    report = rec.verify()
    assert not report.ok and "sealed again at event" in report.problems[0]


def test_a_file_planted_at_the_next_name_is_never_overwritten(records: Path) -> None:
    rec = new(records)
    (rec.path / "figures" / "x.png").write_bytes(b"planted")
    rel = rec.seal_one("figures/x.png", b"real", actor="a", kind="figure")
    assert rel == "figures/x.r2.png" and (rec.path / "figures/x.png").read_bytes() == b"planted"


def _render(root: str, n: int) -> str:
    from irkit import comms

    settings = load_config(None, {})
    rec = Record.open(root, ID)
    # Eight different messages (an identical re-render reuses the last file instead of sealing a copy).
    return comms.render(
        rec, settings, "slack_resolved", now=irkit.times.utcnow(), actor=f"w{n}", root_cause=f"cause {n}"
    ).path


def test_eight_concurrent_message_renders_seal_eight_distinct_files(records: Path) -> None:
    new(records)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        paths = pool.starmap(_render, [(str(records), n) for n in range(8)])
    assert len(set(paths)) == 8, paths
    rec = Record.open(records, ID)
    sealed = [p for p in rec.state()["artifacts"] if p.startswith("comms/")]
    assert sorted(sealed) == sorted(paths)
    assert rec.verify().ok


def test_snapshots_are_new_versions_and_readers_take_the_newest(records: Path) -> None:
    rec = new(records)
    one = rec.seal(lambda n: {f"{irkit.record.versioned_dir('data/cluster', n)}/pods.json": b"1"}, actor="a", kind="c")
    two = rec.seal(lambda n: {f"{irkit.record.versioned_dir('data/cluster', n)}/pods.json": b"2"}, actor="a", kind="c")
    assert one == ["data/cluster/pods.json"] and two == ["data/cluster.r2/pods.json"]
    assert rec.latest_dir("data/cluster") == rec.path / "data/cluster.r2"
    assert (rec.path / "data/cluster/pods.json").read_bytes() == b"1"


def test_sealed_working_copy_cannot_be_sealed_again(records: Path, settings) -> None:
    from irkit.runner import prepare_runbook, seal_notebook

    rec = new(records)
    rel = prepare_runbook(rec, "triage", settings=settings, environ={}, actor="a")
    seal_notebook(rec, rel, settings=settings, environ={}, actor="a")
    before = (rec.path / rel).read_bytes()
    with pytest.raises(RecordError, match="not an unsealed working copy"):
        seal_notebook(rec, rel, settings=settings, environ={}, actor="a")
    with pytest.raises(RecordError, match="sealed at event"):
        rec.seal_working_copy(rel, b"{}", actor="a")
    assert (rec.path / rel).read_bytes() == before and rec.verify().ok


# --------------------------------------------------------------------------- appends check the file


def test_a_same_size_edit_mid_chain_stops_the_next_append(records: Path) -> None:
    rec = new(records)
    for i in range(5):
        rec.note(f"note {i}", actor="a")
    raw = rec.events_path.read_bytes()
    edited = raw.replace(b'"note 2"', b'"NOTE 2"')
    assert len(edited) == len(raw) and edited != raw
    rec.events_path.write_bytes(edited)
    for fresh_process in (False, True):
        if fresh_process:
            irkit.record._TAILS.clear()
        with pytest.raises(RecordBroken, match="does not verify"):
            rec.seal_one("figures/x.png", b"new evidence", actor="a", kind="figure")
        with pytest.raises(RecordBroken, match=r"event 4 \(note\)"):
            rec.note("carry on", actor="a")
    assert rec.events_path.read_bytes() == edited
    assert not (rec.path / "figures/x.png").exists()


def test_appends_by_another_process_are_checked_from_the_last_line_on(records: Path) -> None:
    rec = new(records)
    rec.note("mine", actor="a")
    other = Record(records, ID)  # same process, but the signature changes as another writer's would
    irkit.record._TAILS.clear()
    other.note("theirs", actor="b")
    rec.note("mine again", actor="a")
    assert [e["data"].get("text") for e in rec.events()][1:] == ["mine", "theirs", "mine again"]
    assert rec.verify().ok


def test_reads_are_checked_again_when_the_log_changes_and_only_appended_lines_when_it_grew(
    records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = new(records)
    for i in range(4):
        rec.note(f"note {i}", actor="a")
    checked: list[int] = []
    scan = irkit.record._scan_events

    def counting(raw: bytes, **kw: object) -> object:
        checked.append(raw.count(b"\n"))
        return scan(raw, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(irkit.record, "_scan_events", counting)
    assert len(rec.events()) == 5 and checked == [5]  # read and checked once
    assert rec.state()["head"]["seq"] == 5 and rec.broken() is None and checked == [5]  # unchanged: not again
    mutated = rec.events()
    mutated[0]["data"]["title"] = "changed by a caller"
    assert rec.events()[0]["data"]["title"] == "t"  # callers get their own copies
    Record(records, ID).note("from another writer", actor="b")
    assert [e["data"].get("text") for e in rec.events()][-1] == "from another writer"
    assert checked == [5, 1]  # only the appended line was checked
    # An edit in place (same size) is read and checked in full, and the break is named.
    raw = rec.events_path.read_bytes()
    rec.events_path.write_bytes(raw.replace(b'"note 2"', b'"NOTE 2"'))
    os.utime(rec.events_path, ns=(1, 1))  # a different signature, whatever the clock's granularity
    assert "event 4 (note)" in (rec.broken() or "") and len(rec.events()) == 3
    # A rewritten last line followed by an append is not taken for growth: checked in full again.
    rec.events_path.write_bytes(raw)
    assert rec.broken() is None
    checked.clear()
    last = raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    forged = raw[: -len(last) - 1] + last.replace(b"from another writer", b"FROM ANOTHER WRITER") + b"\n"
    rec.events_path.write_bytes(forged + b'{"not": "an event"}\n')
    assert "event 6 (note)" in (rec.broken() or "") and checked == [7]
    assert not rec.verify().ok


def test_an_edit_in_place_then_an_append_is_not_taken_for_growth_by_a_reader_or_a_writer(records: Path) -> None:
    rec = new(records)
    for i in range(4):
        rec.note(f"note {i}", actor="a")  # this process wrote every line …
    reader = Record(records, ID)
    assert reader.state()["head"]["seq"] == 5 and reader.broken() is None  # … and has read and checked them
    raw = rec.events_path.read_bytes()
    tampered = raw.replace(b'"note 0"', b'"NOTE 0"')
    assert len(tampered) == len(raw) and tampered != raw
    # then someone edits event 2 in place and appends a line properly chained from event 5: the log grew
    line = rec._event_lines(rec.state(), [("note", {"text": "appended after the edit"})], "mallory")[0][1]
    rec.events_path.write_bytes(tampered + line)
    assert "event 2 (note)" in (reader.broken() or "")
    assert reader.state()["head"]["seq"] == 1 and [e["seq"] for e in reader.events()] == [1]
    with pytest.raises(RecordBroken, match=r"event 2 \(note\)"):
        rec.note("carry on", actor="a")
    assert rec.events_path.read_bytes() == tampered + line


def test_state_is_folded_once_per_version_of_the_log_and_is_always_the_fold_of_every_event(
    records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = new(records)
    for i in range(4):
        rec.note(f"note {i}", actor="a")
    folded: list[int] = []
    apply = irkit.record.apply_event

    def counting(state: dict[str, object], ev: dict[str, object]) -> object:
        folded.append(ev["seq"])  # type: ignore[arg-type]
        return apply(state, ev)  # type: ignore[arg-type]

    def every_event() -> dict[str, object]:  # what a fresh process folds: every event of the log as it is now
        return rec._fold(irkit.record._scan_events(rec.events_path.read_bytes()))

    monkeypatch.setattr(irkit.record, "apply_event", counting)
    first = rec.state()
    assert first == every_event() and first["head"]["seq"] == 5
    folded.clear()
    again = rec.state()
    assert again == first and folded == []  # unchanged log: not folded again
    again["status"] = "resolved"
    again["artifacts"]["x"] = {"sha256": "forged", "seq": 1}
    assert rec.state() == first  # callers get their own copies
    Record(records, ID).note("from another writer", actor="b")  # the log grows under this reader
    folded.clear()
    grown = rec.state()
    assert folded == [6] and grown == every_event()  # only the new event folded in
    assert grown["head"]["size"] == rec.events_path.stat().st_size
    # An edit in place (same size): the state is the fold of the events before the break, as a fresh read's.
    raw = rec.events_path.read_bytes()
    rec.events_path.write_bytes(raw.replace(b'"note 2"', b'"NOTE 2"'))
    os.utime(rec.events_path, ns=(1, 1))
    broken = rec.state()
    assert broken == every_event() and broken["head"]["seq"] == 3
    # Put back, then rewritten with other events of the same count: folded anew, never from the old fold.
    rec.events_path.write_bytes(raw)
    assert rec.state() == every_event() and rec.state()["head"]["seq"] == 6
    other = new(records, "INC-OTHER-1")
    for i in range(5):
        other.note(f"x {i}", actor="z")
    assert len(other.events()) == len(rec.events())
    rec.events_path.write_bytes(other.events_path.read_bytes())
    assert rec.state() == every_event() and rec.state()["id"] == "INC-OTHER-1"


def test_cli_append_to_a_broken_record_exits_1_with_one_line(cli, records: Path) -> None:
    rec = new(records)
    rec.note("hello", actor="a")
    raw = rec.events_path.read_bytes()
    rec.events_path.write_bytes(raw.replace(b'"hello"', b'"HELLO"'))
    irkit.record._TAILS.clear()
    res = cli("status", ID, "acknowledged", "--records", str(records))
    assert res.exit_code == 1
    assert res.stderr.startswith("irkit: record INC-SEAL-1 does not verify:") and res.stderr.count("\n") == 1


def test_list_show_and_index_survive_a_corrupt_record(cli, records: Path) -> None:
    good = new(records, "INC-GOOD-1")
    bad = new(records, "INC-BAD-1")
    good.note("fine", actor="a")
    bad.events_path.write_bytes(b"not json\n")
    res = cli("list", "--records", str(records))
    assert res.exit_code == 0
    assert "INC-BAD-1" in res.stdout and "DOES NOT VERIFY" in res.stdout and "INC-GOOD-1" in res.stdout
    rows = {r["id"]: r for r in json.loads(cli("list", "--json", "--records", str(records)).stdout)}
    assert rows["INC-BAD-1"]["verifies"] is False and rows["INC-GOOD-1"]["verifies"] is True
    res = cli("show", "INC-BAD-1", "--records", str(records))
    assert "does not verify" in res.stderr
    res = cli("index", "--records", str(records))
    assert res.exit_code == 0
    html = (records / "index.html").read_text()
    assert "INC-GOOD-1" in html and "INC-BAD-1" in html and "does not verify" in html


# --------------------------------------------------------------------------- signatures and pinned heads


def test_forged_append_passes_the_hash_chain_but_not_the_public_key(cli, records: Path, tmp_path: Path) -> None:
    key = tmp_path / "irkit.key"
    out = cli("keygen", "--out", str(key))
    assert out.exit_code == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    public = out.stdout.split("public key:")[1].split()[0]
    env = {"IRKIT_SIGNING__KEY_FILE": str(key)}
    assert cli("open", "--title", "signed", "--records", str(records), env=env).exit_code == 0
    iid = next(p.name for p in records.iterdir() if p.name.startswith("INC-"))
    assert cli("status", iid, "acknowledged", "--records", str(records), env=env).exit_code == 0
    ok = cli("verify", iid, "--records", str(records), "--public-key", public)
    assert ok.exit_code == 0 and "every event signed by key" in ok.stdout
    rec = Record.open(records, iid)
    assert all("sig" in e for e in rec.events())
    forge_append(rec)
    assert cli("verify", iid, "--records", str(records)).exit_code == 0  # the chain alone cannot tell …
    res = cli("verify", iid, "--records", str(records), "--public-key", public)
    assert res.exit_code == 1 and "event 3 (note): unsigned" in res.stdout  # … the key can
    # A signature copied from another event does not fit.
    lines = rec.events_path.read_bytes().splitlines()
    forged = json.loads(lines[-1])
    forged["sig"] = json.loads(lines[0])["sig"]
    rec.events_path.write_bytes(b"\n".join([*lines[:-1], canonical_json(forged)]) + b"\n")
    res = cli("verify", iid, "--records", str(records), "--public-key", public)
    assert res.exit_code == 1 and "event 3 (note): bad signature" in res.stdout
    other = base64.b64encode(os.urandom(32)).decode()
    res = cli("verify", iid, "--records", str(records), "--public-key", other)
    assert res.exit_code in (1, 2)


def test_bad_keys_and_empty_heads_are_refused_with_exit_2(cli, records: Path, tmp_path: Path) -> None:
    new(records)
    assert cli("verify", ID, "--records", str(records), "--public-key", "not-a-key").exit_code == 2
    res = cli("verify", ID, "--records", str(records), "--expect-head", "")
    assert res.exit_code == 2 and "empty" in res.stderr
    (tmp_path / "k").write_text("garbage")
    res = cli(
        "status", ID, "acknowledged", "--records", str(records), env={"IRKIT_SIGNING__KEY_FILE": str(tmp_path / "k")}
    )
    assert res.exit_code == 2 and "signing.key_file" in res.stderr
    key = tmp_path / "exists.key"
    key.write_text("x")
    assert cli("keygen", "--out", str(key)).exit_code == 2 and key.read_text() == "x"


def test_expect_head_says_what_followed_the_pinned_head(cli, records: Path) -> None:
    rec = new(records)
    pinned = rec.events()[-1]["hash"]
    rec.note("later", actor="a")
    rec.set_status("acknowledged", actor="a")
    res = cli("verify", ID, "--records", str(records), "--expect-head", pinned)
    assert res.exit_code == 0 and "2 event(s) after the pinned head (note, status.changed)" in res.stdout


# --------------------------------------------------------------------------- bounded input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: r.note("x\x00y", actor="a"), "NUL"),
        (lambda r: r.note("x" * (64 * 1024 + 1), actor="a"), "at most"),
        (lambda r: r.set_status("acknowledged", actor="a", reason="\x00"), "NUL"),
    ],
)
def test_bounded_text_is_enforced(records: Path, call, match: str) -> None:
    rec = new(records)
    before = rec.events_path.read_bytes()
    with pytest.raises(BadInputError, match=match):
        call(rec)
    assert rec.events_path.read_bytes() == before


def test_long_titles_are_refused_before_anything_is_created(records: Path) -> None:
    with pytest.raises(BadInputError, match="title"):
        Record.create(records, "INC-LONG-1", title="t" * 201, service="s", actor="a")
    assert not (records / "INC-LONG-1").exists()


# --------------------------------------------------------------------------- found in review


def test_an_event_missing_a_field_the_fold_needs_is_refused_and_a_forged_one_is_named(cli, records: Path) -> None:
    rec = new(records)
    before = rec.events_path.read_bytes()
    with pytest.raises(BadInputError, match=r"data\.to"):
        rec.append("status.changed", {"reason": "no target"}, actor="a")
    assert rec.events_path.read_bytes() == before
    forge_append(rec, "severity.set", {"reason": "no level"})
    res = cli("verify", ID, "--records", str(records))
    assert res.exit_code == 1 and "data.level must be a non-empty string" in res.stdout
    assert cli("list", "--records", str(records)).exit_code == 0
    assert cli("show", ID, "--records", str(records)).exit_code == 0


def test_a_run_that_died_after_writing_its_notebook_is_sealed_and_blocks_nothing(records: Path, settings) -> None:
    from irkit.runstate import recover_interrupted

    rec = new(records)
    ev = rec.append(
        "notebook.started", {"path": "notebooks/01-triage.ipynb", "run_id": "a" * 32, "runbook": "triage"}, actor="a"
    )
    rec.write_new("notebooks/01-triage.ipynb", b'{"cells": []}')  # then kill -9, before notebook.finished
    assert recover_interrupted(rec) == ["notebooks/01-triage.ipynb"]
    done = rec.events()[-1]
    assert done["type"] == "run.interrupted" and done["data"]["started_seq"] == ev["seq"]
    assert done["data"]["partial"] is False and rec.verify().ok
    assert recover_interrupted(rec) == []


def test_only_a_folder_of_empty_subfolders_is_taken_for_half_made(records: Path) -> None:
    half = records / "INC-HALF-1"
    for sub in ("notebooks", "figures"):
        (half / sub).mkdir(parents=True)
    Record.create(records, "INC-HALF-1", title="t", service="s", actor="a")
    assert (half / "events.jsonl").is_file()
    kept = records / "INC-KEPT-1"
    (kept / "notebooks").mkdir(parents=True)
    (kept / "notebooks" / "01-triage.ipynb").write_text("evidence whose log went missing")
    with pytest.raises(irkit.errors.IncidentExists):
        Record.create(records, "INC-KEPT-1", title="t", service="s", actor="a")
    assert (kept / "notebooks" / "01-triage.ipynb").read_text() == "evidence whose log went missing"


def test_verify_and_show_need_no_private_key(cli, records: Path, tmp_path: Path) -> None:
    new(records)
    env = {"IRKIT_SIGNING__KEY_FILE": str(tmp_path / "missing.key")}
    res = cli("verify", ID, "--records", str(records), env=env)
    assert res.exit_code == 0 and "not sealing interrupted runs" in res.stderr
    assert cli("show", ID, "--records", str(records), env=env).exit_code == 0


def test_locks_are_never_taken_through_a_symlink(records: Path, tmp_path: Path) -> None:
    rec = new(records)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rec.path / ".runs").symlink_to(elsewhere)
    with pytest.raises(BadInputError, match="symlink"), rec.exclusive("tick", wait=False):
        pass
    (rec.path / ".runs").unlink()
    (rec.path / ".runs").mkdir()
    (rec.path / ".runs" / "tick.lock").symlink_to(elsewhere / "target")
    with pytest.raises(BadInputError, match="symlink"), rec.exclusive("tick", wait=False):
        pass
    assert not (elsewhere / "target").exists() and list(elsewhere.iterdir()) == []


def test_a_directory_or_a_fifo_in_place_of_the_log_is_refused_in_one_line(records: Path, cli) -> None:
    rec = new(records)
    rec.events()  # read (and remembered) while it was a file
    rec.events_path.unlink()
    rec.events_path.mkdir()
    for read in (rec.events, rec.state, rec.broken, rec.verify):
        with pytest.raises(BadInputError, match="not a regular file"):
            read()
    res = cli("show", ID, "--records", str(records))
    assert res.exit_code == 2 and res.stderr.startswith("irkit: ") and res.stderr.count("\n") == 1, res.stderr
    rec.events_path.rmdir()
    os.mkfifo(rec.events_path)  # opening a FIFO for reading would wait for a writer: refused at once instead
    for read in (rec.events, rec.state, rec.verify):
        with pytest.raises(BadInputError, match="not a regular file"):
            read()


def test_a_partial_save_snapshots_the_notebook_and_writes_it_off_the_calling_thread(tmp_path: Path) -> None:
    import threading

    import nbformat

    from irkit.runstate import SAVE_EVERY_S, PartialSaves

    release = threading.Event()
    redacted_on: list[str] = []

    def redact(nb):  # slow redaction: the cell loop must not wait for it
        redacted_on.append(threading.current_thread().name)
        assert release.wait(10)
        return nb

    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[v4.new_code_cell("a = 1"), v4.new_code_cell("b = 2")])
    for cell, status in zip(nb.cells, ["completed", "pending"], strict=True):
        cell.metadata["papermill"] = {"status": status}
    nb.cells[0].outputs = [v4.new_output("stream", name="stdout", text="one\n")]
    path = tmp_path / "run.partial.ipynb"
    saves = PartialSaves(path, redact)
    saves(nb)  # returns at once, the redaction still blocked
    # the next cell starts and writes output while the save is pending
    nb.cells[1].metadata["papermill"]["status"] = "running"
    nb.cells[1].outputs.append(v4.new_output("stream", name="stdout", text="two\n"))
    assert not path.exists()
    release.set()
    saves.drain()
    written = nbformat.read(str(path), as_version=4)
    assert [c.outputs for c in written.cells] == [[{"output_type": "stream", "name": "stdout", "text": "one\n"}], []]
    assert written.cells[1].metadata["papermill"]["status"] == "pending"  # as it stood when saved
    assert redacted_on and redacted_on[0].startswith("irkit-partial-save")
    assert SAVE_EVERY_S >= 0.5
    saves(nb)  # within SAVE_EVERY_S of the first: skipped, owed
    saves.close()  # the run ended: nothing owed is written
    assert len(redacted_on) == 1


def test_a_cell_done_within_the_save_interval_reaches_the_partial_notebook_without_another_call(tmp_path: Path) -> None:
    """A cell that completes right after a save, followed by one that runs for minutes (no further call):
    its output is on disk within the interval, so a runner killed meanwhile leaves it as evidence."""
    import nbformat

    from irkit.runstate import SAVE_EVERY_S, PartialSaves

    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[v4.new_code_cell(s) for s in ("a = 1", "print('step one done')", "sleep(600)")])
    for cell, status in zip(nb.cells, ["completed", "pending", "pending"], strict=True):
        cell.metadata["papermill"] = {"status": status}
    path = tmp_path / "run.partial.ipynb"
    saves = PartialSaves(path, lambda snap: {**snap, "metadata": {**snap["metadata"], "redacted": True}})
    try:
        saves(nb)  # the first call saves at once
        nb.cells[1].outputs = [v4.new_output("stream", name="stdout", text="step one done\n")]
        nb.cells[1].metadata["papermill"]["status"] = "completed"
        nb.cells[2].metadata["papermill"]["status"] = "running"
        saves(nb)  # within the interval: owed
        deadline = time.monotonic() + SAVE_EVERY_S + 5
        while time.monotonic() < deadline:
            written = nbformat.read(str(path), as_version=4) if path.exists() else None
            if written is not None and written.cells[1].outputs:
                break
            time.sleep(0.05)
        assert written is not None and written.metadata["redacted"] is True
        assert [o["text"] for o in written.cells[1].outputs] == ["step one done\n"]
        assert [c.metadata["papermill"]["status"] for c in written.cells] == ["completed", "completed", "pending"]
    finally:
        saves.close()
