"""Time as irkit keeps it: aware UTC datetimes, RFC 3339 text, replay clocks and one duration format."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class ReplayClock:
    """A clock that starts at a recorded moment and runs at real speed: for replaying an incident.

    Only a record opened as a replay (``incident.opened`` with ``replay: true``) accepts events
    stamped by it, so a live incident's audit trail can never be backdated.
    """

    def __init__(self, start: datetime, *, frozen: bool = False) -> None:
        """``frozen``: stay at ``start`` (a runbook run replayed at one moment, so a re-execution is exact)."""
        if start.tzinfo is None:
            raise ValueError("naive datetime: irkit keeps every time in UTC")
        self.start = start.astimezone(UTC)
        self.frozen = frozen
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        if self.frozen:
            return self.start
        return self.start + timedelta(seconds=time.monotonic() - self._t0)


def rfc3339(dt: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: irkit keeps every time in UTC")
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rfc3339_index(index: Any) -> list[str]:
    """:func:`rfc3339` of every timestamp of a pandas ``DatetimeIndex``, formatted by numpy in one step.

    The same strings, character for character (seconds alone when a timestamp has no fraction, else
    microseconds); an index with nanoseconds or missing times goes one timestamp at a time.
    """
    import numpy as np

    if getattr(index, "tz", None) is None:
        raise ValueError("naive datetime: irkit keeps every time in UTC")
    ns = index.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if np.isnat(ns).any() or (ns.view("int64") % 1000).any():
        return [rfc3339(ts.to_pydatetime()) for ts in index]
    us = ns.astype("datetime64[us]")
    whole = np.datetime_as_string(us.astype("datetime64[s]"), unit="s")
    fraction = us.view("int64") % 1_000_000 != 0
    labels = np.where(fraction, np.datetime_as_string(us, unit="us"), whole) if fraction.any() else whole
    return [f"{label}Z" for label in labels.tolist()]


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (Z or offset) into an aware UTC datetime."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {value!r}")
    return dt.astimezone(UTC)


def human(delta: timedelta | None) -> str:
    """The one duration format of every table, message and report: ``2d 3h``, ``1h 05m``, ``4m 30s``, ``45s``."""
    if delta is None:
        return "—"
    secs = round(delta.total_seconds())
    sign = "-" if secs < 0 else ""
    days, rem = divmod(abs(secs), 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    if days:
        return f"{sign}{days}d {hours}h" if hours else f"{sign}{days}d"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {seconds:02d}s" if seconds else f"{sign}{minutes}m"
    return f"{sign}{seconds}s"


def stamp(dt: datetime | str | None) -> str:
    """The one point-in-time format of tables and reports: ``2026-03-04 14:33:07 UTC`` (seconds, never micro)."""
    if dt is None or dt == "":
        return "—"
    if isinstance(dt, str):
        try:
            when = parse_ts(dt)
        except ValueError:
            return dt
    else:
        when = dt
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
