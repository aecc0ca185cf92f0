"""``irkit serve``: the Alertmanager webhook receiver (ASGI, Starlette), wrapped around :mod:`irkit.intake`.

``POST /alerts`` takes Alertmanager webhook payloads (version 4). Credentials (bearer token or basic
auth, as Alertmanager's ``http_config`` sends them) are compared in constant time; without them the
answer is 401 and nothing is touched. The body is size-limited and schema-validated before it is
persisted; only a persisted notification gets its 200. ``GET /healthz`` reports the queue;
``GET /metrics`` exposes counters and a run-duration histogram in Prometheus format. The plan's clock
(:class:`irkit.scheduler.Ticker`) runs alongside: escalations and update reminders every ``serve.tick_s``.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from irkit.alerts import parse_notification
from irkit.config import Settings
from irkit.errors import BadInputError, ConfigError, StorageError
from irkit.intake import Intake, PgQueue, Queue, Workers, default_queue_path, group_key
from irkit.redact import Redactor
from irkit.scheduler import Ticker
from irkit.store import open_store


class Metrics:
    """The receiver's own metrics, in a registry of its own (tests get a fresh one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter("irkit_alerts_received", "Alertmanager notifications accepted", registry=self.registry)
        self.rejected = Counter("irkit_alerts_rejected", "Notifications refused", ["reason"], registry=self.registry)
        self.opened = Counter("irkit_incidents_opened", "Incidents opened from alerts", registry=self.registry)
        self.runs = Counter("irkit_runs", "Runbook runs finished", ["outcome"], registry=self.registry)
        self.failed = Counter(
            "irkit_intake_failures", "Notifications that could not be applied", ["reason"], registry=self.registry
        )
        self.depth = Gauge("irkit_queue_depth", "Jobs and notifications waiting", registry=self.registry)
        self.duration = Histogram(
            "irkit_run_duration_seconds",
            "Runbook run duration",
            registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
        )

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Count an intake event (incident opened, intake failure, run finished) in the receiver's metrics."""
        if kind == "incident_opened":
            self.opened.inc()
        elif kind == "intake_failed":
            self.failed.labels(data["reason"]).inc()
        elif kind == "intake_error":
            self.failed.labels("intake loop").inc()
        elif kind == "run_finished":
            self.runs.labels("ok" if data["ok"] else "failed").inc()
            self.duration.observe(data["seconds"])


def credentials_check(settings: Settings, environ: Mapping[str, str]) -> Any:
    """A constant-time check of the Authorization header; refuses to start without configured credentials."""
    serve = settings.serve
    expected: list[str] = []
    if serve.token_env:
        token = environ.get(serve.token_env)
        if not token:
            raise ConfigError(f"serve.token_env: environment variable {serve.token_env} is not set")
        expected.append(f"Bearer {token}")
    if serve.basic:
        password = environ.get(serve.basic.password_env)
        if not password:
            raise ConfigError(f"serve.basic.password_env: environment variable {serve.basic.password_env} is not set")
        raw = base64.b64encode(f"{serve.basic.username}:{password}".encode()).decode()
        expected.append(f"Basic {raw}")
    if not expected:
        raise ConfigError("serve: configure token_env or basic (the webhook must authenticate its caller)")
    wanted = [e.encode() for e in expected]

    def check(header: str | None) -> bool:
        given = (header or "").strip().encode()
        ok = False
        for w in wanted:  # compare against every accepted form, in constant time each
            ok |= hmac.compare_digest(given, w)
        return ok

    return check


