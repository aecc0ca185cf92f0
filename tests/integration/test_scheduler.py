"""The plan's clock with no notebook open: pages, reminders and the ticket at the right minutes, exactly once.

PagerDuty, Slack and Jira are one loopback HTTP server that answers as each provider does and logs
every request; the scheduler talks to it through the real senders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import irkit.record
from irkit.config import Settings, load_config
from irkit.record import Record
from irkit.scenarios.launch import serve_process
from irkit.scheduler import tick
from irkit.severity import BusinessHours

T0 = datetime(2025, 11, 20, 14, 32, tzinfo=UTC)
ENV = {
    "SLACK_WEBHOOK_URL": "",  # filled with the provider's URL
    "PD_KEY": "R0UTINGKEY0000000000000000000000",
    "JIRA_TOKEN": "jira-token-456",
}


class Providers(BaseHTTPRequestHandler):
    """PagerDuty (202 + dedup_key), Jira (201 + key) and a Slack webhook (200 ok), logging each request."""

    log: ClassVar[list[dict[str, Any]]] = []
    fail_pagerduty: ClassVar[int] = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_PATCH(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
        Providers.log.append({"path": self.path, "body": body, "at": time.monotonic()})
        if self.path.startswith("/v2/enqueue"):
            if Providers.fail_pagerduty > 0:
                Providers.fail_pagerduty -= 1
                status, answer = 503, {"status": "unavailable"}
            else:
                status, answer = 202, {"status": "success", "dedup_key": body.get("dedup_key")}
        elif self.path.startswith("/rest/api/2/issue"):
            status, answer = 201, {"key": f"OPS-{len(Providers.log)}"}
        elif self.path.startswith("/pages/"):
            status, answer = 201, {"id": "sp-1", "shortlink": "https://stspg.io/sp-1"}
        else:
            status, answer = 200, "ok"
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def providers() -> Iterator[str]:
    Providers.log, Providers.fail_pagerduty = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Providers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def config(url: str) -> dict[str, Any]:
    return {
        "comms": {
            "slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"},
            "pagerduty": {"routing_key_env": "PD_KEY", "url": f"{url}/v2/enqueue"},
            "jira": {"url": url, "project": "OPS", "email": "sre@example.com", "token_env": "JIRA_TOKEN"},
            "timeout_s": 2,
            "retries": 1,
            "backoff_s": 0.01,
        },
        "kubernetes": {"kubeconfig": "/nonexistent"},
    }


def settings_and_env(tmp_path: Path, url: str) -> tuple[Path, Settings, dict[str, str]]:
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(yaml.safe_dump(config(url)))
    env = {**ENV, "SLACK_WEBHOOK_URL": f"{url}/services/T000/B000/XXXX"}
    return cfg, load_config(cfg, env), env


def replayed_incident(records: Path, severity: str, iid: str = "INC-CLOCK-1") -> Record:
    rec = Record.create(
        records,
        iid,
        title="Schema Registry error rate above 10%",
        service="schema-registry",
        severity=severity,
        actor="alertmanager",
        detected_at=T0,
        clock=lambda: T0,
        data={"replay": True},
    )
    return rec


def pages(log: list[dict[str, Any]], action: str = "trigger") -> list[str]:
    return [
        r["body"]["dedup_key"].split("-", 3)[-1]
        for r in log
        if r["path"] == "/v2/enqueue" and r["body"]["event_action"] == action
    ]


def minute_of(rec: Record, etype: str, key: str) -> int:
    [ev] = [e for e in rec.events() if e["type"] == etype and e["data"].get("key") == key]
    return int((datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")) - T0).total_seconds() // 60)


def test_a_p0_over_90_minutes_pages_reminds_and_tickets_once_each_across_a_restart(
    tmp_path: Path, records: Path, providers: str
) -> None:
    cfg, settings, env = settings_and_env(tmp_path, providers)
    replayed_incident(records, "P0")
    for minute in range(0, 46):
        tick(records, settings, env, now=T0 + timedelta(minutes=minute), actor="irkit-serve")
    # The restart: new processes with nothing in memory, the same minute twice, then the rest.
    for minute in (46, 46):
        res = subprocess.run(
            [sys.executable, "-m", "irkit.cli", "tick", "--at", (T0 + timedelta(minutes=minute)).isoformat(),
             "--records", str(records), "--config", str(cfg)],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    irkit.record._TAILS.clear()
    settings = load_config(cfg, env)
    for minute in range(47, 91):
        tick(records, settings, env, now=T0 + timedelta(minutes=minute), actor="irkit-serve")

    rec = Record.open(records, "INC-CLOCK-1")
    assert rec.verify().ok
    assert sorted(pages(Providers.log)) == sorted(
        [
            "escalation-page-on-call-sre",
            "escalation-page-engineering-manager",
            "escalation-page-secondary-on-call",
            "escalation-page-engineering-lead",
            "escalation-page-cto",
            f"update-late-{T0.year}-11-20t14-47-00z",
        ]
    ), pages(Providers.log)
    assert [r["path"] for r in Providers.log].count("/rest/api/2/issue") == 1
    assert [r["path"] for r in Providers.log].count("/services/T000/B000/XXXX") == 1  # one reminder
    assert minute_of(rec, "escalation.paged", "escalation:page:On-call SRE") == 0
    assert minute_of(rec, "escalation.paged", "escalation:page:Engineering Manager") == 0  # P0: at once
    assert minute_of(rec, "comms.sent", "ticket") == 0
    assert rec.state()["providers"]["jira"].startswith("OPS-")  # the ticket key, kept for the messages
    assert minute_of(rec, "escalation.paged", "escalation:page:Secondary on-call") == 5  # nobody acknowledged
    assert minute_of(rec, "escalation.paged", "escalation:page:Engineering Lead") == 15
    assert minute_of(rec, "update.reminded", "update:2025-11-20T14:47:00Z") == 15
    assert minute_of(rec, "update.escalated", "update:2025-11-20T14:47:00Z".replace("update:", "update-late:")) == 30
    assert minute_of(rec, "escalation.paged", "escalation:page:CTO") == 60
    reminder = next(r for r in Providers.log if r["path"].startswith("/services"))["body"]["text"]
    assert "stakeholder update was due at 14:47 UTC" in reminder and "irkit comms INC-CLOCK-1 send initial" in reminder


def test_acknowledgement_spares_the_secondary_and_a_p1_never_pages_the_cto(
    tmp_path: Path, records: Path, providers: str
) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    rec = replayed_incident(records, "P1")
    tick(records, settings, env, now=T0, actor="irkit-serve")
    rec.clock = lambda: T0 + timedelta(minutes=3)
    rec.set_status("acknowledged", actor="alice")
    for minute in range(1, 91):
        tick(records, settings, env, now=T0 + timedelta(minutes=minute), actor="irkit-serve")
    assert sorted(pages(Providers.log)) == [
        "escalation-page-engineering-lead",
        "escalation-page-engineering-manager",
        "escalation-page-on-call-sre",
        "update-late-2025-11-20t15-02-00z",  # P1 updates every 30 min: due 15:02, a page at 15:32
    ]
    late = next(r for r in Providers.log if r["body"].get("dedup_key", "").endswith("update-late-2025-11-20t15-02-00z"))
    assert late["body"]["payload"]["custom_details"]["who"] == "alice"  # the incident commander: who acknowledged


def test_a_stakeholder_message_resets_the_update_clock_a_page_does_not(records: Path) -> None:
    rec = replayed_incident(records, "P1")
    rec.clock = lambda: T0 + timedelta(minutes=10)
    rec.append("comms.sent", {"kind": "page", "channel": "pagerduty", "response_id": "x"}, actor="t")
    assert rec.state()["last_update_at"] is None
    rec.append("comms.sent", {"kind": "slack_initial", "channel": "slack", "response_id": "ok"}, actor="t")
    assert rec.state()["last_update_at"] == "2025-11-20T14:42:00Z"


def test_p2_notifies_without_a_page_and_p3_only_opens_a_ticket(tmp_path: Path, records: Path, providers: str) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    replayed_incident(records, "P2", "INC-CLOCK-2")
    replayed_incident(records, "P3", "INC-CLOCK-3")
    tick(records, settings, env, now=T0, actor="irkit-serve")
    assert pages(Providers.log) == []
    paths = [r["path"] for r in Providers.log]
    assert paths.count("/rest/api/2/issue") == 2  # plan 1.2: every incident but P4 gets its ticket
    notify = [r["body"]["text"] for r in Providers.log if r["path"].startswith("/services")]
    assert len(notify) == 1 and "notify, no page" in notify[0] and "[P2]" in notify[0]


def test_a_failed_page_is_retried_after_five_minutes_and_recorded(tmp_path: Path, records: Path, providers: str) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    rec = replayed_incident(records, "P1")
    Providers.fail_pagerduty = 1  # the first page fails (comms.retries=1: one attempt per pass)
    tick(records, settings, env, now=T0, actor="irkit-serve")
    tick(records, settings, env, now=T0 + timedelta(minutes=2), actor="irkit-serve")
    failed = [e["data"] for e in rec.events() if e["type"] == "comms.failed"]
    assert [f["key"] for f in failed] == ["escalation:page:On-call SRE"] and "HTTP 503" in failed[0]["error"]
    tick(records, settings, env, now=T0 + timedelta(minutes=5), actor="irkit-serve")
    assert minute_of(rec, "escalation.paged", "escalation:page:On-call SRE") == 5


def test_without_channels_a_due_step_is_recorded_once_as_unsent(records: Path) -> None:
    rec = replayed_incident(records, "P0")
    settings = load_config(None, {})
    for minute in (0, 1, 16):
        tick(records, settings, {}, now=T0 + timedelta(minutes=minute), actor="irkit-serve")
    unsent = [e["data"]["key"] for e in rec.events() if e["type"] == "escalation.unsent"]
    assert sorted(unsent) == sorted(
        [
            "escalation:page:On-call SRE",
            "escalation:page:Engineering Manager",
            "escalation:page:Secondary on-call",
            "escalation:page:Engineering Lead",
        ]
    )
    reminded = [e["data"] for e in rec.events() if e["type"] == "update.reminded"]
    assert len(reminded) == 1 and reminded[0]["delivered"] is False


def test_a_live_record_ignores_a_replayed_moment(records: Path) -> None:
    Record.create(records, "INC-LIVE-1", title="t", service="s", severity="P0", actor="am")
    lines = tick(records, load_config(None, {}), {}, now=T0)
    assert lines == {"INC-LIVE-1": ["not a replay: evaluated at the real time only"]}


def test_business_hours_move_p2_and_p3_response_clocks_but_not_p1() -> None:
    cal = BusinessHours(timezone="Europe/Berlin", days=(0, 1, 2, 3, 4), start="09:00", end="17:00")
    friday_late = datetime(2025, 11, 21, 15, 30, tzinfo=UTC)  # 16:30 in Berlin
    assert cal.add(friday_late, timedelta(hours=1)) == datetime(2025, 11, 24, 8, 30, tzinfo=UTC)  # Mon 09:30
    assert cal.add(datetime(2025, 11, 22, 10, 0, tzinfo=UTC), timedelta(hours=4)) == datetime(
        2025, 11, 24, 12, 0, tzinfo=UTC
    )
    policy = load_config(None, {}).severity.model_copy(update={"calendar": cal})
    assert policy.response_due("P2", friday_late) == datetime(2025, 11, 24, 8, 30, tzinfo=UTC)
    assert policy.response_due("P1", friday_late) == friday_late + timedelta(minutes=15)


def test_irkit_serve_ticks_on_its_own_and_a_restart_pages_nobody_twice(
    tmp_path: Path, records: Path, providers: str
) -> None:
    cfg_data = {**config(providers), "serve": {"token_env": "WEBHOOK_TOKEN", "runbooks": [], "tick_s": 0.5}}
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump(cfg_data))
    env = {**os.environ, **ENV, "SLACK_WEBHOOK_URL": f"{providers}/services/T000/B000/XXXX", "WEBHOOK_TOKEN": "t" * 32}
    Record.create(
        records,
        "INC-SERVE-1",
        title="all pods down",
        service="schema-registry",
        severity="P0",
        actor="am",
        detected_at=datetime.now(UTC) - timedelta(minutes=31),
    )
    expected = {
        "escalation-page-on-call-sre",
        "escalation-page-engineering-manager",
        "escalation-page-secondary-on-call",
        "escalation-page-engineering-lead",
    }
    for _run in range(2):
        with serve_process(records, cfg, env=env, log=tmp_path / "serve.log") as (_url, _proc):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not expected <= set(pages(Providers.log)):
                time.sleep(0.2)
            time.sleep(1.5)  # three more passes
    got = pages(Providers.log)
    assert set(got) - {p for p in got if p.startswith("update-late")} == expected, got
    assert len(got) == len(set(got)), got  # nothing paged twice across the restart


def test_an_overdue_review_is_flagged_in_show_list_and_the_index(cli, records: Path) -> None:
    rec = replayed_incident(records, "P1")
    for minutes, status in ((3, "acknowledged"), (5, "investigating"), (40, "monitoring"), (60, "resolved")):
        rec.clock = lambda m=minutes: T0 + timedelta(minutes=m)
        rec.set_status(status, actor="alice")
    shown = cli("show", "INC-CLOCK-1", "--records", str(records), "--json")
    assert json.loads(shown.stdout)["overdue"]["review"] is False  # 24–48 h: not yet
    rec.clock = lambda: T0 + timedelta(days=3)
    rec.note("three days later, still no review", actor="alice")
    shown = cli("show", "INC-CLOCK-1", "--records", str(records), "--json")
    assert json.loads(shown.stdout)["overdue"]["review"] is True
    review_row = next(ln for ln in cli("show", "INC-CLOCK-1", "--records", str(records)).stdout.splitlines() if "review window" in ln)
    assert "OVERDUE" in review_row
    assert "REVIEW OVERDUE" in cli("list", "--records", str(records)).stdout
    index = cli("index", "--records", str(records))
    assert index.exit_code == 0, index.stderr
    assert "review overdue" in (records / "index.html").read_text()
    rec.clock = lambda: T0 + timedelta(days=3, hours=1)
    rec.set_status("reviewed", actor="alice")
    assert "REVIEW OVERDUE" not in cli("list", "--records", str(records)).stdout


def test_pagerduty_alerts_follow_the_incident_acknowledged_then_resolved(
    tmp_path: Path, records: Path, providers: str
) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    rec = replayed_incident(records, "P1")
    tick(records, settings, env, now=T0, actor="irkit-serve")
    assert pages(Providers.log) == ["escalation-page-on-call-sre"] and pages(Providers.log, "acknowledge") == []
    rec.clock = lambda: T0 + timedelta(minutes=3)
    rec.set_status("acknowledged", actor="alice")
    for minute in (4, 5, 16, 31):
        tick(records, settings, env, now=T0 + timedelta(minutes=minute), actor="irkit-serve")
    # the page answered by the acknowledgement is acknowledged, once; escalations paged after it stay
    # open in PagerDuty (someone else is being called in) until the incident is resolved
    assert pages(Providers.log, "acknowledge") == ["escalation-page-on-call-sre"]
    for minutes, status in ((20, "investigating"), (30, "monitoring"), (70, "resolved")):
        rec.clock = lambda m=minutes: T0 + timedelta(minutes=m)
        rec.set_status(status, actor="alice")
    tick(records, settings, env, now=T0 + timedelta(minutes=71), actor="irkit-serve")
    tick(records, settings, env, now=T0 + timedelta(minutes=72), actor="irkit-serve")
    opened = [k.split("-", 3)[-1] for k in rec.state()["providers"]["pagerduty"]]
    assert sorted(pages(Providers.log, "resolve")) == sorted(opened)
    assert len(pages(Providers.log, "resolve")) == 3  # on-call SRE, Engineering Lead, Engineering Manager


def test_statuspage_updates_and_resolves_the_incident_it_opened(
    cli, tmp_path: Path, records: Path, providers: str
) -> None:
    from irkit import comms

    cfg = {**config(providers)["comms"], "statuspage": {"page_id": "pg1", "api_key_env": "SP_KEY", "url": providers}}
    settings = load_config(None, {"IRKIT_COMMS": json.dumps(cfg)})
    env = {"SP_KEY": "sp-key"}
    rec = replayed_incident(records, "P1")
    for kind in ("statuspage_initial", "statuspage_initial", "statuspage_resolved"):
        message = comms.render(rec, settings, kind, now=T0, actor="t")
        assert comms.deliver(rec, settings, env, message, actor="t").ok
    calls = [(r["path"], r["body"]["incident"].get("status")) for r in Providers.log]
    assert calls[0] == ("/pages/pg1/incidents", "investigating")
    assert calls[1:] == [("/pages/pg1/incidents/sp-1", "investigating"), ("/pages/pg1/incidents/sp-1", "resolved")]
    assert rec.state()["providers"]["statuspage"] == "sp-1"
    assert json.loads(cli("show", "INC-CLOCK-1", "--records", str(records), "--json").stdout)["providers"]["statuspage"] == "sp-1"


def test_irkit_comms_send_ticket_opens_one_ticket_and_messages_carry_its_key(
    cli, tmp_path: Path, records: Path, providers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _, env = settings_and_env(tmp_path, providers)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    replayed_incident(records, "P2")
    first = cli("comms", "INC-CLOCK-1", "send", "ticket", "--records", str(records), "--config", str(cfg))
    again = cli("comms", "INC-CLOCK-1", "send", "ticket", "--records", str(records), "--config", str(cfg))
    assert first.exit_code == 0 and again.exit_code == 0, first.stderr + again.stderr
    assert first.stdout.startswith("ticket: OPS-") and "(already open)" in again.stdout
    assert [r["path"] for r in Providers.log].count("/rest/api/2/issue") == 1
    issue = next(r["body"]["fields"] for r in Providers.log if r["path"] == "/rest/api/2/issue")
    assert issue["summary"].startswith("[P2]") and "Record: irkit show INC-CLOCK-1" in issue["description"]
    shown = cli("comms", "INC-CLOCK-1", "render", "slack_initial", "--records", str(records), "--config", str(cfg))
    assert f"Ticket: {providers}/browse/OPS-" in shown.stdout


def _tick_in_child(records: str, cfg: str, env: dict[str, str], at: str, barrier: Any) -> None:
    settings = load_config(cfg, env)
    barrier.wait()
    tick(records, settings, env, now=datetime.fromisoformat(at), actor="serve-b")


def test_two_serve_processes_at_the_same_minute_page_once(tmp_path: Path, records: Path, providers: str) -> None:
    import multiprocessing

    cfg, _, env = settings_and_env(tmp_path, providers)
    replayed_incident(records, "P0")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_tick_in_child, args=(str(records), str(cfg), env, T0.isoformat(), barrier))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(pages(Providers.log)) == ["escalation-page-engineering-manager", "escalation-page-on-call-sre"]
    assert [r["path"] for r in Providers.log].count("/rest/api/2/issue") == 1


def test_the_session_opens_one_ticket_however_many_ask_at_once(tmp_path: Path, records: Path, providers: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from irkit.session import Session

    _, settings, env = settings_and_env(tmp_path, providers)
    rec = replayed_incident(records, "P1")
    sessions = [Session(Record.open(records, rec.id), settings, actor=f"r{i}", batch=False, environ=env) for i in range(4)]
    for s in sessions:
        s.record.clock = lambda: T0 + timedelta(minutes=2)
    with ThreadPoolExecutor(4) as pool:
        said = list(pool.map(lambda s: s.open_ticket(), sessions))
    assert [r["path"] for r in Providers.log].count("/rest/api/2/issue") == 1
    assert sum("(already open)" in line for line in said) == 3 and all(line.startswith("ticket OPS-") for line in said)
    unconfigured = Session(rec, load_config(None, {}), actor="a", batch=False)
    assert unconfigured.open_ticket().startswith("no ticket system configured")


def test_tick_skips_a_record_that_does_not_verify_and_says_so(cli, records: Path) -> None:
    rec = replayed_incident(records, "P0")
    replayed_incident(records, "P1", "INC-CLOCK-2")
    with rec.events_path.open("ab") as fh:
        fh.write(b'{"seq": 99}\n')  # a forged line
    res = cli("tick", "--at", T0.isoformat(), "--records", str(records))
    assert res.exit_code == 1 and "INC-CLOCK-1: does not verify, nothing done" in res.stdout
    assert "INC-CLOCK-2: page On-call SRE" in res.stdout  # the others are still evaluated
    assert not [e for e in Record.open(records, "INC-CLOCK-2").events() if e["type"] == "comms.failed"]



def test_irkit_serve_never_pages_for_a_replayed_incident(records: Path, tmp_path: Path, providers: str) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    replayed_incident(records, "P0")  # a year-old replay: every rung would be overdue today
    assert tick(records, settings, env, actor="irkit-serve") == {}  # what the Ticker calls: no --at
    assert Providers.log == []


def test_a_p2_raised_to_p1_still_pages_the_primary(tmp_path: Path, records: Path, providers: str) -> None:
    _, settings, env = settings_and_env(tmp_path, providers)
    rec = replayed_incident(records, "P2")
    tick(records, settings, env, now=T0, actor="irkit-serve")  # P2: a Slack notification, no page
    assert pages(Providers.log) == []
    rec.clock = lambda: T0 + timedelta(minutes=2)
    rec.set_severity("P1", actor="alice", reason="error rate above 10%")
    tick(records, settings, env, now=T0 + timedelta(minutes=3), actor="irkit-serve")
    assert "escalation-page-on-call-sre" in pages(Providers.log)
