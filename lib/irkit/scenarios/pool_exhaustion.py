"""Generator of the bundled incident: database connection pool exhaustion on schema-registry.

Modelled on the plan's post-mortem example (2025-11-20, UTC): a deploy at 14:24 shrinks the database
connection pool; errors start at 14:27; the alert fires at 14:32; the root cause is found at 14:37;
mitigation (rollback) at 14:40; service restored at 14:45; confirmed stable at 15:15. The same two
hours a week earlier are generated too, as the baseline ("normal").

Deterministic (seeded), so ``python -m irkit.scenarios.pool_exhaustion`` always produces the same
OpenMetrics text. The bundled recording in ``pool-exhaustion/signals`` is what a real Prometheus,
backfilled with that text by promtool, answered to irkit's signal queries: run the module with
``--record`` (needs the ``prometheus`` Debian package) to regenerate it.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20251120
STEP_S = 15
SERVICE = "schema-registry"
NAMESPACE = "schema-registry"
PODS = ("schema-registry-5c9d7f8b6-2xkqp", "schema-registry-5c9d7f8b6-8fzvw", "schema-registry-5c9d7f8b6-tq4mn")
INCIDENT_DAY = datetime(2025, 11, 20, tzinfo=UTC)
WINDOW_START = INCIDENT_DAY + timedelta(hours=13, minutes=30)
WINDOW_END = INCIDENT_DAY + timedelta(hours=15, minutes=30)
# Data starts earlier than the recorded window so 5m rates are whole from the window's first point.
GENERATE_START = WINDOW_START - timedelta(minutes=30)
BASELINE_OFFSET = timedelta(days=7)
DIRECTORY = Path(__file__).parent / "pool-exhaustion"


def _at(hh: int, mm: int) -> datetime:
    return INCIDENT_DAY + timedelta(hours=hh, minutes=mm)


TIMELINE = {
    "deploy": _at(14, 24),
    "errors_start": _at(14, 27),
    "alert": _at(14, 32),
    "acknowledged": _at(14, 33),
    "root_cause": _at(14, 37),
    "mitigation": _at(14, 40),
    "restored": _at(14, 45),
    "stable": _at(15, 15),
}
POD_RESTART = (_at(14, 36), _at(14, 37))  # one pod restarts while the pool is exhausted
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = (("/subjects", 0.40), ("/schemas/ids", 0.45), ("/compatibility", 0.15))
ERROR_ROUTES = {"/subjects": 0.8, "/schemas/ids": 0.0, "/compatibility": 0.2}
CODES = (("500", 0.85), ("503", 0.15))
BASE_ERROR_RATIO = 0.004
PEAK_ERROR_RATIO = 0.16
BASE_MEDIAN_S = 0.035
PEAK_MEDIAN_S = 0.60
SIGMA = 0.55


def _ramp(t: datetime, a: datetime, b: datetime, v0: float, v1: float) -> float:
    f = min(max((t - a) / (b - a), 0.0), 1.0)
    return v0 + (v1 - v0) * f


def _incident_curve(t: datetime, base: float, peak: float) -> float:
    """0 → peak between errors_start and +2 min; holds; decays from mitigation to restored."""
    tl = TIMELINE
    if t < tl["errors_start"] or t >= tl["restored"]:
        return base
    if t < tl["errors_start"] + timedelta(minutes=2):
        return _ramp(t, tl["errors_start"], tl["errors_start"] + timedelta(minutes=2), base, peak)
    if t < tl["mitigation"]:
        return peak
    # The rollback replaces the pods within a minute; 5-minute rates are back to normal by ~14:46.
    return _ramp(t, tl["mitigation"], tl["mitigation"] + timedelta(minutes=1), peak, base)


@dataclass(frozen=True)
class Step:
    """What happened in one 15 s step (per-step increments and gauges)."""

    t: datetime
    requests: float
    error_ratio: float
    median_s: float
    cpu_cores: float
    memory_bytes: float
    down_pods: frozenset[str]


def steps(*, incident: bool, seed: int = SEED) -> Iterator[Step]:
    """The step model for the incident day (``incident=True``) or the baseline week before."""
    rng = random.Random(seed + (0 if incident else 7))
    offset = timedelta(0) if incident else BASELINE_OFFSET
    t = GENERATE_START
    while t <= WINDOW_END:
        phase = (t - WINDOW_START).total_seconds() / 7200
        rps = 120 * (1 + 0.08 * math.sin(2 * math.pi * phase)) * rng.uniform(0.97, 1.03)
        err = _incident_curve(t, BASE_ERROR_RATIO, PEAK_ERROR_RATIO) if incident else BASE_ERROR_RATIO
        err *= rng.uniform(0.93, 1.07)
        median = _incident_curve(t, BASE_MEDIAN_S, PEAK_MEDIAN_S) if incident else BASE_MEDIAN_S
        stress = (median - BASE_MEDIAN_S) / (PEAK_MEDIAN_S - BASE_MEDIAN_S)
        down = frozenset({PODS[1]}) if incident and POD_RESTART[0] <= t < POD_RESTART[1] else frozenset()
        yield Step(
            t=t - offset,
            requests=rps * STEP_S,
            error_ratio=err,
            median_s=median * rng.uniform(0.97, 1.03),
            cpu_cores=(0.28 + 0.42 * stress) * rng.uniform(0.95, 1.05),
            memory_bytes=(430 + 260 * stress) * 2**20 * rng.uniform(0.99, 1.01),
            down_pods=down,
        )
        t += timedelta(seconds=STEP_S)


def _cdf(x: float, median: float) -> float:
    """Lognormal CDF of request latency."""
    return 0.5 * (1 + math.erf((math.log(x) - math.log(median)) / (SIGMA * math.sqrt(2))))


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def _series(name: str, labels: str, samples: Iterator[tuple[datetime, float]]) -> Iterator[str]:
    for t, v in samples:
        yield f"{name}{labels} {round(v, 6)!r} {int(t.timestamp())}"


def _cumulative(values: Iterator[tuple[datetime, float]], start: float) -> Iterator[tuple[datetime, float]]:
    total = start
    for t, v in values:
        total += v
        yield t, round(total)


def render_openmetrics(seed: int = SEED) -> str:
    """The whole scenario (incident day and baseline week) as OpenMetrics text for promtool."""
    days = [list(steps(incident=False, seed=seed)), list(steps(incident=True, seed=seed))]
    lines: list[str] = []
    common = {"namespace": NAMESPACE, "service": SERVICE}

    def both(fn: Callable[[Step], float]) -> Iterator[tuple[datetime, float]]:
        for day in days:
            yield from ((s.t, fn(s)) for s in day)

    def counter(fn: Callable[[Step], float], start: float) -> Iterator[tuple[datetime, float]]:
        # A counter per day, as if the process had been running: continuity across days is not needed.
        for day in days:
            yield from _cumulative(((s.t, fn(s)) for s in day), start)

    lines.append("# TYPE http_requests counter")
    for route, share in ROUTES:
        ok = counter(lambda s, share=share, route=route: s.requests * share - _errors(s, route, share), 1e6)
        lines += _series("http_requests_total", _labels(**common, code="200", route=route), ok)
        if ERROR_ROUTES[route]:
            for code, cshare in CODES:
                errs = counter(
                    lambda s, route=route, share=share, cshare=cshare: _errors(s, route, share) * cshare, 5e3
                )
                lines += _series("http_requests_total", _labels(**common, code=code, route=route), errs)
    lines.append("# TYPE http_request_duration_seconds_bucket gauge")
    for le in (*BUCKETS, math.inf):
        le_text = "+Inf" if le == math.inf else f"{le:g}"
        cum = counter(lambda s, le=le: s.requests * (1.0 if le == math.inf else _cdf(le, s.median_s)), 1e6)
        lines += _series("http_request_duration_seconds_bucket", _labels(**common, le=le_text), cum)
    lines.append("# TYPE container_cpu_usage_seconds counter")
    for i, pod in enumerate(PODS):
        cpu = counter(lambda s, i=i: s.cpu_cores * STEP_S * (1 + 0.05 * i), 3e4)
        lines += _series(
            "container_cpu_usage_seconds_total", _labels(namespace=NAMESPACE, container=SERVICE, pod=pod), cpu
        )
    lines.append("# TYPE container_memory_working_set_bytes gauge")
    for pod in PODS:
        lines += _series(
            "container_memory_working_set_bytes",
            _labels(namespace=NAMESPACE, container=SERVICE, pod=pod),
            both(lambda s: s.memory_bytes),
        )
    lines.append("# TYPE kube_pod_container_resource_limits gauge")
    for pod in PODS:
        for resource, value in (("cpu", 1.0), ("memory", 1024 * 2**20)):
            lines += _series(
                "kube_pod_container_resource_limits",
                _labels(namespace=NAMESPACE, container=SERVICE, pod=pod, resource=resource),
                both(lambda _s, value=value: value),
            )
    lines.append("# TYPE kubelet_volume_stats_capacity_bytes gauge")
    volume = _labels(namespace=NAMESPACE, persistentvolumeclaim=f"data-{SERVICE}-0")
    lines += _series("kubelet_volume_stats_capacity_bytes", volume, both(lambda _s: 10 * 2**30))
    lines.append("# TYPE kubelet_volume_stats_used_bytes gauge")  # a volume at ~45%: disk is not the problem
    lines += _series("kubelet_volume_stats_used_bytes", volume, both(lambda s: 4.5 * 2**30 + s.requests * 1024))
    lines.append("# TYPE up gauge")
    for pod in PODS:
        lines += _series(
            "up",
            _labels(namespace=NAMESPACE, job=SERVICE, instance=f"{pod}:8080"),
            both(lambda s, pod=pod: 0.0 if pod in s.down_pods else 1.0),
        )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _errors(s: Step, route: str, share: float) -> float:
    """Failed requests on ``route`` in a step: errors concentrate on routes that need the database."""
    total_errors = s.requests * s.error_ratio
    return total_errors * ERROR_ROUTES[route] if ERROR_ROUTES[route] else 0.0


def record(directory: Path = DIRECTORY / "signals") -> list[str]:
    """Backfill the scenario into a real Prometheus and record every configured signal from it."""
    from irkit.config import load_config
    from irkit.prom import PrometheusSource
    from irkit.scenarios.tsdb import serve
    from irkit.sources import baseline_window, write_series

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with serve(render_openmetrics()) as srv:
        settings = load_config(None, {"IRKIT_PROMETHEUS__URL": srv.url})
        source = PrometheusSource(settings, {})
        for signal in sorted(settings.signals):
            for role, (start, end) in (
                ("incident", (WINDOW_START, WINDOW_END)),
                ("baseline", baseline_window(WINDOW_START, WINDOW_END, BASELINE_OFFSET)),
            ):
                series = source.range(signal, start, end, step_s=STEP_S, role=role)
                written.append(write_series(directory, series)[0].name)
    return written


def main() -> None:
    """Print the scenario as OpenMetrics text, or with ``--record`` regenerate the bundled signal recording."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="regenerate the bundled recording via a real Prometheus")
    args = ap.parse_args()
    if args.record:
        for name in record():
            print(name)
    else:
        print(render_openmetrics(), end="")


if __name__ == "__main__":
    main()
