"""Metrics against real Prometheus servers holding backfilled scenarios."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from boundaries import AT, ERROR_CASES, LATENCY_CASES, LATENCY_QUERY, NAMESPACE

from irkit.alerts import load_notification_file, open_from_notification
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR
from irkit.metrics import read_metrics
from irkit.prom import PrometheusSource
from irkit.record import Record
from irkit.runner import run_runbook
from irkit.scenarios import pool_exhaustion as scenario
from irkit.scenarios.tsdb import free_port, serve
from irkit.severity import Level
from irkit.sources import RecordedSource, snapshot

EXPECTED = {
    "err-0-9": None,
    "err-1": Level.P3,
    "err-5": Level.P2,
    "err-10-1": Level.P1,
    "err-12": Level.P1,
    "lat-1-9": None,
    "lat-2": Level.P3,
    "lat-3": Level.P2,
    "lat-10-1": Level.P1,
}


def boundary_settings(url: str, service: str):
    return load_config(
        None,
        {
            "IRKIT_PROMETHEUS__URL": url,
            "IRKIT_SERVICE__NAME": service,
            "IRKIT_SERVICE__NAMESPACE": NAMESPACE,
            "IRKIT_SIGNALS__LATENCY_P99": LATENCY_QUERY,
        },
    )


@pytest.mark.parametrize("case", list(EXPECTED))
def test_each_plan_boundary_classifies(boundary_prometheus: str, case: str) -> None:
    settings = boundary_settings(boundary_prometheus, case)
    m = read_metrics(
        PrometheusSource(settings, {}),
        signals=("error_ratio", "latency_p99"),
        start=AT - timedelta(minutes=15),
        end=AT,
        eval_end=AT,
    )
    a = m.assess()
    assert a.level == EXPECTED[case], (case, a.summary(), m.table())
    if case in ERROR_CASES:
        assert m.worst("error_ratio") == pytest.approx(ERROR_CASES[case], rel=1e-9)
    else:
        assert m.worst("latency_p99") / m.normal("latency_p99") == pytest.approx(LATENCY_CASES[case])
    if a.level is not None:
        assert any(r.level == a.level and r.threshold for r in a.reasons)


def _assess_config(tmp_path: Path, **signals: str | None) -> str:
    import yaml

    path = tmp_path / "irkit.yaml"
    path.write_text(yaml.safe_dump({"service": {"namespace": NAMESPACE}, "signals": signals}))
    return str(path)


def test_irkit_assess_prints_p1_with_the_reason(cli, boundary_prometheus: str, tmp_path: Path) -> None:
    # This service records only the error ratio: the other key signals are dropped with `name: null`.
    cfg = _assess_config(tmp_path, latency_p99=None, availability=None)
    env = {"IRKIT_PROMETHEUS__URL": boundary_prometheus}
    args = ("assess", "--config", cfg, "--service", "err-12", "--at", AT.isoformat(), "--window", "10m")
    res = cli(*args, env=env)
    assert res.exit_code == 0, res.stderr
    assert "level: P1" in res.stdout and "error ratio 12.0% > 10%" in res.stdout
    table = res.stdout.splitlines()
    error_row = next(line for line in table if line.startswith("error ratio"))
    assert "12.0 %" in error_row and error_row.rstrip().endswith("P1")  # the verdict, not "ok"
    assert "latency" not in res.stdout and "availability" not in res.stdout
    data = json.loads(cli(*args, "--json", env=env).stdout)
    assert data["level"] == "P1" and data["complete"] is True and data["reasons"][0]["signal"] == "error_ratio"
    row = next(r for r in data["signals"] if r["signal"] == "error_ratio")
    assert row["worst"] == pytest.approx(0.12) and row["verdict"] == "P1"  # machine values in JSON


def test_assess_with_a_key_signal_unread_is_a_lower_bound_and_exit_3(cli, boundary_prometheus: str) -> None:
    env = {"IRKIT_PROMETHEUS__URL": boundary_prometheus, "IRKIT_SERVICE__NAMESPACE": NAMESPACE}
    res = cli("assess", "--service", "err-12", "--at", AT.isoformat(), "--window", "10m", env=env)
    assert res.exit_code == 3
    assert "level: at least P1" in res.stdout and "level: none" not in res.stdout
    assert "could not check latency_p99" in res.stdout and "could not check availability" in res.stdout
    assert res.stderr.startswith("irkit: could not check latency_p99, availability") and res.stderr.count("\n") == 1
    quiet = cli("assess", "--service", "err-0-9", "--at", AT.isoformat(), "--window", "10m", env=env)
    assert quiet.exit_code == 3 and "level: unknown" in quiet.stdout and "level: none" not in quiet.stdout


def test_a_promql_syntax_error_is_a_configuration_error_naming_the_signal(
    cli, boundary_prometheus: str, tmp_path: Path
) -> None:
    cfg = _assess_config(tmp_path, error_ratio='sum(rate(http_requests_total{{service="{service}"}}[5m]')
    env = {"IRKIT_PROMETHEUS__URL": boundary_prometheus}
    res = cli("assess", "--config", cfg, "--service", "err-12", "--at", AT.isoformat(), env=env)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "signals.error_ratio" in res.stderr and "parse error" in res.stderr and res.stderr.count("\n") == 1
    # A template irkit cannot even fill is named the same way, before any request.
    cfg = _assess_config(tmp_path, availability='up{service="$service"}')
    res = cli("assess", "--config", cfg, "--service", "err-12", "--at", AT.isoformat(), env=env)
    assert res.exit_code == 2 and res.stderr.startswith("irkit: signals.availability: ")


def test_assess_with_prometheus_down_is_could_not_check(cli) -> None:
    res = cli("assess", env={"IRKIT_PROMETHEUS__URL": f"http://127.0.0.1:{free_port()}"})
    assert res.exit_code == 3
    assert "unreachable" in res.stderr and res.stderr.count("\n") == 1


def test_thirty_day_range_at_15s_does_not_hit_the_point_limit(incident_prometheus: str) -> None:
    src = PrometheusSource(load_config(None, {"IRKIT_PROMETHEUS__URL": incident_prometheus}), {})
    end = scenario.WINDOW_END
    frame = src.query_range('sum(up{namespace="schema-registry"})', end - timedelta(days=30), end, 15)
    day = frame[frame.index >= scenario.WINDOW_START]
    assert len(day) == (scenario.WINDOW_END - scenario.WINDOW_START).total_seconds() / 15 + 1
    assert day["value"].min() == 2 and day["value"].max() == 3  # the pod restart is visible


def test_recorded_source_replays_exactly_what_live_returned(incident_prometheus: str, records: Path) -> None:
    settings = load_config(None, {"IRKIT_PROMETHEUS__URL": incident_prometheus})
    live = PrometheusSource(settings, {})
    rec = Record.create(records, "INC-REPLAY-1", title="t", service="schema-registry", actor="tester")
    for signal in settings.signals:
        s = live.range(signal, scenario.WINDOW_START, scenario.WINDOW_END)
        assert not s.frame.empty, signal
        where = snapshot(rec, [s], actor="tester")
        back = RecordedSource(rec.path / where).load(signal)
        assert rec.latest_dir("data/signals") == rec.path / where  # each live read is a new sealed version
        pd.testing.assert_frame_equal(back.frame, s.frame, check_exact=True, check_freq=False)
        assert (back.query, back.start, back.end, back.step_s) == (s.query, s.start, s.end, s.step_s)
    assert rec.verify().ok


def test_bundled_recording_is_what_prometheus_returns_for_the_generator(incident_prometheus: str) -> None:
    """The committed recording is reproducible from the committed generator through a real Prometheus."""
    settings = load_config(None, {"IRKIT_PROMETHEUS__URL": incident_prometheus})
    live = PrometheusSource(settings, {})
    bundled = RecordedSource(SCENARIO_DIR / "signals")
    assert len(bundled.available()) == 2 * len(settings.signals)
    for key in bundled.available():
        signal, role = key.rsplit(".", 1)
        rec = bundled.load(signal, role)
        again = live.range(signal, rec.start, rec.end, step_s=rec.step_s, role=role)
        pd.testing.assert_frame_equal(rec.frame, again.frame, check_exact=True, check_freq=False)


def _outputs(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def _opened(records: Path, iid: str) -> Record:
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    return open_from_notification(records, note, service="schema-registry", actor="am", incident_id=iid)


def test_triage_live_snapshots_assesses_and_plots(incident_prometheus: str, records: Path) -> None:
    rec = _opened(records, "INC-LIVE-1")
    env = {"IRKIT_PROMETHEUS__URL": incident_prometheus}  # the kernel rebuilds settings from the same env
    res = run_runbook(rec, "triage", settings=load_config(None, env), environ=env, actor="alice")
    assert res.ok, res.summary()
    assessed = [e for e in rec.events() if e["type"] == "severity.assessed"][-1]["data"]
    assert assessed["level"] == "P1" and assessed["alert_severity_label"] == "P1"
    assert {r["signal"] for r in assessed["reasons"]} >= {"error_ratio", "latency_ratio"}
    signals = sorted(p.name for p in (rec.path / "data" / "signals").glob("*.csv"))
    assert "error_ratio.incident.csv" in signals and "latency_p99.baseline.csv" in signals
    # One figure (every golden signal, thresholds on error ratio and p99), saved and shown from the same bytes.
    assert sorted(p.name for p in (rec.path / "figures").iterdir()) == ["golden-signals.png"]
    saved = (rec.path / "figures" / "golden-signals.png").read_bytes()
    assert saved[:8] == b"\x89PNG\r\n\x1a\n"
    nb = nbformat.read(str(rec.path / res.path), as_version=4)
    shown = [o["data"]["image/png"] for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert [base64.b64decode(x) for x in shown] == [saved]
    assert rec.verify().ok


def test_triage_completes_and_says_metrics_unavailable_when_prometheus_is_stopped(records: Path) -> None:
    with serve("# TYPE up gauge\nup 1 1763650000\n# EOF\n") as served:
        url = served.url
    rec = _opened(records, "INC-DOWN-1")
    env = {"IRKIT_PROMETHEUS__URL": url}
    res = run_runbook(rec, "triage", settings=load_config(None, env), environ=env, actor="alice")
    assert res.ok, res.summary()
    text = _outputs(nbformat.read(str(rec.path / res.path), as_version=4))
    assert "could not assess from metrics" in text and "unreachable" in text
    assessed = [e for e in rec.events() if e["type"] == "severity.assessed"][-1]["data"]
    assert assessed["level"] is None and assessed["unavailable"]
    assert rec.state()["severity"] == "P1"  # the alert's label stands; nothing was guessed
    assert datetime.now(UTC) > scenario.TIMELINE["alert"]
