"""irkit serve: authentication, validation, grouping, durability, and end to end with real Alertmanager
and Prometheus."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
import yaml
from starlette.testclient import TestClient

from irkit.alerts import parse_notification
from irkit.config import load_config
from irkit.intake import Intake, Queue
from irkit.record import Record, list_incidents
from irkit.scenarios.launch import serve_process
from irkit.scenarios.tsdb import free_port
from irkit.serve import create_app
from support import wait_for

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-webhook-token-0123456789"
ENV = {"WEBHOOK_TOKEN": TOKEN}


def payload(
    group: str = "g1",
    status: str = "firing",
    labels: dict[str, str] | None = None,
    starts: str = "2025-11-20T14:32:00Z",
    n: int = 1,
) -> dict[str, Any]:
    labels = {
        "alertname": "SchemaRegistryHighErrorRate",
        "service": "schema-registry",
        "severity": "P1",
        **(labels or {}),
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{group="{group}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "irkit",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {"summary": labels.get("summary", "error rate above 10%")},
        "externalURL": "",
        "alerts": [
            {
                "status": status,
                "labels": {**labels, "instance": f"i{i}"},
                "annotations": {},
                "startsAt": starts,
                "endsAt": "2025-11-20T14:47:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                "fingerprint": f"{group}-{i}",
            }
            for i in range(n)
        ],
    }


@pytest.fixture
def settings(tmp_path: Path):
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(yaml.safe_dump({"serve": {"token_env": "WEBHOOK_TOKEN", "max_body_bytes": 65536}}))
    return load_config(cfg, ENV, required=True)


@pytest.fixture
def client(settings, records: Path) -> Iterator[TestClient]:
    app = create_app(settings, ENV, records, start_workers=False)
    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --------------------------------------------------------------------------- the HTTP edge


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}],
)
def test_missing_or_wrong_credentials_are_401_and_touch_nothing(client: TestClient, records: Path, headers) -> None:
    res = client.post("/alerts", json=payload(), headers=headers)
    assert res.status_code == 401
    assert client.app.state.queue.counts()["notifications_total"] == 0
    assert list_incidents(records) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", 400),
        (json.dumps({**payload(), "version": "3"}).encode(), 422),
        (json.dumps({**payload(), "alerts": []}).encode(), 422),
        (b"x" * 70000, 413),
    ],
    ids=["malformed", "wrong-version", "no-alerts", "oversized"],
)
def test_bad_bodies_are_4xx_with_a_reason(client: TestClient, body: bytes, code: int) -> None:
    res = client.post("/alerts", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert res.status_code == code and res.json()["error"]
    assert client.app.state.queue.counts()["notifications_total"] == 0


def test_accepted_notification_is_persisted_before_200_and_metrics_show_it(client: TestClient) -> None:
    res = client.post("/alerts", json=payload(), headers=AUTH)
    assert res.status_code == 200 and res.json()["accepted"] == 1
    assert client.app.state.queue.pending_notifications() != []
    health = client.get("/healthz").json()
    assert health["ok"] and health["notifications_pending"] == 1
    metrics = client.get("/metrics").text
    assert "irkit_alerts_received_total 1.0" in metrics and "irkit_queue_depth 1.0" in metrics
    client.post("/alerts", json=payload(), headers={"Authorization": "Bearer nope"})
    assert 'irkit_alerts_rejected_total{reason="unauthorized"} 1.0' in client.get("/metrics").text


def test_serve_refuses_to_start_without_credentials(records: Path) -> None:
    from irkit.errors import ConfigError

    with pytest.raises(ConfigError, match="must authenticate"):
        create_app(load_config(None, {}), {}, records, start_workers=False)


# --------------------------------------------------------------------------- grouping


class FakeRun:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, rec: Record, runbook: str, params: Any, **kw: Any) -> Any:
        self.calls.append((rec.id, runbook))
        ev = rec.append("notebook.finished", {"runbook": runbook, "outcome": "ok", "tag": kw.get("tag")}, actor="t")

        class R:
            ok = True

            def summary(self) -> str:
                return "ok"

        del ev
        return R()


def intake(settings, records: Path) -> tuple[Intake, FakeRun]:
    run = FakeRun()
    return Intake(settings, ENV, records, Queue(records / ".irkit" / "q.sqlite"), run), run


def test_grouping_repeat_resolve_and_relink(settings, records: Path) -> None:
    it, _ = intake(settings, records)
    first = it.apply(parse_notification(json.dumps(payload("g1"))))
    again = it.apply(parse_notification(json.dumps(payload("g1", n=2))))  # repeat + a new alert in the group
    other = it.apply(parse_notification(json.dumps(payload("g2"))))
    assert first == again != other
    rec = Record.open(records, first)
    # g1-0 once (the repeat changed nothing), g1-1 once: the timeline shows changes, not repetitions
    assert [e["type"] for e in rec.events()].count("alert.firing") == 2
    before = len(rec.events())
    assert it.apply(parse_notification(json.dumps(payload("g1", n=2)))) == first  # a crash replay, say
    assert len(rec.events()) == before
    assert it.queue.counts()["jobs_queued"] == 2  # one job per new incident
    it.apply(parse_notification(json.dumps(payload("g1", status="resolved", n=2))))
    st = rec.state()
    assert st["alerts_resolved"] is True and st["status"] == "detected"  # marked, not closed: a person closes it
    relinked = it.apply(parse_notification(json.dumps(payload("g1", starts="2025-11-20T15:10:00Z"))))
    assert relinked == first and rec.state()["alerts_resolved"] is False
    # long after the window, the same group opens a new incident
    it.apply(parse_notification(json.dumps(payload("g1", status="resolved"))))
    it.queue.set_group(
        json.loads(json.dumps(payload("g1")))["groupKey"], first, (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    )
    later = it.apply(parse_notification(json.dumps(payload("g1", starts="2025-11-21T09:00:00Z"))))
    assert later != first and len(list_incidents(records)) == 3


def test_jobs_run_each_runbook_once_and_resume_after_interruption(settings, records: Path) -> None:
    it, run = intake(settings, records)
    it.queue.accept(json.dumps(payload("g9")).encode())
    it.process_pending()
    job = it.queue.claim()
    assert job is not None
    # pretend the process died after triage finished: the job is requeued and resumes
    rec = Record.open(records, job[1])
    run(rec, "triage", None, tag=f"job{job[0]}:triage")
    assert it.queue.requeue_interrupted() == 1
    job2 = it.queue.claim()
    assert job2 == job
    result = it.run_job(*job2)
    assert "triage: already ok" in result
    assert run.calls == [(job[1], "triage"), (job[1], "investigation")]


# --------------------------------------------------------------------------- real runs, real servers


@contextlib.contextmanager
def server(
    tmp_path: Path, records: Path, extra: dict[str, Any] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "serve": {"token_env": "WEBHOOK_TOKEN", "workers": 2},
                "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
                "kubernetes": {"kubeconfig": str(tmp_path / "no-kubeconfig")},
                **(extra or {}),
            }
        )
    )
    env = {**os.environ, **ENV, "IRKIT_ACTOR": "irkit-serve"}
    with serve_process(records, cfg, env=env, log=tmp_path / "serve.log") as (url, proc):
        yield url, proc


def finished(records: Path, iid: str) -> list[dict[str, Any]]:
    try:
        return [e["data"] for e in Record.open(records, iid).events() if e["type"] == "notebook.finished"]
    except Exception:
        return []


def test_hostile_label_values_stay_data_into_the_notebook(tmp_path: Path, records: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = {
        "summary": f'"; __import__("os").system("touch {marker}") #\nnext line \'quote\' ✓ 漢字 {{x}}',
        "team": "$(touch /tmp/x) `id` <b>bold</b>",
        "alertname": "$\\undefinedmacro{x}$ HighErrorRate",  # on the figure's alert marker: text, not mathtext
    }
    with server(tmp_path, records) as (url, _):
        res = requests.post(f"{url}/alerts", json=payload("hostile", labels=hostile), headers=AUTH, timeout=10)
        assert res.status_code == 200
        wait_for(lambda: len(list_incidents(records)) == 1, 30, "the incident")
        iid = list_incidents(records)[0]
        wait_for(lambda: len(finished(records, iid)) == 2, 120, "triage and investigation")
    rec = Record.open(records, iid)
    firing = next(e for e in rec.events() if e["type"] == "alert.firing")
    assert firing["data"]["labels"]["summary"] == hostile["summary"]
    assert firing["data"]["labels"]["team"] == hostile["team"]
    assert not marker.exists()
    assert [d["outcome"] for d in finished(records, iid)] == ["ok", "ok"]
    nb = nbformat.read(str(rec.path / "notebooks" / "01-triage.ipynb"), as_version=4)
    assert nb.metadata["irkit"]["batch"] is True and rec.state()["status"] == "detected"  # batch: no acknowledgement
    assert "漢字" in json.dumps(nb.dict(), ensure_ascii=False)
    assert rec.verify().ok


def test_killed_mid_run_then_restarted_completes_exactly_once(tmp_path: Path, records: Path) -> None:
    with server(tmp_path, records) as (url, proc):
        assert requests.post(f"{url}/alerts", json=payload("crash"), headers=AUTH, timeout=10).status_code == 200
        wait_for(lambda: len(list_incidents(records)) == 1, 30, "the incident")
        iid = list_incidents(records)[0]
        wait_for(
            lambda: any(e["type"] == "notebook.started" for e in Record.open(records, iid).events()),
            60,
            "a run in flight",
        )
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its kernel, mid-run
        proc.wait()
    assert len(finished(records, iid)) < 2
    with server(tmp_path, records) as (url, _):
        wait_for(lambda: len(finished(records, iid)) >= 2, 120, "the resumed job")
        time.sleep(1)
        health = requests.get(f"{url}/healthz", timeout=5).json()
    done = finished(records, iid)
    tags = [d["tag"] for d in done]
    assert sorted(tags) == sorted(set(tags)) and len(done) == 2  # each runbook completed exactly once
    assert health.get("jobs_done") == 1
    assert Record.open(records, iid).verify().ok


AM_CONFIG = """
route:
  receiver: irkit
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 2s
receivers:
  - name: irkit
    webhook_configs:
      - url: {url}/alerts
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


