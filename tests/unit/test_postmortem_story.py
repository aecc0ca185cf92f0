"""The post-mortem tells one consistent story: its verdicts, what went wrong and the message log agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from irkit import comms, postmortem
from irkit.config import load_config
from irkit.record import Record

T0 = datetime(2025, 11, 20, 14, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> Clock:
        self.now = T0 + timedelta(minutes=minutes, microseconds=123456)
        return self


def _incident(records: Path, clock: Clock) -> Record:
    rec = Record.create(
        records, "INC-PM-1", title="errors", service="schema-registry", severity="P1", actor="am",
        detected_at=T0, data={"replay": True}, clock=clock,
    )
    clock.at(3)
    rec.set_status("acknowledged", actor="ana")  # in time: the secondary's page is not needed
    return rec


def test_a_planned_mitigation_never_executed_is_not_time_to_mitigate(records: Path) -> None:
    clock = Clock()
    rec = _incident(records, clock)
    clock.at(10)
    rec.append("action.planned", {"key": "k1", "action": "rollback", "description": "roll back to 6"}, actor="ana")
    rec.set_status("investigating", actor="ana")
    rec.set_status("mitigating", actor="ana")  # a status change is not an executed mitigation
    pm = postmortem.build(rec, load_config(None, {}))
    row = next(v for v in pm.verdicts if v.measure == "time to mitigate")
    assert row.value == "planned, never executed (rollback)" and row.mark == "not applicable"


def test_verdicts_agree_with_their_rows_and_a_missed_update_is_what_went_wrong(records: Path) -> None:
    clock = Clock()
    rec = _incident(records, clock)
    settings = load_config(None, {})
    clock.at(5)
    msg = comms.render(rec, settings, "slack_initial", now=clock(), actor="ana")
    rec.append("comms.sent", {"channel": "slack", "kind": "slack_initial", "path": msg.path}, actor="ana")
    clock.at(94)  # P1 updates are due every 30 minutes after the last: 15:05 and 15:35 were never sent
    for status in ("investigating", "mitigating", "monitoring", "resolved"):
        rec.set_status(status, actor="ana")
    pm = postmortem.build(rec, settings)
    marks = {v.measure: (v.value, v.mark) for v in pm.verdicts}
    secondary = next(k for k in marks if k.startswith("escalation:") and "not needed" in marks[k][0])
    assert marks[secondary][1] == "not needed"  # not "not recorded" next to "not needed (acknowledged in time)"
    assert marks["stakeholder updates"] == ("1 sent; 2 missed", "missed")
    assert "stakeholder update due 15:05 UTC never sent" in pm.went_wrong
    log = pm.comms
    assert len(log) == 1 and log[0]["message"].startswith("🚨 INCIDENT ALERT")
    assert log[0]["delivery"] == "sent via slack at 2025-11-20 14:35:00 UTC" and log[0]["time"] == "2025-11-20 14:35:00 UTC"
    md_path, html_path = postmortem.render(rec, pm, actor="ana")
    for text in (md_path.read_text(), html_path.read_text()):
        assert ".123456" not in text and "123456" not in text  # no microseconds anywhere
        assert "stakeholder update due 15:05 UTC never sent" in text and "INCIDENT ALERT" in text
