"""Signal sources: live Prometheus and recorded snapshots behind one interface.

A *signal* is a named PromQL template from config (``error_ratio``, ``latency_p99`` …). Runbooks
ask a :class:`SignalSource` for a signal over a window and get a :class:`SignalSeries`: the query,
the window, the step and a pandas frame with a tz-aware UTC index (one column per returned series;
a single unlabelled series is the column ``value``). Whatever a runbook reads it snapshots into the
record's ``data/signals/``, so the record can be replayed by :class:`RecordedSource` long after
Prometheus has dropped the data: the post-mortem, offline tests and ``irkit demo`` all read that way.
A recording is real data played back, never a re-implementation of PromQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from irkit.errors import BadInputError, ConfigError, SourceUnavailable
from irkit.files import atomic_write_bytes
from irkit.record import Record, versioned_dir
from irkit.times import parse_ts, rfc3339, rfc3339_index

if TYPE_CHECKING:
    import pandas as pd

PROMETHEUS_MAX_POINTS = 11_000  # Prometheus refuses range queries returning more points per series
PLOT_MAX_POINTS = 1_000
DEFAULT_MIN_STEP_S = 15.0
LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SIGNALS_DIR = "data/signals"
ROLES = ("incident", "baseline")


@dataclass(frozen=True)
class SignalSeries:
    """What one signal returned over one window."""

    signal: str
    query: str
    start: datetime
    end: datetime
    step_s: float
    frame: pd.DataFrame
    role: str = "incident"
    source: str = "prometheus"

    @property
    def key(self) -> str:
        """``<signal>.<role>``: the series' file stem in a snapshot."""
        return f"{self.signal}.{self.role}"

    def total(self) -> pd.Series:
        """The sum across series at each time (NaN where nothing was returned)."""
        return self.frame.sum(axis=1, min_count=1)

    def meta(self) -> dict[str, Any]:
        """The series' description (query, window, step, role, source, columns, points) saved beside its CSV."""
        return {
            "signal": self.signal,
            "query": self.query,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "step_s": self.step_s,
            "role": self.role,
            "source": self.source,
            "columns": [str(c) for c in self.frame.columns],
            "points": len(self.frame),
        }


class SignalSource(Protocol):
    """Anything that can answer "signal S over [start, end]"."""

    name: str

    def range(
        self, signal: str, start: datetime, end: datetime, *, step_s: float | None = None, role: str = "incident"
    ) -> SignalSeries:
        """The signal over [start, end] at ``step_s`` (a default step when None), labelled with ``role``."""
        ...


# --------------------------------------------------------------------------- queries and steps


def render_query(template: str, *, service: str, namespace: str) -> str:
    """Fill ``{service}``/``{namespace}`` into a PromQL template, refusing values that could inject PromQL."""
    for name, value in (("service", service), ("namespace", namespace)):
        if not LABEL_VALUE.fullmatch(value):
            raise BadInputError(f"{name} {value!r} is not a plain label value ([A-Za-z0-9_.:-]); refusing to query")
    try:
        return template.format(service=service, namespace=namespace)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"signal template {template[:60]!r}…: bad placeholder {exc}; literal braces are {{{{ }}}}"
        ) from exc


def choose_step(
    start: datetime, end: datetime, *, min_step_s: float = DEFAULT_MIN_STEP_S, max_points: int = PLOT_MAX_POINTS
) -> float:
    """The smallest multiple of ``min_step_s`` that keeps the window at or under ``max_points`` points."""
    span = (end - start).total_seconds()
    if span <= 0:
        raise BadInputError(f"empty window: {rfc3339(start)} .. {rfc3339(end)}")
    needed = span / max(max_points - 1, 1)
    return max(min_step_s, math.ceil(needed / min_step_s) * min_step_s)


def chunk_window(
    start: datetime, end: datetime, step_s: float, max_points: int = PROMETHEUS_MAX_POINTS
) -> list[tuple[datetime, datetime]]:
    """Split a window so no chunk returns more than ``max_points`` points per series; chunks don't overlap."""
    span = timedelta(seconds=step_s * (max_points - 1))
    out = []
    cur = start
    while cur <= end:
        stop = min(cur + span, end)
        out.append((cur, stop))
        cur = stop + timedelta(seconds=step_s)
    return out


def baseline_window(start: datetime, end: datetime, offset: timedelta) -> tuple[datetime, datetime]:
    """The same window ``offset`` earlier (default a week): "normal" for the plan's "Nx normal"."""
    return start - offset, end - offset


# --------------------------------------------------------------------------- snapshots


def _frame_to_csv(frame: pd.DataFrame) -> bytes:
    out = frame.copy()
    out.index = rfc3339_index(out.index)
    out.index.name = "ts"
    text: str = out.to_csv()
    return text.encode()


