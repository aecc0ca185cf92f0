"""The bundled incident's Kubernetes state, as the API server would have returned it at 14:36:30.

API objects in the API's own JSON shape (camelCase, RFC 3339 times, Helm release Secrets encoded as
Helm 3 stores them), deterministic, so the recorded cluster snapshot in ``pool-exhaustion/cluster``
and the fake API server used by the tests serve the same thing. Regenerate with
``python -m irkit.scenarios.pool_exhaustion_cluster``.
"""

from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from irkit.scenarios.pool_exhaustion import DIRECTORY, INCIDENT_DAY, NAMESPACE, PODS, SERVICE, TIMELINE

TAKEN_AT = INCIDENT_DAY + timedelta(hours=14, minutes=36, seconds=30)
NEW_RS, OLD_RS, OLDER_RS = "schema-registry-5c9d7f8b6", "schema-registry-7b8c9d6f5", "schema-registry-6f7a8b9c4"
IMAGE_NEW, IMAGE_OLD = "registry.example.com/schema-registry:1.8.0", "registry.example.com/schema-registry:1.7.3"
DEPLOY_UID = "8b0e6f3a-2d1c-4e5f-9a7b-1c2d3e4f5a6b"


def ts(dt: datetime) -> str:
    """A UTC datetime as the API server writes it: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _template(image: str, pool: str, rs_hash: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": SERVICE, "pod-template-hash": rs_hash.rsplit("-", 1)[1]}},
        "spec": {
            "containers": [
                {
                    "name": SERVICE,
                    "image": image,
                    "env": [
                        {"name": "DB_POOL_SIZE", "value": pool},
                        {"name": "CIRCUIT_BREAKER_ENABLED", "value": "false"},
                    ],
                    "resources": {
                        "limits": {"cpu": "1", "memory": "1Gi"},
                        "requests": {"cpu": "250m", "memory": "512Mi"},
                    },
                }
            ]
        },
    }


def deployment() -> dict[str, Any]:
    """The Deployment at revision 7 (the 1.8.0 deploy with a pool of 5): 3 replicas, 2 ready."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "uid": DEPLOY_UID,
            "generation": 7,
            "labels": {"app": SERVICE, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"deployment.kubernetes.io/revision": "7", "meta.helm.sh/release-name": SERVICE},
            "creationTimestamp": "2025-06-02T09:00:00Z",
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": SERVICE}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": _template(IMAGE_NEW, "5", NEW_RS),
        },
        "status": {
            "observedGeneration": 7,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": ts(TIMELINE["deploy"]),
                    "lastTransitionTime": "2025-06-02T09:01:00Z",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{NEW_RS}" has successfully progressed.',
                    "lastUpdateTime": ts(TIMELINE["deploy"] + timedelta(seconds=48)),
                    "lastTransitionTime": "2025-06-02T09:01:00Z",
                },
            ],
        },
    }


def _replicaset(
    name: str, revision: int, image: str, pool: str, created: datetime, replicas: int, cause: str
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "creationTimestamp": ts(created),
            "labels": {"app": SERVICE, "pod-template-hash": name.rsplit("-", 1)[1]},
            "annotations": {"deployment.kubernetes.io/revision": str(revision), "kubernetes.io/change-cause": cause},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVICE, "uid": DEPLOY_UID, "controller": True}
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": SERVICE}},
            "template": _template(image, pool, name),
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": min(replicas, 2) if replicas else 0,
            "availableReplicas": min(replicas, 2) if replicas else 0,
        },
    }


def replicasets() -> dict[str, Any]:
    """The three ReplicaSets (revisions 5, 6 and the new 7), with images, pool sizes and change-causes."""
    items = [
        _replicaset(
            OLDER_RS,
            5,
            "registry.example.com/schema-registry:1.7.2",
            "20",
            INCIDENT_DAY - timedelta(days=14),
            0,
            "helm upgrade schema-registry 2.3.4 (1.7.2)",
        ),
        _replicaset(
            OLD_RS,
            6,
            IMAGE_OLD,
            "20",
            INCIDENT_DAY - timedelta(days=7, hours=-10),
            0,
            "helm upgrade schema-registry 2.3.5 (1.7.3)",
        ),
        _replicaset(
            NEW_RS,
            7,
            IMAGE_NEW,
            "5",
            TIMELINE["deploy"],
            3,
            "helm upgrade schema-registry 2.4.0 (1.8.0: db pool settings refactor)",
        ),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSetList",
        "metadata": {"resourceVersion": "918273"},
        "items": items,
    }


