"""A sealed record replays exactly: nbval re-executes every sealed runbook of the demo record against
the record's own recordings, in a scratch copy, and every output must be the one that was sealed."""

from __future__ import annotations

import json
from pathlib import Path

from irkit.record import Record
from irkit.replay import exact, injected_parameters, reexecutions


def _record(demo_cli) -> Record:
    return Record.open(demo_cli.records, demo_cli.result.incident_id)


def test_every_sealed_runbook_of_the_demo_reexecutes_to_the_same_outputs(demo_cli, tmp_path: Path) -> None:
    rec = _record(demo_cli)
    head = rec.state()["head"]["hash"]
    result = exact(rec, tmp_path)
    assert [r.runbook for r in result.runs] == ["triage", "investigation", "mitigation", "resolution", "postmortem"]
    assert result.exact, result.output[-4000:]
    assert result.failed == 0 and result.passed >= 40  # every code cell of the five notebooks is a test
    assert rec.state()["head"]["hash"] == head and rec.verify().ok  # the record itself was only read


def test_a_perturbed_recording_makes_the_replay_fail_with_nbvals_diff(demo_cli, tmp_path: Path) -> None:
    rec = _record(demo_cli)
    runs = reexecutions(rec, tmp_path, runbooks=("triage",))
    csv = runs[0].record / "data" / "signals" / "error_ratio.incident.csv"
    lines = csv.read_text().splitlines()
    at = lines.index(next(line for line in lines if line.startswith("2025-11-20T14:32:00Z,")))
    lines[at] = "2025-11-20T14:32:00Z,0.47"  # one sample the 14:33 triage judges: 5 % → 47 %
    csv.write_text("\n".join(lines) + "\n")
    result = exact(rec, tmp_path, runs=runs)
    assert not result.exact and result.failed >= 1
    assert "Cell outputs differ" in result.output and "47" in result.output, result.output[-3000:]


def test_a_perturbed_sample_shown_only_in_a_figure_still_fails_the_replay(demo_cli, tmp_path: Path) -> None:
    rec = _record(demo_cli)
    runs = reexecutions(rec, tmp_path, runbooks=("triage",))
    csv = runs[0].record / "data" / "signals" / "request_rate.incident.csv"
    lines = csv.read_text().splitlines()
    at = lines.index(next(line for line in lines if line.startswith("2025-11-20T13:45:00Z,")))
    lines[at] = "2025-11-20T13:45:00Z,999"  # long before the alert: judged by nothing, drawn in the plot
    csv.write_text("\n".join(lines) + "\n")
    result = exact(rec, tmp_path, runs=runs)
    assert not result.exact and "image/png" in result.output, result.output[-3000:]


def test_reexecution_is_set_up_as_the_run_was(demo_cli, tmp_path: Path) -> None:
    rec = _record(demo_cli)
    events = rec.events()
    (triage, *_rest) = reexecutions(rec, tmp_path)
    started = next(e for e in events if e["type"] == "notebook.started" and e["data"]["runbook"] == "triage")
    scratch = Record.open(triage.record.parent, rec.id)
    assert len(scratch.events()) == started["seq"]  # the record as the run found it, no later event
    assert not (triage.record / "notebooks" / "01-triage.ipynb").exists()  # nor anything sealed later
    env = json.loads(triage.notebook.with_name(triage.notebook.name + ".env.json").read_text())
    assert env["IRKIT_CLOCK"].startswith("2025-11-20T14:33") and env["IRKIT_ACTOR"] == started["actor"]
    import nbformat

    params = injected_parameters(nbformat.read(str(triage.notebook), as_version=4))
    assert params["records_dir"] == str(triage.record.parent.resolve()) and params["incident_id"] == rec.id


def test_cli_replay_exact_on_the_demo_record_and_on_a_record_without_runs(demo_cli, cli, records: Path) -> None:
    res = cli(
        "replay",
        demo_cli.result.incident_id,
        "--exact",
        "--runbooks",
        "investigation",
        "--records",
        str(demo_cli.records),
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "1 sealed notebooks re-executed" in res.stdout and "every output is the sealed one" in res.stdout
    Record.create(records, "INC-EMPTY-1", title="t", service="s", actor="tester")
    res = cli("replay", "INC-EMPTY-1", "--exact", "--json", "--records", str(records))
    assert res.exit_code == 0 and json.loads(res.stdout)["notebooks"] == []