def create_app(
    settings: Settings, environ: Mapping[str, str], records: Path, *, start_workers: bool = True, run: Any = None
) -> Starlette:
    """The ASGI app, its queue and its workers (started with the app, stopped with it)."""
    from irkit.runner import run_runbook

    check = credentials_check(settings, environ)
    store = open_store(settings, environ, records)
    queue: Queue | PgQueue = (
        PgQueue(settings.store.url, lease_s=settings.store.lease.total_seconds())
        if store.shared
        else Queue(default_queue_path(settings, records))
    )
    metrics = Metrics()
    intake = Intake(settings, environ, records, queue, run or run_runbook, on_event=metrics.event, store=store)
    workers = Workers(intake)
    limit = settings.serve.max_body_bytes
    # Configured secrets and patterns only on the hot path: the secret detector (and its process-wide
    # lock, shared with the intake thread) would add ~15 ms to every 200; records get the full redactor.
    redactor = Redactor.from_settings(settings, environ, detect=False)

    def refuse(code: int, reason: str, message: str) -> JSONResponse:
        metrics.rejected.labels(reason).inc()
        return JSONResponse({"error": message}, status_code=code)

    async def alerts(request: Request) -> Response:
        if not check(request.headers.get("authorization")):
            return refuse(401, "unauthorized", "missing or wrong credentials")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return refuse(413, "too_large", f"body over {limit} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return refuse(413, "too_large", f"body over {limit} bytes")
        try:
            note = parse_notification(body)
        except BadInputError as exc:
            return refuse(400 if "JSON" in str(exc) or "json" in str(exc) else 422, "invalid", str(exc))
        # Stored redacted: the queue lives under the records root, where no secret may be written.
        stored = json.dumps(redactor.data(json.loads(body)), ensure_ascii=False).encode()
        try:
            nid = queue.accept(stored, group_key(note, settings.serve.group_by))
        except StorageError as exc:  # nothing was stored: Alertmanager retries (to this or another replica)
            return refuse(503, "storage", str(exc))
        metrics.received.inc()
        workers.notify()
        return JSONResponse({"accepted": nid, "alerts": len(note.alerts), "status": note.status})

    async def healthz(request: Request) -> Response:
        try:
            counts = queue.counts()
        except StorageError as exc:  # not ready: a load balancer sends alerts to a replica that can store them
            return JSONResponse({"ok": False, "status": "unavailable", "error": str(exc)}, status_code=503)
        pool = intake.pool
        failed = counts.get("notifications_failed", 0)
        waiting = queue.oldest_pending_s()
        stalled = waiting > 60  # an accepted notification not applied within a minute
        return JSONResponse(
            {
                "ok": True,  # serving; "status" says whether every accepted notification was applied
                "status": "degraded" if failed or stalled else "ok",
                **counts,
                "oldest_pending_s": round(waiting, 1),
                "last_failure": queue.last_failure() if failed else None,
                "warm_kernels": pool.ready() if pool is not None else 0,
                "tick": None if ticker is None else {"passes": ticker.passes, "last_error": ticker.last_error},
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        counts = queue.counts()
        metrics.depth.set(
            counts.get("jobs_queued", 0) + counts.get("jobs_running", 0) + counts.get("notifications_pending", 0)
        )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    ticker: Ticker | None = None
    if start_workers and settings.serve.tick_s > 0:
        ticker = Ticker(records, settings, environ, interval_s=settings.serve.tick_s, store=store)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool = None
        if start_workers:
            from irkit.runstate import recover_all

            if not store.shared:  # a shared store's cache holds nothing uncommitted worth recovering
                recover_all(records, settings.record_options(environ), actor="irkit-serve")
            if settings.serve.warm_pool and settings.serve.runbooks:
                from irkit.kernels import KernelPool

                pool = KernelPool(workers.size, kernel_name=settings.runner.kernel_name, env=environ)
                intake.pool = pool
            if settings.serve.runbooks:
                from irkit.runner import warm_client

                warm_client(settings, settings.serve.runbooks)  # the first alert's run pays nothing extra
            workers.start()
            if ticker is not None:
                ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
            workers.stop()
            if pool is not None:
                pool.shutdown()

    app = Starlette(
        routes=[
            Route("/alerts", alerts, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.queue, app.state.intake, app.state.workers, app.state.metrics = queue, intake, workers, metrics
    return app


def serve(
    settings: Settings, environ: Mapping[str, str], records: Path, *, host: str | None = None, port: int | None = None
) -> None:
    """Run the receiver with uvicorn until interrupted."""
    import uvicorn

    app = create_app(settings, environ, records)
    uvicorn.run(
        app,
        host=host or settings.serve.host,
        port=port or settings.serve.port,
        log_level="warning",
        limit_concurrency=256,
        timeout_graceful_shutdown=30,
    )
