"""The post-mortem and the index, from the replayed bundled incident and from synthetic records."""

from __future__ import annotations

import csv
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from irkit.config import load_config
from irkit.index import build_index
from irkit.postmortem import affected_requests, build, render
from irkit.record import Record, list_incidents
from irkit.scenarios.pool_exhaustion import TIMELINE
from irkit.times import ReplayClock


def test_demo_ran_every_runbook_and_printed_paths(demo_run) -> None:
    assert [r.runbook for r in demo_run.runs] == ["triage", "investigation", "mitigation", "resolution", "postmortem"]
    assert demo_run.postmortem == demo_run.path / "postmortem.html" and demo_run.postmortem.is_file()
    assert demo_run.index is not None and demo_run.index.is_file()
    assert (demo_run.path / "postmortem.md").is_file()


def _timeline(md: str) -> list[tuple[str, str, str]]:
    rows = re.findall(r"^\| (\d\d:\d\d:\d\d) \| ([^|]+) \| (.+?) \| [^|]+ \|$", md, re.M)
    return [(t, since.strip(), event) for t, since, event in rows]


def test_timeline_is_ordered_with_the_right_offsets(demo_run) -> None:
    md = (demo_run.path / "postmortem.md").read_text()
    rows = _timeline(md)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    first = {}
    for t, since, event in rows:
        first.setdefault(event.split(":")[0].split(" (")[0].split(" —")[0], (t, since))
    assert first["Deploy"] == ("14:24:00", "-4m")
    assert first["Error ratio above 1%"] == ("14:28:00", "0s")
    assert first["Alert fired"] == ("14:32:00", "4m")
    assert first["On-call acknowledged"][0].startswith("14:33")
    assert first["Mitigation planned"][0].startswith("14:40") and first["Mitigation planned"][1].startswith("12m")
    assert first["Alert resolved"] == ("14:47:00", "19m")
    assert first["Resolved"][0].startswith("15:16")
    assert "All times UTC" in md


def _series(path: Path) -> dict[str, float]:
    with path.open() as fh:
        return {row["ts"]: float(row["value"]) for row in csv.DictReader(fh)}


def test_affected_requests_equal_an_independent_sum(demo_run) -> None:
    signals = demo_run.path / "data" / "signals"
    rate, ratio = _series(signals / "request_rate.incident.csv"), _series(signals / "error_ratio.incident.csv")
    md = (demo_run.path / "postmortem.md").read_text()
    window = re.search(r"impact window \| (\d\d:\d\d)–(\d\d:\d\d) UTC", md)
    assert window
    rows = _timeline(md)
    start = next(t for t, _, e in rows if e.startswith("Error ratio above 1%"))
    end = next(t for t, _, e in rows if e.startswith("Error ratio back below 1%"))
    total = sum(
        rate[ts] * ratio[ts] * 15 for ts in rate if ts in ratio and f"2025-11-20T{start}Z" <= ts <= f"2025-11-20T{end}Z"
    )
    shown = int(re.search(r"affected requests \(failed\) \| ([\d,]+)", md).group(1).replace(",", ""))
    assert shown == round(total)
    assert 10_000 < shown < 20_000


def _synthetic(records: Path, iid: str, level: str, resolve_after: timedelta) -> Record:
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    rec = Record.create(
        records,
        iid,
        title=f"synthetic {level}",
        service="svc",
        severity=level,
        actor="t",
        detected_at=t0,
        clock=ReplayClock(t0),
        data={"replay": True},
    )
    rec.clock = ReplayClock(t0 + timedelta(minutes=3))
    rec.set_status("acknowledged", actor="t")
    rec.set_status("investigating", actor="t")
    rec.set_status("monitoring", actor="t")
    rec.clock = ReplayClock(t0 + resolve_after)
    rec.set_status("resolved", actor="t")
    return rec


def test_sla_verdicts_breach_and_met(records: Path) -> None:
    settings = load_config(None, {})
    breached = build(_synthetic(records, "INC-SLA-1", "P0", timedelta(hours=2)), settings)
    met = build(_synthetic(records, "INC-SLA-2", "P1", timedelta(hours=3)), settings)
    v1 = {v.measure: v for v in breached.verdicts}
    v2 = {v.measure: v for v in met.verdicts}
    assert v1["time to resolve (SLA)"].ok is False and breached.impact["resolution target (SLA)"] == "breached"
    assert v2["time to resolve (SLA)"].ok is True and met.impact["resolution target (SLA)"] == "met"
    assert v1["time to acknowledge (response)"].ok is True  # 3 minutes against P0's 5
    assert any("time to resolve" in w for w in breached.went_wrong)
    assert breached.review_due.startswith("2025-03-02 11:00")  # 24-48 h after a P0 is resolved


