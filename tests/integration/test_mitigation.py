"""Mitigations through the real client against the fake API server, Redis and PostgreSQL; resolution
criteria against real Prometheus and Alertmanager."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import psycopg
import pytest
import redis
import requests
import yaml

from fakekube import fake_kube
from irkit.alerts import load_notification_file, open_from_notification, record_alerts
from irkit.cluster import capture
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR
from irkit.errors import SourceUnavailable
from irkit.k8s import LiveCluster
from irkit.metrics import read_metrics
from irkit.mitigate import Context, Rollback, default_actions, run_action
from irkit.prom import PrometheusSource
from irkit.record import Record
from irkit.resolve import alertmanager_alerts, alerts_criterion, metric_criteria, smoke_criteria
from irkit.runner import run_runbook
from irkit.scenarios import pool_exhaustion as scenario

ACTIONS = default_actions()


def opened(records: Path, iid: str = "INC-MIT-1") -> Record:
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    return open_from_notification(records, note, service="schema-registry", actor="am", incident_id=iid)


def live_ctx(tmp_path: Path, kube) -> Context:
    settings = load_config(None, {"IRKIT_KUBERNETES__KUBECONFIG": str(kube.kubeconfig(tmp_path))})
    cluster = LiveCluster(settings)
    return Context(settings, {}, view=capture(cluster, tail_lines=1), cluster=cluster, now=datetime.now(UTC))


def act(
    rec: Record,
    ctx: Context,
    name: str,
    args: dict[str, Any],
    *,
    approve: bool,
    approver: str = "alice",
    batch: bool = False,
):
    return run_action(
        rec, ACTIONS.get(name), args, ctx, approve=approve, approver=approver, actor="runner", batch=batch
    )


@pytest.mark.parametrize(
    ("name", "args", "path_suffix", "expected_body"),
    [
        ("scale", {"replicas": 8}, "/scale", {"spec": {"replicas": 8}}),
        (
            "set_env",
            {"name": "CIRCUIT_BREAKER_ENABLED", "value": "true"},
            "",
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "schema-registry",
                                    "env": [{"name": "CIRCUIT_BREAKER_ENABLED", "value": "true"}],
                                }
                            ]
                        }
                    }
                }
            },
        ),
    ],
)
def test_patch_bodies_dry_run_first_and_nothing_without_approval(
    tmp_path: Path, records: Path, name: str, args: dict[str, Any], path_suffix: str, expected_body: Any
) -> None:
    rec = opened(records)
    with fake_kube() as kube:
        ctx = live_ctx(tmp_path, kube)
        planned = act(rec, ctx, name, args, approve=False)
        assert planned.status == "planned" and "approval required" in planned.reason
        assert kube.mutating() == []  # nothing changed without approval
        patches = [r for r in kube.requests if r.method == "PATCH"]
        assert len(patches) == 1 and patches[0].query["dryRun"] == ["All"] and patches[0].body == expected_body
        done = act(rec, ctx, name, args, approve=True)
        assert done.status == "executed" and done.verified is True, done
        patches = [r for r in kube.requests if r.method == "PATCH"]
        assert [p.query.get("dryRun") for p in patches] == [["All"], ["All"], None]  # each execution dry-runs first
        assert patches[-1].path.endswith(f"/deployments/schema-registry{path_suffix}")
        assert patches[-1].body == expected_body
        assert all(ct.startswith("application/strategic-merge-patch+json") for ct in kube.content_types)
    types = [e["type"] for e in rec.events()]
    last_approval = len(types) - 1 - types[::-1].index("action.approved")
    tail = types[last_approval - 1 :]  # dry run → approval → status moves → executed, in that order
    assert tail[0] == "action.dry_run" and tail[-1] == "action.executed"
    assert set(tail[1:-1]) <= {"action.approved", "status.changed"}
    executed = [e for e in rec.events() if e["type"] == "action.executed"][-1]
    assert executed["actor"] == "alice" and executed["data"]["before"] != executed["data"]["after"]
    approved = [e for e in rec.events() if e["type"] == "action.approved"][-1]
    assert approved["data"]["approved_by"] == "alice"
    assert rec.state()["status"] == "mitigating"


def test_restart_and_rollback_patches(tmp_path: Path, records: Path) -> None:
    rec = opened(records)
    with fake_kube() as kube:
        ctx = live_ctx(tmp_path, kube)
        restart = act(rec, ctx, "restart", {}, approve=True)
        assert restart.status == "executed" and restart.verified
        body = [r for r in kube.requests if r.method == "PATCH"][-1].body
        assert list(body["spec"]["template"]["metadata"]["annotations"]) == ["kubectl.kubernetes.io/restartedAt"]
        rollback = act(rec, live_ctx(tmp_path, kube), "rollback", {}, approve=True)
        assert rollback.status == "executed" and rollback.verified, rollback
        body = [r for r in kube.requests if r.method == "PATCH"][-1].body
        container = body["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].endswith(":1.7.3")
        assert {"name": "DB_POOL_SIZE", "value": "20"} in container["env"]
        assert "pod-template-hash" not in body["spec"]["template"]["metadata"]["labels"]
        assert kube.objects["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.7.3")
    plan = [e for e in rec.events() if e["type"] == "action.planned" and e["data"]["action"] == "rollback"][-1]
    assert plan["data"]["before"]["revision"] == 7 and plan["data"]["after"]["revision"] == 6


def test_refusals_batch_unnamed_duplicate_and_resolved_alerts(tmp_path: Path, records: Path) -> None:
    rec = opened(records)
    with fake_kube() as kube:
        ctx = live_ctx(tmp_path, kube)
        assert act(rec, ctx, "scale", {"replicas": 6}, approve=True, batch=True).status == "refused"
        assert act(rec, ctx, "scale", {"replicas": 6}, approve=True, approver="").status == "refused"
        assert kube.mutating() == []
        assert act(rec, ctx, "scale", {"replicas": 6}, approve=True).status == "executed"
        again = act(rec, ctx, "scale", {"replicas": 6}, approve=True, approver="bob")
        assert again.status == "refused" and "within" in again.reason
        assert len(kube.mutating()) == 1
        resolved = load_notification_file(SCENARIO_DIR / "alertmanager-resolved.json")
        record_alerts(rec, resolved, actor="am")
        late = act(rec, ctx, "restart", {}, approve=True)
        assert late.status == "refused" and "alerts have resolved" in late.reason
        assert len(kube.mutating()) == 1
    refusals = [e["data"]["reason"] for e in rec.events() if e["type"] == "action.refused"]
    assert len(refusals) == 4 and "batch" in refusals[0] and "named actor" in refusals[1]


def test_pattern_flush_removes_only_matching_keys(redis_server, records: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.mset({f"schemas:{i}": "x" for i in range(120)} | {f"sessions:{i}": "y" for i in range(30)})
    rec = opened(records)
    settings = load_config(
        None, {"IRKIT_DEPENDENCIES": json.dumps([{"name": "redis", "kind": "redis", "url": redis_server.url}])}
    )
    ctx = Context(settings, {}, now=datetime.now(UTC))
    planned = act(rec, ctx, "flush_cache", {"pattern": "schemas:*"}, approve=False)
    assert "120 of 150 keys" in planned.plan.cost and "120 keys would be deleted" in planned.dry_run
    assert client.dbsize() == 150
    done = act(rec, ctx, "flush_cache", {"pattern": "schemas:*"}, approve=True)
    assert done.status == "executed" and done.result == {"deleted": 120} and done.verified
    assert client.dbsize() == 30 and not list(client.scan_iter("schemas:*"))
    client.flushall()


def test_vacuum_runs_on_the_table(postgres_server, records: Path) -> None:
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS schemas")
        conn.execute("CREATE TABLE schemas (id int primary key, body text)")
        conn.execute("INSERT INTO schemas SELECT g, 'x' FROM generate_series(1, 2000) g")
        conn.execute("DELETE FROM schemas WHERE id % 2 = 0")
    rec = opened(records)
    settings = load_config(
        None, {"IRKIT_DEPENDENCIES": json.dumps([{"name": "db", "kind": "postgres", "url": postgres_server.dsn}])}
    )
    done = act(
        rec, Context(settings, {}, now=datetime.now(UTC)), "db_maintenance", {"tables": ["schemas"]}, approve=True
    )
    assert done.status == "executed" and done.verified, done
    with psycopg.connect(postgres_server.dsn) as conn:
        row = conn.execute(
            "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables WHERE relname = 'schemas'"
        ).fetchone()
    assert row[0] is not None and row[1] is not None


# --------------------------------------------------------------------------- resolution criteria


def test_metric_criteria_fail_during_and_pass_after(incident_prometheus: str) -> None:
    settings = load_config(None, {"IRKIT_PROMETHEUS__URL": incident_prometheus})
    src = PrometheusSource(settings, {})

    def at(t: datetime):
        start = t - timedelta(minutes=5)
        m = read_metrics(src, signals=("error_ratio", "latency_p99"), start=start, end=t, eval_end=t)
        return {c.name.split()[0]: c for c in metric_criteria(m, settings, start, t)}

    during = at(scenario.TIMELINE["mitigation"])
    assert during["error"].passed is False and during["latency"].passed is False
    after = at(scenario.TIMELINE["stable"])
    assert after["error"].passed is True and after["latency"].passed is True, after


def test_alerts_criterion_against_real_alertmanager(alertmanager_server) -> None:
    svc = "alerts-criterion-test"  # its own service label, so other tests sharing this Alertmanager are unaffected
    assert alerts_criterion(alertmanager_alerts(alertmanager_server.url, svc)).passed is True
    now = datetime.now(UTC)
    requests.post(
        f"{alertmanager_server.url}/api/v2/alerts",
        json=[
            {
                "labels": {"alertname": "SchemaRegistryHighErrorRate", "service": svc, "severity": "P1"},
                "annotations": {"summary": "test"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat(),
            }
        ],
        timeout=5,
    ).raise_for_status()
    failing = alerts_criterion(alertmanager_alerts(alertmanager_server.url, svc))
    assert failing.passed is False and "SchemaRegistryHighErrorRate" in failing.evidence
    other = alerts_criterion(alertmanager_alerts(alertmanager_server.url, "checkout"))
    assert other.passed is True


class _Smoke(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()


def test_smoke_tests_pass_and_fail(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Smoke)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    script = tmp_path / "smoke.sh"
    script.write_text('#!/bin/sh\necho "smoke $1"\n[ "$1" = production ]\n')
    script.chmod(0o755)
    try:
        for cmd, ok in (([str(script), "production"], True), ([str(script), "staging"], False)):
            settings = load_config(
                None,
                {
                    "IRKIT_RESOLUTION": json.dumps(
                        {
                            "smoke_tests": [
                                {"name": "ok", "url": f"{url}/ok"},
                                {"name": "broken", "url": f"{url}/broken"},
                            ],
                            "smoke_command": cmd,
                        }
                    )
                },
            )
            results = {c.name: c.passed for c in smoke_criteria(settings, {})}
            assert results["smoke: ok"] is True and results["smoke: broken"] is False
            command = [v for k, v in results.items() if k.startswith("smoke: /")]
            assert command == [ok]
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- the runbooks


def test_mitigation_runbook_executes_with_approval_against_the_fake_cluster(tmp_path: Path, records: Path) -> None:
    rec = opened(records, "INC-MIT-NB")
    with fake_kube() as kube:
        cfg = tmp_path / "irkit.yaml"
        cfg.write_text(yaml.safe_dump({"kubernetes": {"kubeconfig": str(kube.kubeconfig(tmp_path))}}))
        settings = load_config(cfg, {}, required=True)
        kw = {"settings": settings, "environ": {}, "actor": "bob", "config_path": str(cfg)}
        planned = run_runbook(rec, "mitigation", {"action": "rollback"}, **kw)
        assert planned.ok and kube.mutating() == []
        done = run_runbook(rec, "mitigation", {"action": "rollback", "approve": True, "actor": "carol"}, **kw)
        assert done.ok, done.summary()
        assert len(kube.mutating()) == 1
    executed = [e for e in rec.events() if e["type"] == "action.executed"]
    assert len(executed) == 1 and executed[0]["actor"] == "carol"
    assert executed[0]["data"]["before"]["image"].endswith("1.8.0") and executed[0]["data"]["after"]["image"].endswith(
        "1.7.3"
    )
    html = "".join(
        o.get("data", {}).get("text/html", "")
        for c in nbformat.read(str(rec.path / done.path), as_version=4).cells
        for o in c.get("outputs", [])
    )
    assert "executed" in html and "post-state" in html


def test_resolution_runbook_refuses_above_1_percent_and_resolves_below(
    tmp_path: Path, records: Path, incident_prometheus: str, alertmanager_server
) -> None:
    rec = opened(records, "INC-RES-NB")
    rec.set_status("acknowledged", actor="a")
    rec.set_status("investigating", actor="a")
    cfg = tmp_path / "irkit.yaml"
    smoke = {"smoke_tests": [{"name": "alertmanager healthy", "url": f"{alertmanager_server.url}/-/healthy"}]}
    cfg.write_text(
        yaml.safe_dump(
            {"prometheus": {"url": incident_prometheus}, "alertmanager_url": alertmanager_server.url, "resolution": smoke}
        )
    )
    settings = load_config(cfg, {}, required=True)
    kw = {"settings": settings, "environ": {}, "actor": "dave", "config_path": str(cfg)}
    early = run_runbook(rec, "resolution", {"as_of": "2025-11-20T14:40:00Z"}, **kw)
    assert early.ok and rec.state()["status"] == "investigating"
    refused = [e for e in rec.events() if e["type"] == "resolution.checked"][-1]["data"]
    assert refused["decision"] == "refused" and "error rate < 1%: FAIL" in refused["refused"]
    late = run_runbook(rec, "resolution", {"as_of": "2025-11-20T15:20:00Z", "watch_minutes": 30}, **kw)
    assert late.ok
    checked = [e for e in rec.events() if e["type"] == "resolution.checked"][-1]["data"]
    assert checked["decision"] == "resolved", checked
    assert {c["name"]: c["result"] for c in checked["criteria"]}["no active alerts"] == "pass"
    assert rec.state()["status"] == "resolved"


def test_helm_rollback_uses_the_configured_cluster_and_verifies_the_release_it_left(tmp_path: Path, records: Path) -> None:
    calls = tmp_path / "helm-calls.jsonl"
    history = tmp_path / "history.json"
    helm = tmp_path / "helm"
    helm.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"pathlib.Path({str(calls)!r}).open('a').write(json.dumps(sys.argv[1:]) + chr(10))\n"
        f"print(pathlib.Path({str(history)!r}).read_text() if 'history' in sys.argv else 'Rollback was a success!')\n"
    )
    helm.chmod(0o755)
    rec = opened(records, "INC-HELM-1")
    with fake_kube() as kube:
        settings = load_config(
            None,
            {
                "IRKIT_KUBERNETES__KUBECONFIG": str(kube.kubeconfig(tmp_path)),
                "IRKIT_KUBERNETES__CONTEXT": "fake",
                "IRKIT_KUBERNETES__ROLLBACK": "helm",
                "IRKIT_KUBERNETES__HELM_BINARY": str(helm),
            },
        )
        cluster = LiveCluster(settings)
        ctx = Context(settings, {}, view=capture(cluster, tail_lines=1), cluster=cluster, now=datetime.now(UTC))
        planned = act(rec, ctx, "rollback", {}, approve=False)
        target = planned.plan.after
        history.write_text(json.dumps([{"revision": 9, "status": "deployed", "chart": target["chart"],
                                        "description": f"Rollback to {target['helm revision']}"}]))  # fmt: skip
        done = act(rec, ctx, "rollback", {}, approve=True)
        assert kube.mutating() == []  # helm did the change, not a PATCH
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    rollback = [a for a in argv if "rollback" in a]
    assert [a[-1] for a in rollback] == ["--dry-run", "--dry-run", "--wait"]  # planned; approved: rehearsed, run
    for a in argv:
        assert a[:4] == ["--kubeconfig", str(kube.kubeconfig(tmp_path)), "--kube-context", "fake"], a
    assert any("history" in a for a in argv)
    assert done.status == "executed" and done.verified is True and "revision 9 deployed" in done.post_state
    history.write_text(json.dumps([{"revision": 9, "status": "failed", "chart": target["chart"]}]))
    assert Rollback().verify(ctx, done.plan)[0] is False  # a release helm left failed is not verified


def test_helm_strategy_without_a_helm_binary_is_could_not_plan(tmp_path: Path, records: Path) -> None:
    with fake_kube() as kube:
        settings = load_config(
            None,
            {
                "IRKIT_KUBERNETES__KUBECONFIG": str(kube.kubeconfig(tmp_path)),
                "IRKIT_KUBERNETES__ROLLBACK": "helm",
                "IRKIT_KUBERNETES__HELM_BINARY": str(tmp_path / "no-helm"),
            },
        )
        cluster = LiveCluster(settings)
        ctx = Context(settings, {}, view=capture(cluster, tail_lines=1), cluster=cluster, now=datetime.now(UTC))
        with pytest.raises(SourceUnavailable, match="not an executable"):
            act(opened(records, "INC-HELM-2"), ctx, "rollback", {}, approve=False)