@contextlib.contextmanager
def alertmanager(tmp_path: Path, irkit_url: str) -> Iterator[str]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cfg = tmp_path / "am.yml"
    cfg.write_text(AM_CONFIG.format(url=irkit_url, token_file=token))
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={cfg}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{url}/-/ready"), 30, "alertmanager")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_amtool_alert_through_real_alertmanager_opens_an_incident_with_triage(tmp_path: Path, records: Path) -> None:
    with server(tmp_path, records) as (url, _), alertmanager(tmp_path, url) as am:
        subprocess.run(
            [
                "amtool",
                "alert",
                "add",
                "alertname=SchemaRegistryHighErrorRate",
                "service=schema-registry",
                "severity=P1",
                "--annotation=summary=error rate above 10%",
                f"--alertmanager.url={am}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_for(lambda: len(list_incidents(records)) == 1, 60, "the incident")
        iid = list_incidents(records)[0]
        wait_for(lambda: len(finished(records, iid)) == 2, 120, "triage and investigation")
    rec = Record.open(records, iid)
    st = rec.state()
    assert st["severity"] == "P1" and st["title"] == "error rate above 10%"
    assert (rec.path / "notebooks" / "01-triage.ipynb").is_file() and rec.verify().ok


class _Exporter(BaseHTTPRequestHandler):
    """A service exporting a steady 15% error ratio."""

    started = time.monotonic()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        n = (time.monotonic() - self.started) * 100
        lab = 'namespace="schema-registry",service="schema-registry"'
        body = (
            f'# TYPE http_requests_total counter\nhttp_requests_total{{{lab},code="200"}} {n * 0.85}\n'
            f'http_requests_total{{{lab},code="500"}} {n * 0.15}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)


def test_prometheus_rule_firing_on_a_15_percent_exporter(tmp_path: Path, records: Path) -> None:
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "t",
                        "interval": "1s",
                        "rules": [
                            {
                                "alert": "SchemaRegistryErrorRateP1",
                                "expr": 'sum(rate(http_requests_total{code=~"5.."}[10s])) / sum(rate(http_requests_total[10s])) > 0.10',
                                "labels": {"severity": "P1", "service": "schema-registry"},
                                "annotations": {"summary": "Schema Registry error rate above 10%"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    try:
        with server(tmp_path, records) as (url, _), alertmanager(tmp_path, url) as am:
            prom_port = free_port()
            cfg = tmp_path / "prom.yml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [str(rules)],
                        "alerting": {
                            "alertmanagers": [{"static_configs": [{"targets": [am.removeprefix("http://")]}]}]
                        },
                        "scrape_configs": [
                            {
                                "job_name": "schema-registry",
                                "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_address[1]}"]}],
                            }
                        ],
                    }
                )
            )
            prom = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(lambda: len(list_incidents(records)) == 1, 90, "the rule to fire through Alertmanager")
                iid = list_incidents(records)[0]
                wait_for(lambda: any(d["runbook"] == "triage" for d in finished(records, iid)), 120, "triage")
            finally:
                prom.terminate()
                prom.wait(10)
    finally:
        exporter.shutdown()
    rec = Record.open(records, iid)
    assert rec.state()["title"] == "Schema Registry error rate above 10%"
    assert next(d for d in finished(records, iid) if d["runbook"] == "triage")["outcome"] == "ok"


