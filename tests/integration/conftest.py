"""Session fixtures that run REAL Prometheus, PostgreSQL and Redis servers.

Mocks of these servers would only prove that irkit agrees with our mocks, so
integration tests talk to the real binaries from Debian packages instead.
Each fixture:

* picks a free loopback port and a private temp dir, so tests never collide
  with system services (Debian may have started them on default ports) or
  with a parallel test run;
* polls for readiness every 50 ms with a ~30 s deadline and, on failure,
  fails with the tail of the server's own log (the only useful clue in CI);
* kills the server in a ``finally`` block, so nothing is left running even
  when a test, or the fixture's own startup, fails.

A missing binary is a hard ``pytest.fail`` naming the Debian package to
install: silently skipped integration tests are worse than failing ones.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from scenario import Scenario, build_scenario, render_openmetrics

from servers import LOG_TAIL_LINES, STARTUP_DEADLINE_S, STOP_TIMEOUT_S, ServerProcess, free_port

POSTGRES_MAX_CONNECTIONS: Final = 37  # deliberately not the default (100)

_PROMETHEUS_CONFIG: Final = """\
# No scrape targets: the TSDB only holds backfilled, recorded data, and
# self-scraping would add live series that make count()/sum() nondeterministic.
global:
  scrape_interval: 1m
  evaluation_interval: 1m
scrape_configs: []
"""


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------


def _require_binary(name: str, debian_package: str) -> str:
    """Return the path of ``name`` or fail with the package that provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"'{name}' not found on PATH: install the Debian package: apt-get install {debian_package}",
            pytrace=False,
        )
    return path


def _postgres_bindir() -> Path:
    """Locate Debian's versioned PostgreSQL bindir (newest major wins).

    Debian does not put ``initdb``/``postgres`` on PATH; they live in
    ``/usr/lib/postgresql/<major>/bin``.  Fall back to PATH for other distros.
    """
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def major(path: str) -> int:
        version = Path(path).parent.parent.name
        return int(version) if version.isdigit() else -1

    if candidates:
        return Path(max(candidates, key=major)).parent
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    pytest.fail(
        "PostgreSQL 'initdb' not found under /usr/lib/postgresql/*/bin: "
        "install the Debian package: apt-get install postgresql",
        pytrace=False,
    )


def _run_checked(argv: Sequence[str], what: str, cwd: Path) -> None:
    """Run a short setup command; fail with its output if it does not succeed."""
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        timeout=STARTUP_DEADLINE_S * 4,
        check=False,
    )
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        pytest.fail(
            f"{what} failed with status {result.returncode}: {' '.join(argv)}\n" + "\n".join(output),
            pytrace=False,
        )


