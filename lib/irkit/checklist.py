"""The plan's investigation checklist: ten items, automated where a check exists, human otherwise.

Each item is answered by a check function over an :class:`Evidence` bundle (cluster view, probe
results, metrics access, settings) or left to a responder. Every answer becomes a ``check.recorded``
event; the checklist table is rebuilt from those events, so an item nobody answered stays visibly
unchecked and a human answer recorded later takes precedence over the automated one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from irkit.cluster import ClusterView
from irkit.config import Dependency, Settings
from irkit.errors import BadInputError, SourceUnavailable
from irkit.events import Event
from irkit.http import Http
from irkit.metrics import SATURATED
from irkit.probes import CheckResult, CheckStatus, ProbeRegistry
from irkit.record import Record
from irkit.times import parse_ts, stamp

if TYPE_CHECKING:
    import pandas as pd

RECENT_CHANGE_WINDOW = timedelta(hours=2)


@dataclass
class Evidence:
    """What the automated checks look at, gathered once per checklist run."""

    settings: Settings
    environ: Mapping[str, str]
    detected_at: datetime
    cluster: ClusterView | None
    cluster_error: str | None = None
    probes: dict[str, CheckResult] = field(default_factory=dict)
    saturation: dict[str, float | None] = field(default_factory=dict)  # from Prometheus when no metrics API
    query: Callable[[str], float | None] | None = None  # instant PromQL, for the security query


Check = Callable[[Evidence], CheckResult]


def _cluster(ev: Evidence, kind: str) -> ClusterView:
    if ev.cluster is None:
        raise SourceUnavailable(ev.cluster_error or "no cluster access")
    ev.cluster.require(kind)
    return ev.cluster


def check_recent_changes(ev: Evidence) -> CheckResult:
    """Problem when a rollout or Helm release landed in the two hours before detection; lists each change."""
    view = _cluster(ev, "replicasets")
    changes = view.recent_changes(ev.detected_at, RECENT_CHANGE_WINDOW)
    if not changes:
        return CheckResult(
            "recent_changes",
            CheckStatus.OK,
            f"no rollout or Helm release in the {RECENT_CHANGE_WINDOW} before detection",
        )
    first = changes[0]
    minutes = (ev.detected_at - first.at).total_seconds() / 60
    return CheckResult(
        "recent_changes",
        CheckStatus.PROBLEM,
        f"{first.what} at {first.at:%H:%M} UTC, {minutes:.0f} min before detection",
        {
            "changes": [
                {"at": c.at.isoformat(), "kind": c.kind, "revision": c.revision, "what": c.what} for c in changes
            ]
        },
    )


def check_error_logs(ev: Evidence) -> CheckResult:
    """Count error lines in each pod's recent log (configured patterns or the defaults); name the commonest."""
    view = _cluster(ev, "pods")
    if not view.logs:
        raise SourceUnavailable("no pod logs could be read")
    patterns = ev.settings.kubernetes.log_patterns
    errors = view.log_errors(patterns) if patterns else view.log_errors()
    if not errors.total:
        return CheckResult("error_logs", CheckStatus.OK, f"no error lines in the last lines of {len(view.logs)} pods")
    top_msg, top_n = errors.top[0]
    return CheckResult(
        "error_logs",
        CheckStatus.PROBLEM,
        f"{errors.total} error lines in {len(errors.per_pod)} pods; commonest ({top_n}x): {top_msg}",
        {"per_pod": errors.per_pod, "top": errors.top[:5]},
    )


def check_resources(ev: Evidence) -> CheckResult:
    """Flag CrashLoopBackOff/OOMKilled pods and pods at ≥80% of a CPU/memory limit (metrics API, else Prometheus)."""
    view = _cluster(ev, "pods")
    pods = view.pod_rows()
    findings = [f"{p['pod']}: {p['callout']}" for p in pods if p["callout"]]
    details: dict[str, Any] = {"restarts": {p["pod"]: p["restarts"] for p in pods}}
    try:
        usage = view.usage_rows()
        details["usage"] = usage
        for u in usage:
            for key in ("cpu of limit", "memory of limit"):
                if u[key] is not None and u[key] >= SATURATED:
                    findings.append(f"{u['pod']} {key.split()[0]} at {u[key]:.0%} of limit")
        basis = "metrics API"
    except SourceUnavailable:
        sat = {k: v for k, v in ev.saturation.items() if v is not None}
        if not sat and not findings:
            raise SourceUnavailable("no metrics API and no saturation signal from Prometheus") from None
        details["saturation"] = sat
        findings += [f"{k} at {v:.0%} of limit" for k, v in sat.items() if v >= SATURATED]
        basis = "Prometheus saturation signals"
    disk = ev.saturation.get("saturation_disk")
    if disk is not None:
        details["disk"] = disk
        if disk >= SATURATED:
            findings.append(f"volumes at {disk:.0%} of capacity")
    disk_text = f"; volumes at {disk:.0%} of capacity" if disk is not None else "; disk: no volume metrics"
    if findings:
        return CheckResult("resources", CheckStatus.PROBLEM, "; ".join(findings), details)
    return CheckResult(
        "resources", CheckStatus.OK, f"no pod above {SATURATED:.0%} of its limits ({basis}){disk_text}", details
    )