def test_incident_text_is_escaped_in_html_and_inert_in_markdown(records: Path) -> None:
    rec = _synthetic(records, "INC-XSS-1", "P2", timedelta(hours=1))
    evil = '<script>alert("x")</script> | <img src=x onerror=alert(1)>'
    settings = load_config(None, {})
    pm = build(rec, settings, root_cause=evil, title=evil, action_items=[{"item": evil, "owner": "@a"}])
    md, html = render(rec, pm, actor="t")
    text = html.read_text()
    assert "<script>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;" in text
    md_text = md.read_text()
    assert "<script>" not in md_text and "&lt;script&gt;" in md_text
    assert rec.verify().ok


def test_postmortem_without_any_snapshot_still_renders(records: Path) -> None:
    rec = _synthetic(records, "INC-BARE-1", "P3", timedelta(hours=5))
    pm = build(rec, load_config(None, {}))
    assert "no recorded metric series" in pm.impact["affected requests"]
    assert "affected requests (failed)" not in pm.impact and pm.timeline


def test_an_earlier_blip_is_not_the_incident() -> None:
    import pandas as pd

    from irkit.metrics import IncidentMetrics
    from irkit.postmortem import impact_window
    from irkit.sources import SignalSeries

    idx = pd.date_range("2025-11-20T13:30Z", "2025-11-20T15:00Z", freq="15s")
    ratio = pd.Series(0.004, index=idx)
    ratio[(idx >= "2025-11-20T13:40Z") & (idx < "2025-11-20T13:41Z")] = 0.02  # a one-minute blip
    ratio[(idx >= "2025-11-20T14:28Z") & (idx < "2025-11-20T14:45Z")] = 0.15  # the incident
    m = IncidentMetrics(
        "recorded",
        idx[0].to_pydatetime(),
        idx[-1].to_pydatetime(),
        idx[0].to_pydatetime(),
        idx[-1].to_pydatetime(),
        timedelta(days=7),
    )
    m.series["error_ratio"] = SignalSeries("error_ratio", "q", idx[0], idx[-1], 15, ratio.to_frame("value"))
    m.series["request_rate"] = SignalSeries(
        "request_rate", "q", idx[0], idx[-1], 15, pd.Series(100.0, index=idx).to_frame("value")
    )
    start, end = impact_window(m, TIMELINE["alert"])
    assert (start, end) == (datetime(2025, 11, 20, 14, 28, tzinfo=UTC), datetime(2025, 11, 20, 14, 45, tzinfo=UTC))
    window = ratio[(idx >= start) & (idx <= end)]
    assert affected_requests(m, start, end) == pytest.approx(float((window * 100 * 15).sum()))


def test_index_lists_every_incident_and_links_resolve(demo_run, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    shutil.copytree(demo_run.path.parent, root)
    _synthetic(root, "INC-SLA-9", "P0", timedelta(hours=2))
    index = build_index(root, load_config(None, {}))
    html = index.read_text()
    for iid in list_incidents(root):
        assert iid in html
    links = re.findall(r'href="([^"]+)"', html)
    assert any(link.endswith("postmortem.html") for link in links)
    assert sum(1 for link in links if "/html/" in link) == 5
    for link in links:
        assert (root / link).is_file(), link
    assert html.count("data:image/png;base64,") == 2
    assert 'class="missed"' in html  # the synthetic P0 missed its resolution target
    nb_html = (root / links[0]).read_text()
    assert "<script>alert" not in nb_html
    assert "&lt;table" not in nb_html and "<table" in nb_html  # tables render as tables, not escaped text


def test_output_html_keeps_tables_and_drops_scripts() -> None:
    from irkit.index import clean_output_html

    dirty = (
        '<style scoped>.x{}</style><table class="dataframe"><tr><td onclick="alert(1)">a</td></tr></table>'
        '<script>alert(1)</script><a href="javascript:alert(1)">x</a><img src=x onerror=alert(1)>'
    )
    clean = clean_output_html(dirty)
    assert '<table class="dataframe">' in clean and "<td>a</td>" in clean
    for bad in ("<script", "onclick", "onerror", "javascript:", "<style"):
        assert bad not in clean


def test_demo_record_holds_the_plans_messages(demo_run) -> None:
    names = sorted(p.name for p in (demo_run.path / "comms").iterdir())
    assert names == [
        "01-slack_initial.txt",
        "02-statuspage_initial.txt",
        "03-email_stakeholders.html",
        "03-email_stakeholders.txt",
        "04-slack_resolved.txt",
        "05-statuspage_resolved.txt",
    ]
    initial = (demo_run.path / "comms" / "01-slack_initial.txt").read_text()
    assert "Severity: P1" in initial and "Next Update: 15:02 UTC" in initial  # 30 min after detection (P1)
    resolved = (demo_run.path / "comms" / "04-slack_resolved.txt").read_text()
    # the replay clock runs at real speed, so the seconds depend on how fast the runbooks ran
    assert "✅ INCIDENT RESOLVED" in resolved and re.search(r"Duration: 44m( \d\ds)?\n", resolved)
    assert "Root Cause: database connection pool exhausted" in resolved