def test_shipped_examples_pass_promtool_and_amtool() -> None:
    rules = subprocess.run(
        ["promtool", "check", "rules", str(REPO / "examples" / "prometheus-rules.yml")], capture_output=True, text=True
    )
    assert rules.returncode == 0 and "SUCCESS: 9 rules found" in rules.stdout, rules.stderr
    am = subprocess.run(
        ["amtool", "check-config", str(REPO / "examples" / "alertmanager.yml")], capture_output=True, text=True
    )
    assert am.returncode == 0 and "SUCCESS" in am.stdout, am.stderr


def test_secrets_in_alert_text_are_redacted_before_they_reach_the_record(settings, records: Path) -> None:
    it, _ = intake(settings, records)
    note = payload("leak", labels={"summary": f"token {TOKEN} and password=hunter2hunter2"})
    iid = it.apply(parse_notification(json.dumps(note)))
    raw = (records / iid / "events.jsonl").read_text()
    assert TOKEN not in raw and "hunter2hunter2" not in raw and "[REDACTED]" in raw


def test_a_firing_long_after_a_person_closed_the_incident_opens_a_new_one(settings, records: Path) -> None:
    it, _ = intake(settings, records)
    first = it.apply(parse_notification(json.dumps(payload("closed"))))
    rec = Record.open(records, first)
    for s in ("acknowledged", "investigating", "monitoring", "resolved"):
        rec.set_status(s, actor="a")
    assert it.apply(parse_notification(json.dumps(payload("closed")))) == first  # within the window: same one
    # the relink window is measured from the person's resolution: with a zero window it has passed
    settings2 = settings.model_copy(update={"serve": settings.serve.model_copy(update={"relink_window": timedelta(0)})})
    it2 = Intake(settings2, ENV, records, it.queue, it.run)
    later = it2.apply(parse_notification(json.dumps(payload("closed", starts="2025-11-21T09:00:00Z"))))
    assert later != first


