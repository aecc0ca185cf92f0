"""Dependency health probes: each answers ok, problem found, or could not check — never a guess.

"The check found a problem" (a 500 from the health endpoint, a database near max_connections, Redis
evicting keys) and "we could not check" (refused connection, DNS failure, wrong password, 403) are
different results with the evidence that decided them and the time the probe took. Probes are
looked up by dependency kind in a :class:`ProbeRegistry`, so tests and teams can add their own.
"""

from __future__ import annotations

import enum
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from irkit.config import Dependency
from irkit.errors import SourceUnavailable
from irkit.http import Http
from irkit.redact import scrub_url


class CheckStatus(enum.StrEnum):
    """The four answers a check can give: ok, problem found, could not check, awaiting a human."""

    OK = "ok"
    PROBLEM = "problem found"
    UNCHECKED = "could not check"
    AWAITING = "awaiting a human"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, with the evidence that decided it."""

    name: str
    status: CheckStatus
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (status as its text, latency rounded to 0.1 ms)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "evidence": self.evidence,
            "details": self.details,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
        }


Probe = Callable[[Dependency, Mapping[str, str]], CheckResult]


class ProbeRegistry:
    """Probes by dependency kind; a fresh registry can be handed in by tests."""

    def __init__(self, probes: Mapping[str, Probe] | None = None) -> None:
        self._probes: dict[str, Probe] = dict(probes or {})

    def register(self, kind: str, probe: Probe) -> None:
        """Use ``probe`` for dependencies of ``kind``, replacing any earlier one."""
        self._probes[kind] = probe

    def run(self, dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
        """Probe one dependency and time it; no probe for its kind, or a crashing probe, is "could not check"."""
        probe = self._probes.get(dep.kind)
        if probe is None:
            return CheckResult(dep.name, CheckStatus.UNCHECKED, f"no probe for kind {dep.kind!r}")
        t0 = time.perf_counter()
        try:
            result = probe(dep, environ)
        except Exception as exc:  # a probe bug must not stop the runbook; it is reported, not hidden
            result = CheckResult(dep.name, CheckStatus.UNCHECKED, f"probe crashed: {type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - t0) * 1000
        return CheckResult(result.name, result.status, result.evidence, result.details, ms)

    def run_all(self, deps: Iterable[Dependency], environ: Mapping[str, str]) -> list[CheckResult]:
        """Probe every dependency concurrently (up to 8 at once); results in the order given."""
        deps = list(deps)
        if not deps:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(deps))) as pool:
            return list(pool.map(lambda d: self.run(d, environ), deps))


def _address(dep: Dependency, environ: Mapping[str, str]) -> str | None:
    if dep.url_env:
        return environ.get(dep.url_env) or None
    return dep.url


def _safe(text: str, address: str) -> str:
    """A driver's error text with the address (and any password in it) scrubbed before it is evidence."""
    from urllib.parse import unquote, urlsplit

    text = text.replace(address, scrub_url(address))
    try:
        password = urlsplit(address if "://" in address else f"//{address}").password
    except ValueError:
        password = None
    for form in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(str(form), "[REDACTED]")
    return text


# Words in a driver's error that mean irkit's own credentials or configuration were refused (irkit could not look).
CREDENTIAL_WORDS = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # the configured role or database
    "NOAUTH",
    "WRONGPASS",
    "invalid password",
)


def _missing(dep: Dependency) -> CheckResult:
    where = f"environment variable {dep.url_env} is not set" if dep.url_env else "no url configured"
    return CheckResult(dep.name, CheckStatus.UNCHECKED, f"no address: {where}")


# --------------------------------------------------------------------------- probes


