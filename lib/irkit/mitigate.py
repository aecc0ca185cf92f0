"""Mitigations from the plan, each taking the same guarded path: plan → dry run → approval → act → verify.

Every action (rollback, scale, restart, set env, flush cache, database maintenance) first says what
it would change (before → after, and the cost), then asks the server to validate that change without
applying it (Kubernetes ``dryRun=All``; for Redis and PostgreSQL, a read-only rehearsal), and only
then — with ``approve=True``, a named actor and never in a batch run — executes and verifies the new
state. The approval is an ``action.approved`` event whose guards are checked under the record's lock
at the moment of approval: the incident is not resolved, its alerts have not all resolved, and the
same action has not run in the last ``window`` (alert storms re-running runbooks must not re-apply).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from irkit.cluster import ClusterView, without_env_values
from irkit.config import Dependency, Settings
from irkit.errors import ActionRefused, BadInputError, IrkitError, SourceUnavailable
from irkit.events import Status
from irkit.files import canonical_json
from irkit.record import Record
from irkit.times import parse_ts, rfc3339

DEFAULT_WINDOW = timedelta(minutes=10)
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "rollback": ("revision",),
    "scale": ("replicas",),
    "restart": (),
    "set_env": ("name", "value", "container"),
    "flush_cache": ("pattern", "dependency"),
    "db_maintenance": ("tables", "dependency"),
}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass
class Context:
    """What an action may touch: settings, secrets' environment, the cluster (live) or its view (recorded)."""

    settings: Settings
    environ: Mapping[str, str]
    view: ClusterView | None = None
    cluster: Any = None  # irkit.k8s.LiveCluster when acting on a live cluster
    now: datetime | None = None


@dataclass
class Plan:
    """What an action would do, before anything is done."""

    action: str
    args: dict[str, Any]
    target: str
    description: str
    before: dict[str, Any]
    after: dict[str, Any]
    cost: str
    body: Any = None  # the request the action will send

    @property
    def key(self) -> str:
        """The action with its canonical arguments: identifies "the same action" for approvals and the repeat window."""
        return f"{self.action}:{canonical_json(self.args).decode()}"

    def diff(self) -> list[dict[str, Any]]:
        """Only the fields the action changes, each with its before and after value."""
        keys = list(dict.fromkeys([*self.before, *self.after]))
        return [
            {"field": k, "before": self.before.get(k), "after": self.after.get(k)}
            for k in keys
            if self.before.get(k) != self.after.get(k)
        ]

    def as_event(self) -> dict[str, Any]:
        """The plan as ``action.planned`` event data: target, diff, cost and request body (env values stripped)."""
        return {
            "action": self.action,
            "args": self.args,
            "key": self.key,
            "target": self.target,
            "description": self.description,
            "before": self.before,
            "after": self.after,
            "cost": self.cost,
            "diff": self.diff(),
            "body": without_env_values(self.body),  # a template's literal env values never reach the log
        }


class Action(Protocol):
    """One mitigation: it plans, dry-runs, executes and verifies itself."""

    name: str
    title: str
    reads_cluster: bool  # plans against the deployment, its ReplicaSets and Helm history

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Read the current state and say what ``args`` would change, and at what cost; change nothing."""
        ...

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        """Have the target validate or rehearse ``plan`` without applying it; a one-line result."""
        ...

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        """Apply ``plan`` for real (only after approval); what the target reported back."""
        ...

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Re-read the target: whether it now matches the plan's "after", and what was seen."""
        ...


# --------------------------------------------------------------------------- Kubernetes actions


def _deployment(ctx: Context) -> dict[str, Any]:
    if ctx.cluster is not None:
        data: dict[str, Any] = ctx.cluster.read("deployment")
        return data
    if ctx.view is not None and "deployment" in ctx.view.objects:
        recorded: dict[str, Any] = ctx.view.objects["deployment"]
        return recorded
    raise SourceUnavailable("no cluster: cannot read the Deployment to plan against")


def _container(dep: Mapping[str, Any], name: str | None) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    for c in containers:
        if name is None or c["name"] == name:
            found: dict[str, Any] = c
            return found
    raise BadInputError(f"no container {name!r} in deployment; containers: {[c['name'] for c in containers]}")


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from ref>") for e in container.get("env", [])}


