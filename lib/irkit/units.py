"""Numbers as people read them at 3 a.m.: ``12.0 %``, ``4.2x``, ``857 ms``, ``1.3 s``, ``120 req/s``.

One place decides how each kind of value is written, so a table, a message and a report agree. Every
formatter takes None (not measured) and returns ``—``; none ever shows a raw six-decimal float.
"""

from __future__ import annotations

import math

NOTHING = "—"

# The unit of each named signal (config's signals, the metrics table, the plots).
SIGNAL_UNITS = {
    "request_rate": "rate",
    "error_ratio": "percent",
    "error_ratio_by_route": "percent",
    "latency_p99": "seconds",
    "saturation_cpu": "percent",
    "saturation_memory": "percent",
    "saturation_disk": "percent",
    "availability": "percent",
}


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: float | None) -> str:
    """A fraction as a percentage: ``0.412`` → ``41.2 %``, tiny non-zero shares stay visible (``0.004 %``)."""
    if _missing(value):
        return NOTHING
    assert value is not None
    pct = value * 100
    if pct != 0 and abs(pct) < 0.1:
        return f"{pct:.2g} %"
    return f"{pct:.1f} %"


def times(value: float | None) -> str:
    """A ratio to normal: ``41.3x``, ``4.2x``, ``0.9x``."""
    if _missing(value):
        return NOTHING
    assert value is not None
    return f"{value:.0f}x" if abs(value) >= 100 else f"{value:.1f}x"


def seconds(value: float | None) -> str:
    """A duration in seconds as ``857 ms`` or ``1.3 s`` (``12 µs`` for tiny ones)."""
    if _missing(value):
        return NOTHING
    assert value is not None
    if abs(value) < 0.001 and value != 0:
        return f"{value * 1e6:.0f} µs"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if abs(value) < 100 else f"{value:.0f} s"


def rate(value: float | None) -> str:
    """Requests per second: ``120 req/s``, ``2.5 req/s``."""
    if _missing(value):
        return NOTHING
    assert value is not None
    return f"{value:,.0f} req/s" if abs(value) >= 100 else f"{value:.3g} req/s"


def count(value: float | None) -> str:
    """A count with thousands separators: ``14,334``."""
    if _missing(value):
        return NOTHING
    assert value is not None
    return f"{value:,.0f}"


FORMATS = {"percent": percent, "seconds": seconds, "rate": rate, "times": times, "count": count}


def signal_value(signal: str, value: float | None) -> str:
    """A value of a named signal in that signal's unit (a plain 3-digit number for an unknown signal)."""
    unit = SIGNAL_UNITS.get(signal)
    if unit is not None:
        return FORMATS[unit](value)
    return NOTHING if _missing(value) else f"{value:.3g}"