def _probe_item(item: str, kinds: tuple[str, ...]) -> Check:
    def check(ev: Evidence) -> CheckResult:
        deps = [d for d in ev.settings.dependencies if d.kind in kinds]
        if not deps:
            return CheckResult(item, CheckStatus.AWAITING, f"no dependency of kind {'/'.join(kinds)} configured")
        results = [ev.probes[d.name] for d in deps if d.name in ev.probes]
        worst = _worst(results)
        text = "; ".join(f"{r.name}: {r.status.value} — {r.evidence}" for r in results)
        return CheckResult(item, worst, text, {"probes": [r.as_dict() for r in results]})

    check.__doc__ = f"Probes of kind {kinds}."
    return check


def _worst(results: list[CheckResult]) -> CheckStatus:
    order = (CheckStatus.PROBLEM, CheckStatus.UNCHECKED, CheckStatus.AWAITING, CheckStatus.OK)
    for status in order:
        if any(r.status == status for r in results):
            return status
    return CheckStatus.AWAITING


def _dep_host(dep: Dependency, environ: Mapping[str, str]) -> str | None:
    from urllib.parse import urlparse

    url = environ.get(dep.url_env) if dep.url_env else dep.url
    if not url:
        return None
    return urlparse(url if "://" in url else f"tcp://{url}").hostname


def check_network(ev: Evidence) -> CheckResult:
    """Every configured dependency host resolves, and the probes that needed the network got through."""
    hosts = {d.name: _dep_host(d, ev.environ) for d in ev.settings.dependencies}
    hosts = {k: v for k, v in hosts.items() if v}
    if not hosts:
        return CheckResult("network", CheckStatus.AWAITING, "no dependency addresses configured to test")
    failures, resolved = [], {}
    for name, host in hosts.items():
        try:
            resolved[name] = socket.getaddrinfo(host, None)[0][4][0]
        except socket.gaierror as exc:
            failures.append(f"{name}: DNS cannot resolve {host} ({exc.strerror})")
    for r in ev.probes.values():
        if r.status == CheckStatus.PROBLEM and r.details.get("stage") in ("connect", "dns"):
            failures.append(f"{r.name}: {r.evidence}")
    if failures:
        return CheckResult("network", CheckStatus.PROBLEM, "; ".join(failures), {"resolved": resolved})
    return CheckResult("network", CheckStatus.OK, f"{len(resolved)} dependency hosts resolve", {"resolved": resolved})


def check_sentry(ev: Evidence) -> CheckResult:
    """New unresolved Sentry issues first seen around the incident (plan: "check Sentry for new errors")."""
    cfg = ev.settings.sentry
    if cfg is None:
        return CheckResult(
            "sentry", CheckStatus.AWAITING, "Sentry not configured (sentry: url, org, project, token_env)"
        )
    token = ev.environ.get(cfg.token_env)
    if not token:
        raise SourceUnavailable(f"environment variable {cfg.token_env} (Sentry token) is not set")
    url = f"{cfg.url.rstrip('/')}/api/0/projects/{cfg.org}/{cfg.project}/issues/"
    issues = Http(timeout_s=cfg.timeout_s).get_json(
        url,
        what="Sentry",
        params={"query": "is:unresolved", "statsPeriod": "24h"},
        headers={"Authorization": f"Bearer {token}"},
    )
    if not isinstance(issues, list):
        raise SourceUnavailable(f"Sentry answered {str(issues)[:80]!r}, not a list of issues")
    window_start = ev.detected_at - RECENT_CHANGE_WINDOW
    new = [i for i in issues if i.get("firstSeen") and _after(i["firstSeen"], window_start)]
    if not new:
        return CheckResult("sentry", CheckStatus.OK, f"{len(issues)} unresolved issues, none new around the incident")
    titles = "; ".join(
        f"{i.get('shortId', '?')} {i.get('title', '')[:80]} ({i.get('count', '?')} events)" for i in new[:3]
    )
    return CheckResult(
        "sentry",
        CheckStatus.PROBLEM,
        f"{len(new)} new Sentry issues: {titles}",
        {"issues": [{k: i.get(k) for k in ("shortId", "title", "count", "firstSeen", "permalink")} for i in new[:10]]},
    )


