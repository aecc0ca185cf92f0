"""How fast can the incident record take events? Prints figures; asserts nothing.

Measures single-writer append latency (each append is flock + one O_APPEND write + fsync + the
incident.json cache replace) and the throughput of N concurrent writer processes, then verifies the
chain. Run: ``.venv/bin/python bench/record_append.py [--events 500] [--writers 8]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time

from irkit.record import Record

ID = "BENCH-1"


def _writer(root: str, n: int) -> None:
    rec = Record.open(root, ID)
    for i in range(n):
        rec.append("note", {"i": i}, actor="bench")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--writers", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Record.create(tmp, ID, title="bench", service="svc", actor="bench")
        lat = []
        for i in range(args.events):
            t0 = time.perf_counter()
            rec.append("note", {"i": i}, actor="bench")
            lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        p95 = lat[int(0.95 * len(lat)) - 1]
        print(f"single writer: {args.events} appends, median {statistics.median(lat):.2f} ms, p95 {p95:.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        Record.create(tmp, ID, title="bench", service="svc", actor="bench")
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_writer, args=(tmp, args.events)) for _ in range(args.writers)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        secs = time.perf_counter() - t0
        total = args.writers * args.events
        t1 = time.perf_counter()
        report = Record.open(tmp, ID).verify()
        vsecs = time.perf_counter() - t1
        print(f"{args.writers} writers: {total} appends in {secs:.2f} s = {total / secs:.0f} events/s")
        print(f"verify: {report.summary()} in {vsecs * 1000:.0f} ms")


if __name__ == "__main__":
    main()
