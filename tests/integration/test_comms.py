"""Messages, senders against loopback servers (HTTP and a real SMTP server), rotation and escalation."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from irkit import comms
from irkit.config import load_config
from irkit.oncall import RotationSettings, handovers, ladder, on_call
from irkit.record import Record
from irkit.scenarios.tsdb import free_port

EVIL = '<!channel> <script>alert("x")</script> & more'


class _Recorder(BaseHTTPRequestHandler):
    """Answers each POST from a per-test script: (status, body, delay) per call; logs every request."""

    script: ClassVar[list[tuple[int, Any, float]]] = []
    log: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
        self.log.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, payload, delay = self.script.pop(0) if self.script else (200, "ok", 0.0)
        time.sleep(delay)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)


@pytest.fixture
def http() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("R", (_Recorder,), {"script": [], "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def incident(
    records: Path,
    *,
    title: str = "Schema Registry error rate above 10%",
    severity: str | None = "P1",
    detected_ago: timedelta = timedelta(minutes=5),
) -> Record:
    rec = Record.create(
        records,
        "INC-COMMS-1",
        title=title,
        service="schema-registry",
        severity=severity,
        actor="am",
        detected_at=datetime.now(UTC) - detected_ago,
    )
    if severity:
        rec.set_severity(severity, actor="am", reason="alert label")
    return rec


def settings_for(url: str, **extra: Any):
    cfg = {
        "slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"},
        "pagerduty": {"routing_key_env": "PD_KEY", "url": f"{url}/v2/enqueue"},
        "statuspage": {"page_id": "pg123", "api_key_env": "SP_KEY", "url": f"{url}/v1"},
        "jira": {"url": url, "project": "OPS", "email": "sre@example.com", "token_env": "JIRA_TOKEN"},
        "timeout_s": 0.5,
        "retries": 3,
        "backoff_s": 0.01,
        **extra,
    }
    return load_config(None, {"IRKIT_COMMS": json.dumps(cfg)})


def env_for(url: str) -> dict[str, str]:
    return {
        "SLACK_WEBHOOK_URL": f"{url}/services/T000/B000/XXXX",
        "PD_KEY": "R0UTINGKEY0000000000000000000000",
        "SP_KEY": "sp-api-key-123",
        "JIRA_TOKEN": "jira-token-456",
    }


def test_slack_webhook_request_format_and_escaping(http, records: Path) -> None:
    url, h = http
    rec = incident(records, title=EVIL)
    s = settings_for(url)
    msg = comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t")
    res = comms.deliver(rec, s, env_for(url), msg, actor="t")
    assert res.ok and res.attempts == 1
    req = h.log[-1]
    assert req["path"] == "/services/T000/B000/XXXX"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["body"]
    assert body["channel"] == "#incidents"  # comms.slack.channel
    assert body["text"].startswith("🚨 INCIDENT ALERT") and [b["type"] for b in body["blocks"]] == [
        "header",
        "section",
        "context",
    ]
    assert "<!channel>" not in json.dumps(body), json.dumps(body)[:3000]
    assert "&lt;!channel&gt;" in body["text"]
    sent = [e for e in rec.events() if e["type"] == "comms.sent"][-1]["data"]
    assert sent["channel"] == "slack" and sent["kind"] == "slack_initial"


def test_pagerduty_events_v2_trigger_acknowledge_resolve(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    pd = comms.sender_for("pagerduty", s, env_for(url))
    assert isinstance(pd, comms.PagerDutySender)
    for action in ("trigger", "acknowledge", "resolve"):
        h.script.append((202, {"status": "success", "message": "Event processed", "dedup_key": rec.id}, 0))
        res = pd.event(action, rec.id, "[P1] Schema Registry error rate above 10%", "P1", "Schema Registry")
        assert res.ok and res.response_id == rec.id
    bodies = [r["body"] for r in h.log]
    assert [r["path"] for r in h.log] == ["/v2/enqueue"] * 3
    assert [b["event_action"] for b in bodies] == ["trigger", "acknowledge", "resolve"]
    assert all(b["dedup_key"] == rec.id and b["routing_key"] == "R0UTINGKEY0000000000000000000000" for b in bodies)
    assert bodies[0]["payload"] == {
        "summary": "[P1] Schema Registry error rate above 10%",
        "source": "irkit",
        "severity": "critical",
        "component": "Schema Registry",
        "custom_details": {},
    }
    assert "payload" not in bodies[1] and "payload" not in bodies[2]


def test_statuspage_and_jira_request_formats(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    h.script += [
        (201, {"id": "p0abc123", "shortlink": "https://stspg.io/x"}, 0),
        (201, {"id": "10001", "key": "OPS-42"}, 0),
    ]
    sp = comms.deliver(
        rec, s, env_for(url), comms.render(rec, s, "statuspage_initial", now=datetime.now(UTC), actor="t"), actor="t"
    )
    assert sp.ok and sp.response_id == "p0abc123"
    req = h.log[-1]
    assert req["path"] == "/v1/pages/pg123/incidents" and req["headers"]["Authorization"] == "OAuth sp-api-key-123"
    assert req["body"]["incident"]["status"] == "investigating"
    assert req["body"]["incident"]["name"] == "Schema Registry Service Degradation"
    msg = comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t")
    jira = comms.deliver(rec, s, env_for(url), msg, actor="t", channel="jira")
    assert jira.ok and jira.response_id == "OPS-42"
    req = h.log[-1]
    assert req["path"] == "/rest/api/2/issue"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"sre@example.com:jira-token-456").decode()
    fields = req["body"]["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Incident"}
    assert fields["summary"].startswith("[P1] Schema Registry error rate above 10%")
    # the ticket now appears in later messages
    later = comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t")
    assert f"Ticket: {url}/browse/OPS-42" in later.text


def test_a_500_is_retried_then_recorded_as_failed(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    h.script += [(500, "boom", 0)] * 3
    res = comms.deliver(
        rec, s, env_for(url), comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t"), actor="t"
    )
    assert not res.ok and res.attempts == 3 and "HTTP 500" in res.error
    assert len(h.log) == 3
    failed = [e for e in rec.events() if e["type"] == "comms.failed"][-1]["data"]
    assert failed["channel"] == "slack" and failed["attempts"] == 3


def test_a_timeout_is_retried_then_recorded_as_failed(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    h.script += [(200, "ok", 1.5)] * 3
    res = comms.deliver(
        rec, s, env_for(url), comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t"), actor="t"
    )
    assert not res.ok and res.attempts == 3 and "Timeout" in res.error
    assert any(e["type"] == "comms.failed" for e in rec.events())


def test_a_retry_that_succeeds_is_sent(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    h.script += [(503, "busy", 0), (200, "ok", 0)]
    res = comms.deliver(
        rec, s, env_for(url), comms.render(rec, s, "slack_initial", now=datetime.now(UTC), actor="t"), actor="t"
    )
    assert res.ok and res.attempts == 2


def test_smtp_email_through_a_real_smtp_server(records: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    port = free_port()
    ctl = Controller(Keep(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        rec = incident(records, title=EVIL)
        s = load_config(
            None,
            {
                "IRKIT_COMMS": json.dumps(
                    {"smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "to": ["stakeholders@example.com"]}}
                )
            },
        )
        msg = comms.render(rec, s, "email_stakeholders", now=datetime.now(UTC), actor="t")
        res = comms.deliver(rec, s, {}, msg, actor="t")
    finally:
        ctl.stop()
    assert res.ok, res.error
    assert len(received) == 1
    m = received[0]
    subject = " ".join(str(m["Subject"]).split())  # unfold the long header
    assert m["To"] == "stakeholders@example.com" and subject.startswith("[P1] Schema Registry Incident - ")
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in m.walk() if not p.is_multipart()}
    assert "Incident Commander:" in parts["text/plain"]
    assert "<script>" not in parts["text/html"] and "&lt;script&gt;" in parts["text/html"]


def test_templates_render_every_field_and_unknowns_read_as_unknown(records: Path) -> None:
    rec = incident(records, severity=None)
    s = load_config(None, {})
    for kind in comms.KINDS:
        msg = comms.render(rec, s, kind, now=datetime.now(UTC), actor="t")
        assert "None" not in msg.text and "{{" not in msg.text
        assert "not yet assessed" in msg.text, kind  # no severity yet: every message says so
    assert not comms.applicable("email_stakeholders", "P2", s) and comms.applicable("email_stakeholders", "P0", s)
    p2_email = load_config(None, {"IRKIT_SEVERITY": json.dumps({"levels": {"P2": {"stakeholder_email": True}}})})
    assert comms.applicable("email_stakeholders", "P2", p2_email)  # the policy's override is honoured
    assert (rec.path / "comms" / "01-slack_initial.txt").is_file()
    assert rec.verify().ok


# --------------------------------------------------------------------------- rotation and ladder


def test_rotation_handover_across_time_zones_and_dst() -> None:
    ny = RotationSettings(primary=("Ana", "Ben", "Cy"), start=datetime(2026, 3, 2, 9, 0), timezone="America/New_York")
    # DST starts 2026-03-08 in New York: the 09:00 handover moves from 14:00 UTC to 13:00 UTC.
    assert on_call(ny, datetime(2026, 3, 2, 14, 0, tzinfo=UTC)).primary == "Ana"
    assert on_call(ny, datetime(2026, 3, 9, 12, 59, tzinfo=UTC)).primary == "Ana"
    assert on_call(ny, datetime(2026, 3, 9, 13, 0, tzinfo=UTC)).primary == "Ben"
    hand = handovers(ny, datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC))
    assert [(h[0].astimezone(UTC).hour, h[1], h[2]) for h in hand] == [(13, "Ana", "Ben"), (13, "Ben", "Cy")]
    berlin = RotationSettings(primary=("Dora", "Emil"), start=datetime(2026, 3, 23, 9, 0), timezone="Europe/Berlin")
    # Berlin's DST starts 2026-03-29: handover 09:00 local is 08:00 UTC before, 07:00 UTC after.
    assert on_call(berlin, datetime(2026, 3, 23, 8, 0, tzinfo=UTC)).primary == "Dora"
    assert on_call(berlin, datetime(2026, 3, 30, 6, 59, tzinfo=UTC)).primary == "Dora"
    assert on_call(berlin, datetime(2026, 3, 30, 7, 0, tzinfo=UTC)).primary == "Emil"
    with pytest.raises(Exception, match="time zone"):
        RotationSettings(timezone="Mars/Olympus")


def test_ladder_for_an_incident_acknowledged_late(records: Path) -> None:
    s = load_config(None, {})
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    rec = Record.create(records, "INC-LADDER-1", title="t", service="s", severity="P1", actor="am", detected_at=t0)
    rec.set_status("acknowledged", actor="late-larry")
    state = rec.state()
    state["status_times"]["acknowledged"] = (t0 + timedelta(minutes=20)).isoformat()
    steps = {x.role: x for x in ladder(s.escalation, s.rotation, state, rec.events(), t0 + timedelta(minutes=35))}
    assert (
        steps["On-call SRE"].state == "engaged (late)" and steps["On-call SRE"].who == on_call(s.rotation, t0).primary
    )
    assert (
        steps["Engineering Lead"].due_at == t0 + timedelta(minutes=15) and steps["Engineering Lead"].state == "OVERDUE"
    )
    assert steps["Engineering Manager"].state == "OVERDUE"
    assert "CTO" not in steps  # the rotation section: CTO for P0 only
    assert steps["Secondary on-call"].state == "missed (acknowledged 10:20)" and not steps["Secondary on-call"].needed
    p0 = {x.role: x for x in ladder(s.escalation, s.rotation, {**state, "severity": "P0"}, [], t0)}
    assert p0["Engineering Manager"].due_at == t0 and p0["CTO"].due_at == t0 + timedelta(minutes=60)
    p2 = ladder(s.escalation, s.rotation, {**state, "severity": "P2"}, [], t0)
    assert [(x.role, x.action) for x in p2] == [("On-call SRE", "notify")]
    assert ladder(s.escalation, s.rotation, {**state, "severity": "P4"}, [], t0) == []


def test_show_flags_overdue_update_and_due_escalations(cli, records: Path) -> None:
    incident(records, detected_ago=timedelta(minutes=40))
    res = cli("show", "INC-COMMS-1", "--records", str(records))
    assert res.exit_code == 0, res.stderr
    lines = {ln.split()[0] + " " + ln.split()[1]: ln for ln in res.stdout.splitlines() if ln.startswith("  ")}
    assert "OVERDUE" in lines["next update"]
    assert "OVERDUE" in next(ln for ln in res.stdout.splitlines() if "Engineering Lead" in ln)
    assert "OVERDUE" in next(ln for ln in res.stdout.splitlines() if "Engineering Manager" in ln)
    data = json.loads(cli("show", "INC-COMMS-1", "--records", str(records), "--json").stdout)
    assert data["overdue"]["update"] is True
    assert {e["role"]: e["state"] for e in data["escalations"]}["Engineering Lead"] == "OVERDUE"


def test_re_running_communicate_does_not_pile_up_or_resend_unchanged_messages(http, records: Path) -> None:
    url, h = http
    rec = incident(records)
    s = settings_for(url)
    now = datetime.now(UTC)
    first, results = comms.communicate(rec, s, env_for(url), "initial", send=True, now=now, actor="t")
    ok = {r.kind: bool(res and res.ok) for r, res in zip(first, results, strict=True)}
    assert all(r.new for r in first) and ok["slack_initial"] and not ok["email_stakeholders"]  # no SMTP server
    requests_before = len(h.log)
    again, results = comms.communicate(rec, s, env_for(url), "initial", send=True, now=now + timedelta(minutes=3), actor="t")
    assert [r.path for r in again] == [r.path for r in first] and not any(r.new for r in again)
    retried = {r.kind: res is not None for r, res in zip(again, results, strict=True)}
    # Nothing delivered is sent twice; what never went out (the email: no SMTP server) is tried again.
    assert retried == {kind: not delivered for kind, delivered in ok.items()}
    assert len(h.log) == requests_before + (not ok["statuspage_initial"])
    renders = [e for e in rec.events() if e["type"] == "comms.rendered"]
    assert len(renders) == len(first)
    rec.set_severity("P0", actor="t", reason="worse")  # the content changed: a new message, sent again
    changed, _ = comms.communicate(rec, s, env_for(url), "initial", send=True, now=now, actor="t")
    assert any(r.new and r.kind == "slack_initial" for r in changed) and len(h.log) > requests_before


def test_the_initial_set_on_a_resolved_incident_is_the_resolved_set(records: Path) -> None:
    rec = incident(records)
    for status in ("acknowledged", "investigating", "mitigating", "monitoring", "resolved"):
        rec.set_status(status, actor="t")
    s = load_config(None, {})
    rendered, _ = comms.communicate(rec, s, {}, "initial", send=False, now=datetime.now(UTC), actor="t")
    assert [r.kind for r in rendered] == ["slack_resolved", "statuspage_resolved"]
    assert not any("INCIDENT ALERT" in r.text for r in rendered)