def _csv_to_frame(data: str | Path) -> pd.DataFrame:
    import pandas as pd

    # Read as text and convert: str → float64 is correctly rounded, so values replay bit for bit.
    frame = pd.read_csv(data, index_col="ts", dtype=str, keep_default_na=False, na_values=[""])
    # ISO 8601 named, not guessed: guessing the format cost a third of reading a recording.
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True, format="ISO8601"), name="ts")
    return frame.astype("float64")


def series_files(series: SignalSeries) -> dict[str, bytes]:
    """``series`` as ``<signal>.<role>.csv`` plus its ``.json`` metadata (file name → bytes)."""
    return {
        f"{series.key}.csv": _frame_to_csv(series.frame),
        f"{series.key}.json": (json.dumps(series.meta(), indent=2) + "\n").encode(),
    }


def write_series(directory: Path, series: SignalSeries) -> tuple[Path, Path]:
    """Write ``series`` into a recording directory outside any record (bundled scenarios, tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in series_files(series).items():
        atomic_write_bytes(directory / name, data)
        paths.append(directory / name)
    return paths[0], paths[1]


def snapshot(record: Record, series: Sequence[SignalSeries], *, actor: str) -> str:
    """Seal ``series`` into a new version of the record's ``data/signals`` (write-once); return its path."""
    files = {name: data for s in series for name, data in series_files(s).items()}
    if not files:
        return SIGNALS_DIR
    sealed = record.seal(
        lambda n: {f"{versioned_dir(SIGNALS_DIR, n)}/{name}": data for name, data in files.items()},
        actor=actor,
        kind="signal",
    )
    return sealed[0].rsplit("/", 1)[0]


class RecordedSource:
    """Replays signal snapshots from a directory (a record's ``data/signals`` or a bundled recording)."""

    name = "recorded"
    concurrent = False  # local files, parsed in Python: threads would only take turns holding the GIL

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def available(self) -> list[str]:
        """``<signal>.<role>`` of every recording in the directory."""
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def load(self, signal: str, role: str = "incident") -> SignalSeries:
        """The whole recorded series for ``signal`` and ``role``; SourceUnavailable if missing or unreadable."""
        meta_path = self.directory / f"{signal}.{role}.json"
        if not meta_path.is_file():
            raise SourceUnavailable(f"no recording of {signal} ({role}) in {self.directory}")
        try:
            meta = json.loads(meta_path.read_text())
            return SignalSeries(
                signal=meta["signal"],
                query=meta["query"],
                start=parse_ts(meta["start"]),
                end=parse_ts(meta["end"]),
                step_s=float(meta["step_s"]),
                frame=_csv_to_frame(self.directory / f"{signal}.{role}.csv"),
                role=meta["role"],
                source=str(meta.get("source", "prometheus")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceUnavailable(f"the recording {meta_path.name} is unreadable: {type(exc).__name__}: {exc}") from None

    def range(
        self, signal: str, start: datetime, end: datetime, *, step_s: float | None = None, role: str = "incident"
    ) -> SignalSeries:
        """The recorded series clipped to [start, end] (the recording's own step is kept)."""
        rec = self.load(signal, role)
        frame = rec.frame[(rec.frame.index >= start) & (rec.frame.index <= end)]
        return SignalSeries(
            rec.signal, rec.query, max(start, rec.start), min(end, rec.end), rec.step_s, frame, rec.role, rec.source
        )

    def window(self) -> tuple[datetime, datetime]:
        """The span the incident recordings cover."""
        try:
            metas = [json.loads(p.read_text()) for p in self.directory.glob("*.incident.json")]
            if metas:
                return min(parse_ts(m["start"]) for m in metas), max(parse_ts(m["end"]) for m in metas)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceUnavailable(f"the recordings in {self.directory} are unreadable: {exc}") from None
        raise SourceUnavailable(f"no recordings in {self.directory}")


def copy_recording(src: RecordedSource, record: Record, *, actor: str, signals: Iterable[str] | None = None) -> int:
    """Import a recording (e.g. the bundled incident's) into a record's snapshots; returns how many series."""
    series = []
    for key in src.available():
        signal, role = key.rsplit(".", 1)
        if signals is None or signal in signals:
            series.append(src.load(signal, role))
    snapshot(record, series, actor=actor)
    return len(series)


def fetch_all(
    source: SignalSource,
    signals: Iterable[str],
    start: datetime,
    end: datetime,
    *,
    step_s: float | None = None,
    role: str = "incident",
    max_workers: int = 4,
) -> dict[str, SignalSeries | SourceUnavailable | ConfigError]:
    """Several signals (concurrently from a server); each is a series, the reason it could not be read, or its
    configuration error."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> SignalSeries | SourceUnavailable | ConfigError:
        try:
            return source.range(name, start, end, step_s=step_s, role=role)
        except (SourceUnavailable, ConfigError) as exc:
            return exc

    names = list(signals)
    if not getattr(source, "concurrent", True):  # a source that does not wait on a network (recordings)
        return {name: one(name) for name in names}
    with ThreadPoolExecutor(max_workers=min(max_workers, max(len(names), 1))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))
