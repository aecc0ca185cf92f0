"""A small fake Kubernetes API server on loopback, serving real API object shapes.

No API server can run here, so Kubernetes code is tested through the real ``kubernetes`` client
against this: it serves the bundled incident's objects (from the same generator as the recorded
snapshot), filters by ``labelSelector`` like the API server, answers 403/404 when told to, and keeps a
log of every request (method, path, query, body) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from irkit.scenarios import pool_exhaustion_cluster as scenario


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None


@dataclass
class FakeKube:
    """State and request log of the fake API server."""

    namespace: str = scenario.NAMESPACE
    objects: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    forbidden: bool = False
    metrics_api: bool = True
    requests: list[Request] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    url: str = ""

    def mutating(self) -> list[Request]:
        """PATCHes that changed something (not server-side dry runs)."""
        return [r for r in self.requests if r.method != "GET" and r.query.get("dryRun") != ["All"]]

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace}}
                    ],
                }
            )
        )
        return path


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels", {})
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _handler(state: FakeKube) -> type[BaseHTTPRequestHandler]:
    ns = state.namespace
    lists = {
        f"/apis/apps/v1/namespaces/{ns}/replicasets": "replicasets",
        f"/api/v1/namespaces/{ns}/pods": "pods",
        f"/api/v1/namespaces/{ns}/events": "events",
        f"/api/v1/namespaces/{ns}/secrets": "helm-releases",
        f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods": "pod-metrics",
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": message,
                    "reason": reason,
                    "code": code,
                },
            )

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(Request("GET", url.path, query))
            if state.forbidden:
                return self._status(
                    403, "Forbidden", f'pods is forbidden: User "system:anonymous" cannot get {url.path}'
                )
            selector = query.get("labelSelector", [None])[0]
            if url.path in lists:
                kind = lists[url.path]
                if kind == "pod-metrics" and not state.metrics_api:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                obj = dict(state.objects[kind])
                obj["items"] = [i for i in obj["items"] if _matches(i, selector)]
                return self._send(200, obj)
            if (
                url.path
                == f"/apis/apps/v1/namespaces/{ns}/deployments/{state.objects['deployment']['metadata']['name']}"
            ):
                return self._send(200, state.objects["deployment"])
            prefix = f"/api/v1/namespaces/{ns}/pods/"
            if url.path.startswith(prefix) and url.path.endswith("/log"):
                pod = url.path[len(prefix) : -len("/log")]
                if pod not in state.logs:
                    return self._status(404, "NotFound", f'pods "{pod}" not found')
                tail = int(query.get("tailLines", ["0"])[0] or 0)
                lines = state.logs[pod].splitlines()
                text = "\n".join(lines[-tail:] if tail else lines) + "\n"
                return self._send(200, text.encode(), "text/plain")
            return self._status(404, "NotFound", f"{url.path} not found")

        def do_PATCH(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            state.requests.append(Request("PATCH", url.path, query, body))
            state.content_types.append(self.headers.get("Content-Type", ""))
            if state.forbidden:
                return self._status(403, "Forbidden", "patch is forbidden")
            dep = state.objects["deployment"]
            base = f"/apis/apps/v1/namespaces/{ns}/deployments/{dep['metadata']['name']}"
            dry = query.get("dryRun") == ["All"]
            if url.path == base:
                merged = strategic_merge(dep, body)
                if not dry:
                    merged["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
                    state.objects["deployment"] = merged
                return self._send(200, merged)
            if url.path == base + "/scale":
                replicas = body["spec"]["replicas"]
                if not dry:
                    dep["spec"]["replicas"] = replicas
                return self._send(
                    200,
                    {
                        "apiVersion": "autoscaling/v1",
                        "kind": "Scale",
                        "metadata": {"name": dep["metadata"]["name"], "namespace": ns},
                        "spec": {"replicas": replicas},
                        "status": {"replicas": replicas},
                    },
                )
            return self._status(404, "NotFound", f"{url.path} not found")

    return Handler


def strategic_merge(obj: Any, patch: Any) -> Any:
    """Enough of strategic merge patch for Deployments: maps merge, lists of named items merge by name."""
    if isinstance(obj, dict) and isinstance(patch, dict):
        out = dict(obj)
        for k, v in patch.items():
            out[k] = strategic_merge(obj[k], v) if k in obj else v
        return out
    if (
        isinstance(obj, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in obj + patch)
    ):
        out_list = [dict(i) for i in obj]
        for item in patch:
            idx = next((n for n, o in enumerate(out_list) if o["name"] == item["name"]), None)
            if idx is None:
                out_list.append(item)
            else:
                out_list[idx] = strategic_merge(out_list[idx], item)
        return out_list
    return patch


@contextmanager
def fake_kube(**kwargs: Any) -> Iterator[FakeKube]:
    """Serve the bundled incident's cluster on a free loopback port for the duration of the block."""
    state = FakeKube(**kwargs)
    state.objects = state.objects or {
        "deployment": scenario.deployment(),
        "replicasets": scenario.replicasets(),
        "pods": scenario.pods(),
        "events": scenario.events(),
        "helm-releases": scenario.helm_secrets(),
        "pod-metrics": scenario.pod_metrics(),
    }
    state.logs = state.logs or {p: scenario.pod_log(p) for p in scenario.PODS}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
