"""Kubernetes state for diagnosis: recorded snapshots and what they say, independent of the client.

Everything here works on API objects in the API's own JSON shape, whether they came from a live
cluster (:mod:`irkit.k8s`, the only module importing ``kubernetes``) or from a snapshot in a record's
``data/cluster/``. So the same reading of pods, rollouts, Helm history, events, logs and usage serves
a live incident, a replayed one and the tests.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from irkit.errors import BadInputError, SourceUnavailable
from irkit.files import atomic_write_bytes
from irkit.record import Record, versioned_dir
from irkit.times import parse_ts, rfc3339, stamp, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from irkit.config import Settings
    from irkit.redact import Redactor

OBJECTS = ("deployment", "replicasets", "pods", "events", "helm-releases", "pod-metrics")
CLUSTER_DIR = "data/cluster"
DEFAULT_LOG_PATTERNS = (
    r"\bERROR\b|\berror\b",
    r"(?i)exception|traceback",
    r"(?i)\bfatal\b|\bpanic\b",
    r"(?i)timed? ?out|deadline exceeded",
    r"(?i)connection (refused|reset)",
)
SAFE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class ClusterSource(Protocol):
    """Reads API objects (as JSON dicts) and pod logs."""

    name: str

    def read(self, kind: str) -> dict[str, Any]:
        """One kind of object from ``OBJECTS`` as the API's JSON; raises SourceUnavailable if it cannot be read."""
        ...

    def logs(self, pod: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of the pod's log; raises SourceUnavailable if it cannot be read."""
        ...


# --------------------------------------------------------------------------- snapshots


def snapshot_files(objects: Mapping[str, Any], logs: Mapping[str, str], meta: Mapping[str, Any]) -> dict[str, bytes]:
    """API objects, pod logs and metadata in the recorded-cluster layout (path in the snapshot → bytes)."""
    files = {
        f"{kind}.json": (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode() for kind, obj in objects.items()
    }
    for pod, text in logs.items():
        if not SAFE_NAME.fullmatch(pod):
            raise SourceUnavailable(f"refusing to store logs for pod name {pod[:80]!r}")
        files[f"logs/{pod}.log"] = text.encode()
    files["meta.json"] = (json.dumps(dict(meta), indent=1, sort_keys=True) + "\n").encode()
    return files


def write_snapshot(
    directory: Path, objects: Mapping[str, Any], logs: Mapping[str, str], meta: Mapping[str, Any]
) -> list[Path]:
    """Write a snapshot directory outside any record (bundled scenarios, tests); returns the files."""
    written = []
    for name, data in snapshot_files(objects, logs, meta).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        written.append(path)
    return written


class RecordedCluster:
    """Replays a cluster snapshot directory through the :class:`ClusterSource` interface."""

    name = "recorded"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def meta(self) -> dict[str, Any]:
        """The snapshot's ``meta.json``: when and from where it was taken, and what was unavailable then."""
        try:
            data: dict[str, Any] = json.loads((self.directory / "meta.json").read_text())
            return data
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"no cluster snapshot in {self.directory}") from exc

    def read(self, kind: str) -> dict[str, Any]:
        """Load ``<kind>.json`` from the snapshot; what was unavailable when recorded stays unavailable."""
        unavailable = self.meta().get("unavailable", {})
        if kind in unavailable:
            raise SourceUnavailable(f"{kind}: {unavailable[kind]} (when recorded)")
        try:
            data: dict[str, Any] = json.loads((self.directory / f"{kind}.json").read_text())
            return data
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"{kind} not in the cluster snapshot") from exc

    def logs(self, pod: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of the pod's recorded log (pod name checked before it touches a path)."""
        if not SAFE_NAME.fullmatch(pod):
            raise SourceUnavailable(f"bad pod name {pod[:80]!r}")
        try:
            lines = (self.directory / "logs" / f"{pod}.log").read_text().splitlines()
        except OSError as exc:
            raise SourceUnavailable(f"no recorded logs for {pod}") from exc
        return "\n".join(lines[-tail_lines:]) + ("\n" if lines else "")


def capture(
    source: ClusterSource, *, tail_lines: int = 500, kinds: tuple[str, ...] = OBJECTS, logs: bool = True
) -> ClusterView:
    """Read the object ``kinds`` and (with ``logs``) every pod's log tail; what cannot be read is noted."""
    view = ClusterView(source=source.name, taken_at=utcnow())
    for kind in kinds:
        try:
            view.objects[kind] = source.read(kind)
        except SourceUnavailable as exc:
            view.unavailable[kind] = str(exc)
    for pod in view.pod_names() if logs else []:
        try:
            view.logs[pod] = source.logs(pod, tail_lines)
        except SourceUnavailable as exc:
            view.unavailable[f"logs/{pod}"] = str(exc)
    if isinstance(source, RecordedCluster):
        try:
            with_meta = source.meta()
        except SourceUnavailable:
            with_meta = {}
        view.taken_at = parse_ts(with_meta["taken_at"]) if with_meta.get("taken_at") else view.taken_at
        view.source = f"recorded ({with_meta.get('source', '?')})"
    return view


PLAN_KINDS = ("deployment", "replicasets", "helm-releases")  # what mitigations plan against (no logs)


def open_cluster(record: Record, settings: Settings, source: str) -> ClusterSource:
    """``live`` (the Kubernetes API from config) or ``recorded`` (the record's newest snapshot)."""
    if source == "recorded":
        return RecordedCluster(record.latest_dir(CLUSTER_DIR))
    if source == "live":
        from irkit.k8s import LiveCluster

        return LiveCluster(settings)
    raise BadInputError(f"cluster source must be 'live' or 'recorded', not {source!r}")


def read_cluster(
    record: Record, settings: Settings, source: str, *, now: datetime, actor: str, kinds: tuple[str, ...] = OBJECTS
) -> tuple[ClusterSource | None, ClusterView]:
    """Read the cluster for an incident: live reads of every kind are snapshotted and the read is recorded.

    A plan-only read (``kinds`` narrower than everything, no logs) records nothing. When the API cannot
    be reached the view says why for every kind, and the source is None.
    """
    full = kinds == OBJECTS
    try:
        src = open_cluster(record, settings, source)
    except SourceUnavailable as exc:
        view = ClusterView(source="kubernetes", taken_at=now, unavailable={kind: str(exc) for kind in kinds})
        if full:
            record.append("cluster.read", {"source": "kubernetes", "unavailable": view.unavailable}, actor=actor)
        return None, view
    view = capture(src, kinds=kinds, logs=full, tail_lines=settings.kubernetes.log_tail_lines)
    if full:
        if source == "live":
            snapshot(record, view, actor=actor)
        record.append("cluster.read", {"source": view.source, "unavailable": view.unavailable}, actor=actor)
    return src, view


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def without_env_values(obj: Any) -> Any:
    """A copy with every container ``env`` entry reduced to its name and ``valueFrom`` reference.

    Literal values (often credentials set inline) never reach a record; what diagnosis needs — which
    variables exist and where their values come from — stays.
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if k == LAST_APPLIED:  # kubectl's copy of the whole manifest, env values included
                continue
            if k == "env" and isinstance(v, list):
                out[k] = [
                    {kk: vv for kk, vv in e.items() if kk in ("name", "valueFrom")} if isinstance(e, Mapping) else e
                    for e in v
                ]
            else:
                out[k] = without_env_values(v)
        return out
    if isinstance(obj, list):
        return [without_env_values(v) for v in obj]
    return obj


def helm_metadata_only(secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Helm release Secrets reduced to release metadata: never chart values (``config``) or the manifest.

    The result keeps the Secret shape (re-encoded as Helm does), so a recorded snapshot replays.
    """
    items = []
    for secret in secrets.get("items", []):
        try:
            rel = decode_helm_release(secret)
        except HELM_DECODE_ERRORS:
            items.append({"metadata": secret.get("metadata", {}), "data": {}})  # undecodable: nothing of it kept
            continue
        chart = rel.get("chart", {}).get("metadata", {})
        info = rel.get("info", {})
        kept = {
            "name": rel.get("name"),
            "namespace": rel.get("namespace"),
            "version": rel.get("version"),
            "info": {k: info.get(k) for k in ("status", "first_deployed", "last_deployed", "deleted", "description")},
            "chart": {"metadata": {k: chart.get(k) for k in ("name", "version", "appVersion")}},
        }
        inner = base64.b64encode(gzip.compress(json.dumps(kept).encode(), mtime=0))
        items.append(
            {**{k: v for k, v in secret.items() if k != "data"}, "data": {"release": base64.b64encode(inner).decode()}}
        )
    return {**{k: v for k, v in secrets.items() if k != "items"}, "items": items}


def for_record(view: ClusterView, redactor: Redactor | None) -> tuple[dict[str, Any], dict[str, str]]:
    """What of a captured view may be sealed: env names not values, Helm metadata, everything redacted."""
    objects = {k: without_env_values(v) for k, v in view.objects.items()}
    if "helm-releases" in objects:
        objects["helm-releases"] = helm_metadata_only(objects["helm-releases"])
    if redactor is None:
        return objects, dict(view.logs)
    return redactor.data(objects), {pod: redactor.text(text) for pod, text in view.logs.items()}


def snapshot(record: Record, view: ClusterView, *, actor: str) -> list[str]:
    """Save what may be kept of a captured view into a new ``data/cluster`` version and seal every file."""
    meta = {"taken_at": rfc3339(view.taken_at), "source": view.source, "unavailable": view.unavailable}
    objects, logs = for_record(view, record.redactor)
    files = snapshot_files(objects, logs, meta)
    return record.seal(
        lambda n: {f"{versioned_dir(CLUSTER_DIR, n)}/{name}": data for name, data in files.items()},
        actor=actor,
        kind="cluster",
    )


# --------------------------------------------------------------------------- reading the state


def _quantity(value: object) -> float | None:
    """A Kubernetes quantity by the official client's parser; None for one the API would not accept."""
    from irkit.k8s import quantity

    try:
        return quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


def _container_limits(pod: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A pod's CPU and memory limits summed over its containers; None when any container has none (unbounded)."""
    totals: list[float | None] = []
    containers = pod.get("spec", {}).get("containers", [])
    for resource in ("cpu", "memory"):
        values = [_quantity(c.get("resources", {}).get("limits", {}).get(resource)) for c in containers]
        totals.append(sum(v for v in values if v is not None) if values and None not in values else None)
    return totals[0], totals[1]


def _container_state(status: Mapping[str, Any]) -> str:
    """One container's current state as people say it: ``running``, ``waiting: CrashLoopBackOff``, ``terminated: OOMKilled (exit 137)``."""
    state = status.get("state") or {}
    if "waiting" in state:
        return f"waiting: {(state['waiting'] or {}).get('reason') or 'unknown reason'}"
    if "terminated" in state:
        t = state["terminated"] or {}
        return f"terminated: {t.get('reason') or 'unknown reason'} (exit {t.get('exitCode', '?')})"
    if "running" in state:
        return "running"
    return "unknown"


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


# What a corrupt, truncated or foreign Helm release Secret raises while decoding.
HELM_DECODE_ERRORS = (KeyError, ValueError, TypeError, binascii.Error, OSError, EOFError, zlib.error)


def decode_helm_release(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Helm 3 release Secret's ``data.release`` → the release JSON (base64, base64, gzip)."""
    raw = base64.b64decode(secret["data"]["release"], validate=True)
    inner = base64.b64decode(raw, validate=True)
    if inner[:2] == b"\x1f\x8b":
        inner = gzip.decompress(inner)
    release = json.loads(inner)
    if not isinstance(release, dict):
        raise ValueError("the release is not a JSON object")
    return release


@dataclass(frozen=True)
class Change:
    """A deploy-like change: a rollout revision or a Helm release."""

    at: datetime
    kind: str
    revision: str
    what: str


@dataclass
class ClusterView:
    """Captured API objects and logs, with the readings runbooks show."""

    source: str
    taken_at: datetime
    objects: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The ``items`` of a list kind (pods, replicasets, …); empty when that kind was not read."""
        items: list[dict[str, Any]] = self.objects.get(kind, {}).get("items", [])
        return items

    def pod_names(self) -> list[str]:
        """Names of the captured pods."""
        return [p["metadata"]["name"] for p in self.items("pods")]

    def ready_pods(self) -> int | None:
        """How many captured pods are ready; None when the pods could not be read."""
        if "pods" not in self.objects:
            return None
        return sum(1 for row in self.pod_rows() if row["ready"])

    def require(self, kind: str) -> None:
        """Raise SourceUnavailable, with the recorded reason, when ``kind`` was not read."""
        if kind not in self.objects:
            raise SourceUnavailable(self.unavailable.get(kind, f"{kind} not read"))

    def _missing(self, kind: str) -> pd.DataFrame | None:
        """A one-cell "could not check" table when ``kind`` was not read (so a runbook cell still shows why)."""
        if kind in self.objects:
            return None
        import pandas as pd

        return pd.DataFrame({"could not check": [self.unavailable.get(kind, f"{kind} not read")]}, index=[kind])

    # ---- pods

    POD_COLUMNS = ("pod", "phase", "ready", "restarts", "state", "last termination", "callout")

    def pod_rows(self) -> list[dict[str, Any]]:
        """Per pod: phase, readiness, restarts, current state of every container (init containers too), last terminations, callouts."""
        rows = []
        for p in self.items("pods"):
            status = p.get("status") or {}
            inits = status.get("initContainerStatuses") or []
            statuses = status.get("containerStatuses") or []
            states = [f"init {s.get('name', '?')} {_container_state(s)}" for s in inits if _container_state(s) != "terminated: Completed (exit 0)"]
            states += [_container_state(s) for s in statuses]
            if not statuses:
                scheduled = _pod_condition(p, "PodScheduled")
                why = scheduled.get("reason") if scheduled and scheduled.get("status") == "False" else None
                states.append(f"no containers started{': ' + why if why else ''}")
            last = [s["lastState"]["terminated"] for s in [*inits, *statuses] if "terminated" in (s.get("lastState") or {})]
            current = [(s.get("state") or {}).get("terminated") or {} for s in [*inits, *statuses]]
            callout = []
            if any("CrashLoopBackOff" in st for st in states):
                callout.append("CrashLoopBackOff")
            if any(t.get("reason") == "OOMKilled" for t in [*last, *current]):
                callout.append("OOMKilled")
            ready_condition = _pod_condition(p, "Ready")
            ready = (
                ready_condition.get("status") == "True"
                if ready_condition
                else bool(statuses) and all(s.get("ready") for s in statuses)
            )
            rows.append(
                {
                    "pod": p.get("metadata", {}).get("name", "?"),
                    "phase": status.get("phase", "?"),
                    "ready": ready,
                    "restarts": sum(int(s.get("restartCount", 0)) for s in [*inits, *statuses]),
                    "state": ", ".join(dict.fromkeys(states)),
                    "last termination": ", ".join(
                        f"{t.get('reason', '?')} (exit {t.get('exitCode', '?')}) at {stamp(t.get('finishedAt'))}"
                        for t in last
                    ),
                    "callout": " ".join(callout),
                }
            )
        return rows

    def pods(self) -> pd.DataFrame:
        """The pod rows as a table indexed by pod (empty, with its columns, when there are none), or why pods could not be read."""
        import pandas as pd

        if (missing := self._missing("pods")) is not None:
            return missing
        return pd.DataFrame(self.pod_rows(), columns=list(self.POD_COLUMNS)).set_index("pod")

    # ---- deployment and rollouts

    def deployment_status(self) -> pd.DataFrame:
        """Desired/updated/ready/available replica counts and conditions of the Deployment, as a table."""
        import pandas as pd

        if (missing := self._missing("deployment")) is not None:
            return missing
        d = self.objects["deployment"]
        st = d.get("status", {})
        rows = [
            ("desired", d.get("spec", {}).get("replicas")),
            ("updated", st.get("updatedReplicas", 0)),
            ("ready", st.get("readyReplicas", 0)),
            ("available", st.get("availableReplicas", 0)),
            ("unavailable", st.get("unavailableReplicas", 0)),
        ]
        rows += [(f"condition {c['type']}", f"{c['status']} ({c.get('reason', '')})") for c in st.get("conditions", [])]
        return pd.DataFrame(rows, columns=["field", d["metadata"]["name"]]).set_index("field")

    def rollout_rows(self) -> list[dict[str, Any]]:
        """One row per ReplicaSet (rollout revision): created, image, replicas, change-cause; newest first."""
        rows = []
        for rs in self.items("replicasets"):
            ann = rs["metadata"].get("annotations", {})
            containers = rs.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            rows.append(
                {
                    "revision": int(ann.get("deployment.kubernetes.io/revision", 0)),
                    "created": stamp(rs["metadata"].get("creationTimestamp")),
                    "created_at": rs["metadata"].get("creationTimestamp"),
                    "image": ", ".join(c.get("image", "") for c in containers),
                    "replicas": rs.get("spec", {}).get("replicas", 0),
                    "change-cause": ann.get("kubernetes.io/change-cause", ""),
                    "replicaset": rs["metadata"]["name"],
                }
            )
        return sorted(rows, key=lambda r: r["revision"], reverse=True)

    def rollouts(self) -> pd.DataFrame:
        """The rollout history as a table indexed by revision, or why it could not be read."""
        import pandas as pd

        if (missing := self._missing("replicasets")) is not None:
            return missing
        columns = ["revision", "created", "image", "replicas", "change-cause", "replicaset"]
        return pd.DataFrame(self.rollout_rows(), columns=columns).set_index("revision")

    def helm_rows(self) -> list[dict[str, Any]]:
        """One row per decoded Helm release Secret: revision, status, chart, app version, time; newest first."""
        rows = []
        for secret in self.items("helm-releases"):
            try:
                rel = decode_helm_release(secret)
            except HELM_DECODE_ERRORS as exc:
                name = (secret.get("metadata") or {}).get("name", "?")
                rows.append({"revision": name, "status": f"could not check: release {name} is corrupt or truncated ({type(exc).__name__})"})
                continue
            meta = rel.get("chart", {}).get("metadata", {})
            info = rel.get("info", {})
            rows.append(
                {
                    "revision": rel.get("version"),
                    "status": info.get("status"),
                    "chart": f"{meta.get('name')}-{meta.get('version')}",
                    "app version": meta.get("appVersion"),
                    "updated": stamp(info.get("last_deployed")),
                    "updated_at": info.get("last_deployed"),
                    "description": info.get("description"),
                }
            )
        return sorted(rows, key=lambda r: r["revision"] if isinstance(r["revision"], int) else -1, reverse=True)

    def helm_history(self) -> pd.DataFrame:
        """The Helm release history as a table, or why it could not be read."""
        import pandas as pd

        if (missing := self._missing("helm-releases")) is not None:
            return missing
        columns = ["revision", "status", "chart", "app version", "updated", "description"]
        return pd.DataFrame(self.helm_rows(), columns=columns).set_index("revision")

    def changes(self) -> list[Change]:
        """Every rollout revision and Helm release with its time, newest first."""
        out = []
        if "replicasets" in self.objects:
            for r in self.rollout_rows():
                if r["created_at"]:
                    out.append(
                        Change(
                            parse_ts(r["created_at"]),
                            "rollout",
                            str(r["revision"]),
                            f"revision {r['revision']} {r['image']} — {r['change-cause']}".strip(" —"),
                        )
                    )
        if "helm-releases" in self.objects:
            for h in self.helm_rows():
                if h.get("updated_at"):
                    out.append(
                        Change(
                            parse_ts(h["updated_at"]),
                            "helm",
                            str(h["revision"]),
                            f"helm release v{h['revision']} {h['chart']} (app {h['app version']}) {h['status']}",
                        )
                    )
        return sorted(out, key=lambda c: c.at, reverse=True)

    def recent_changes(self, before: datetime, window: timedelta = timedelta(hours=2)) -> list[Change]:
        """Changes in the ``window`` before ``before`` (typically detection)."""
        return [c for c in self.changes() if before - window <= c.at <= before]

    # ---- events and logs

    def event_rows(self) -> list[dict[str, Any]]:
        """Every event with its true count and last sighting (``series`` for repeating events), newest first, warnings first."""
        rows = []
        for e in self.items("events"):
            series = e.get("series") or {}
            last = series.get("lastObservedTime") or e.get("lastTimestamp") or e.get("eventTime")
            last = last or e.get("metadata", {}).get("creationTimestamp")
            try:
                seen = parse_ts(last) if last else None
            except ValueError:
                seen = None
            obj = e.get("involvedObject") or e.get("regarding") or {}
            rows.append(
                {
                    "type": e.get("type") or "",
                    "last seen": stamp(seen),
                    "object": f"{obj.get('kind', '?')}/{obj.get('name', '?')}",
                    "reason": e.get("reason") or "",
                    "count": int(series.get("count") or e.get("count") or 1),
                    "message": e.get("message") or e.get("note") or "",
                    "_seen": seen,
                }
            )
        # Newest first, then warnings first (a stable sort keeps each group's time order).
        rows.sort(key=lambda r: r["_seen"] or datetime.min.replace(tzinfo=UTC), reverse=True)
        rows.sort(key=lambda r: r["type"] != "Warning")
        return rows

    def events(self, limit: int = 20) -> pd.DataFrame:
        """The newest ``limit`` Kubernetes events, warnings first, as a table (messages whole)."""
        import pandas as pd

        if (missing := self._missing("events")) is not None:
            return missing
        columns = ["type", "last seen", "object", "reason", "count", "message"]
        return pd.DataFrame([{k: r[k] for k in columns} for r in self.event_rows()[:limit]], columns=columns)

    def log_errors(self, patterns: tuple[str, ...] = DEFAULT_LOG_PATTERNS) -> LogErrors:
        """Error lines in the captured pod logs matching ``patterns``, counted and grouped."""
        return extract_errors(self.logs, patterns)

    # ---- usage

    USAGE_COLUMNS = ("pod", "cpu cores", "cpu of limit", "memory MiB", "memory of limit")

    def usage_rows(self) -> list[dict[str, Any]]:
        """CPU and memory use per pod from the metrics API, absolute and as a fraction of the pod's limits.

        A fraction is None when the pod has no limit for that resource (or an unreadable one): a pod
        without a limit is not "at 0 % of its limit".
        """
        self.require("pod-metrics")
        limits = {p.get("metadata", {}).get("name"): _container_limits(p) for p in self.items("pods")}
        rows = []
        for item in self.items("pod-metrics"):
            name = item.get("metadata", {}).get("name", "?")
            cpus = [_quantity((c.get("usage") or {}).get("cpu")) for c in item.get("containers") or []]
            mems = [_quantity((c.get("usage") or {}).get("memory")) for c in item.get("containers") or []]
            cpu = sum(cpus) if cpus and None not in cpus else None  # type: ignore[arg-type]
            mem = sum(mems) if mems and None not in mems else None  # type: ignore[arg-type]
            lcpu, lmem = limits.get(name, (None, None))
            rows.append(
                {
                    "pod": name,
                    "cpu cores": cpu,
                    "cpu of limit": cpu / lcpu if cpu is not None and lcpu else None,
                    "memory MiB": mem / 2**20 if mem is not None else None,
                    "memory of limit": mem / lmem if mem is not None and lmem else None,
                }
            )
        return rows

    def usage(self) -> pd.DataFrame:
        """The usage rows as a table indexed by pod, or why the metrics API could not be read."""
        import pandas as pd

        if (missing := self._missing("pod-metrics")) is not None:
            return missing
        from irkit import units

        rows = [
            {
                "pod": r["pod"],
                "cpu cores": "—" if r["cpu cores"] is None else f"{r['cpu cores']:.2f}",
                "cpu of limit": units.percent(r["cpu of limit"]) if r["cpu of limit"] is not None else "no limit",
                "memory MiB": units.count(r["memory MiB"]),
                "memory of limit": units.percent(r["memory of limit"]) if r["memory of limit"] is not None else "no limit",
            }
            for r in self.usage_rows()
        ]
        return pd.DataFrame(rows, columns=list(self.USAGE_COLUMNS)).set_index("pod")


@dataclass(frozen=True)
class LogErrors:
    """Error lines found in pod logs: counts per pattern and per pod, and the commonest messages."""

    per_pattern: dict[str, int]
    per_pod: dict[str, int]
    top: list[tuple[str, int]]
    examples: dict[str, str]

    @property
    def total(self) -> int:
        """Number of matching error lines across all pods."""
        return sum(self.per_pod.values())

    def table(self) -> pd.DataFrame:
        """The commonest error messages (numbers masked) with counts and one example line each."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"message (numbers masked)": msg, "count": n, "example": self.examples.get(msg, "")}
                for msg, n in self.top
            ],
            columns=["message (numbers masked)", "count", "example"],
        ).set_index("message (numbers masked)")


def _signature(line: str) -> str:
    text = re.sub(r"^\S*\d{4}-\d\d-\d\dT\S+\s+", "", line)  # leading timestamp
    return re.sub(r"\d+", "N", text).strip()[:160]


def extract_errors(logs: Mapping[str, str], patterns: tuple[str, ...] = DEFAULT_LOG_PATTERNS) -> LogErrors:
    """Count error lines by pattern and pod, and group them by message with numbers masked."""
    compiled = [(p, re.compile(p)) for p in patterns]
    per_pattern: Counter[str] = Counter()
    per_pod: Counter[str] = Counter()
    sigs: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for pod, text in logs.items():
        for line in text.splitlines():
            hits = [p for p, rx in compiled if rx.search(line)]
            if not hits:
                continue
            per_pod[pod] += 1
            per_pattern.update(hits)
            sig = _signature(line)
            sigs[sig] += 1
            examples.setdefault(sig, line[:240])
    return LogErrors(dict(per_pattern), dict(per_pod), sigs.most_common(10), examples)