def _after(ts: str, start: datetime) -> bool:

    try:
        return parse_ts(ts) >= start
    except ValueError:
        return False


def check_security(ev: Evidence) -> CheckResult:
    """Compare the configured security PromQL query with its threshold; left to a human when none is set."""
    cfg = ev.settings.security_query
    if cfg is None:
        return CheckResult("security", CheckStatus.AWAITING, "no security_query configured; a human must check")
    if ev.query is None:
        raise SourceUnavailable("no Prometheus to run the security query")
    value = ev.query(cfg.query)
    if value is None:
        return CheckResult("security", CheckStatus.OK, f"{cfg.description}: no data (none recorded)")
    if value > cfg.threshold:
        return CheckResult(
            "security", CheckStatus.PROBLEM, f"{cfg.description}: {value:g} > {cfg.threshold:g}", {"value": value}
        )
    return CheckResult(
        "security", CheckStatus.OK, f"{cfg.description}: {value:g} ≤ {cfg.threshold:g}", {"value": value}
    )


@dataclass(frozen=True)
class Item:
    """One checklist item: the plan's words and the automated check, if there is one."""

    id: str
    title: str
    check: Check | None


CHECKLIST: tuple[Item, ...] = (
    Item("recent_changes", "Check recent deployments/changes", check_recent_changes),
    Item("error_logs", "Review error logs and stack traces", check_error_logs),
    Item("resources", "Check resource utilization (CPU, memory, disk)", check_resources),
    Item("database", "Verify database health and connectivity", _probe_item("database", ("postgres",))),
    Item("redis", "Verify Redis cache health", _probe_item("redis", ("redis",))),
    Item("s3", "Check S3 accessibility", _probe_item("s3", ("s3",))),
    Item("network", "Review network connectivity", check_network),
    Item("external", "Check for external dependencies issues", _probe_item("external", ("http", "tcp"))),
    Item("sentry", "Review related Sentry errors", check_sentry),
    Item("security", "Check for security events", check_security),
)
ITEMS = {i.id: i for i in CHECKLIST}


def run_item(item: Item, ev: Evidence) -> CheckResult:
    """Run one item's check; "could not check" (with the reason) when its evidence is unavailable."""
    if item.check is None:
        return CheckResult(item.id, CheckStatus.AWAITING, "no automated check; a human must answer")
    try:
        return item.check(ev)
    except SourceUnavailable as exc:
        return CheckResult(item.id, CheckStatus.UNCHECKED, str(exc))
    except Exception as exc:  # a broken check is reported as such and the checklist goes on
        return CheckResult(item.id, CheckStatus.UNCHECKED, f"check crashed: {type(exc).__name__}: {exc}")


def run_checklist(ev: Evidence, probes: ProbeRegistry) -> list[CheckResult]:
    """Probe every dependency once, then answer every item."""
    ev.probes = {r.name: r for r in probes.run_all(ev.settings.dependencies, ev.environ)}
    return [run_item(item, ev) for item in CHECKLIST]


def record_result(record: Record, result: CheckResult, *, actor: str, automated: bool) -> Event:
    """Append one item's answer, automated or human, as a ``check.recorded`` event."""
    item = ITEMS.get(result.name)
    return record.append(
        "check.recorded",
        {
            "item": result.name,
            "title": item.title if item else result.name,
            "status": result.status.value,
            "evidence": result.evidence,
            "details": result.details,
            "latency_ms": result.latency_ms,
            "automated": automated,
        },
        actor=actor,
    )


