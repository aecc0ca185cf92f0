"""Start ``irkit serve`` as a separate process on a free loopback port: for the tests and the benches."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from irkit.scenarios.tsdb import free_port


@contextlib.contextmanager
def serve_process(
    records: Path, config: Path, *, env: Mapping[str, str], log: Path | None = None, ready_timeout_s: float = 30
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``irkit serve`` in its own session; yields (base URL, process) once ``/healthz`` answers; stops it after."""
    import requests

    port = free_port()
    argv = [sys.executable, "-m", "irkit.cli", "serve", "--records", str(records), "--config", str(config)]
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [*argv, "--port", str(port)],
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/healthz", timeout=1).ok:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:] if log else ""
                    raise RuntimeError(f"irkit serve did not become healthy (exit {proc.poll()}): {tail}")
                time.sleep(0.1)
            yield url, proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not ended within ``grace_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def storm_notification(group: int, i: int = 0) -> dict[str, object]:
    """An Alertmanager v4 notification for alert group ``group`` (its ``i``-th repeat): the benches' storms."""
    labels = {"alertname": "SchemaRegistryHighErrorRate", "service": f"svc-{group}", "severity": "P2"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{group="{group}"}}',
        "status": "firing",
        "receiver": "irkit",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {"summary": f"storm group {group}"},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {**labels, "instance": f"i{i % 3}"},
                "annotations": {},
                "startsAt": "2025-11-20T14:32:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{group}-{i % 3}",
            }
        ],
    }
