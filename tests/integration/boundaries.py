"""OpenMetrics for the plan's severity boundaries: one service per case, constant signals.

Each case is its own ``service`` label: a constant error ratio (real counters, read through the
default ``error_ratio`` PromQL), and a latency gauge whose value a week earlier is 1.0 s, so the
latency ratio equals the case's value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

AT = datetime(2025, 11, 20, 15, 0, tzinfo=UTC)
NAMESPACE = "boundaries"
STEP_S = 15
RPS = 100.0
ERROR_CASES = {"err-0-9": 0.009, "err-1": 0.01, "err-5": 0.05, "err-10-1": 0.101, "err-12": 0.12}
LATENCY_CASES = {"lat-1-9": 1.9, "lat-2": 2.0, "lat-3": 3.0, "lat-10-1": 10.1}
LATENCY_QUERY = 'max(boundary_latency_seconds{{namespace="{namespace}",service="{service}"}})'


def _times(end: datetime) -> list[int]:
    start = end - timedelta(minutes=40)
    n = int((end - start).total_seconds() // STEP_S)
    return [int((start + timedelta(seconds=i * STEP_S)).timestamp()) for i in range(n + 1)]


def render() -> str:
    days = [AT - timedelta(days=7), AT]
    lines = ["# TYPE http_requests counter"]
    for service, ratio in {**ERROR_CASES, **{k: 0.0 for k in LATENCY_CASES}}.items():
        for code, share in (("200", 1 - ratio), ("500", ratio)):
            labels = f'{{namespace="{NAMESPACE}",service="{service}",code="{code}"}}'
            for day in days:
                for i, t in enumerate(_times(day)):
                    lines.append(f"http_requests_total{labels} {1000.0 + i * RPS * STEP_S * share!r} {t}")
    lines.append("# TYPE boundary_latency_seconds gauge")
    for service, factor in {**LATENCY_CASES, **{k: 1.0 for k in ERROR_CASES}}.items():
        labels = f'{{namespace="{NAMESPACE}",service="{service}"}}'
        for day, value in ((days[0], 1.0), (days[1], factor)):
            lines += [f"boundary_latency_seconds{labels} {value!r} {t}" for t in _times(day)]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
