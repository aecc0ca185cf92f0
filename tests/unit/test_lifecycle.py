"""Status moves on resolution, reopened incidents' clocks, failed mitigations, refused arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from irkit.config import load_config
from irkit.errors import BadInputError
from irkit.events import Status
from irkit.mitigate import Context, Plan, run_action
from irkit.record import Record
from irkit.resolve import advance_to, decide
from irkit.session import Session
from irkit.severity import compute_clocks


def session(records: Path, *statuses: str) -> Session:
    rec = Record.create(records, "INC-LC-1", title="t", service="s", severity="P1", actor="a")
    for s in statuses:
        rec.set_status(s, actor="a")
    return Session(rec, load_config(None, {}), actor="alice", batch=False)


def test_resolution_from_monitoring_moves_forward_only(records: Path) -> None:
    s = session(records, "acknowledged", "investigating", "monitoring")
    decision = decide([], watched=timedelta(minutes=30), watch_required=timedelta(minutes=30), force_reason="")
    advance_to(s.record, Status.RESOLVED, decision, actor="alice")
    moves = [(e["data"]["from"], e["data"]["to"]) for e in s.record.events() if e["type"] == "status.changed"]
    assert moves[-1] == ("monitoring", "resolved") and ("monitoring", "investigating") not in moves


def test_resolution_from_mitigating_goes_through_monitoring(records: Path) -> None:
    s = session(records, "acknowledged", "investigating", "mitigating")
    decision = decide([], watched=timedelta(0), watch_required=timedelta(0), force_reason="ok")
    advance_to(s.record, Status.RESOLVED, decision, actor="alice")
    moves = [(e["data"]["from"], e["data"]["to"]) for e in s.record.events() if e["type"] == "status.changed"]
    assert moves[-2:] == [("mitigating", "monitoring"), ("monitoring", "resolved")]


def test_a_reopened_incident_is_not_resolved(records: Path) -> None:
    s = session(records, "acknowledged", "investigating", "monitoring", "resolved", "investigating")
    clocks = compute_clocks(s.state(), s.settings.severity, datetime.now(UTC) + timedelta(hours=5))
    assert clocks.resolved_at is None and clocks.resolution_overdue and clocks.review_due is None


class Boom:
    name, title = "restart", "a change whose client blows up"

    def plan(self, ctx: Context, args: Any) -> Plan:
        return Plan(self.name, dict(args), "x", "boom", {"a": 1}, {"a": 2}, "none")

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        return "fine"

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        raise RuntimeError("redis said no")

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        return True, ""


def test_an_unexpected_execute_error_is_recorded_as_failed(records: Path) -> None:
    rec = Record.create(records, "INC-LC-2", title="t", service="s", actor="a")
    out = run_action(
        rec, Boom(), {}, Context(load_config(None, {}), {}), approve=True, approver="alice", actor="runner", batch=False
    )
    assert out.status == "failed" and "redis said no" in out.reason
    assert [e["type"] for e in rec.events()][-1] == "action.failed"


def test_unknown_arguments_are_refused(records: Path) -> None:
    rec = Record.create(records, "INC-LC-3", title="t", service="s", actor="a")
    with pytest.raises(BadInputError, match="restart takes no arguments"):
        run_action(
            rec,
            Boom(),
            {"why": "again"},
            Context(load_config(None, {}), {}),
            approve=True,
            approver="alice",
            actor="runner",
            batch=False,
        )
    assert not any(e["type"].startswith("action.") for e in rec.events())


def test_a_human_answer_stands_over_a_later_automated_run_and_both_are_shown(records: Path) -> None:
    from irkit.checklist import checklist_rows, record_result
    from irkit.probes import CheckResult, CheckStatus

    s = session(records)
    s.answer("database", "problem found", "pool exhausted: 50/50 connections in use (pg_stat_activity)")
    later = CheckResult("database", CheckStatus.UNCHECKED, "no credentials for postgres")
    record_result(s.record, later, actor="irkit-serve", automated=True)
    row = next(r for r in checklist_rows(s.record.events()) if r["item"].startswith("Verify database"))
    assert (row["status"], row["by"]) == ("problem found", "alice (human)")
    assert row["automated"].startswith("could not check at ") and "no credentials" in row["automated"]
    s.answer("database", "ok", "pool back to 12/50 after the restart")
    row = next(r for r in checklist_rows(s.record.events()) if r["item"].startswith("Verify database"))
    assert (row["status"], row["evidence"]) == ("ok", "pool back to 12/50 after the restart")


def test_glue_before_any_severity_shows_what_is_unknown_and_does_not_crash(
    records: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Record.create(records, "INC-LC-2", title="t", service="s", severity=None, actor="a")
    facts = Session(rec, load_config(None, {}), actor="alice", batch=False).glue()  # scrapbook has no null: an unknown severity is simply not glued
    assert facts.loc["severity", "value"] == "—" and facts.loc["response overdue", "value"] == "no"
    assert facts.loc["detected at", "value"].endswith(" UTC") and "." not in facts.loc["detected at", "value"]
    glued = capsys.readouterr().out
    assert "'name': 'incident_id'" in glued and "'name': 'severity'" not in glued
