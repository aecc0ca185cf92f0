from datetime import UTC, datetime, timedelta

import pytest

from irkit.config import ConfigError, load_config
from irkit.severity import DEFAULT_LEVELS, Level, SeverityPolicy, most_severe

T0 = datetime(2025, 11, 20, 14, 32, tzinfo=UTC)


def test_defaults_follow_the_plan() -> None:
    pol = SeverityPolicy()
    assert pol[Level.P0].response_time == timedelta(minutes=5)
    assert pol[Level.P0].resolution_target == timedelta(hours=1)
    assert pol[Level.P1].response_time == timedelta(minutes=15)
    assert pol[Level.P1].resolution_target == timedelta(hours=4)
    assert pol[Level.P2].resolution_target == timedelta(hours=24)
    assert pol[Level.P3].resolution_target == timedelta(weeks=1)
    assert pol[Level.P4].resolution_target is None
    assert [pol[lv].update_every for lv in Level] == [
        timedelta(minutes=15),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(days=1),
        None,
    ]
    assert pol[Level.P0].page and pol[Level.P1].page and not pol[Level.P2].page
    assert "Engineering Manager" in pol[Level.P0].escalation
    assert pol[Level.P3].escalation == "Create ticket for team"
    assert "Error rate > 10%" in pol[Level.P1].examples


def test_due_times() -> None:
    pol = SeverityPolicy()
    assert pol.response_due("P0", T0) == T0 + timedelta(minutes=5)
    assert pol.resolution_due(Level.P1, T0) == T0 + timedelta(hours=4)
    assert pol.response_due("P4", T0) is None
    assert pol.next_update_due("P1", T0, None) == T0 + timedelta(minutes=30)
    last = T0 + timedelta(minutes=40)
    assert pol.next_update_due("P1", T0, last) == last + timedelta(minutes=30)
    assert pol.next_update_due("P4", T0, None) is None


@pytest.mark.parametrize(
    ("level", "earliest", "latest"),
    [("P0", 24, 48), ("P1", 24, 48), ("P2", 0, 168), ("P3", 0, 168)],
)
def test_review_due(level: str, earliest: int, latest: int) -> None:
    window = SeverityPolicy().review_due(level, T0)
    assert window == (T0 + timedelta(hours=earliest), T0 + timedelta(hours=latest))


def test_p4_needs_no_review() -> None:
    assert SeverityPolicy().review_due("P4", T0) is None


def test_override_merges_with_plan_defaults(tmp_path) -> None:
    f = tmp_path / "irkit.yaml"
    f.write_text("severity:\n  levels:\n    P2:\n      update_every: 7200\n")
    pol = load_config(f, {}, required=True).severity
    assert pol["P2"].update_every == timedelta(hours=2)
    assert pol["P2"].definition == DEFAULT_LEVELS[Level.P2].definition
    assert pol["P0"] == DEFAULT_LEVELS[Level.P0]


def test_unknown_level_is_refused(tmp_path) -> None:
    f = tmp_path / "irkit.yaml"
    f.write_text("severity:\n  levels:\n    P9: {}\n")
    with pytest.raises(ConfigError, match="P9"):
        load_config(f, {}, required=True)


def test_most_severe() -> None:
    assert most_severe([Level.P3, Level.P1, Level.P2]) is Level.P1


def test_no_ready_pod_and_a_failing_health_endpoint_is_all_pods_down() -> None:
    from irkit.severity import Evidence, classify

    down = classify(Evidence(health_ok=False, pods_ready=0))
    assert down.level == Level.P0 and "all pods down" in down.summary()
    assert classify(Evidence(health_ok=False, pods_ready=2)).level is None  # the endpoint alone is not "all down"
    assert classify(Evidence(health_ok=None, pods_ready=0)).level is None  # nor are pods alone without the probe


def test_the_session_feeds_the_health_probe_and_the_pods_it_read_into_severity(records) -> None:
    from datetime import UTC, datetime, timedelta

    from irkit.checklist import record_result
    from irkit.cluster import ClusterView
    from irkit.config import load_config
    from irkit.metrics import IncidentMetrics
    from irkit.probes import CheckResult, CheckStatus
    from irkit.record import Record
    from irkit.session import Session

    rec = Record.create(records, "INC-DOWN-1", title="t", service="s", severity="P2", actor="am")
    s = Session(rec, load_config(None, {}), actor="alice", batch=False)
    pod = {"metadata": {"name": "sr-1"}, "status": {"phase": "Running", "containerStatuses": [{"ready": False}]}}
    s._views["live"] = ClusterView("kubernetes", datetime.now(UTC), objects={"pods": {"items": [pod]}})
    record_result(rec, CheckResult("health", CheckStatus.PROBLEM, "no answer"), actor="alice", automated=True)
    now = datetime.now(UTC)
    empty = IncidentMetrics("live", now - timedelta(hours=1), now, now, now, timedelta(days=7), unavailable={"all": "x"})
    assessed = s.assess(empty)
    assert assessed.assessment.level == Level.P0 and rec.state()["severity"] == "P0"
    assert "all pods down" in assessed.assessment.summary() and assessed.changed == "severity raised P2 → P0"
