"""Live Kubernetes: the only module that imports the official ``kubernetes`` client.

Reads return the API's own JSON (``_preload_content=False``), so live and recorded objects are
indistinguishable to :mod:`irkit.cluster`. Every request has a timeout; an unreachable API server,
a 401/403, a missing object or a missing metrics API become :class:`~irkit.errors.SourceUnavailable`
("could not check") with the reason. Writes (mitigations) live here too, behind explicit approval.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from irkit.config import Settings
from irkit.errors import SourceUnavailable


def quantity(value: object) -> float:
    """A Kubernetes quantity (``250m``, ``512Mi``, ``1e9``, ``+1``, ``1Ei``) as a float, by the client's own parser.

    Raises ValueError for anything the API server would not accept either.
    """
    from kubernetes.utils.quantity import parse_quantity

    return float(parse_quantity(value))


def _describe(exc: ApiException) -> str:
    if exc.status in (401, 403):
        return f"forbidden by the API server (HTTP {exc.status}: {exc.reason})"
    if exc.status == 404:
        return "not found (HTTP 404)"
    return f"API server error (HTTP {exc.status}: {exc.reason})"


class LiveCluster:
    """Reads the configured namespace and workload through the ``kubernetes`` client."""

    name = "kubernetes"

    def __init__(self, settings: Settings) -> None:
        k = settings.kubernetes
        self.namespace = k.namespace or settings.service.namespace
        self.deployment = k.deployment or settings.service.name
        self.selector = k.label_selector or f"app={settings.service.name}"
        self.release = k.helm_release or settings.service.name
        self.timeout = (k.connect_timeout_s, k.read_timeout_s)
        cfg = client.Configuration()
        try:
            if k.in_cluster:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(
                    config_file=k.kubeconfig, context=k.context, client_configuration=cfg, persist_config=False
                )
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise SourceUnavailable(f"no usable Kubernetes configuration: {exc}") from exc
        # Fail fast, set BEFORE the client exists (its connection pool copies them): urllib3's default
        # retries would make an API server that accepts and never answers hang a read for many timeouts.
        cfg.retries = False
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            raise SourceUnavailable(f"{what}: {_describe(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceUnavailable(f"{what}: Kubernetes API unreachable ({type(exc).__name__})") from exc

    def read(self, kind: str) -> dict[str, Any]:
        """GET one kind of object (Deployment, ReplicaSets, pods, events, Helm Secrets, pod metrics) as raw JSON."""
        ns = self.namespace
        calls = {
            "deployment": (self.apps.read_namespaced_deployment, (self.deployment, ns), {}),
            "replicasets": (self.apps.list_namespaced_replica_set, (ns,), {"label_selector": self.selector}),
            "pods": (self.core.list_namespaced_pod, (ns,), {"label_selector": self.selector}),
            "events": (self.core.list_namespaced_event, (ns,), {}),
            "helm-releases": (
                self.core.list_namespaced_secret,
                (ns,),
                {"label_selector": f"owner=helm,name={self.release}"},
            ),
            "pod-metrics": (
                self.custom.list_namespaced_custom_object,
                ("metrics.k8s.io", "v1beta1", ns, "pods"),
                {"label_selector": self.selector},
            ),
        }
        if kind not in calls:
            raise SourceUnavailable(f"unknown object kind {kind!r}")
        fn, args, kwargs = calls[kind]
        resp = self._call(f"read {kind} in {ns}", fn, *args, **kwargs)
        try:
            data: dict[str, Any] = json.loads(resp.data)
        except ValueError as exc:
            raise SourceUnavailable(f"read {kind}: the API server did not return JSON") from exc
        return data

    def logs(self, pod: str, tail_lines: int) -> str:
        """Fetch the last ``tail_lines`` lines of a pod's log from the API server."""
        resp = self._call(
            f"logs of {pod}", self.core.read_namespaced_pod_log, pod, self.namespace, tail_lines=tail_lines
        )
        text: str = resp.data.decode("utf-8", errors="replace")
        return text

    # ---- writes (only ever called by irkit.mitigate, after a recorded approval)

    def patch_deployment(self, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        """Strategic-merge PATCH of the Deployment; ``dry_run`` asks the server to validate only."""
        resp = self._call(
            f"patch deployment {self.deployment}{' (dry run)' if dry_run else ''}",
            self.apps.patch_namespaced_deployment,
            self.deployment,
            self.namespace,
            body,
            dry_run="All" if dry_run else None,
        )
        data: dict[str, Any] = json.loads(resp.data)
        return data

    def patch_scale(self, replicas: int, *, dry_run: bool) -> dict[str, Any]:
        """PATCH the Deployment's scale subresource, as ``kubectl scale`` does."""
        resp = self._call(
            f"scale deployment {self.deployment}{' (dry run)' if dry_run else ''}",
            self.apps.patch_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
            {"spec": {"replicas": replicas}},
            dry_run="All" if dry_run else None,
        )
        data: dict[str, Any] = json.loads(resp.data)
        return data