def checklist_rows(events: list[Event]) -> list[dict[str, Any]]:
    """The checklist as it stands: per item, the newest human answer if there is one, else the newest automated one.

    A responder's answer is never replaced by a later automated run: it stands until a person answers
    again, and the newest automated result is shown beside it. "No automated check here" never hides
    an answer someone (or something) already gave. Items nobody answered say so.
    """
    human: dict[str, Event] = {}
    machine: dict[str, Event] = {}
    for e in events:
        if e["type"] != "check.recorded":
            continue
        item, d = e["data"]["item"], e["data"]
        if not d.get("automated"):
            human[item] = e
        elif d["status"] != CheckStatus.AWAITING or item not in machine:
            machine[item] = e
    rows = []
    for n, item in enumerate(CHECKLIST, start=1):
        found = human.get(item.id) or machine.get(item.id)
        if found is None:
            rows.append(
                {"#": n, "item": item.title, "status": "unchecked", "evidence": "not checked yet", "by": "", "at": "",
                 "automated": ""}
            )  # fmt: skip
            continue
        d = found["data"]
        by = f"{found['actor']} ({'automated' if d.get('automated') else 'human'})"
        auto = machine.get(item.id) if found is not machine.get(item.id) else None
        beside = f"{auto['data']['status']} at {stamp(auto['ts'])}: {auto['data']['evidence']}" if auto else ""
        rows.append(
            {"#": n, "item": item.title, "status": d["status"], "evidence": d["evidence"], "by": by, "at": found["ts"],
             "automated": beside}
        )  # fmt: skip
    return rows


def checklist_table(events: list[Event]) -> pd.DataFrame:
    """The checklist as it stands, as a DataFrame indexed by item number (for the notebook)."""
    import pandas as pd

    rows = [{**r, "at": stamp(r["at"]) if r["at"] else "—"} for r in checklist_rows(events)]
    return pd.DataFrame(rows).set_index("#")


def run_automated(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    view: ClusterView,
    *,
    metrics_source: str,
    actor: str,
    probes: ProbeRegistry | None = None,
) -> list[CheckResult]:
    """Run every automated item against ``view`` (and live Prometheus when ``metrics_source`` is live); record each."""
    from irkit.probes import default_registry

    query = None
    saturation: dict[str, float | None] = {}
    if metrics_source == "live":
        from irkit.prom import PrometheusSource

        prom = PrometheusSource(settings, environ)

        def query(promql: str) -> float | None:
            frame = prom.query(promql)
            return float(frame.iloc[0].sum()) if not frame.empty else None

        for signal in SATURATION_SIGNALS:
            if signal in settings.signals:
                try:
                    saturation[signal] = query(prom.signal_query(signal))
                except SourceUnavailable:
                    saturation[signal] = None
    elif metrics_source == "recorded":
        saturation = recorded_saturation(record)
    detected = parse_ts(record.state()["detected_at"])
    ev = Evidence(settings, environ, detected, view, saturation=saturation, query=query)
    results = run_checklist(ev, probes or default_registry())
    for result in results:
        record_result(record, result, actor=actor, automated=True)
    return results


SATURATION_SIGNALS = ("saturation_cpu", "saturation_memory", "saturation_disk")


def recorded_saturation(record: Record) -> dict[str, float | None]:
    """The peak of each saturation signal in the record's recordings (None where there is no recording)."""
    from irkit.sources import SIGNALS_DIR, RecordedSource

    src = RecordedSource(record.latest_dir(SIGNALS_DIR))
    out: dict[str, float | None] = {}
    for signal in SATURATION_SIGNALS:
        try:
            peak = src.load(signal).total().max()
        except SourceUnavailable:
            continue
        out[signal] = None if peak != peak else float(peak)  # NaN: the recording holds no points
    return out


def answer(record: Record, item: str, status: str, evidence: str, *, actor: str) -> str:
    """Record a responder's answer to a checklist item (it takes precedence over automation)."""
    if item not in ITEMS:
        raise BadInputError(f"no checklist item {item!r}; items: {', '.join(ITEMS)}")
    try:
        st = CheckStatus(status)
    except ValueError:
        raise BadInputError(f"status must be one of {[s.value for s in CheckStatus]}") from None
    if not evidence.strip():
        raise BadInputError("an answer needs evidence: what did you look at?")
    record_result(record, CheckResult(item, st, evidence), actor=actor, automated=False)
    return f"{ITEMS[item].title}: {st.value} ({actor})"


def health_check(record: Record, settings: Settings, environ: Mapping[str, str], *, actor: str) -> CheckResult:
    """Probe the service's health endpoint (plan 2 ``curl …/health``) and record the result."""
    from irkit.probes import probe_http

    r = probe_http(Dependency(name="health", kind="http", url=settings.service.health_url), environ)
    record.append(
        "check.recorded", {"item": "health", "title": "Health endpoint", **r.as_dict(), "automated": True}, actor=actor
    )
    return r
