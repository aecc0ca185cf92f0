"""The triage and investigation runbooks, live, against the fake API server, PostgreSQL, Redis, Prometheus."""

from __future__ import annotations

from pathlib import Path

import nbformat
import yaml

from fakekube import fake_kube
from irkit.alerts import load_notification_file, open_from_notification
from irkit.checklist import checklist_rows
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR
from irkit.runner import run_runbook


def test_triage_and_investigation_live(tmp_path: Path, postgres_server, redis_server, incident_prometheus) -> None:
    records = tmp_path / "r"
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    rec = open_from_notification(records, note, service="schema-registry", actor="am")
    with fake_kube() as kube:
        cfg = tmp_path / "irkit.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "prometheus": {"url": incident_prometheus},
                    "kubernetes": {"kubeconfig": str(kube.kubeconfig(tmp_path))},
                    "dependencies": [
                        {"name": "postgres", "kind": "postgres", "url_env": "TEST_DATABASE_URL"},
                        {"name": "redis", "kind": "redis", "url": redis_server.url},
                    ],
                    "security_query": {
                        "query": 'sum(up{namespace="schema-registry"})',
                        "threshold": 5,
                        "description": "healthy targets (stand-in security query)",
                    },
                }
            )
        )
        env = {"TEST_DATABASE_URL": postgres_server.dsn}
        settings = load_config(cfg, env, required=True)
        kw = {"settings": settings, "environ": env, "actor": "alice", "config_path": str(cfg)}
        triage = run_runbook(rec, "triage", **kw)
        investigation = run_runbook(
            rec, "investigation", {"answers": {"sentry": ["ok", "Sentry: nothing new since 14:00"]}}, **kw
        )
    assert triage.ok, triage.summary()
    assert investigation.ok, investigation.summary()
    rows = {r["item"]: r for r in checklist_rows(rec.events())}
    expected = {
        "Check recent deployments/changes": "problem found",
        "Review error logs and stack traces": "problem found",
        "Check resource utilization (CPU, memory, disk)": "problem found",
        "Verify database health and connectivity": "ok",
        "Verify Redis cache health": "ok",
        "Check S3 accessibility": "awaiting a human",
        "Review network connectivity": "ok",
        "Check for external dependencies issues": "awaiting a human",
        "Review related Sentry errors": "ok",
        "Check for security events": "ok",
    }
    assert {k: v["status"] for k, v in rows.items()} == expected
    assert rows["Review related Sentry errors"]["by"] == "alice (human)"
    assert "revision 7" in rows["Check recent deployments/changes"]["evidence"]
    # the executed notebook shows the same checklist the events hold
    nb = nbformat.read(str(rec.path / investigation.path), as_version=4)
    last_table = [
        o["data"]["text/html"]
        for c in nb.cells
        if "session.checklist()" in c.source
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ][-1]
    for item, status in expected.items():
        assert item in last_table and status in last_table
    assert postgres_server.dsn not in (rec.path / investigation.path).read_text()
    # triage read the live cluster and snapshotted it
    cluster_files = {p.name for p in (rec.path / "data" / "cluster").iterdir()}
    assert {"pods.json", "replicasets.json", "helm-releases.json", "meta.json", "logs"} <= cluster_files
    assert any(r.path.endswith("/log") for r in kube.requests)
    assert rec.verify().ok
