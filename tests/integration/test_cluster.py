"""Kubernetes reads through the real client against the fake API server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from fakekube import fake_kube
from irkit.checklist import ITEMS, Evidence, check_recent_changes, check_resources, run_item
from irkit.cluster import RecordedCluster, capture, decode_helm_release
from irkit.config import load_config
from irkit.errors import SourceUnavailable
from irkit.k8s import LiveCluster
from irkit.probes import CheckStatus
from irkit.scenarios import pool_exhaustion as scenario
from irkit.scenarios import pool_exhaustion_cluster as cluster_scenario
from irkit.scenarios.tsdb import free_port

BUNDLE = scenario.DIRECTORY / "cluster"


def live(tmp_path: Path, kube) -> LiveCluster:
    return LiveCluster(load_config(None, {"IRKIT_KUBERNETES__KUBECONFIG": str(kube.kubeconfig(tmp_path))}))


def test_live_reads_equal_the_recorded_snapshot(tmp_path: Path) -> None:
    with fake_kube() as kube:
        view = capture(live(tmp_path, kube), tail_lines=500)
    recorded = capture(RecordedCluster(BUNDLE))
    assert view.unavailable == {}
    assert view.objects == recorded.objects
    assert view.logs == recorded.logs
    paths = {r.path for r in kube.requests}
    assert "/apis/apps/v1/namespaces/schema-registry/deployments/schema-registry" in paths
    pods_req = next(r for r in kube.requests if r.path.endswith("/pods") and "metrics" not in r.path)
    assert pods_req.query["labelSelector"] == ["app=schema-registry"]
    secrets_req = next(r for r in kube.requests if r.path.endswith("/secrets"))
    assert secrets_req.query["labelSelector"] == ["owner=helm,name=schema-registry"]
    log_req = next(r for r in kube.requests if r.path.endswith("/log"))
    assert log_req.query["tailLines"] == ["500"]


def test_crashloop_rollouts_and_helm_history(tmp_path: Path) -> None:
    with fake_kube() as kube:
        view = capture(live(tmp_path, kube))
    pods = {p["pod"]: p for p in view.pod_rows()}
    crashing = pods[scenario.PODS[1]]
    assert crashing["callout"] == "CrashLoopBackOff" and crashing["restarts"] == 2 and not crashing["ready"]
    assert "Error (exit 1)" in crashing["last termination"]
    assert [r["revision"] for r in view.rollout_rows()] == [7, 6, 5]
    assert view.rollout_rows()[0]["image"].endswith(":1.8.0")
    helm = view.helm_rows()
    assert [(h["revision"], h["status"], h["chart"], h["app version"]) for h in helm] == [
        (12, "deployed", "schema-registry-2.4.0", "1.8.0"),
        (11, "superseded", "schema-registry-2.3.5", "1.7.3"),
    ]
    events = view.events()
    assert list(events["type"]) == ["Warning"] * 4 + ["Normal"] * 3 and events.iloc[0]["reason"] == "BackOff"
    errors = view.log_errors()
    assert errors.total > 100 and errors.top[0][0].startswith("ERROR pool: timed out waiting for a database connection")
    usage = {u["pod"]: u for u in view.usage_rows()}
    assert usage[scenario.PODS[0]]["cpu cores"] == pytest.approx(0.712)


def test_helm_release_secret_decodes_like_helm_stores_it() -> None:
    secret = cluster_scenario.helm_release(3, "failed", "1.0.0", "0.9", scenario.TIMELINE["deploy"], "boom")
    release = decode_helm_release(secret)
    assert release["version"] == 3 and release["info"]["status"] == "failed"
    assert json.loads(json.dumps(secret))["data"]["release"].isascii()


def test_recent_change_before_detection_is_a_finding(tmp_path: Path) -> None:
    with fake_kube() as kube:
        view = capture(live(tmp_path, kube))
    ev = Evidence(load_config(None, {}), {}, scenario.TIMELINE["alert"], view)
    r = check_recent_changes(ev)
    assert r.status == CheckStatus.PROBLEM
    assert "revision 7" in r.evidence and "8 min before detection" in r.evidence


def test_forbidden_cluster_is_could_not_check(tmp_path: Path) -> None:
    with fake_kube(forbidden=True) as kube:
        view = capture(live(tmp_path, kube))
    assert set(view.unavailable) == {"deployment", "replicasets", "pods", "events", "helm-releases", "pod-metrics"}
    assert all("forbidden" in why and "403" in why for why in view.unavailable.values())
    ev = Evidence(load_config(None, {}), {}, scenario.TIMELINE["alert"], view)
    for item in ("recent_changes", "error_logs", "resources"):
        r = run_item(ITEMS[item], ev)
        assert r.status == CheckStatus.UNCHECKED and "forbidden" in r.evidence
    assert "could not check" in view.pods().columns


def test_missing_metrics_api_falls_back_to_prometheus_saturation(tmp_path: Path) -> None:
    with fake_kube(metrics_api=False) as kube:
        view = capture(live(tmp_path, kube))
    assert "404" in view.unavailable["pod-metrics"]
    ev = Evidence(load_config(None, {}), {}, scenario.TIMELINE["alert"], view, saturation={"saturation_cpu": 0.74})
    r = check_resources(ev)
    assert r.status == CheckStatus.PROBLEM and "Prometheus" not in r.evidence and "CrashLoopBackOff" in r.evidence
    assert r.details["saturation"] == {"saturation_cpu": 0.74}


def kubeconfig_for(tmp_path: Path, server: str) -> Path:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": server}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    return kubeconfig


def test_unreachable_cluster_is_could_not_check(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    src = LiveCluster(load_config(None, {"IRKIT_KUBERNETES__KUBECONFIG": str(kubeconfig)}))
    with pytest.raises(SourceUnavailable, match="unreachable"):
        src.read("pods")


def test_an_api_server_that_never_answers_is_tried_once_per_read_not_retried(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel; nothing is ever read or answered
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    kubeconfig = kubeconfig_for(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    env = {"IRKIT_KUBERNETES__KUBECONFIG": str(kubeconfig), "IRKIT_KUBERNETES__READ_TIMEOUT_S": "0.5"}
    src = LiveCluster(load_config(None, env))
    try:
        with pytest.raises(SourceUnavailable, match="unreachable"):
            src.read("pods")
        time.sleep(0.2)
        assert len(accepted) == 1  # urllib3's default would have connected 4 times (3 retries)
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_no_kubeconfig_is_could_not_check(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no usable Kubernetes configuration"):
        LiveCluster(load_config(None, {"IRKIT_KUBERNETES__KUBECONFIG": str(tmp_path / "missing")}))


def test_disk_is_checked_from_prometheus_volume_stats(tmp_path: Path) -> None:
    with fake_kube() as kube:
        view = capture(live(tmp_path, kube))
    settings = load_config(None, {})
    full = Evidence(settings, {}, scenario.TIMELINE["alert"], view, saturation={"saturation_disk": 0.93})
    r = check_resources(full)
    assert r.status == CheckStatus.PROBLEM and "volumes at 93% of capacity" in r.evidence
    assert r.details["disk"] == 0.93
    roomy = check_resources(Evidence(settings, {}, scenario.TIMELINE["alert"], view, saturation={"saturation_disk": 0.4}))
    assert "volumes" not in roomy.evidence and roomy.details["disk"] == 0.4  # read, and not a finding
    unknown = check_resources(Evidence(settings, {}, scenario.TIMELINE["alert"], view))
    assert "disk" not in unknown.details
