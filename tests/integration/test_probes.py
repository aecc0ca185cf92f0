"""Dependency probes against real PostgreSQL, Redis, an S3-compatible server and HTTP servers."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
import redis

from irkit.alerts import load_notification_file, open_from_notification
from irkit.checklist import Evidence, check_sentry
from irkit.config import Dependency, load_config
from irkit.demo import SCENARIO_DIR
from irkit.probes import CheckStatus, default_registry
from irkit.scenarios import pool_exhaustion as scenario
from irkit.scenarios.tsdb import free_port

PROBES = default_registry()


def run(kind: str, **kw: Any):
    return PROBES.run(Dependency(name=kind, kind=kind, **kw), {})


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_healthy_is_ok(postgres_server) -> None:
    r = run("postgres", url=postgres_server.dsn)
    assert r.status == CheckStatus.OK, r
    assert r.details["max_connections"] == postgres_server.max_connections and r.latency_ms is not None


def test_postgres_near_max_connections_is_a_problem(postgres_server) -> None:
    conns = []
    try:
        # leave a couple of slots for the probe and superuser reserve
        for _ in range(postgres_server.max_connections - 5):
            conns.append(psycopg.connect(postgres_server.dsn))
        r = run("postgres", url=postgres_server.dsn)
    finally:
        for c in conns:
            c.close()
    assert r.status == CheckStatus.PROBLEM, r
    assert f"/{postgres_server.max_connections} connections in use" in r.evidence


def test_postgres_long_running_query_is_a_problem(postgres_server) -> None:
    import time

    blocker = psycopg.connect(postgres_server.dsn, autocommit=True)
    pid = blocker.info.backend_pid
    thread = threading.Thread(target=lambda: _quietly(blocker.execute, "SELECT pg_sleep(30)"), daemon=True)
    thread.start()
    try:
        time.sleep(2.5)
        r = run("postgres", url=postgres_server.dsn, slow_query_s=2)
    finally:
        with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(5)
        blocker.close()
    assert r.status == CheckStatus.PROBLEM and "running > 2 s" in r.evidence
    assert r.details["long_running"][0]["pid"] == pid


def _quietly(fn: Any, *args: Any) -> None:
    with contextlib.suppress(psycopg.Error):  # cancelled on purpose
        fn(*args)


def test_postgres_stopped_is_a_problem_found() -> None:
    r = run("postgres", url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout_s=2)
    assert r.status == CheckStatus.PROBLEM and "cannot query PostgreSQL" in r.evidence


def test_postgres_dns_failure_is_a_problem_found() -> None:
    r = run("postgres", url="postgresql://postgres@db.does-not-exist.invalid:5432/postgres", timeout_s=2)
    assert r.status == CheckStatus.PROBLEM


def test_postgres_refusing_our_role_is_could_not_check(postgres_server) -> None:
    url = postgres_server.dsn.replace("postgresql://postgres@", "postgresql://irkit_nobody:pw-canary@", 1)
    r = run("postgres", url=url, timeout_s=2)
    assert r.status == CheckStatus.UNCHECKED and "pw-canary" not in r.evidence, r


def test_postgres_secret_dsn_from_env_and_missing_env(postgres_server) -> None:
    dep = Dependency(name="db", kind="postgres", url_env="TEST_DATABASE_URL")
    assert PROBES.run(dep, {"TEST_DATABASE_URL": postgres_server.dsn}).status == CheckStatus.OK
    r = PROBES.run(dep, {})
    assert r.status == CheckStatus.UNCHECKED and "TEST_DATABASE_URL is not set" in r.evidence


# --------------------------------------------------------------------------- Redis


def test_redis_healthy_is_ok(redis_server) -> None:
    r = run("redis", url=redis_server.url)
    assert r.status == CheckStatus.OK and r.evidence.startswith("PONG")


def test_redis_with_evictions_is_a_problem(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("maxmemory", "2mb")
        blob = b"x" * 10_000
        for i in range(600):
            client.set(f"k{i}", blob)
        r = run("redis", url=redis_server.url)
    finally:
        client.config_set("maxmemory", "0")
        client.flushall()
        client.config_resetstat()
    assert r.status == CheckStatus.PROBLEM and "evicted" in r.evidence
    assert r.details["evicted_keys"] > 0


def test_redis_stopped_is_a_problem_found() -> None:
    r = run("redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    assert r.status == CheckStatus.PROBLEM and "ConnectionError" in r.evidence


# --------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture
def s3_endpoint(s3_server) -> str:
    return s3_server.endpoint


S3_ENV = {"AK": "testing-access", "SK": "testing-secret"}


def s3(endpoint: str, bucket: str):
    dep = Dependency(
        name="s3", kind="s3", url=endpoint, bucket=bucket, access_key_env="AK", secret_key_env="SK", timeout_s=3
    )
    return PROBES.run(dep, S3_ENV)


def test_s3_bucket_ok_missing_and_unreachable(s3_endpoint: str) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ).create_bucket(Bucket="schema-registry-artifacts")
    assert s3(s3_endpoint, "schema-registry-artifacts").status == CheckStatus.OK
    missing = s3(s3_endpoint, "no-such-bucket")
    assert missing.status == CheckStatus.PROBLEM and "does not exist" in missing.evidence
    down = s3(f"http://127.0.0.1:{free_port()}", "schema-registry-artifacts")
    assert down.status == CheckStatus.PROBLEM and "unreachable" in down.evidence


# --------------------------------------------------------------------------- HTTP, TCP, Sentry


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, Any]]] = {}
    seen: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
        code, body = self.routes.get(self.path.split("?")[0], (404, {"detail": "not found"}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"routes": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_http_ok_problem_and_unreachable(http_server) -> None:
    url, handler = http_server
    handler.routes.update({"/health": (200, {"ok": True}), "/broken": (503, {"ok": False})})
    assert run("http", url=f"{url}/health").status == CheckStatus.OK
    bad = run("http", url=f"{url}/broken")
    assert bad.status == CheckStatus.PROBLEM and "503" in bad.evidence
    assert run("http", url=f"http://127.0.0.1:{free_port()}/health", timeout_s=2).status == CheckStatus.PROBLEM


def test_tcp_and_dns(redis_server) -> None:
    assert run("tcp", url=f"tcp://127.0.0.1:{redis_server.port}").status == CheckStatus.OK
    dns = run("tcp", url="tcp://nothing-here.invalid:443", timeout_s=2)
    assert dns.status == CheckStatus.PROBLEM and dns.evidence.startswith("DNS")


def test_sentry_new_issues_are_a_problem(http_server) -> None:
    url, handler = http_server
    handler.routes["/api/0/projects/acme/schema-registry/issues/"] = (
        200,
        [
            {
                "shortId": "SR-1432",
                "title": "ConnectionTimeout: pool exhausted",
                "count": "812",
                "firstSeen": "2025-11-20T14:27:05Z",
                "permalink": "https://sentry.example/SR-1432",
            },
            {"shortId": "SR-900", "title": "old thing", "count": "3", "firstSeen": "2025-10-01T00:00:00Z"},
        ],
    )
    settings = load_config(
        None,
        {
            "IRKIT_SENTRY": json.dumps(
                {"url": url, "org": "acme", "project": "schema-registry", "token_env": "SENTRY_TOKEN"}
            )
        },
    )
    r = check_sentry(Evidence(settings, {"SENTRY_TOKEN": "tok-abc"}, scenario.TIMELINE["alert"], None))
    assert r.status == CheckStatus.PROBLEM and "SR-1432" in r.evidence and "SR-900" not in r.evidence
    assert handler.seen[-1]["auth"] == "Bearer tok-abc" and "is%3Aunresolved" in handler.seen[-1]["path"]


# --------------------------------------------------------------------------- irkit check


def test_irkit_check_stopped_redis_and_healthy_postgres(cli, tmp_path: Path, postgres_server) -> None:
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(
        "dependencies:\n"
        f"  - {{name: postgres, kind: postgres, url: '{postgres_server.dsn}'}}\n"
        f"  - {{name: redis, kind: redis, url: 'redis://127.0.0.1:{free_port()}/0', timeout_s: 2}}\n"
    )
    records = tmp_path / "r"
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    rec = open_from_notification(records, note, service="schema-registry", actor="am")
    res = cli(
        "check",
        rec.id,
        "--records",
        str(records),
        "--config",
        str(cfg),
        "--cluster-source",
        "recorded",
        "--metrics-source",
        "recorded",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    rows = {r["item"]: r for r in json.loads(res.stdout)}
    assert rows["Verify database health and connectivity"]["status"] == "ok"
    assert rows["Verify Redis cache health"]["status"] == "problem found"  # a stopped Redis is a finding
    # no cluster snapshot in this record: the cluster items say so instead of passing
    assert rows["Check recent deployments/changes"]["status"] == "could not check"
    assert sum(1 for e in rec.events() if e["type"] == "check.recorded") == 10
