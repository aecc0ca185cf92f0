"""The resolution watch never blocks: monitoring first, resolved only after the watch, from the whole watch's metrics.

Real Prometheus (backfilled with the recorded pool-exhaustion incident: errors 14:27–14:45 UTC) and a
real Alertmanager with no active alerts; the record is a replay stamped at the moments of each check.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from irkit.config import Settings, load_config
from irkit.errors import BadInputError
from irkit.record import Record
from irkit.resolve import check_resolution
from irkit.scheduler import decide_watch


def at(hour: int, minute: int) -> datetime:
    return datetime(2025, 11, 20, hour, minute, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, incident_prometheus: str, alertmanager_server) -> Settings:
    cfg = tmp_path / "irkit.yaml"
    smoke = [{"name": "alertmanager healthy", "url": f"{alertmanager_server.url}/-/healthy"}]
    cfg.write_text(
        yaml.safe_dump(
            {
                "prometheus": {"url": incident_prometheus},
                "alertmanager_url": alertmanager_server.url,
                "resolution": {"smoke_tests": smoke},
            }
        )
    )
    return load_config(cfg, {}, required=True)


def investigating(records: Path, iid: str, when: datetime) -> Record:
    rec = Record.create(
        records, iid, title="error rate", service="schema-registry", severity="P1", actor="am",
        detected_at=at(14, 28), clock=lambda: when, data={"replay": True},
    )  # fmt: skip
    rec.set_status("acknowledged", actor="a")
    rec.set_status("investigating", actor="a")
    return rec


def check(rec: Record, settings: Settings, when: datetime, **kw: object):
    rec.clock = lambda: when
    return check_resolution(rec, settings, {}, "live", now=lambda: when, actor="dave", **kw)  # type: ignore[arg-type]


def test_monitoring_first_then_refused_during_the_watch_then_resolved_after_it(records: Path, settings) -> None:
    rec = investigating(records, "INC-WATCH-1", at(14, 52))
    first = check(rec, settings, at(14, 52))
    assert first.moved_to == "monitoring" and first.watch_until == at(15, 22)
    assert rec.state()["status"] == "monitoring"
    early = check(rec, settings, at(15, 10))  # 18 minutes into a 30-minute watch
    assert early.watching_until == at(15, 22) and not early.moved_to
    assert rec.state()["status"] == "monitoring"
    assert "decided after 15:22 UTC" in early.lines()[0]
    late = check(rec, settings, at(15, 23))
    assert late.moved_to == "resolved", late.lines()
    err = next(c for c in late.criteria if c.name.startswith("error rate"))
    assert "14:52–15:23" in err.evidence  # judged over the whole watch
    assert rec.state()["status"] == "resolved" and rec.verify().ok


def test_an_error_ratio_that_rose_during_the_watch_refuses_resolution(records: Path, settings) -> None:
    rec = investigating(records, "INC-WATCH-2", at(14, 20))
    assert check(rec, settings, at(14, 20)).moved_to == "monitoring"  # before the incident: all quiet
    decided = decide_watch(rec, settings, {}, now=at(14, 51), actor="irkit-serve")  # what irkit serve does
    assert len(decided) == 1 and "resolution refused" in decided[0] and "error rate < 1%: FAIL" in decided[0]
    assert rec.state()["status"] == "monitoring"
    assert decide_watch(rec, settings, {}, now=at(14, 52), actor="irkit-serve") == []  # decided once


def test_a_short_watch_is_refused_unless_forced_and_a_missing_smoke_test_is_could_not_check(
    records: Path, settings, tmp_path: Path
) -> None:
    rec = investigating(records, "INC-WATCH-3", at(14, 52))
    with pytest.raises(BadInputError, match="shorter than the plan's watch"):
        check(rec, settings, at(14, 52), watch_minutes=10)
    no_smoke = settings.model_copy(update={"resolution": settings.resolution.model_copy(update={"smoke_tests": ()})})
    refused = check(rec, no_smoke, at(14, 52))
    smoke = next(c for c in refused.criteria if c.name == "smoke tests")
    assert smoke.passed is None and "none configured" in smoke.evidence and refused.refused
    forced = check(rec, no_smoke, at(14, 53), watch_minutes=10, force_reason="customer-facing fix verified by hand")
    assert forced.moved_to == "resolved" and rec.state()["status"] == "resolved"