def test_a_half_made_incident_folder_never_blocks_its_group(settings, records: Path) -> None:
    """What a crash inside an older Record.create left: the folder and subfolders, no first event."""
    from irkit.alerts import incident_id_for

    note = parse_notification(json.dumps(payload("half")).encode())
    half = records / incident_id_for(note)
    for sub in ("notebooks", "data", "figures", "comms"):
        (half / sub).mkdir(parents=True)
    q = Queue(records / ".irkit" / "queue.sqlite")
    q.accept(json.dumps(payload("half")).encode())
    intake = Intake(settings, ENV, records, q, FakeRun())
    assert intake.process_pending() == 1
    assert q.counts()["notifications_failed"] == 0
    rec = Record.open(records, half.name)
    assert [e["type"] for e in rec.events()][:1] == ["incident.opened"] and rec.verify().ok


def test_kill_9_right_after_200_loses_no_notification_and_blocks_no_group(tmp_path: Path, records: Path) -> None:
    accepted = []
    for i in range(20):
        with server(tmp_path, records, {"serve": {"token_env": "WEBHOOK_TOKEN", "runbooks": []}}) as (url, proc):
            res = requests.post(f"{url}/alerts", json=payload(f"kill{i}"), headers=AUTH, timeout=10)
            os.killpg(proc.pid, signal.SIGKILL)  # right after the 200, while intake is creating the record
            proc.wait()
            if res.status_code == 200:
                accepted.append(f"kill{i}")
    assert len(accepted) == 20
    with server(tmp_path, records, {"serve": {"token_env": "WEBHOOK_TOKEN", "runbooks": []}}) as (url, _):
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=5).json()["notifications_pending"] == 0, 60, "drain")
        health = requests.get(f"{url}/healthz", timeout=5).json()
    assert health["notifications_failed"] == 0 and health["status"] == "ok", health
    ids = list_incidents(records)
    assert len(ids) == 20  # one incident per group, none blocked by a half-made folder
    for iid in ids:
        rec = Record.open(records, iid)
        assert rec.verify().ok and rec.state()["alerts"], iid
    assert not [p for p in records.iterdir() if p.name.startswith(".creating.")]


