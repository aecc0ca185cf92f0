"""How fast can the incident record take events? Prints figures; asserts nothing.

Measures single-writer append latency (each append is flock + a stat of the log + one O_APPEND
write + fsync + the incident.json replace), the throughput of N concurrent writer processes, then
the same append latency with ``--large`` (10,000) signed events already in the log — it must not
grow with the log: the tail check never re-hashes the chain — plus the first append of a new process
(which does rescan once) and verify time with signatures.
Run: ``.venv/bin/python bench/record_append.py [--events 500] [--writers 8] [--large 10000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time

import irkit.record
from irkit.record import Record
from irkit.signing import Signer, load_verifier

ID = "BENCH-1"


def _writer(root: str, n: int) -> None:
    rec = Record.open(root, ID)
    for i in range(n):
        rec.append("note", {"text": str(i)}, actor="bench")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--large", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Record.create(tmp, ID, title="bench", service="svc", actor="bench")
        lat = []
        for i in range(args.events):
            t0 = time.perf_counter()
            rec.append("note", {"text": str(i)}, actor="bench")
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
    large(args.large)


def _median_append_ms(rec: Record, n: int) -> float:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        rec.append("note", {"text": f"{i}: routine note with a little text in it"}, actor="bench")
        lat.append((time.perf_counter() - t0) * 1000)
    return statistics.median(lat)


def large(n: int) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Signer(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory() as tmp:
        rec = Record.create(tmp, ID, title="bench", service="svc", actor="bench", signer=signer)
        small = _median_append_ms(rec, 200)
        t0 = time.perf_counter()
        _median_append_ms(rec, n - 201)
        fill = time.perf_counter() - t0
        at_large = _median_append_ms(rec, 200)
        print(
            f"signed appends: median {small:.2f} ms at ~100 events, {at_large:.2f} ms at {n:,} events "
            f"(ratio {at_large / small:.2f}; {n / fill:.0f} events/s while filling)"
        )
        irkit.record._TAILS.clear()  # what a new `irkit` process sees
        t0 = time.perf_counter()
        rec.append("note", {"text": "first of a new process"}, actor="bench")
        print(
            f"first append of a new process at {n:,} events (one full chain check): {(time.perf_counter() - t0) * 1000:.0f} ms"
        )
        verifier = load_verifier(signer.public_text())
        t0 = time.perf_counter()
        report = rec.verify(verifier=verifier)
        print(
            f"verify --public-key at {report.events:,} events: {(time.perf_counter() - t0) * 1000:.0f} ms, ok={report.ok}"
        )


if __name__ == "__main__":
    main()
