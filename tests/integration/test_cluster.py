"""Kubernetes reads through the real client against the fake API server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

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


# ---- readings held to the API's own object shapes (all through the real client and the fake API server)


def _objects(**changes: Any) -> dict[str, Any]:
    base = {
        "deployment": cluster_scenario.deployment(),
        "replicasets": cluster_scenario.replicasets(),
        "pods": cluster_scenario.pods(),
        "events": cluster_scenario.events(),
        "helm-releases": cluster_scenario.helm_secrets(),
        "pod-metrics": cluster_scenario.pod_metrics(),
    }
    return {**base, **changes}


def _empty(kind: str, api_version: str = "v1") -> dict[str, Any]:
    return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": []}


def test_a_deployment_scaled_to_zero_reads_as_empty_tables_not_a_crash(tmp_path: Path) -> None:
    deployment = cluster_scenario.deployment()
    deployment["spec"]["replicas"] = 0
    deployment["status"] = {"observedGeneration": 9, "replicas": 0}
    objects = _objects(
        deployment=deployment,
        pods=_empty("PodList"),
        replicasets=_empty("ReplicaSetList", "apps/v1"),
        **{"pod-metrics": _empty("PodMetricsList", "metrics.k8s.io/v1beta1"), "helm-releases": _empty("SecretList")},
    )
    with fake_kube(objects=objects, logs={"none": ""}) as kube:
        view = capture(live(tmp_path, kube))
    assert view.unavailable == {}
    assert view.pods().empty and "state" in view.pods().columns
    assert view.rollouts().empty and "change-cause" in view.rollouts().columns
    assert view.usage().empty and "memory of limit" in view.usage().columns
    assert view.helm_history().empty and view.ready_pods() == 0
    ev = Evidence(load_config(None, {}), {}, scenario.TIMELINE["alert"], view)
    for item in ("recent_changes", "error_logs", "resources"):
        assert run_item(ITEMS[item], ev).status in set(CheckStatus)  # each check answers; none raises


@pytest.mark.parametrize(
    ("limit", "usage", "fraction"),
    [
        ("1e9", "5e8", 0.5),  # exponent notation
        ("+1Gi", "512Mi", 0.5),  # explicit sign
        ("1Pi", "512Ti", 0.5),
        ("1Ei", "256Pi", 0.25),
        ("1P", "500T", 0.5),
        ("1E", "100P", 0.1),
    ],
)
def test_memory_quantities_in_every_valid_notation(tmp_path: Path, limit: str, usage: str, fraction: float) -> None:
    pods = cluster_scenario.pods()
    for p in pods["items"]:
        p["spec"]["containers"][0]["resources"]["limits"]["memory"] = limit
    metrics = cluster_scenario.pod_metrics()
    for m in metrics["items"]:
        m["containers"][0]["usage"]["memory"] = usage
    with fake_kube(objects=_objects(pods=pods, **{"pod-metrics": metrics})) as kube:
        view = capture(live(tmp_path, kube))
    rows = view.usage_rows()
    assert rows and all(r["memory of limit"] == pytest.approx(fraction) for r in rows)


def test_a_pod_without_a_limit_has_no_fraction_of_limit_and_a_bad_quantity_is_unknown(tmp_path: Path) -> None:
    pods = cluster_scenario.pods()
    del pods["items"][0]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    metrics = cluster_scenario.pod_metrics()
    metrics["items"][1]["containers"][0]["usage"]["cpu"] = "12 cores"
    with fake_kube(objects=_objects(pods=pods, **{"pod-metrics": metrics})) as kube:
        view = capture(live(tmp_path, kube))
    rows = {r["pod"]: r for r in view.usage_rows()}
    first, second = (rows[name] for name in scenario.PODS[:2])
    assert first["memory of limit"] is None and first["cpu of limit"] is not None
    assert second["cpu cores"] is None and second["cpu of limit"] is None and second["memory MiB"] > 0


def test_pod_states_say_what_the_containers_are_doing(tmp_path: Path) -> None:
    pods = cluster_scenario.pods()
    oom, pending, init = pods["items"][:3]
    oom["status"]["containerStatuses"][0].update(
        ready=False,
        state={"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2025-11-20T14:40:00Z"}},
    )
    oom["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pending["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    }
    init["status"]["phase"] = "Pending"
    init["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    init["status"]["initContainerStatuses"] = [
        {"name": "migrate", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    ]
    init["status"]["containerStatuses"][0].update(
        ready=False, state={"waiting": {"reason": "PodInitializing"}}
    )
    with fake_kube(objects=_objects(pods=pods)) as kube:
        view = capture(live(tmp_path, kube))
    rows = {r["pod"]: r for r in view.pod_rows()}
    a, b, c = (rows[p["metadata"]["name"]] for p in (oom, pending, init))
    assert a["state"] == "terminated: OOMKilled (exit 137)" and a["callout"] == "OOMKilled" and not a["ready"]
    assert b["state"] == "no containers started: Unschedulable" and b["phase"] == "Pending" and not b["ready"]
    assert "init migrate waiting: CrashLoopBackOff" in c["state"] and c["callout"] == "CrashLoopBackOff"
    assert c["restarts"] >= 4 and "running" not in c["state"]
    assert view.ready_pods() == 0


def test_repeating_events_count_and_sort_by_their_series(tmp_path: Path) -> None:
    events = cluster_scenario.events()
    repeating = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "schema-registry.series", "namespace": scenario.NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": scenario.PODS[1]},
        "reason": "Unhealthy",
        "message": "Readiness probe failed: " + "x" * 300 + " END",
        "type": "Warning",
        "eventTime": "2025-11-20T14:00:00.000000Z",
        "series": {"count": 57, "lastObservedTime": "2099-01-01T00:00:00.123456Z"},
        "reportingComponent": "kubelet",
        "reportingInstance": "node-2",
        "action": "Probe",
    }
    events["items"].append(repeating)
    with fake_kube(objects=_objects(events=events)) as kube:
        view = capture(live(tmp_path, kube))
    top = view.events().iloc[0]
    assert top["reason"] == "Unhealthy" and top["count"] == 57
    assert top["last seen"] == "2099-01-01 00:00:00 UTC"
    assert top["message"].endswith(" END")  # whole, not cut at 160 characters


@pytest.mark.parametrize("damage", ["truncated", "not-base64", "not-json", "not-an-object"])
def test_a_corrupt_helm_release_is_could_not_check_not_a_crash(tmp_path: Path, damage: str) -> None:
    import base64
    import gzip

    secrets = cluster_scenario.helm_secrets()
    data = secrets["items"][0]["data"]
    inner = base64.b64decode(base64.b64decode(data["release"]))
    bad = {
        "truncated": inner[: len(inner) // 2],
        "not-base64": b"%%%",
        "not-json": gzip.compress(b"{not json"),
        "not-an-object": gzip.compress(b"[1, 2]"),
    }[damage]
    data["release"] = base64.b64encode(bad if damage == "not-base64" else base64.b64encode(bad)).decode()
    with fake_kube(objects=_objects(**{"helm-releases": secrets})) as kube:
        view = capture(live(tmp_path, kube))
    rows = view.helm_rows()
    assert any(str(r["status"]).startswith("could not check: release") for r in rows)
    assert any(r["status"] == "superseded" or r["status"] == "deployed" for r in rows)  # the good one still reads
    assert [c.kind for c in view.changes()].count("helm") == len(rows) - 1
    view.helm_history()  # renders
