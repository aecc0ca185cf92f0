"""A throwaway Prometheus serving backfilled OpenMetrics data, for recordings and tests.

``promtool tsdb create-blocks-from openmetrics`` turns a generated scenario into TSDB blocks; a
Prometheus with no scrape targets then serves exactly that data on a free loopback port. The bundled
recording is produced this way, so what irkit replays is what a real Prometheus answered.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from irkit.errors import SourceUnavailable
from irkit.files import terminate

CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> range:
    """Ports below the kernel's ephemeral range: ``bind(0)`` and outgoing connections never take these."""
    try:
        low = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 12000 else range(low, 65536)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server a test or bench starts.

    Chosen at random below the ephemeral range: a port handed out by ``bind(0)`` could be taken by a
    kernel's ZeroMQ socket or an outgoing connection between this check and the server's own bind.
    """
    ports = _below_ephemeral()
    for _ in range(200):
        port = random.choice(ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        fallback: int = s.getsockname()[1]
        return fallback


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SourceUnavailable(f"{name} not found: install the Debian package 'prometheus'")
    return path


@dataclass
class Served:
    """A running throwaway Prometheus: its URL and port, its process and its temp directory."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def stop(self) -> None:
        """Terminate the Prometheus process (kill it after 10 s); a no-op if it has already exited."""
        terminate(self.process)


@contextlib.contextmanager
def serve(openmetrics: str, *, deadline_s: float = 30.0) -> Iterator[Served]:
    """Backfill ``openmetrics`` into a fresh TSDB and serve it; stopped and removed on exit."""
    promtool, prometheus = _binary("promtool"), _binary("prometheus")
    tmp = Path(tempfile.mkdtemp(prefix="irkit-tsdb-"))
    served: Served | None = None
    try:
        (tmp / "scenario.om").write_text(openmetrics)
        (tmp / "prometheus.yml").write_text(CONFIG)
        out = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "scenario.om"), str(tmp / "data")],
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=300,
        )
        if out.returncode != 0:
            raise SourceUnavailable(f"promtool backfill failed: {(out.stderr or out.stdout).strip()[-300:]}")
        port = free_port()
        log = (tmp / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
        )
        served = Served(f"http://127.0.0.1:{port}", port, proc, tmp)
        stop_at = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                raise SourceUnavailable(f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-300:]}")
            try:
                with urllib.request.urlopen(f"{served.url}/-/ready", timeout=1) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > stop_at:
                raise SourceUnavailable("prometheus did not become ready in time")
            time.sleep(0.05)
        yield served
    finally:
        if served is not None:
            served.stop()
        shutil.rmtree(tmp, ignore_errors=True)
