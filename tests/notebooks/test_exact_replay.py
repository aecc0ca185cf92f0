"""A sealed record replays exactly: nbval re-executes every sealed runbook of the demo record against
the record's own recordings, in a scratch copy, and every output must be the one that was sealed."""

from __future__ import annotations

import json
from pathlib import Path

from irkit.record import Record
from irkit.replay import Reexecution, exact, injected_parameters, reexecutions


def _record(demo_cli) -> Record:
    return Record.open(demo_cli.records, demo_cli.result.incident_id)


def _triage_with_one_sample(rec: Record, root: Path, signal: str, ts: str, value: str) -> list[Reexecution]:
    """The triage re-execution set up under ``root``, one recorded sample of ``signal`` changed in its copy."""
    runs = reexecutions(rec, root, runbooks=("triage",))
    csv = runs[0].record / "data" / "signals" / f"{signal}.incident.csv"
    lines = csv.read_text().splitlines()
    at = lines.index(next(line for line in lines if line.startswith(f"{ts},")))
    lines[at] = f"{ts},{value}"
    csv.write_text("\n".join(lines) + "\n")
    return runs


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
    # One sample the 14:33 triage judges: 5 % → 47 %.
    runs = _triage_with_one_sample(rec, tmp_path, "error_ratio", "2025-11-20T14:32:00Z", "0.47")
    result = exact(rec, tmp_path, runs=runs)
    assert not result.exact and result.failed >= 1
    assert "Cell outputs differ" in result.output and "47" in result.output, result.output[-3000:]


def test_a_perturbed_sample_shown_only_in_a_figure_still_fails_the_replay(demo_cli, tmp_path: Path) -> None:
    rec = _record(demo_cli)
    # Long before the alert: judged by nothing, drawn in the plot.
    runs = _triage_with_one_sample(rec, tmp_path, "request_rate", "2025-11-20T13:45:00Z", "999")
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


def test_a_secret_a_runbook_printed_stays_out_of_the_exact_replays_report(
    records: Path, tmp_path: Path, monkeypatch, cli
) -> None:
    """The sealed copy has ``[REDACTED]``; the re-execution prints the secret itself, so the outputs
    differ — and nbval's diff, which shows the re-executed output, is redacted before anyone sees it."""
    from irkit.config import load_config
    from irkit.runner import Runbook, RunbookRegistry, run_runbook
    from support import CONTRACT_PARAMETERS, write_notebook

    canary = "canary-51d0-s3cr3t-value"
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text("secrets: [LEAKY_RUNBOOK_TOKEN]\n")
    monkeypatch.setenv("LEAKY_RUNBOOK_TOKEN", canary)
    books = tmp_path / "books"
    books.mkdir()
    write_notebook(
        books / "leaky.ipynb", CONTRACT_PARAMETERS, ["import os\nprint('token', os.environ['LEAKY_RUNBOOK_TOKEN'])"]
    )
    rec = Record.create(records, "INC-LEAK-1", title="t", service="s", actor="tester")
    settings = load_config(cfg, {}, required=True)
    run = run_runbook(
        rec,
        "leaky",
        settings=settings,
        environ={"LEAKY_RUNBOOK_TOKEN": canary},
        actor="tester",
        config_path=str(cfg),
        registry=RunbookRegistry(books, [Runbook("leaky", 1, "leaky.ipynb", "leaky")]),
    )
    assert run.ok and canary not in (rec.path / run.path).read_text()
    res = cli("replay", rec.id, "--exact", "--records", str(records), "--config", str(cfg))
    assert res.exit_code == 1  # the outputs differ: sealed "[REDACTED]", replayed the secret
    assert "[REDACTED]" in res.stdout and canary not in res.stdout + res.stderr