def probe_http(dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
    """GET the URL: 2xx/3xx ok; any other status, or no answer at all, is a problem found."""
    url = _address(dep, environ)
    if not url:
        return _missing(dep)
    try:
        reply = Http(timeout_s=dep.timeout_s).get(url, allow_redirects=False)
    except SourceUnavailable as exc:  # the dependency is down: that is a finding, not irkit failing to look
        return CheckResult(dep.name, CheckStatus.PROBLEM, str(exc), {"stage": "connect"})
    details = {"status_code": reply.status, "elapsed_ms": reply.elapsed_ms}
    if reply.status < 400:
        return CheckResult(dep.name, CheckStatus.OK, f"HTTP {reply.status}", details)
    return CheckResult(dep.name, CheckStatus.PROBLEM, f"HTTP {reply.status} {reply.reason}", details)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    return parsed.hostname or "", parsed.port or default_port


def probe_tcp(dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
    """Resolve and connect: the network path exists or it does not (with the reason)."""
    url = _address(dep, environ)
    if not url:
        return _missing(dep)
    host, port = _host_port(url, 443 if url.startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return CheckResult(
            dep.name,
            CheckStatus.PROBLEM,
            f"DNS: cannot resolve {host}: {exc.strerror}",
            {"host": host, "stage": "dns"},
        )
    addr = infos[0][4]
    try:
        with socket.create_connection((host, port), timeout=dep.timeout_s):
            pass
    except OSError as exc:
        return CheckResult(
            dep.name,
            CheckStatus.PROBLEM,
            f"cannot connect to {host}:{port}: {exc.strerror or type(exc).__name__}",
            {"host": host, "port": port, "stage": "connect"},
        )
    return CheckResult(
        dep.name,
        CheckStatus.OK,
        f"{host}:{port} reachable ({addr[0]})",
        {"host": host, "port": port, "address": addr[0]},
    )


def probe_postgres(dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
    """SELECT 1, connections vs max_connections, queries running longer than ``slow_query_s``."""
    import psycopg

    dsn = _address(dep, environ)
    if not dsn:
        return _missing(dep)
    timeout_ms = int(dep.timeout_s * 1000)
    try:
        with (
            psycopg.connect(
                dsn, connect_timeout=max(1, int(dep.timeout_s)), options=f"-c statement_timeout={timeout_ms}"
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT 1")
            cur.execute("SELECT count(*) FROM pg_stat_activity")
            row = cur.fetchone()
            used = int(row[0]) if row else 0
            cur.execute("SHOW max_connections")
            row = cur.fetchone()
            maximum = int(row[0]) if row else 0
            cur.execute(
                "SELECT pid, extract(epoch FROM now() - query_start)::int, left(query, 80) FROM pg_stat_activity "
                "WHERE state <> 'idle' AND pid <> pg_backend_pid() AND now() - query_start > make_interval(secs => %s) "
                "ORDER BY query_start LIMIT 5",
                (dep.slow_query_s,),
            )
            long_running = [{"pid": r[0], "seconds": r[1], "query": r[2]} for r in cur.fetchall()]
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Our credentials refused: irkit could not look. Anything else (refused, timed out, gone): the database is down.
        ours = any(w in first for w in CREDENTIAL_WORDS)
        status, stage = (CheckStatus.UNCHECKED, "auth") if ours else (CheckStatus.PROBLEM, "connect")
        return CheckResult(dep.name, status, f"cannot query PostgreSQL: {_safe(first, dsn)[:200]}", {"stage": stage})
    ratio = used / maximum if maximum else 0.0
    details = {"connections": used, "max_connections": maximum, "long_running": long_running}
    problems = []
    if ratio >= 0.9:
        problems.append(f"{used}/{maximum} connections in use ({ratio:.0%})")
    if long_running:
        problems.append(
            f"{len(long_running)} queries running > {dep.slow_query_s:g} s (longest {long_running[0]['seconds']} s)"
        )
    if problems:
        return CheckResult(dep.name, CheckStatus.PROBLEM, "; ".join(problems), details)
    return CheckResult(dep.name, CheckStatus.OK, f"SELECT 1 ok; {used}/{maximum} connections", details)


def probe_redis(dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
    """PING, memory vs maxmemory, connected clients, evicted keys."""
    import redis

    url = _address(dep, environ)
    if not url:
        return _missing(dep)
    try:
        r = redis.Redis.from_url(url, socket_timeout=dep.timeout_s, socket_connect_timeout=dep.timeout_s)
        r.ping()
        info = r.info()
    except redis.RedisError as exc:
        ours = isinstance(exc, redis.AuthenticationError) or any(w in str(exc) for w in CREDENTIAL_WORDS)
        status, stage = (CheckStatus.UNCHECKED, "auth") if ours else (CheckStatus.PROBLEM, "connect")
        text = f"cannot query Redis: {type(exc).__name__}: {_safe(str(exc), url)}"[:200]
        return CheckResult(dep.name, status, text, {"stage": stage})
    used, maxmem = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    evicted, clients = int(info.get("evicted_keys", 0)), int(info.get("connected_clients", 0))
    details = {"used_memory": used, "maxmemory": maxmem, "connected_clients": clients, "evicted_keys": evicted}
    problems = []
    if evicted:
        problems.append(f"{evicted} keys evicted (memory pressure)")
    if maxmem and used / maxmem >= 0.9:
        problems.append(f"memory {used / maxmem:.0%} of maxmemory")
    if problems:
        return CheckResult(dep.name, CheckStatus.PROBLEM, "; ".join(problems), details)
    return CheckResult(dep.name, CheckStatus.OK, f"PONG; {clients} clients; {used // 1024} KiB used", details)


def probe_s3(dep: Dependency, environ: Mapping[str, str]) -> CheckResult:
    """HEAD the bucket: reachable and present, missing (problem), or forbidden/unreachable (could not check)."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if not dep.bucket:
        return CheckResult(dep.name, CheckStatus.UNCHECKED, "no bucket configured")
    creds = {}
    if dep.access_key_env and dep.secret_key_env:
        creds = {
            "aws_access_key_id": environ.get(dep.access_key_env),
            "aws_secret_access_key": environ.get(dep.secret_key_env),
        }
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=_address(dep, environ),
        region_name=dep.region,
        config=BotoConfig(connect_timeout=dep.timeout_s, read_timeout=dep.timeout_s, retries={"max_attempts": 1}),
        **creds,
    )
    try:
        s3.head_bucket(Bucket=dep.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return CheckResult(dep.name, CheckStatus.PROBLEM, f"bucket {dep.bucket} does not exist", {"code": code})
        return CheckResult(dep.name, CheckStatus.UNCHECKED, f"HEAD {dep.bucket} refused: {code}", {"code": code})
    except NoCredentialsError:
        return CheckResult(dep.name, CheckStatus.UNCHECKED, "no S3 credentials (access_key_env/secret_key_env)")
    except BotoCoreError as exc:  # endpoint refused or timed out: S3 is unreachable from here, a finding
        return CheckResult(dep.name, CheckStatus.PROBLEM, f"S3 unreachable: {type(exc).__name__}", {"stage": "connect"})
    return CheckResult(dep.name, CheckStatus.OK, f"bucket {dep.bucket} reachable", {"bucket": dep.bucket})


def default_registry() -> ProbeRegistry:
    """Probes for the built-in dependency kinds: http, tcp, postgres, redis and s3."""
    return ProbeRegistry(
        {"http": probe_http, "tcp": probe_tcp, "postgres": probe_postgres, "redis": probe_redis, "s3": probe_s3}
    )
