"""A storm with runbooks: N new alert groups at once through ``irkit serve``, each becoming an incident
with its triage and investigation runbooks run and sealed.

For each worker count (``--workers 1,2``) it starts ``irkit serve`` (warm pool on, one warm kernel per
worker) against a real Prometheus holding the bundled incident (backfilled by promtool; the alerts
start inside it, so every runbook reads and plots real series), posts one notification per group as
fast as it can, and waits until every incident has both runbooks finished. ``--prometheus-down``
points serve at a closed port instead (a storm while monitoring is down: the runbooks say what they
could not read). Prints, per worker count: incidents, runs sealed and not ok,
time to the last sealed record, runs per second. Target (issue 18): 100 groups in ≤ 3 minutes on
2 cores. Prints figures; asserts nothing.
Run: ``.venv/bin/python bench/runbook_storm.py [--groups 100] [--workers 1,2] [--prometheus-down]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from irkit.record import Record, list_incidents
from irkit.scenarios.launch import serve_process, storm_notification
from irkit.scenarios.pool_exhaustion import render_openmetrics
from irkit.scenarios.tsdb import free_port, serve

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 (a throwaway token for a loopback bench)
RUNBOOKS = ["triage", "investigation"]


def finished(records: Path) -> tuple[int, int, int]:
    """(incidents, runs finished, runs finished not ok) under ``records``."""
    incidents = runs = bad = 0
    for incident in list_incidents(records):
        incidents += 1
        for ev in Record.open(records, incident).events():
            if ev["type"] == "notebook.finished":
                runs += 1
                bad += ev["data"].get("outcome") != "ok"
    return incidents, runs, bad


def storm(groups: int, workers: int, timeout_s: float, prometheus: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "reports"
        cfg = Path(tmp) / "irkit.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "serve": {"token_env": "BENCH_TOKEN", "runbooks": RUNBOOKS, "workers": workers, "tick_s": 0},
                    "prometheus": {"url": prometheus, "timeout_s": 1},
                }
            )
        )
        env = {**os.environ, "BENCH_TOKEN": TOKEN}
        with serve_process(records, cfg, env=env, ready_timeout_s=120) as (url, _proc):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=16) as pool:
                codes = list(
                    pool.map(
                        lambda g: (
                            requests.post(
                                f"{url}/alerts", json=storm_notification(g), headers=headers, timeout=30
                            ).status_code
                        ),
                        range(groups),
                    )
                )
            want = groups * len(RUNBOOKS)
            incidents = runs = bad = 0
            last_print = 0.0
            while time.perf_counter() - t0 < timeout_s:
                incidents, runs, bad = finished(records)
                if runs >= want:
                    break
                if time.perf_counter() - last_print > 15:
                    last_print = time.perf_counter()
                    print(f"  … {time.perf_counter() - t0:5.0f} s: {runs}/{want} runs sealed", flush=True)
                time.sleep(1.0)
            took = time.perf_counter() - t0
            print(
                f"workers {workers}: {groups} groups → {incidents} incidents (accepted {codes.count(200)}), "
                f"{runs}/{want} runs sealed ({bad} not ok) in {took:.0f} s — {runs / took:.2f} runs/s"
                + ("" if runs >= want else f" (stopped at the {timeout_s:.0f} s limit)")
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for each storm to drain")
    ap.add_argument("--prometheus-down", action="store_true", help="serve's Prometheus is a closed port")
    args = ap.parse_args()
    where = "Prometheus down" if args.prometheus_down else "a real Prometheus holding the incident"
    print(f"{args.groups} alert groups at once, runbooks {' + '.join(RUNBOOKS)} each, {where}, on {os.cpu_count()} cores")
    with contextlib.ExitStack() as stack:
        url = f"http://127.0.0.1:{free_port()}"
        if not args.prometheus_down:
            url = stack.enter_context(serve(render_openmetrics())).url
        for workers in (int(w) for w in args.workers.split(",")):
            storm(args.groups, workers, args.timeout, url)


if __name__ == "__main__":
    main()
