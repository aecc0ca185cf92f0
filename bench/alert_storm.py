"""An alert storm against ``irkit serve``: 1,000 notifications across 100 groups in about 10 s.

Starts ``irkit serve`` (with no runbooks, so this measures intake: authentication, validation, the
durable queue, grouping into records) on loopback and prints accepted, lost (accepted minus
processed, must be 0), incidents opened (must be 100), p50/p99 accept latency and drain time.
Run: ``.venv/bin/python bench/alert_storm.py [--notifications 1000] [--groups 100] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from irkit.record import list_incidents
from irkit.scenarios.launch import serve_process, storm_notification

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 (a throwaway token for a loopback bench)


def notification(group: int, i: int) -> bytes:
    return json.dumps(storm_notification(group, i)).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notifications", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "reports"
        cfg = Path(tmp) / "irkit.yaml"
        cfg.write_text(json.dumps({"serve": {"token_env": "BENCH_TOKEN", "runbooks": []}}))
        with serve_process(records, cfg, env={**os.environ, "BENCH_TOKEN": TOKEN}) as (url, _proc):
            session = requests.Session()
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            interval = args.seconds / args.notifications
            t0 = time.perf_counter()

            def send(i: int) -> tuple[bool, float]:
                delay = t0 + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = time.perf_counter()
                try:
                    ok = (
                        session.post(
                            f"{url}/alerts", data=notification(i % args.groups, i), headers=headers, timeout=30
                        ).status_code
                        == 200
                    )
                except requests.RequestException:
                    ok = False
                return ok, (time.perf_counter() - start) * 1000

            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(send, range(args.notifications)))
            sent_s = time.perf_counter() - t0
            accepted = sum(ok for ok, _ in results)
            drain_start = time.perf_counter()
            while True:
                health = requests.get(f"{url}/healthz", timeout=5).json()
                if health["notifications_pending"] == 0:
                    break
                time.sleep(0.05)
            drain = time.perf_counter() - drain_start
            # A notification that failed processing is as lost as one never accepted.
            processed = health["notifications_total"] - health["notifications_pending"] - health["notifications_failed"]
            lat = sorted(ms for _, ms in results)
            print(f"sent {args.notifications} notifications across {args.groups} groups in {sent_s:.1f} s")
            print(
                f"accepted {accepted}, lost {accepted - processed + (args.notifications - accepted)} "
                f"(of which failed processing {health['notifications_failed']}), "
                f"incidents opened {len(list_incidents(records))}"
            )
            print(
                f"accept latency p50 {statistics.median(lat):.1f} ms, p99 {lat[int(0.99 * len(lat)) - 1]:.1f} ms; "
                f"drain after the last send {drain:.2f} s"
            )


if __name__ == "__main__":
    main()