def _http_get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:<port><path>``.

    Plain ``http.client`` on purpose: urllib and requests honour
    ``HTTP_PROXY`` and would send loopback probes to a CI proxy.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _http_ok(port: int, path: str) -> bool:
    try:
        status, _ = _http_get(port, path, timeout=1.0)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus whose TSDB holds the backfilled ``scenario``."""

    url: str
    port: int
    scenario: Scenario
    version: tuple[int, int, int]
    data_dir: Path
    startup_seconds: float

    @property
    def range_left_closed(self) -> bool:
        """Whether ``[1m]`` includes a sample exactly 1m old (true before 3.0)."""
        return self.version[0] < 3


def _prometheus_version(port: int) -> tuple[int, int, int]:
    """Server version, so tests can account for PromQL semantics changes."""
    status, body = _http_get(port, "/api/v1/status/buildinfo", timeout=5.0)
    if status != 200:
        pytest.fail(f"prometheus buildinfo returned HTTP {status}: {body[:200]!r}", pytrace=False)
    # e.g. "2.42.0+ds" on Debian
    version = str(json.loads(body)["data"]["version"])
    parts = [*version.split("+")[0].split("-")[0].split("."), "0", "0"]
    major, minor, patch = (int(p) for p in parts[:3])
    return major, minor, patch


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    """Prometheus on a free port, serving the recorded schema-registry incident."""
    prometheus = _require_binary("prometheus", "prometheus")
    promtool = _require_binary("promtool", "prometheus")
    scenario = build_scenario()
    tmp = Path(tempfile.mkdtemp(prefix="irkit-prometheus-"))
    process: ServerProcess | None = None
    try:
        data_dir = tmp / "data"
        openmetrics = tmp / "scenario.om.txt"
        openmetrics.write_text(render_openmetrics(scenario))
        config = tmp / "prometheus.yml"
        config.write_text(_PROMETHEUS_CONFIG)
        began = time.monotonic()
        _run_checked(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data_dir)],
            "promtool backfill",
            cwd=tmp,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = ServerProcess(
            "prometheus",
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            tmp / "prometheus.log",
            cwd=tmp,
        )
        process.wait_until(lambda: _http_ok(port, "/-/ready"), "ready on /-/ready")
        yield PrometheusServer(
            url=url,
            port=port,
            scenario=scenario,
            version=_prometheus_version(port),
            data_dir=data_dir,
            startup_seconds=time.monotonic() - began,
        )
    finally:
        if process is not None:
            process.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    """A throwaway PostgreSQL cluster with trust auth on a free loopback port."""

    dsn: str
    host: str
    port: int
    user: str
    dbname: str
    socket_dir: Path
    max_connections: int
    startup_seconds: float


def _postgres_status_ready(data_dir: Path) -> bool:
    """Whether the postmaster says it accepts connections.

    Line 8 of ``postmaster.pid`` is the postmaster's status and reads
    ``ready`` only once startup/recovery is over; an open TCP port alone
    would still answer "the database system is starting up".
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL from Debian's versioned bindir, run as ``postgres`` if we are root.

    ``initdb`` and ``postgres`` refuse to run as root, so as root the temp dir
    is handed to the ``postgres`` system user and commands go through
    ``runuser``; as a normal user they run directly.
    """
    bindir = _postgres_bindir()
    initdb, postgres, pg_ctl = (str(bindir / name) for name in ("initdb", "postgres", "pg_ctl"))
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root but no 'postgres' system user exists: "
                "install the Debian package: apt-get install postgresql",
                pytrace=False,
            )
        prefix = [_require_binary("runuser", "util-linux"), "-u", "postgres", "--"]

    # Deliberately not tmp_path_factory: its dirs are 0700 under a root-owned
    # parent, which the postgres user could not traverse.
    tmp = Path(tempfile.mkdtemp(prefix="irkit-postgres-"))
    data_dir, socket_dir = tmp / "data", tmp / "socket"
    socket_dir.mkdir()
    if owner is not None:
        for path in (tmp, socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    process: ServerProcess | None = None
    try:
        began = time.monotonic()
        _run_checked(
            [
                *prefix,
                initdb,
                f"--pgdata={data_dir}",
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # throwaway cluster: durability is irrelevant
            ],
            "initdb",
            cwd=tmp,
        )
        port = free_port()
        process = ServerProcess(
            "postgres",
            [
                *prefix,
                postgres,
                "-D",
                str(data_dir),
                "-p",
                str(port),
                "-k",
                str(socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"max_connections={POSTGRES_MAX_CONNECTIONS}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            tmp / "postgres.log",
            cwd=tmp,
        )
        process.wait_until(
            lambda: _postgres_status_ready(data_dir) and _tcp_open("127.0.0.1", port),
            "accepting connections",
        )
        yield PostgresServer(
            dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            socket_dir=socket_dir,
            max_connections=POSTGRES_MAX_CONNECTIONS,
            startup_seconds=time.monotonic() - began,
        )
    finally:
        if process is not None:
            if not process.exited():
                # Fast shutdown: disconnect clients, checkpoint, exit cleanly.
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    subprocess.run(
                        [
                            *prefix,
                            pg_ctl,
                            "stop",
                            "-D",
                            str(data_dir),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            str(int(STOP_TIMEOUT_S)),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        cwd=tmp,
                        timeout=STOP_TIMEOUT_S + 5,
                        check=False,
                    )
            process.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    """A non-persistent Redis on a free loopback port."""

    url: str
    host: str
    port: int
    startup_seconds: float


def _redis_command(port: int, *args: str) -> bytes:
    """Send one RESP command and return the raw reply (no redis-py needed here)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(payload.encode())
        try:
            return sock.recv(1024)
        except OSError:
            return b""