def _pod(
    name: str, *, ready: bool, restarts: int, waiting: str | None, last_reason: str | None, last_at: datetime | None
) -> dict[str, Any]:
    started = TIMELINE["deploy"] + timedelta(seconds=20)
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting, "message": "back-off 20s restarting failed container"}}
        if waiting
        else {"running": {"startedAt": ts(last_at + timedelta(seconds=5) if last_at else started)}}
    )
    status: dict[str, Any] = {
        "name": SERVICE,
        "image": IMAGE_NEW,
        "imageID": f"{IMAGE_NEW}@sha256:{'ab' * 32}",
        "ready": ready,
        "restartCount": restarts,
        "started": waiting is None,
        "state": state,
    }
    if last_reason and last_at:
        status["lastState"] = {
            "terminated": {"reason": last_reason, "exitCode": 1, "startedAt": ts(started), "finishedAt": ts(last_at)}
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "creationTimestamp": ts(started - timedelta(seconds=15)),
            "labels": {"app": SERVICE, "pod-template-hash": NEW_RS.rsplit("-", 1)[1]},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": NEW_RS, "controller": True}],
        },
        "spec": {"nodeName": "node-2", "containers": _template(IMAGE_NEW, "5", NEW_RS)["spec"]["containers"]},
        "status": {
            "phase": "Running",
            "podIP": "10.42.1.17",
            "startTime": ts(started),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [status],
        },
    }


def pods() -> dict[str, Any]:
    """The three pods of the new ReplicaSet: one healthy, one in CrashLoopBackOff, one restarted once."""
    items = [
        _pod(PODS[0], ready=True, restarts=0, waiting=None, last_reason=None, last_at=None),
        _pod(
            PODS[1],
            ready=False,
            restarts=2,
            waiting="CrashLoopBackOff",
            last_reason="Error",
            last_at=TIMELINE["deploy"] + timedelta(minutes=11, seconds=50),
        ),
        _pod(
            PODS[2],
            ready=True,
            restarts=1,
            waiting=None,
            last_reason="Error",
            last_at=TIMELINE["deploy"] + timedelta(minutes=9),
        ),
    ]
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "918301"}, "items": items}


def _event(
    n: int, kind: str, obj: str, reason: str, message: str, typ: str, first: datetime, last: datetime, count: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{obj}.{n:016x}", "namespace": NAMESPACE},
        "involvedObject": {"kind": kind, "name": obj, "namespace": NAMESPACE},
        "reason": reason,
        "message": message,
        "type": typ,
        "count": count,
        "firstTimestamp": ts(first),
        "lastTimestamp": ts(last),
        "source": {"component": "kubelet" if kind == "Pod" else "deployment-controller"},
    }


def events() -> dict[str, Any]:
    """The namespace's events: the rollout's scaling, then readiness failures, kills and back-offs."""
    d = TIMELINE["deploy"]
    items = [
        _event(
            1, "Deployment", SERVICE, "ScalingReplicaSet", f"Scaled up replica set {NEW_RS} to 1", "Normal", d, d, 1
        ),
        _event(
            2,
            "Deployment",
            SERVICE,
            "ScalingReplicaSet",
            f"Scaled down replica set {OLD_RS} to 0 from 1",
            "Normal",
            d + timedelta(seconds=48),
            d + timedelta(seconds=48),
            1,
        ),
        _event(
            3,
            "Pod",
            PODS[1],
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
            "Warning",
            TIMELINE["errors_start"] + timedelta(seconds=40),
            TAKEN_AT - timedelta(seconds=20),
            23,
        ),
        _event(
            4,
            "Pod",
            PODS[1],
            "Unhealthy",
            'Liveness probe failed: Get "http://10.42.1.17:8080/health": context deadline exceeded',
            "Warning",
            TIMELINE["errors_start"] + timedelta(minutes=6),
            TAKEN_AT - timedelta(seconds=50),
            6,
        ),
        _event(
            5,
            "Pod",
            PODS[1],
            "Killing",
            "Container schema-registry failed liveness probe, will be restarted",
            "Normal",
            TIMELINE["errors_start"] + timedelta(minutes=6),
            TAKEN_AT - timedelta(seconds=40),
            2,
        ),
        _event(
            6,
            "Pod",
            PODS[1],
            "BackOff",
            f"Back-off restarting failed container schema-registry in pod {PODS[1]}",
            "Warning",
            TAKEN_AT - timedelta(seconds=30),
            TAKEN_AT - timedelta(seconds=5),
            3,
        ),
        _event(
            7,
            "Pod",
            PODS[2],
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
            "Warning",
            TIMELINE["errors_start"] + timedelta(minutes=1),
            TAKEN_AT - timedelta(minutes=2),
            9,
        ),
    ]
    return {"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "918305"}, "items": items}


def helm_release(
    version: int, status: str, chart_version: str, app_version: str, deployed: datetime, description: str
) -> dict[str, Any]:
    """One Helm 3 release Secret: data.release = base64(base64(gzip(release JSON)))."""
    release = {
        "name": SERVICE,
        "namespace": NAMESPACE,
        "version": version,
        "info": {
            "first_deployed": "2025-06-02T09:00:00Z",
            "last_deployed": ts(deployed),
            "deleted": "",
            "description": description,
            "status": status,
        },
        "chart": {
            "metadata": {"name": SERVICE, "version": chart_version, "appVersion": app_version, "apiVersion": "v2"}
        },
        "config": {"db": {"poolSize": 5 if app_version == "1.8.0" else 20}},
    }
    packed = base64.b64encode(gzip.compress(json.dumps(release, sort_keys=True).encode(), mtime=0))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": f"sh.helm.release.v1.{SERVICE}.v{version}",
            "namespace": NAMESPACE,
            "labels": {"owner": "helm", "name": SERVICE, "status": status, "version": str(version)},
            "creationTimestamp": ts(deployed),
        },
        "data": {"release": base64.b64encode(packed).decode()},
    }


