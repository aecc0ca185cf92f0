"""Deterministic "recorded incident" used to seed a real Prometheus for tests.

The integration tests need a Prometheus that answers queries about a known
incident, without scraping anything live.  This module produces that incident
as an OpenMetrics text exposition that ``promtool tsdb create-blocks-from
openmetrics`` can backfill, and it keeps the raw series around so tests can
compute what Prometheus *must* answer instead of hard-coding magic numbers.

The scenario: service ``schema-registry`` (namespace ``schema-registry``)
serves ~100 req/s on ``/subjects`` from 13:30Z to 15:30Z on 2025-11-20.  The
5xx ratio is ~1 % except between 14:32Z and 14:45Z where it is ~15 %.  One of
the three scrape targets is down (``up == 0``) for part of the incident.

Everything is a pure function of ``SEED``: the small per-step jitter (so the
data does not look synthetic to code under test) comes from a local
``random.Random(seed)``, never from global random state.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

SEED: Final = 20251120

SERVICE: Final = "schema-registry"
NAMESPACE: Final = "schema-registry"
ROUTE: Final = "/subjects"
JOB: Final = "schema-registry"
INSTANCES: Final[tuple[str, str, str]] = (
    "10.42.1.17:8081",
    "10.42.2.9:8081",
    "10.42.3.4:8081",
)
CODES: Final[tuple[str, str]] = ("200", "500")

START: Final = datetime(2025, 11, 20, 13, 30, tzinfo=UTC)
END: Final = datetime(2025, 11, 20, 15, 30, tzinfo=UTC)
STEP_SECONDS: Final = 15

INCIDENT_START: Final = datetime(2025, 11, 20, 14, 32, tzinfo=UTC)
INCIDENT_END: Final = datetime(2025, 11, 20, 14, 45, tzinfo=UTC)

#: The instance that fails its scrapes during the incident, and when
#: (samples with DOWN_START <= t < DOWN_END have ``up == 0``).
DOWN_INSTANCE: Final = INSTANCES[2]
DOWN_START: Final = datetime(2025, 11, 20, 14, 36, tzinfo=UTC)
DOWN_END: Final = datetime(2025, 11, 20, 14, 41, tzinfo=UTC)

BASE_RPS: Final = 100.0
NORMAL_ERROR_RATIO: Final = 0.01
INCIDENT_ERROR_RATIO: Final = 0.15

#: Per-step total traffic is BASE_RPS * STEP_SECONDS * (1 +/- TRAFFIC_JITTER).
TRAFFIC_JITTER: Final = 0.05
#: Per-step 5xx count is round(total * ratio) +/- ERROR_JITTER requests.
ERROR_JITTER: Final = 2

#: Counter values at START: the process had been running before the
#: recording, so counters do not start at 0 (which would also make
#: Prometheus' "extrapolate to zero" rule kick in near the start).
INITIAL_COUNTS: Final[Mapping[str, int]] = MappingProxyType({"200": 48_123_377, "500": 401_139})

#: Smallest possible number of requests in one step.
MIN_REQUESTS_PER_STEP: Final = math.floor(BASE_RPS * STEP_SECONDS * (1 - TRAFFIC_JITTER))
#: Largest deviation of any window's 5xx ratio from its nominal ratio
#: (rounding of 0.5 plus ERROR_JITTER, over the smallest possible step).
#: A ratio over several steps is a weighted mean of per-step ratios, so the
#: same bound holds for every rate() window that lies within one regime.
ERROR_RATIO_TOLERANCE: Final = (ERROR_JITTER + 0.5) / MIN_REQUESTS_PER_STEP
#: Relative bound on how far a window's total request rate can be from BASE_RPS.
RPS_RELATIVE_TOLERANCE: Final = TRAFFIC_JITTER + 1.0 / MIN_REQUESTS_PER_STEP


def unix(moment: datetime) -> int:
    """Return ``moment`` as integer Unix seconds; refuses naive datetimes.

    Naive datetimes would silently be interpreted in the local timezone and
    shift every expectation by hours, so they are rejected outright.
    """
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware (UTC) datetime")
    return int(moment.timestamp())


def in_incident(step_start: int, step_end: int) -> bool:
    """Whether requests counted in ``(step_start, step_end]`` belong to the incident."""
    return step_start >= unix(INCIDENT_START) and step_end <= unix(INCIDENT_END)


def instance_up(instance: str, at: int) -> int:
    """Value of ``up`` for ``instance`` in the sample taken at ``at``."""
    if instance == DOWN_INSTANCE and unix(DOWN_START) <= at < unix(DOWN_END):
        return 0
    return 1


def _escape_label_value(value: str) -> str:
    """Escape a label value as the OpenMetrics text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in pairs)


def request_labels(code: str) -> tuple[tuple[str, str], ...]:
    """Label pairs of the ``http_requests_total`` series for ``code``."""
    return (
        ("service", SERVICE),
        ("namespace", NAMESPACE),
        ("code", code),
        ("route", ROUTE),
    )