def _need_live(ctx: Context, what: str) -> Any:
    if ctx.cluster is None:
        raise SourceUnavailable(f"{what}: no live cluster (a recorded snapshot cannot be changed)")
    return ctx.cluster


class _PatchAction:
    """Shared dry-run/execute for actions that send one strategic-merge PATCH to the Deployment."""

    name = ""
    title = ""
    reads_cluster = True

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        cluster = _need_live(ctx, "server-side dry run")
        result = cluster.patch_deployment(plan.body, dry_run=True)
        return (
            f"API server accepted the patch (dryRun=All); resulting generation {result['metadata'].get('generation')}"
        )

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        result = _need_live(ctx, "execute").patch_deployment(plan.body, dry_run=False)
        return {"generation": result["metadata"].get("generation")}


class Restart(_PatchAction):
    """Rollout restart (``kubectl rollout restart``): stamp the pod template's restartedAt annotation."""

    name, title = "restart", "Rollout restart (restart connections)"

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Plan a new restartedAt stamp on the pod template, so every pod is replaced by a rolling update."""
        dep = _deployment(ctx)
        stamp = rfc3339(ctx.now) if ctx.now else "now"
        old = dep["spec"]["template"].get("metadata", {}).get("annotations", {}).get(RESTARTED_AT)
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        return Plan(
            self.name,
            dict(args),
            f"deployment/{dep['metadata']['name']}",
            "kubectl rollout restart: replace every pod, one by one",
            {RESTARTED_AT: old},
            {RESTARTED_AT: stamp},
            f"{dep['spec'].get('replicas')} pods restart (rolling update)",
            body,
        )

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Check the Deployment's pod template carries the planned restartedAt stamp; report ready replicas."""
        dep = _deployment(ctx)
        got = dep["spec"]["template"].get("metadata", {}).get("annotations", {}).get(RESTARTED_AT)
        ok = got == plan.after[RESTARTED_AT]
        return ok, f"template annotation {RESTARTED_AT}={got}; ready {dep.get('status', {}).get('readyReplicas')}"


class SetEnv(_PatchAction):
    """Set one environment variable on a Deployment container (``kubectl set env``), e.g. a circuit breaker flag."""

    name, title = "set_env", "Set an environment variable (e.g. enable circuit breakers)"

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Plan a PATCH setting ``name=value`` on the container (default: the first), with the old value as before."""
        if not args.get("name") or "value" not in args:
            raise BadInputError(
                "set_env needs arguments name and value, e.g. {name: CIRCUIT_BREAKER_ENABLED, value: 'true'}"
            )
        dep = _deployment(ctx)
        container = _container(dep, args.get("container"))
        name, value = str(args["name"]), str(args["value"])
        body = {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": container["name"], "env": [{"name": name, "value": value}]}]}
                }
            }
        }
        return Plan(
            self.name,
            dict(args),
            f"deployment/{dep['metadata']['name']}",
            f"kubectl set env deployment/{dep['metadata']['name']} {name}={value}",
            {name: _env(container).get(name)},
            {name: value},
            "pods restart to pick up the variable",
            body,
        )

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Check the container's variable now has the planned value."""
        name = str(plan.args["name"])
        got = _env(_container(_deployment(ctx), plan.args.get("container"))).get(name)
        return got == plan.after[name], f"{name}={got}"