def helm_secrets() -> dict[str, Any]:
    """The Helm release Secrets: v11 (superseded, chart 2.3.5) and v12 (deployed, chart 2.4.0)."""
    items = [
        helm_release(
            11, "superseded", "2.3.5", "1.7.3", INCIDENT_DAY - timedelta(days=7, hours=-10), "Upgrade complete"
        ),
        helm_release(12, "deployed", "2.4.0", "1.8.0", TIMELINE["deploy"], "Upgrade complete"),
    ]
    return {"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "918310"}, "items": items}


def pod_metrics() -> dict[str, Any]:
    """The metrics API's CPU and memory usage for the three pods at snapshot time."""
    usage = {PODS[0]: ("712m", "698Mi"), PODS[1]: ("35m", "310Mi"), PODS[2]: ("688m", "702Mi")}
    items = [
        {
            "metadata": {"name": p, "namespace": NAMESPACE, "labels": {"app": SERVICE}},
            "timestamp": ts(TAKEN_AT),
            "window": "15s",
            "containers": [{"name": SERVICE, "usage": {"cpu": cpu, "memory": mem}}],
        }
        for p, (cpu, mem) in usage.items()
    ]
    return {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetricsList", "metadata": {}, "items": items}


def pod_log(pod: str) -> str:
    """A pod's log from startup to snapshot: pool-timeout errors, slow requests and 500s."""
    lines = []
    t = TIMELINE["deploy"] + timedelta(seconds=25)
    lines.append(f"{ts(t)} INFO  starting schema-registry 1.8.0 (db pool size 5)")
    t = TIMELINE["errors_start"]
    n = 0
    while t < TAKEN_AT:
        n += 1
        if n % 3 == 0:
            lines.append(f"{ts(t)} WARN  slow request POST /subjects/orders-value/versions took {1800 + n * 7}ms")
        lines.append(
            f"{ts(t)} ERROR pool: timed out waiting for a database connection (size 5, in use 5, waiting {20 + n % 9})"
        )
        if n % 4 == 0:
            lines.append(
                f"{ts(t)} ERROR request failed: POST /subjects/orders-value/versions -> 500 "
                "(psycopg.errors.ConnectionTimeout)"
            )
        t += timedelta(seconds=20 if pod != PODS[1] else 12)
    return "\n".join(lines) + "\n"


def write(directory: Path = DIRECTORY / "cluster") -> list[Path]:
    """Write the snapshot in the layout irkit's recorded cluster source reads."""
    from irkit.cluster import write_snapshot

    objects = {
        "deployment": deployment(),
        "replicasets": replicasets(),
        "pods": pods(),
        "events": events(),
        "helm-releases": helm_secrets(),
        "pod-metrics": pod_metrics(),
    }
    meta = {"namespace": NAMESPACE, "deployment": SERVICE, "taken_at": ts(TAKEN_AT), "source": "generated"}
    return write_snapshot(directory, objects, {p: pod_log(p) for p in PODS}, meta)


if __name__ == "__main__":
    for path in write():
        print(path)