def test_a_notification_that_keeps_failing_never_stalls_the_ones_behind_it(settings, records: Path) -> None:
    from irkit.intake import MAX_ATTEMPTS

    class Poisoned(Intake):
        def apply(self, note):  # a bug that bites one group only
            if "poison" in note.groupKey:
                raise KeyError("level")
            return super().apply(note)

    q = Queue(records / ".irkit" / "q.sqlite")
    failures: list[dict[str, Any]] = []
    it = Poisoned(settings, ENV, records, q, FakeRun(), on_event=lambda k, d: failures.append(d))
    q.accept(json.dumps(payload("poison")).encode())
    q.accept(json.dumps(payload("fine")).encode())
    assert it.process_pending() == 1  # the good one went through
    assert len(list_incidents(records)) == 1 and q.counts()["notifications_pending"] == 1
    assert it.process_pending() == 0  # backing off: not retried at once
    for _ in range(MAX_ATTEMPTS - 1):
        with sqlite3.connect(q.path) as c:  # as if the backoff had elapsed
            c.execute("UPDATE notifications SET retry_at = NULL")
        it.process_pending()
    counts = q.counts()
    assert counts["notifications_pending"] == 0 and counts["notifications_failed"] == 1
    failures = [f for f in failures if "reason" in f]
    assert len(failures) == MAX_ATTEMPTS and failures[-1]["reason"] == "error, gave up"
    assert "KeyError" in (q.last_failure() or {}).get("error", "")


def test_the_queue_under_the_records_root_stores_notifications_redacted(tmp_path: Path, records: Path) -> None:
    secret = "CanaryQueueSecret-5e6f7a8b"
    cfg = tmp_path / "q.yaml"
    cfg.write_text(yaml.safe_dump({"serve": {"token_env": "WEBHOOK_TOKEN"}, "secrets": ["QUEUE_SECRET"]}))
    env = {**ENV, "QUEUE_SECRET": secret}
    app = create_app(load_config(cfg, env, required=True), env, records, start_workers=False)
    with TestClient(app) as c:
        body = payload("q", labels={"summary": f"db password {secret}", "team": "sre"})
        assert c.post("/alerts", json=body, headers=AUTH).status_code == 200
    stored = b"".join(p.read_bytes() for p in (records / ".irkit").iterdir())
    assert secret.encode() not in stored and b"[REDACTED]" in stored


def test_a_full_disk_never_makes_intake_give_up_an_accepted_notification(settings, records: Path) -> None:
    from irkit.errors import StorageError
    from irkit.intake import MAX_ATTEMPTS

    class DiskFull(Intake):
        full = True

        def apply(self, note):
            if self.full:
                raise StorageError("cannot write: No space left on device")
            return super().apply(note)

    q = Queue(records / ".irkit" / "q.sqlite")
    it = DiskFull(settings, ENV, records, q, FakeRun())
    q.accept(json.dumps(payload("disk")).encode())
    for _ in range(MAX_ATTEMPTS + 3):
        it.process_pending()
        with sqlite3.connect(q.path) as c:
            c.execute("UPDATE notifications SET retry_at = NULL")
    assert q.counts()["notifications_failed"] == 0 and q.counts()["notifications_pending"] == 1
    it.full = False  # space freed
    assert it.process_pending() == 1 and len(list_incidents(records)) == 1


@pytest.mark.parametrize("dies_in", ["enqueue", "set_group"])
def test_a_crash_after_the_incident_is_committed_still_leaves_its_runbook_job(
    settings, records: Path, dies_in: str
) -> None:
    """Whichever step intake dies in after opening the incident, the replay still queues its job once."""

    class Died(BaseException):  # like kill -9: nothing after it runs, nothing catches it
        pass

    class Dying(Queue):
        def enqueue(self, incident_id: str) -> None:
            if dies_in == "enqueue":
                raise Died
            super().enqueue(incident_id)

        def set_group(self, key: str, incident_id: str, resolved_at: str | None) -> None:
            if dies_in == "set_group":
                raise Died
            super().set_group(key, incident_id, resolved_at)

    path = records / ".irkit" / "q.sqlite"
    dying = Dying(path)
    dying.accept(json.dumps(payload("crash")).encode())
    with pytest.raises(Died):
        Intake(settings, ENV, records, dying, FakeRun()).process_pending()
    assert len(list_incidents(records)) == 1  # the incident was committed before the crash
    restarted = Intake(settings, ENV, records, Queue(path), FakeRun())
    assert restarted.process_pending() == 1  # the notification was still pending: applied again
    counts = restarted.queue.counts()
    assert counts["notifications_pending"] == 0 and counts.get("jobs_queued") == 1, counts
    assert len(list_incidents(records)) == 1