class Scale:
    """Set the Deployment's replica count (plan: ``kubectl scale deployment/… --replicas=N``)."""

    name, title = "scale", "Scale to N replicas"
    reads_cluster = True

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Plan the new replica count (0–500) against the Deployment's current one, with pods added or removed."""
        try:
            replicas = int(args["replicas"])
        except (KeyError, TypeError, ValueError):
            raise BadInputError("scale needs an integer argument replicas, e.g. {replicas: 8}") from None
        if not 0 <= replicas <= 500:
            raise BadInputError(f"replicas {replicas} is out of range 0..500")
        dep = _deployment(ctx)
        current = dep["spec"].get("replicas")
        return Plan(
            self.name,
            {"replicas": replicas},
            f"deployment/{dep['metadata']['name']}",
            f"kubectl scale deployment {dep['metadata']['name']} --replicas={replicas}",
            {"replicas": current},
            {"replicas": replicas},
            f"{abs(replicas - (current or 0))} pods {'added' if replicas >= (current or 0) else 'removed'}",
            {"spec": {"replicas": replicas}},
        )

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        """Ask the API server to validate the scale-subresource PATCH with ``dryRun=All``."""
        result = _need_live(ctx, "server-side dry run").patch_scale(plan.after["replicas"], dry_run=True)
        return f"API server accepted scale to {result['spec']['replicas']} (dryRun=All)"

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        """PATCH the Deployment's scale subresource to the planned replica count."""
        result = _need_live(ctx, "execute").patch_scale(plan.after["replicas"], dry_run=False)
        return {"replicas": result["spec"]["replicas"]}

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Check the Deployment's ``spec.replicas`` is the planned count; report ready replicas."""
        dep = _deployment(ctx)
        got = dep["spec"].get("replicas")
        return got == plan.after["replicas"], f"spec.replicas={got}; ready {dep.get('status', {}).get('readyReplicas')}"


