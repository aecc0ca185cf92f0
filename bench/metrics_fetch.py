"""Time to fetch and plot the golden signals for 24 h and 7 days. Prints figures; asserts nothing.

Backfills a synthetic week of the schema-registry metrics (60 s resolution) into a real Prometheus
(Debian package ``prometheus``), then times irkit's concurrent fetch of every golden signal and the
rendering of the golden-signals figure, for a 24 h and a 7-day window.
Run: ``.venv/bin/python bench/metrics_fetch.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from datetime import UTC, datetime, timedelta

from irkit.config import load_config
from irkit.metrics import read_metrics
from irkit.plots import golden_signals_figure, png_bytes
from irkit.prom import PrometheusSource
from irkit.scenarios.tsdb import serve

END = datetime(2025, 11, 20, 16, 0, tzinfo=UTC)
DAYS = 15  # a week plus the baseline week before it
STEP = 60
PODS = ("a", "b", "c")


def week_of_metrics() -> str:
    start = END - timedelta(days=DAYS)
    n = int((END - start).total_seconds() // STEP)
    ts = [int((start + timedelta(seconds=i * STEP)).timestamp()) for i in range(n + 1)]
    lab = 'namespace="schema-registry",service="schema-registry"'
    out = ["# TYPE http_requests counter"]
    for code, share in (("200", 0.995), ("500", 0.005)):
        out += [
            f'http_requests_total{{{lab},code="{code}"}} {i * 100.0 * STEP * share!r} {t}' for i, t in enumerate(ts)
        ]
    out.append("# TYPE http_request_duration_seconds_bucket gauge")
    for le in (0.05, 0.1, 0.25, 0.5, 1.0, math.inf):
        frac = {0.05: 0.5, 0.1: 0.8, 0.25: 0.97, 0.5: 0.995, 1.0: 0.999, math.inf: 1.0}[le]
        le_s = "+Inf" if le == math.inf else f"{le:g}"
        out += [
            f'http_request_duration_seconds_bucket{{{lab},le="{le_s}"}} {i * 100.0 * STEP * frac!r} {t}'
            for i, t in enumerate(ts)
        ]
    out.append("# TYPE container_cpu_usage_seconds counter")
    for p in PODS:
        out += [
            f'container_cpu_usage_seconds_total{{namespace="schema-registry",container="schema-registry",pod="{p}"}}'
            f" {i * 0.3 * STEP!r} {t}"
            for i, t in enumerate(ts)
        ]
    out.append("# TYPE up gauge")
    for p in PODS:
        out += [f'up{{namespace="schema-registry",job="schema-registry",instance="{p}"}} 1 {t}' for t in ts]
    out.append("# EOF")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    text = week_of_metrics()
    with serve(text) as srv:
        print(f"backfilled {text.count(chr(10)):,} samples in {time.perf_counter() - t0:.1f} s")
        settings = load_config(None, {"IRKIT_PROMETHEUS__URL": srv.url})
        source = PrometheusSource(settings, {})
        for label, span in (("24 h", timedelta(hours=24)), ("7 days", timedelta(days=7))):
            fetch, plot = [], []
            for _ in range(args.repeat):
                t1 = time.perf_counter()
                m = read_metrics(source, start=END - span, end=END, eval_end=END)
                t2 = time.perf_counter()
                png = png_bytes(golden_signals_figure(m, service="schema-registry", window=(END - span, END)))
                t3 = time.perf_counter()
                fetch.append(t2 - t1)
                plot.append(t3 - t2)
            points = max(len(s.frame) for s in m.series.values())
            print(
                f"{label:>6}: fetch {len(m.series)} signals + baselines median {statistics.median(fetch):.2f} s, "
                f"plot median {statistics.median(plot):.2f} s ({points} points/series, {len(png) // 1024} KiB PNG, "
                f"unavailable: {sorted(m.unavailable) or 'none'})"
            )


if __name__ == "__main__":
    main()