@dataclass(frozen=True)
class Scenario:
    """The generated series plus helpers that predict PromQL answers exactly.

    ``requests[code][i]`` is the cumulative ``http_requests_total`` value
    for ``code`` at ``timestamps[i]``; ``up[instance][i]`` likewise.
    """

    timestamps: tuple[int, ...]
    requests: Mapping[str, tuple[int, ...]]
    up: Mapping[str, tuple[int, ...]]

    @property
    def start(self) -> datetime:
        """First sample time (aware UTC)."""
        return datetime.fromtimestamp(self.timestamps[0], tz=UTC)

    @property
    def end(self) -> datetime:
        """Last sample time (aware UTC)."""
        return datetime.fromtimestamp(self.timestamps[-1], tz=UTC)

    def _window(self, at: int, window_seconds: int, *, left_closed: bool) -> list[int]:
        """Indices of samples a range selector ``[window]`` evaluated at ``at`` sees.

        Prometheus 2.x selects ``[at - window, at]`` (closed), 3.x selects
        ``(at - window, at]``.  The difference matters whenever ``at`` is on
        the 15 s sample grid, so the caller says which semantics apply.
        """
        low = at - window_seconds
        return [i for i, ts in enumerate(self.timestamps) if (low <= ts if left_closed else low < ts) and ts <= at]

    def expected_rate(
        self,
        code: str,
        at: datetime,
        window_seconds: int = 60,
        *,
        left_closed: bool,
    ) -> float:
        """What ``rate(http_requests_total{code=...}[window])`` returns at ``at``.

        Re-implements Prometheus' ``extrapolatedRate`` (counters never reset
        here) so tests can compare with a tight float tolerance instead of a
        loose "roughly 100" check that would hide off-by-one-step bugs.
        """
        t = unix(at)
        idx = self._window(t, window_seconds, left_closed=left_closed)
        if len(idx) < 2:
            raise ValueError(f"fewer than two samples in the {window_seconds}s window at {at}")
        values = self.requests[code]
        first_t, last_t = self.timestamps[idx[0]], self.timestamps[idx[-1]]
        first_v, last_v = values[idx[0]], values[idx[-1]]
        delta = float(last_v - first_v)
        sampled = float(last_t - first_t)
        average_interval = sampled / (len(idx) - 1)
        to_start = float(first_t - (t - window_seconds))
        to_end = float(t - last_t)
        if delta > 0 and first_v >= 0:
            to_zero = sampled * (first_v / delta)
            to_start = min(to_start, to_zero)
        threshold = average_interval * 1.1
        extrapolated = sampled
        extrapolated += to_start if to_start < threshold else average_interval / 2
        extrapolated += to_end if to_end < threshold else average_interval / 2
        return delta * (extrapolated / sampled) / window_seconds

    def expected_total_rps(self, at: datetime, window_seconds: int = 60, *, left_closed: bool) -> float:
        """``sum(rate(http_requests_total[window]))`` at ``at``."""
        return sum(self.expected_rate(code, at, window_seconds, left_closed=left_closed) for code in CODES)

    def expected_error_ratio(self, at: datetime, window_seconds: int = 60, *, left_closed: bool) -> float:
        """``sum(rate(..{code="500"}[w])) / sum(rate(..[w]))`` at ``at``."""
        errors = self.expected_rate("500", at, window_seconds, left_closed=left_closed)
        return errors / self.expected_total_rps(at, window_seconds, left_closed=left_closed)

    def expected_up_sum(self, at: datetime) -> int:
        """``sum(up)`` at ``at``: the latest sample at or before ``at`` per instance.

        Only valid within the 5 m lookback after the last sample, which is
        all the tests need.
        """
        t = unix(at)
        latest = max(i for i, ts in enumerate(self.timestamps) if ts <= t)
        return sum(series[latest] for series in self.up.values())


def build_scenario(seed: int = SEED) -> Scenario:
    """Generate the scenario; the same ``seed`` always yields identical data."""
    rng = random.Random(seed)
    timestamps = tuple(range(unix(START), unix(END) + 1, STEP_SECONDS))
    cumulative = {code: [INITIAL_COUNTS[code]] for code in CODES}
    for previous, current in itertools.pairwise(timestamps):
        factor = 1.0 + TRAFFIC_JITTER * rng.uniform(-1.0, 1.0)
        total = round(BASE_RPS * STEP_SECONDS * factor)
        ratio = INCIDENT_ERROR_RATIO if in_incident(previous, current) else NORMAL_ERROR_RATIO
        errors = max(0, round(total * ratio) + rng.randint(-ERROR_JITTER, ERROR_JITTER))
        cumulative["500"].append(cumulative["500"][-1] + errors)
        cumulative["200"].append(cumulative["200"][-1] + total - errors)
    up = {instance: tuple(instance_up(instance, ts) for ts in timestamps) for instance in INSTANCES}
    return Scenario(
        timestamps=timestamps,
        requests=MappingProxyType({code: tuple(v) for code, v in cumulative.items()}),
        up=MappingProxyType(up),
    )


def render_openmetrics(scenario: Scenario) -> str:
    """Render ``scenario`` as OpenMetrics text that ``promtool`` accepts.

    The rules promtool enforces (and why the layout is as it is):

    * every family has a ``# TYPE`` line before its samples, and families are
      not interleaved: all ``http_requests`` samples, then all ``up`` samples;
    * a counter family is named without ``_total``; its samples carry it;
    * each series' samples are contiguous and in ascending time order;
    * timestamps are in *seconds* (not the milliseconds of the Prometheus
      text format);
    * the exposition ends with ``# EOF``.
    """
    lines = [
        "# HELP http_requests HTTP requests handled by schema-registry, by status code.",
        "# TYPE http_requests counter",
    ]
    for code in CODES:
        labels = _labels(request_labels(code))
        lines.extend(
            f"http_requests_total{{{labels}}} {value} {ts}"
            for ts, value in zip(scenario.timestamps, scenario.requests[code], strict=True)
        )
    lines += [
        "# HELP up 1 if the scrape target was reachable, 0 otherwise.",
        "# TYPE up gauge",
    ]
    for instance, series in scenario.up.items():
        labels = _labels((("job", JOB), ("instance", instance)))
        lines.extend(f"up{{{labels}}} {value} {ts}" for ts, value in zip(scenario.timestamps, series, strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