class Rollback(_PatchAction):
    """Roll back the recent change: ``helm rollback`` or the ReplicaSet-template PATCH, as ``kubernetes.rollback`` says."""

    name, title = "rollback", "Roll back the recent change"

    def _helm(self, ctx: Context) -> list[str] | None:
        """The helm command prefix (binary, --kubeconfig, --kube-context) when the strategy is helm; else None."""
        k = ctx.settings.kubernetes
        if k.rollback != "helm":
            return None
        if ctx.view is None or not ctx.view.items("helm-releases"):
            raise SourceUnavailable("kubernetes.rollback is helm but no Helm release history was read")
        binary = shutil.which(k.helm_binary)
        if binary is None:
            raise SourceUnavailable(f"kubernetes.rollback is helm but {k.helm_binary!r} is not an executable")
        return [
            binary,
            *(["--kubeconfig", k.kubeconfig] if k.kubeconfig else []),
            *(["--kube-context", k.context] if k.context else []),
        ]

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Plan ``helm rollback`` to the previous (or given) release, else a PATCH to an older ReplicaSet's template."""
        dep = _deployment(ctx)
        name = dep["metadata"]["name"]
        current = int(dep["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
        helm = self._helm(ctx)
        if helm is not None and ctx.view is not None:
            releases = ctx.view.helm_rows()
            deployed = next((r for r in releases if r["status"] == "deployed"), None)
            older = [
                r
                for r in releases
                if deployed and isinstance(r["revision"], int) and r["revision"] < deployed["revision"]
            ]
            if deployed is None or not older:
                raise BadInputError("the Helm history has no deployed release with an earlier revision to roll back to")
            target = int(args.get("revision") or older[0]["revision"])
            chosen = next((r for r in releases if r["revision"] == target), None)
            if chosen is None:
                raise BadInputError(f"helm release has no revision {target}; revisions: {[r['revision'] for r in releases]}")
            release = ctx.settings.kubernetes.helm_release or ctx.settings.service.name
            namespace = ctx.settings.kubernetes.namespace or ctx.settings.service.namespace
            return Plan(
                self.name,
                dict(args),
                f"helm release {release}",
                f"helm rollback {release} {target} -n {namespace}",
                {
                    "helm revision": deployed["revision"],
                    "chart": deployed["chart"],
                    "app version": deployed["app version"],
                },
                {
                    "helm revision": target,
                    "chart": chosen["chart"],
                    "app version": chosen["app version"],
                },
                "pods replaced by a rolling update",
                {"helm": [*helm, "rollback", release, str(target), "-n", namespace, "--wait"]},
            )
        if ctx.view is None or not ctx.view.items("replicasets"):
            raise SourceUnavailable("no ReplicaSet history to roll back to")
        rows = ctx.view.rollout_rows()
        wanted = int(args["revision"]) if args.get("revision") else None
        older = (
            [r for r in rows if r["revision"] < current]
            if wanted is None
            else [r for r in rows if r["revision"] == wanted]
        )
        if not older:
            raise BadInputError(f"no earlier revision than {current} to roll back to")
        prev = older[0]
        rs = next((i for i in ctx.view.items("replicasets") if i["metadata"]["name"] == prev["replicaset"]), None)
        if rs is None:
            raise SourceUnavailable(f"ReplicaSet {prev['replicaset']} of revision {prev['revision']} was not read")
        template = json.loads(json.dumps(rs["spec"]["template"]))
        template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
        before_c = _container(dep, None)
        after_c = template["spec"]["containers"][0]
        body = {
            "metadata": {
                "annotations": {"kubernetes.io/change-cause": f"irkit rollback to revision {prev['revision']}"}
            },
            "spec": {"template": template},
        }
        return Plan(
            self.name,
            dict(args),
            f"deployment/{name}",
            f"kubectl rollout undo deployment/{name} --to-revision={prev['revision']}",
            {"revision": current, "image": before_c.get("image"), "env": _env(before_c)},
            {"revision": prev["revision"], "image": after_c.get("image"), "env": _env(after_c)},
            f"{dep['spec'].get('replicas')} pods replaced by a rolling update",
            body,
        )

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        """Run ``helm rollback --dry-run``, or for a ReplicaSet rollback a server-side dry-run PATCH."""
        if isinstance(plan.body, dict) and "helm" in plan.body:
            out = _helm([*plan.body["helm"], "--dry-run"], timeout_s=120)
            return f"helm accepted the rollback (--dry-run): {out[:200]}"
        return super().dry_run(ctx, plan)

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        """Run ``helm rollback``, or PATCH the Deployment back to the older ReplicaSet's pod template."""
        if isinstance(plan.body, dict) and "helm" in plan.body:
            return {"helm": _helm(plan.body["helm"], timeout_s=600)[:500]}
        return super().execute(ctx, plan)

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Re-read the result: the Deployment's image, or after a helm rollback the release's new head revision."""
        if isinstance(plan.body, dict) and "helm" in plan.body:
            argv = plan.body["helm"]
            prefix, release, namespace = argv[: argv.index("rollback")], argv[argv.index("rollback") + 1], argv[-2]
            history = _helm([*prefix, "history", release, "-n", namespace, "--max", "1", "-o", "json"], timeout_s=60)
            try:
                head = json.loads(history)[-1]
            except (ValueError, IndexError, KeyError, TypeError):
                return False, f"helm history gave no release: {history[:120]}"
            ok = head.get("status") == "deployed" and plan.after["chart"] == head.get("chart")
            return ok, (
                f"release {release} revision {head.get('revision')} {head.get('status')}, chart {head.get('chart')} "
                f"({head.get('description', '')})"
            )
        image = _container(_deployment(ctx), None).get("image")
        return image == plan.after["image"], f"deployment template image {image}"


# --------------------------------------------------------------------------- Redis and PostgreSQL


def _helm(argv: list[str], *, timeout_s: float) -> str:
    """Run a helm command; its failure, absence or hang is :class:`SourceUnavailable` with helm's own words."""
    what = " ".join(argv[1:3])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"helm {what} could not run: {exc}") from None
    if out.returncode:
        raise SourceUnavailable(f"helm {what} failed: {out.stderr.strip()[:200]}")
    return out.stdout.strip()


@contextlib.contextmanager
def _redis_errors(dep: Dependency) -> Iterator[None]:
    """Redis errors (refused, timed out, auth) become :class:`SourceUnavailable` naming the dependency."""
    import redis

    try:
        yield
    except redis.RedisError as exc:
        raise SourceUnavailable(f"{dep.name}: {type(exc).__name__}: {exc}") from None


def _dependency(ctx: Context, kind: str, name: str | None) -> tuple[Dependency, str]:
    deps = [d for d in ctx.settings.dependencies if d.kind == kind and (name is None or d.name == name)]
    if not deps:
        raise BadInputError(f"no {kind} dependency{f' named {name}' if name else ''} configured")
    dep = deps[0]
    addr = ctx.environ.get(dep.url_env) if dep.url_env else dep.url
    if not addr:
        raise SourceUnavailable(f"{dep.name}: no address (is {dep.url_env} set?)")
    return dep, addr


class FlushCache:
    """``redis-cli FLUSHALL``, or only keys matching a pattern (SCAN + UNLINK), with the cost stated."""

    name, title = "flush_cache", "Clear cache (Redis)"
    reads_cluster = False

    def _client(self, ctx: Context, args: Mapping[str, Any]) -> Any:
        import redis

        dep, url = _dependency(ctx, "redis", args.get("dependency"))
        return redis.Redis.from_url(url, socket_timeout=dep.timeout_s), dep

    def _matching(self, client: Any, pattern: str) -> list[bytes]:
        return list(client.scan_iter(match=pattern, count=1000))

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Count all keys and those matching the pattern (none: all), and state the cold-cache cost."""
        client, dep = self._client(ctx, args)
        pattern = args.get("pattern")
        with _redis_errors(dep):
            total = int(client.dbsize())
            matching = len(self._matching(client, pattern)) if pattern else total
            used = client.info("memory").get("used_memory_human")
        what = f"keys matching {pattern!r}" if pattern else "ALL keys (FLUSHALL)"
        return Plan(
            self.name,
            dict(args),
            f"redis {dep.name}",
            f"delete {what}",
            {"keys": total, "matching": matching},
            {"keys": total - matching, "matching": 0},
            f"{matching} of {total} keys deleted ({used} in use): a cold cache sends their reads to the "
            "database until it warms up",
        )

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        """Count with SCAN the keys that would be deleted; delete nothing."""
        client, dep = self._client(ctx, plan.args)
        pattern = plan.args.get("pattern")
        with _redis_errors(dep):
            n = len(self._matching(client, pattern)) if pattern else int(client.dbsize())
        return f"rehearsal: {n} keys would be deleted (counted with SCAN, nothing deleted)"

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        """FLUSHALL, or UNLINK the keys matching the pattern in batches of 500; how many were deleted."""
        client, dep = self._client(ctx, plan.args)
        pattern = plan.args.get("pattern")
        with _redis_errors(dep):
            if not pattern:
                client.flushall()
                return {"deleted": "all"}
            deleted = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.unlink(*batch))
        return {"deleted": deleted}

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Check no matching keys are left; report how many keys remain in total."""
        client, dep = self._client(ctx, plan.args)
        pattern = plan.args.get("pattern")
        with _redis_errors(dep):
            left = len(self._matching(client, pattern)) if pattern else int(client.dbsize())
            total = client.dbsize()
        return left == 0, f"{left} matching keys left; {total} keys in total"


class DatabaseMaintenance:
    """``VACUUM (ANALYZE)`` of configured tables (``./scripts/db-maintenance.sh --vacuum``)."""

    name, title = "db_maintenance", "Database maintenance (VACUUM ANALYZE)"
    reads_cluster = False

    def _tables(self, ctx: Context, args: Mapping[str, Any]) -> list[str]:
        tables = args.get("tables") or list(ctx.settings.maintenance_tables)
        if not tables:
            raise BadInputError("db_maintenance needs tables (argument tables or maintenance_tables in config)")
        return [str(t) for t in tables]

    def _stats(self, ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
        import psycopg

        dep, dsn = _dependency(ctx, "postgres", args.get("dependency"))
        out: dict[str, Any] = {}
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, int(dep.timeout_s))) as conn:
                for t in self._tables(ctx, args):
                    row = conn.execute(
                        "SELECT n_dead_tup, last_vacuum, last_analyze FROM pg_stat_user_tables "
                        "WHERE relid = to_regclass(%s)",
                        (t,),
                    ).fetchone()
                    if row is None:
                        raise BadInputError(f"table {t} does not exist in {dep.name}")
                    out[t] = {"dead tuples": row[0], "last vacuum": str(row[1]), "last analyze": str(row[2])}
        except psycopg.Error as exc:
            raise SourceUnavailable(f"{dep.name}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from exc
        return out

    def plan(self, ctx: Context, args: Mapping[str, Any]) -> Plan:
        """Read dead tuples and last vacuum/analyze of each table to plan ``VACUUM (ANALYZE)`` of them."""
        tables = self._tables(ctx, args)
        before = self._stats(ctx, args)
        return Plan(
            self.name,
            {**args, "tables": tables},
            f"postgres {', '.join(tables)}",
            f"VACUUM (ANALYZE) {', '.join(tables)}",
            before,
            {t: {"dead tuples": 0, "last vacuum": "now", "last analyze": "now"} for t in tables},
            "I/O load while vacuuming; no locks that block reads or writes",
        )

    def dry_run(self, ctx: Context, plan: Plan) -> str:
        """Check every table exists and report its dead tuples; vacuum nothing."""
        stats = self._stats(ctx, plan.args)
        return "rehearsal: tables exist; dead tuples " + ", ".join(f"{t}={s['dead tuples']}" for t, s in stats.items())

    def execute(self, ctx: Context, plan: Plan) -> dict[str, Any]:
        """Run ``VACUUM (ANALYZE)`` on each planned table, outside any transaction."""
        import psycopg
        from psycopg import sql

        dep, dsn = _dependency(ctx, "postgres", plan.args.get("dependency"))
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:  # VACUUM cannot run inside a transaction
                for t in plan.args["tables"]:
                    parts = [sql.Identifier(p) for p in str(t).split(".")]
                    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(".").join(parts)))
        except psycopg.Error as exc:
            raise SourceUnavailable(f"{dep.name}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}") from None
        return {"vacuumed": plan.args["tables"]}

    def verify(self, ctx: Context, plan: Plan) -> tuple[bool, str]:
        """Check every table now has a last-vacuum time; report it and the dead tuples left."""
        after = self._stats(ctx, plan.args)
        ok = all(s["last vacuum"] != "None" for s in after.values())
        return ok, "; ".join(
            f"{t}: last vacuum {s['last vacuum']}, dead tuples {s['dead tuples']}" for t, s in after.items()
        )


