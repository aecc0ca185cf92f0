"""An alert storm over two ``irkit serve`` replicas on a team store, one killed with kill -9 halfway.

Starts a throwaway PostgreSQL and S3 server (irkit.scenarios.teamstore), two replicas on them, and
posts N notifications across G alert groups (every body different) from a pool of senders, half to
each replica; at 50 % replica A is killed with kill -9 and the rest go to replica B, as Alertmanager's
retries would. Then it waits until every notification is applied and every job is done, and prints:
accepted, lost (accepted but never applied: must be 0), incidents (must be G), p50/p99 accept latency,
drain time (first post → last notification applied). The same storm against the directory store with
one replica is printed beside it. Intake only (``serve.runbooks: []``): runbook runs are measured by
bench/runbook_storm.py. Prints figures; asserts nothing.
Run: ``.venv/bin/python bench/ha_storm.py [--notifications 10000] [--groups 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from irkit.record import list_incidents
from irkit.scenarios.launch import serve_process, storm_notification
from irkit.scenarios.teamstore import team_store

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 (a throwaway token for a loopback bench)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def notifications(n: int, groups: int) -> list[dict[str, Any]]:
    """``n`` notifications over ``groups`` groups, no two bodies alike."""
    out = []
    for i in range(n):
        note = storm_notification(i % groups, i // groups)
        note["commonAnnotations"] = {"summary": f"storm group {i % groups}", "n": str(i)}
        out.append(note)
    return out


def post(url: str, note: dict[str, Any]) -> tuple[int | None, float]:
    """(accepted id or None, seconds the POST took)."""
    t = time.perf_counter()
    try:
        res = requests.post(f"{url}/alerts", json=note, headers=HEADERS, timeout=30)
        nid = res.json()["accepted"] if res.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError):
        nid = None
    return nid, time.perf_counter() - t


def config(tmp: Path, store: dict[str, Any] | None) -> Path:
    cfg = tmp / "irkit.yaml"
    body: dict[str, Any] = {
        "serve": {"token_env": "BENCH_TOKEN", "runbooks": [], "workers": 2, "tick_s": 0, "warm_pool": False}
    }
    if store is not None:
        body["store"] = {**store, "lease": 10}
    cfg.write_text(json.dumps(body))
    return cfg


def figures(
    kind: str, sent: list[tuple[int | None, float]], accepted_ok: int, incidents: int, drain: float
) -> dict[str, Any]:
    ids = {nid for nid, _ in sent if nid is not None}
    lat = sorted(s * 1000 for _, s in sent)
    return {
        "store": kind,
        "accepted": len(ids),
        "refused": sum(nid is None for nid, _ in sent),
        "lost": len(ids) - accepted_ok,
        "incidents": incidents,
        "p50 ms": statistics.median(lat),
        "p99 ms": lat[int(len(lat) * 0.99) - 1],
        "drain s": drain,
    }


def shared_storm(notes: list[dict[str, Any]], senders: int, timeout_s: float) -> dict[str, Any]:
    import psycopg

    with team_store() as ts, tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), ts.settings)
        env = {**os.environ, **ts.env, "BENCH_TOKEN": TOKEN}
        ra = serve_process(Path(tmp) / "a", cfg, env=env, ready_timeout_s=60)
        rb = serve_process(Path(tmp) / "b", cfg, env=env, ready_timeout_s=60)
        with ra as (url_a, proc_a), rb as (url_b, _):
            half = len(notes) // 2
            t0 = time.perf_counter()
            with ThreadPoolExecutor(senders) as pool:
                sent = list(pool.map(lambda k: post((url_a, url_b)[k % 2], notes[k]), range(half)))
            os.killpg(proc_a.pid, signal.SIGKILL)
            proc_a.wait()
            print(f"  replica A killed with kill -9 after {half} notifications ({time.perf_counter() - t0:.1f} s)")
            with ThreadPoolExecutor(senders) as pool:
                sent += list(pool.map(lambda k: post(url_b, notes[k]), range(half, len(notes))))
            with psycopg.connect(ts.dsn, autocommit=True) as conn:
                q = (
                    "SELECT (SELECT count(*) FROM irkit_notifications WHERE NOT processed) + "
                    "(SELECT count(*) FROM irkit_jobs WHERE state <> 'done')"
                )
                deadline = time.perf_counter() + timeout_s
                while conn.execute(q).fetchone()[0] and time.perf_counter() < deadline:
                    time.sleep(0.2)
                drain = time.perf_counter() - t0
                ok = conn.execute(
                    "SELECT count(*) FROM irkit_notifications WHERE processed AND error IS NULL AND id = ANY(%s)",
                    ([nid for nid, _ in sent if nid is not None],),
                ).fetchone()[0]
                incidents = conn.execute("SELECT count(*) FROM irkit_incidents").fetchone()[0]
    return figures("postgresql + s3, 2 replicas, 1 killed", sent, ok, incidents, drain)


def file_storm(notes: list[dict[str, Any]], senders: int, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "reports"
        env = {**os.environ, "BENCH_TOKEN": TOKEN}
        with serve_process(records, config(Path(tmp), None), env=env, ready_timeout_s=60) as (url, _):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(senders) as pool:
                sent = list(pool.map(lambda k: post(url, notes[k]), range(len(notes))))
            deadline = time.perf_counter() + timeout_s
            while time.perf_counter() < deadline:
                h = requests.get(f"{url}/healthz", timeout=10).json()
                if not h["notifications_pending"] and not h.get("jobs_queued") and not h.get("jobs_running"):
                    break
                time.sleep(0.2)
            drain = time.perf_counter() - t0
            ok = h["notifications_total"] - h["notifications_failed"] - h["notifications_pending"]
            incidents = len(list_incidents(records))
    return figures("directory, 1 replica", sent, ok, incidents, drain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--senders", type=int, default=16, help="concurrent POSTs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the drain")
    args = parser.parse_args()
    notes = notifications(args.notifications, args.groups)
    print(
        f"{args.notifications} notifications across {args.groups} groups, {args.senders} senders, {os.cpu_count()} cores"
    )
    rows = [shared_storm(notes, args.senders, args.timeout), file_storm(notes, args.senders, args.timeout)]
    cols = list(rows[0])
    print("\n" + "  ".join(f"{c:>38}" if c == "store" else f"{c:>9}" for c in cols))
    for r in rows:
        cells = [
            f"{r[c]:>38}" if c == "store" else f"{r[c]:>9.1f}" if isinstance(r[c], float) else f"{r[c]:>9}"
            for c in cols
        ]
        print("  ".join(cells))
    print(f"\nmust be: lost 0 and incidents {args.groups} on every row")


if __name__ == "__main__":
    main()
