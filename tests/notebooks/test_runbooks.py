"""Every runbook in notebooks/ executes, and the demo runs the lifecycle end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from irkit.alerts import load_notification_file, open_from_notification
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR
from irkit.record import Record
from irkit.runner import LIFECYCLE, default_registry, run_runbook
from support import CONTRACT_PARAMETERS, REPO, write_notebook

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_a_registered_runbook_with_the_parameter_contract() -> None:
    registered = {rb.filename for rb in LIFECYCLE}
    assert NOTEBOOKS, "no runbooks in notebooks/"
    for path in NOTEBOOKS:
        assert path.name in registered, path
        nb = nbformat.read(str(path), as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, path
        lines = [ln for ln in params[0].source.splitlines() if ln.strip()]
        assert lines[0].startswith("incident_id: str")
        assert lines[1].startswith("records_dir: str = ")
        assert lines[2].startswith("config_path: str = ")
        for cell in nb.cells:  # committed runbooks carry no outputs
            assert not cell.get("outputs") and not cell.get("execution_count"), path


@pytest.fixture
def opened(records: Path) -> Record:
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    return open_from_notification(records, note, service="schema-registry", actor="tester")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runbook_executes_ok_on_the_recorded_incident(opened: Record, path: Path) -> None:
    settings = load_config(None, {})
    res = run_runbook(
        opened, path.stem, settings=settings, environ={}, actor="tester", registry=default_registry(settings)
    )
    assert res.ok, res.summary()
    assert opened.verify().ok


def test_triage_acknowledges_interactively_but_not_in_batch(records: Path) -> None:
    settings = load_config(None, {})
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    batch = open_from_notification(records, note, service="s", actor="am", incident_id="INC-BATCH-1")
    res = run_runbook(batch, "triage", settings=settings, environ={}, actor="irkit-serve", batch=True)
    assert res.ok and batch.state()["status"] == "detected"
    human = open_from_notification(records, note, service="s", actor="am", incident_id="INC-HUMAN-1")
    res = run_runbook(human, "triage", settings=settings, environ={}, actor="alice")
    assert res.ok
    st = human.state()
    assert st["status"] == "investigating"
    changes = [e for e in human.events() if e["type"] == "status.changed"]
    assert [(e["data"]["to"], e["actor"]) for e in changes] == [("acknowledged", "alice"), ("investigating", "alice")]


def test_demo_then_verify_then_tamper(demo_cli, cli, tmp_path: Path) -> None:
    # `irkit demo --records demo-records`, relative as `make demo` passes it; run once per session
    res = demo_cli.output
    assert res.exit_code == 0, res.stderr
    incident_id = res.stdout.strip().splitlines()[-1]
    assert incident_id.startswith("INC-20251120-1432-")
    assert "record " in res.stderr
    records = tmp_path / "demo-records"
    shutil.copytree(demo_cli.records, records)  # the shared record stays as the demo left it
    ok = cli("verify", incident_id, "--records", str(records))
    assert ok.exit_code == 0 and ok.stdout.startswith(f"OK {incident_id}")
    shown = json.loads(cli("show", incident_id, "--records", str(records), "--json").stdout)
    assert shown["severity"] == "P1" and shown["runs"] >= 1
    listed = json.loads(cli("list", "--records", str(records), "--json").stdout)
    assert [r["id"] for r in listed] == [incident_id]
    events = records / incident_id / "events.jsonl"
    raw = bytearray(events.read_bytes())
    raw[raw.index(b"Schema Registry error rate")] ^= 0x20  # one byte, in event 1
    events.write_bytes(bytes(raw))
    bad = cli("verify", incident_id, "--records", str(records))
    assert bad.exit_code == 1
    assert "event 1 (incident.opened)" in bad.stdout
    assert "post-mortem: " in res.stderr and "index: " in res.stderr
    from irkit.demo import open_demo_incident

    again = open_demo_incident(records, load_config(None, {}), "tester")  # a second demo gets its own id
    assert again.id == f"{incident_id}-2"


def test_cli_open_run_show_and_failed_run_exit_codes(cli, tmp_path: Path) -> None:
    records = tmp_path / "r"
    opened = cli("open", "--title", "checkout errors", "--severity", "P2", "--records", str(records))
    assert opened.exit_code == 0, opened.stderr
    iid = opened.stdout.strip()
    assert Record.open(records, iid).state()["severity"] == "P2"
    bad = cli("run", iid, "triage", "-p", "nope", "1", "--records", str(records))
    assert bad.exit_code == 2 and "no parameter 'nope'" in bad.stderr
    missing = cli("run", iid, "no-such-runbook", "--records", str(records))
    assert missing.exit_code == 2 and "unknown runbook" in missing.stderr
    ran = cli("run", iid, "triage", "--no-progress", "--records", str(records))
    assert ran.exit_code == 0, ran.stderr
    assert "triage: ok" in ran.stdout
    prepared = cli("open", iid, "triage", "--records", str(records))
    assert prepared.exit_code == 0 and prepared.stdout.strip().endswith("01-triage.r2.ipynb")
    shown = cli("show", iid, "--records", str(records))
    assert "working copies (unsealed): notebooks/01-triage.r2.ipynb" in shown.stdout
    assert "response due" in shown.stdout
    sealed = cli("seal", iid, "--records", str(records))
    assert sealed.exit_code == 0 and "sealed notebooks/01-triage.r2.ipynb" in sealed.stdout
    status = cli("status", iid, "resolved", "--records", str(records))
    assert status.exit_code == 2 and "cannot change status from investigating to resolved" in status.stderr


def test_failed_run_exits_1_and_keeps_its_record(cli, tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    write_notebook(books / "triage.ipynb", CONTRACT_PARAMETERS, ["1 / 0"])
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(f"runner:\n  notebooks_dir: {books}\n")
    records = tmp_path / "r"
    iid = cli("open", "--records", str(records), "--config", str(cfg)).stdout.strip()
    res = cli("run", iid, "triage", "--no-progress", "--records", str(records), "--config", str(cfg))
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "failed at cell" in res.stderr and "ZeroDivisionError" in res.stderr
    assert (records / iid / "notebooks" / "01-triage.ipynb").is_file()
    assert cli("verify", iid, "--records", str(records)).exit_code == 0


@pytest.mark.parametrize(
    "args", [["verify"], ["open", "--severity", "P9"], ["run", "INC-X-1"], ["no-such-verb"]], ids=str
)
def test_usage_errors_are_one_line_exit_2(cli, args: list[str]) -> None:
    res = cli(*args)
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("irkit")


def test_the_demos_triage_leaves_its_facts_as_scraps_and_its_figure_sealed(demo_run) -> None:
    """Other runbooks and reports read triage's facts as scrapbook scraps, never from printed output."""
    import scrapbook as sb

    from irkit.record import Record

    rec = Record.open(demo_run.path.parent, demo_run.path.name)
    triage = next(r for r in demo_run.runs if r.runbook == "triage")
    scraps = sb.read_notebook(str(rec.path / triage.path)).scraps.data_dict
    st = rec.state()
    assert scraps["incident_id"] == rec.id and scraps["detected_at"] == st["detected_at"]
    assert scraps["severity"] == "P1" and scraps["status"] == "investigating"
    assert isinstance(scraps["response_overdue"], bool) and isinstance(scraps["update_overdue"], bool)
    sealed = {e["data"]["path"]: e["data"] for e in rec.events() if e["type"] == "artifact.added"}
    # drawn ahead on another core by the real kernel (forked after the metrics read), used, and sealed
    assert sealed["figures/golden-signals.png"]["drawn"] == "ahead"