class ActionRegistry:
    """Actions by name; tests may hand in their own."""

    def __init__(self, actions: list[Action] | None = None) -> None:
        self._actions: dict[str, Action] = {a.name: a for a in actions or []}

    def get(self, name: str) -> Action:
        """The action called ``name``; an unknown name is a BadInputError listing the known ones."""
        if name not in self._actions:
            raise BadInputError(f"unknown action {name!r}; actions: {', '.join(self._actions)}")
        return self._actions[name]

    def names(self) -> list[str]:
        """Names of the registered actions, in registration order."""
        return list(self._actions)


def default_actions() -> ActionRegistry:
    """The plan's six mitigations: rollback, scale, restart, set env, flush cache, database maintenance."""
    return ActionRegistry([Rollback(), Scale(), Restart(), SetEnv(), FlushCache(), DatabaseMaintenance()])


# --------------------------------------------------------------------------- the one path


@dataclass
class Outcome:
    """Where an action got to: planned, refused, executed or failed, with everything shown."""

    plan: Plan
    status: str
    dry_run: str
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    verified: bool | None = None
    post_state: str = ""


def guard(plan: Plan, window: timedelta, now: datetime) -> Any:
    """The approval guard, run under the record lock against the current state."""

    def check(state: dict[str, Any]) -> None:
        if state["status"] in (Status.RESOLVED.value, Status.REVIEWED.value):
            raise ActionRefused(f"incident is {state['status']}: mitigations are refused")
        if state["alerts"] and state["alerts_resolved"]:
            raise ActionRefused("all of the incident's alerts have resolved: re-assess before changing production")
        for a in reversed(state["actions"]):
            if a["key"] == plan.key and a["event"] in ("action.approved", "action.executed"):
                when = parse_ts(a["ts"])
                if now - when < window:
                    raise ActionRefused(
                        f"the same action was approved at {a['ts']} (within {window}); refusing to repeat it"
                    )
                break

    return check


