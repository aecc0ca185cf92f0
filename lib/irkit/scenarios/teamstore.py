"""A throwaway team store on loopback: a PostgreSQL cluster and an S3-compatible server, for benches.

PostgreSQL comes from Debian's versioned bindir (``initdb`` refuses root, so as root the cluster is
owned by the ``postgres`` user and run through ``runuser``); the S3 API is moto's standalone server
(``moto_server``, installed with ``irkit[dev]``). Both live in a temporary directory that goes away
with them. The test suite has its own fixtures for the same servers (tests/integration/conftest.py).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from irkit.errors import SourceUnavailable
from irkit.scenarios.tsdb import free_port


@dataclass(frozen=True)
class TeamStore:
    """Where the throwaway store is: the ``store:`` settings and the env vars a replica needs."""

    dsn: str
    settings: dict[str, str]
    env: dict[str, str]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if proc.poll() is not None:
            raise SourceUnavailable(f"{what} exited with {proc.returncode} before listening")
        time.sleep(0.1)
    raise SourceUnavailable(f"{what} did not listen on {port} within {deadline_s:.0f} s")


@contextlib.contextmanager
def team_store(bucket: str = "irkit-records") -> Iterator[TeamStore]:
    """Start PostgreSQL and an S3 server, create the bucket, and yield where they are; stop both after."""
    import boto3

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    moto = Path(sys.executable).with_name("moto_server")
    if not found or not moto.is_file():
        raise SourceUnavailable("needs Debian's postgresql and moto_server (pip install 'moto[server]')")
    bindir = Path(found[-1]).parent
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    tmp = Path(tempfile.mkdtemp(prefix="irkit-teamstore-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if as_root:
            shutil.chown(tmp, "postgres", "postgres")
        data = tmp / "pg"
        subprocess.run(
            [*prefix, str(bindir / "initdb"), f"--pgdata={data}", "--username=postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        pg_port, s3_port = free_port(), free_port()
        pg_args = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off"]
        procs.append(
            subprocess.Popen(
                [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(pg_port), *pg_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(s3_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
                start_new_session=True,
            )
        )
        _wait_port(pg_port, procs[0], "postgres")
        _wait_port(s3_port, procs[1], "moto_server")
        endpoint = f"http://127.0.0.1:{s3_port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
        keys = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=bucket)
        dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        _wait_ready(dsn)
        yield TeamStore(dsn, {"url": dsn, "artifacts": f"s3://{bucket}/records"}, env)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(dsn: str, deadline_s: float = 30) -> None:
    """PostgreSQL listens before it accepts connections ("the database system is starting up")."""
    import psycopg

    end = time.monotonic() + deadline_s
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