def _redis_pong(port: int) -> bool:
    try:
        return _redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """redis-server with persistence disabled, its dir in a temp dir."""
    redis_bin = _require_binary("redis-server", "redis-server")
    tmp = Path(tempfile.mkdtemp(prefix="irkit-redis-"))
    process: ServerProcess | None = None
    try:
        began = time.monotonic()
        port = free_port()
        process = ServerProcess(
            "redis-server",
            [
                redis_bin,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
                "--daemonize",
                "no",
            ],
            tmp / "redis.log",
            cwd=tmp,
        )
        process.wait_until(lambda: _redis_pong(port), "answering PING")
        yield RedisServer(
            url=f"redis://127.0.0.1:{port}/0",
            host="127.0.0.1",
            port=port,
            startup_seconds=time.monotonic() - began,
        )
    finally:
        if process is not None:
            if not process.exited():
                with contextlib.suppress(OSError):
                    _redis_command(port, "SHUTDOWN", "NOSAVE")
            process.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Prometheus holding irkit's scenarios (through irkit's own backfill helper)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def incident_prometheus() -> Iterator[str]:
    """Prometheus serving the bundled pool-exhaustion incident (and its baseline week); yields its URL."""
    from irkit.scenarios.pool_exhaustion import render_openmetrics
    from irkit.scenarios.tsdb import serve

    _require_binary("prometheus", "prometheus")
    with serve(render_openmetrics()) as served:
        yield served.url


@pytest.fixture(scope="session")
def boundary_prometheus() -> Iterator[str]:
    """Prometheus serving one service per plan severity boundary; yields its URL."""
    from boundaries import render

    from irkit.scenarios.tsdb import serve

    _require_binary("prometheus", "prometheus")
    with serve(render()) as served:
        yield served.url


# --------------------------------------------------------------------------
# Alertmanager
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertmanagerServer:
    """A real Alertmanager on a free loopback port (clustering off, storage in a temp dir)."""

    url: str
    port: int
    directory: Path


ALERTMANAGER_CONFIG = """\
route:
  receiver: blackhole
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: blackhole
"""


@pytest.fixture(scope="session")
def alertmanager_server() -> Iterator[AlertmanagerServer]:
    """Alertmanager with a do-nothing receiver, for the API that lists active alerts."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("'prometheus-alertmanager' not found: apt-get install prometheus-alertmanager", pytrace=False)
    tmp = Path(tempfile.mkdtemp(prefix="irkit-alertmanager-"))
    process: ServerProcess | None = None
    try:
        (tmp / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG)
        port = free_port()
        process = ServerProcess(
            "alertmanager",
            [
                binary,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            tmp / "alertmanager.log",
            cwd=tmp,
        )
        process.wait_until(lambda: _http_ok(port, "/-/ready"), "ready on /-/ready")
        yield AlertmanagerServer(f"http://127.0.0.1:{port}", port, tmp)
    finally:
        if process is not None:
            process.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# An S3-compatible server (moto's standalone server, a real HTTP S3 API)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """moto_server on a free loopback port, in its own process (shared by every process a test starts)."""

    endpoint: str
    env: dict[str, str]  # what a client needs: endpoint and keys, by the names irkit reads by default

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The Python package's ``moto_server`` (installed with irkit[dev]), as a child process."""
    import sys

    binary = Path(sys.executable).with_name("moto_server")
    if not binary.is_file():
        pytest.fail(f"{binary} not found: pip install 'moto[server]' (part of irkit[dev])", pytrace=False)
    tmp = Path(tempfile.mkdtemp(prefix="irkit-s3-"))
    port = free_port()
    process = ServerProcess("moto_server", [str(binary), "-H", "127.0.0.1", "-p", str(port)], tmp / "s3.log", cwd=tmp)
    try:
        process.wait_until(lambda: _tcp_open("127.0.0.1", port), f"listening on {port}")
        endpoint = f"http://127.0.0.1:{port}"
        yield S3Server(
            endpoint,
            {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "irkit-test", "AWS_SECRET_ACCESS_KEY": "irkit-test-secret"},
        )
    finally:
        process.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class TeamStore:
    """A fresh database on the session's PostgreSQL and a fresh bucket on its S3 server."""

    dsn: str
    store: dict[str, str]  # the ``store:`` settings that name them
    env: dict[str, str]  # the bucket's endpoint and keys


@pytest.fixture
def team_store(postgres_server: PostgresServer, s3_server: S3Server) -> TeamStore:
    import uuid

    import psycopg

    name = f"irkit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    bucket = name.replace("_", "-")
    s3_server.create_bucket(bucket)
    dsn = postgres_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    return TeamStore(dsn, {"url": dsn, "artifacts": f"s3://{bucket}/records"}, dict(s3_server.env))