def run_action(
    record: Record,
    action: Action,
    args: Mapping[str, Any],
    ctx: Context,
    *,
    approve: bool,
    approver: str,
    actor: str,
    batch: bool,
    window: timedelta = DEFAULT_WINDOW,
) -> Outcome:
    """Plan, dry-run and — only with approval by a named ``approver`` — execute and verify one action.

    Unknown arguments are refused, so the duplicate guard's key cannot be dodged with extra ones.

    ``actor`` is who runs the runbook (every event is theirs); ``approver`` is the person who approves
    this change, recorded on ``action.approved`` and the events after it.
    """
    unknown = set(args) - set(ARGUMENTS.get(action.name, ()))
    if unknown:
        raise BadInputError(
            f"{action.name} takes {', '.join(ARGUMENTS.get(action.name, ())) or 'no arguments'}; "
            f"not {', '.join(sorted(unknown))}"
        )
    plan = action.plan(ctx, args)
    record.append("action.planned", {**plan.as_event(), "approve_requested": approve, "batch": batch}, actor=actor)
    try:
        dry = action.dry_run(ctx, plan)
        dry_ok = True
    except SourceUnavailable as exc:
        dry, dry_ok = f"could not dry-run: {exc}", False
    record.append("action.dry_run", {"key": plan.key, "action": plan.action, "ok": dry_ok, "result": dry}, actor=actor)
    outcome = Outcome(plan, "planned", dry)
    refusal = None
    if not approve:
        outcome.reason = "not executed: approval required (approve=True, with a named actor)"
        return outcome
    if batch:
        refusal = "batch runs started from alerts never change production (plan and dry run only)"
    elif not approver.strip() or approver in ("unknown", "irkit"):
        refusal = "approval needs a named actor (who approves this change?)"
    elif not dry_ok:
        refusal = f"the dry run did not pass: {dry}"
    if refusal is None:
        try:
            record.append(
                "action.approved",
                {"key": plan.key, "action": plan.action, "approved_by": approver},
                actor=approver,
                check=guard(plan, window, ctx.now or record.clock()),
            )
        except ActionRefused as exc:
            refusal = str(exc)
    if refusal is not None:
        record.append("action.refused", {"key": plan.key, "action": plan.action, "reason": refusal}, actor=actor)
        outcome.status, outcome.reason = "refused", refusal
        return outcome
    _move_to_mitigating(record, approver)
    try:
        outcome.result = action.execute(ctx, plan)
    except Exception as exc:  # whatever broke, the approved change ends on the record as failed
        exc = SourceUnavailable(f"{type(exc).__name__}: {exc}") if not isinstance(exc, IrkitError) else exc
        record.append(
            "action.failed",
            {"key": plan.key, "action": plan.action, "error": str(exc), "before": plan.before},
            actor=approver,
        )
        outcome.status, outcome.reason = "failed", str(exc)
        return outcome
    try:
        outcome.verified, outcome.post_state = action.verify(ctx, plan)
    except Exception as exc:
        outcome.verified, outcome.post_state = None, f"could not verify: {exc}"
    record.append(
        "action.executed",
        {
            "key": plan.key,
            "action": plan.action,
            "before": plan.before,
            "after": plan.after,
            "result": outcome.result,
            "verified": outcome.verified,
            "post_state": outcome.post_state,
        },
        actor=approver,
    )
    outcome.status = "executed"
    return outcome


def _move_to_mitigating(record: Record, actor: str) -> None:
    status = record.state()["status"]
    path = {
        Status.DETECTED.value: [Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MITIGATING],
        Status.ACKNOWLEDGED.value: [Status.INVESTIGATING, Status.MITIGATING],
        Status.INVESTIGATING.value: [Status.MITIGATING],
        Status.MONITORING.value: [Status.MITIGATING],
    }.get(status, [])
    for step in path:
        record.set_status(step, actor=actor, reason="mitigation approved")


def mitigate(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    action: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    approve: bool,
    approver: str,
    actor: str,
    batch: bool,
    now: datetime,
    cluster_source: str = "live",
    window: timedelta = DEFAULT_WINDOW,
    actions: ActionRegistry | None = None,
) -> Outcome:
    """Plan, dry-run and — only with ``approve`` and a named ``approver`` — execute one mitigation by name.

    A plan that cannot even be made (the cluster or a dependency is unreachable) is recorded as
    ``action.failed`` and returned as "could not plan".
    """
    from irkit.cluster import PLAN_KINDS, read_cluster

    act = (actions or default_actions()).get(action)
    ctx = Context(settings, environ, now=now)
    if act.reads_cluster:
        src, ctx.view = read_cluster(record, settings, cluster_source, now=now, actor=actor, kinds=PLAN_KINDS)
        ctx.cluster = src if cluster_source == "live" else None
    try:
        return run_action(
            record, act, arguments or {}, ctx, approve=approve, approver=approver, actor=actor, batch=batch, window=window
        )
    except SourceUnavailable as exc:
        plan = Plan(action, dict(arguments or {}), "?", act.title, {}, {}, "")
        record.append("action.failed", {"key": plan.key, "action": action, "error": f"could not plan: {exc}"}, actor=actor)
        return Outcome(plan, "could not plan", "", reason=str(exc))
