import itertools
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from irkit.errors import BadInputError
from irkit.metrics import live_window
from irkit.prom import result_to_frame
from irkit.severity import Evidence, Level, classify
from irkit.sources import PROMETHEUS_MAX_POINTS, choose_step, chunk_window, render_query

T = datetime(2025, 11, 20, 14, 32, tzinfo=UTC)


def test_choose_step_keeps_plots_under_a_thousand_points() -> None:
    assert choose_step(T, T + timedelta(hours=2)) == 15
    step = choose_step(T, T + timedelta(days=7))
    assert step % 15 == 0 and (7 * 86400) / step <= 999
    assert choose_step(T, T + timedelta(days=30), max_points=PROMETHEUS_MAX_POINTS) <= 240


def test_thirty_days_at_15s_is_chunked_under_the_point_limit() -> None:
    chunks = chunk_window(T, T + timedelta(days=30), 15)
    assert len(chunks) == 16
    assert chunks[0][0] == T and chunks[-1][1] == T + timedelta(days=30)
    for (s, e), (s2, _) in itertools.pairwise(chunks):
        assert (e - s).total_seconds() / 15 + 1 <= PROMETHEUS_MAX_POINTS
        assert s2 == e + timedelta(seconds=15)  # contiguous, no overlap


@pytest.mark.parametrize("bad", ['x"}) or vector(1) #', "a b", "", "x{y}"])
def test_label_values_cannot_inject_promql(bad: str) -> None:
    with pytest.raises(BadInputError, match="plain label value"):
        render_query('up{{service="{service}"}}', service=bad, namespace="ns")


def test_render_query() -> None:
    q = render_query('rate(x{{service="{service}",namespace="{namespace}"}}[5m])', service="svc", namespace="ns")
    assert q == 'rate(x{service="svc",namespace="ns"}[5m])'


def test_result_to_frame_is_wide_with_utc_index() -> None:
    result = [
        {"metric": {"code": "500"}, "values": [[1763649000, "1.5"], [1763649015, "2"]]},
        {"metric": {"code": "200"}, "values": [[1763649000, "10"]]},
    ]
    f = result_to_frame(result)
    assert str(f.index.tz) == "UTC" and f.index.name == "ts"
    assert list(f.columns) == ['{code="200"}', '{code="500"}']
    assert f.loc[pd.Timestamp(1763649015, unit="s", tz="UTC"), '{code="500"}'] == 2.0
    assert result_to_frame([{"metric": {}, "value": [1763649000, "0.5"]}]).columns.tolist() == ["value"]


@pytest.mark.parametrize(
    ("ratio", "level"), [(0.009, None), (0.01, Level.P3), (0.05, Level.P2), (0.10, Level.P2), (0.101, Level.P1)]
)
def test_error_ratio_boundaries(ratio: float, level: Level | None) -> None:
    assert classify(Evidence(error_ratio=ratio)).level == level


@pytest.mark.parametrize(
    ("x", "level"), [(1.9, None), (2.0, Level.P3), (3.0, Level.P2), (10.0, Level.P2), (10.1, Level.P1)]
)
def test_latency_boundaries(x: float, level: Level | None) -> None:
    assert classify(Evidence(latency_p99=x * 0.2, latency_baseline=0.2)).level == level


def test_most_severe_evidence_wins_and_every_reason_is_kept() -> None:
    a = classify(Evidence(error_ratio=0.03, latency_p99=2.5, latency_baseline=0.2, availability=0.0))
    assert a.level is Level.P0
    assert [r.level for r in a.reasons] == [Level.P0, Level.P1, Level.P3]
    assert a.summary().startswith("P0: no healthy targets")


def test_missing_baseline_is_could_not_check_not_normal() -> None:
    a = classify(Evidence(latency_p99=5.0, latency_baseline=None))
    assert a.level is None and "latency_baseline" in a.unavailable


def test_live_window_young_and_retrospective() -> None:
    start, end, at = live_window(T, T + timedelta(minutes=10))
    assert end == at == T + timedelta(minutes=10) and start == T - timedelta(hours=1)
    start, end, at = live_window(T, T + timedelta(days=3))
    assert (start, end, at) == (T - timedelta(hours=1), T + timedelta(hours=2), T + timedelta(minutes=15))


def test_recordings_are_read_in_turn_and_give_what_the_threaded_read_gives() -> None:
    import threading
    from typing import ClassVar

    from irkit.demo import SCENARIO_DIR
    from irkit.sources import RecordedSource, SourceUnavailable, fetch_all

    class Threaded(RecordedSource):  # the same files, read the way a server's series are
        concurrent = True
        threads: ClassVar[set[str]] = set()

        def range(self, *a, **k):  # type: ignore[no-untyped-def]
            self.threads.add(threading.current_thread().name)
            return super().range(*a, **k)

    class InTurn(RecordedSource):
        threads: ClassVar[set[str]] = set()

        def range(self, *a, **k):  # type: ignore[no-untyped-def]
            self.threads.add(threading.current_thread().name)
            return super().range(*a, **k)

    recorded = InTurn(SCENARIO_DIR / "signals")
    assert RecordedSource.concurrent is False
    start, end = recorded.window()
    names = ["error_ratio", "latency_p99", "no_such_signal"]
    in_turn = fetch_all(recorded, names, start, end)
    threaded_source = Threaded(SCENARIO_DIR / "signals")
    threaded = fetch_all(threaded_source, names, start, end)
    assert recorded.threads == {threading.current_thread().name}  # recordings: read in the caller's thread
    assert threading.current_thread().name not in threaded_source.threads  # a server's: in threads
    assert isinstance(in_turn["no_such_signal"], SourceUnavailable) and isinstance(threaded["no_such_signal"], SourceUnavailable)
    for name in names[:2]:
        pd.testing.assert_frame_equal(in_turn[name].frame, threaded[name].frame)
        assert len(in_turn[name].frame) > 10


def test_recorded_timestamps_are_iso_8601_and_anything_else_is_an_unreadable_recording(tmp_path) -> None:
    import shutil

    from irkit.demo import SCENARIO_DIR
    from irkit.sources import RecordedSource, SourceUnavailable

    for name in ("error_ratio.incident.json", "error_ratio.incident.csv"):
        shutil.copy(SCENARIO_DIR / "signals" / name, tmp_path / name)
    csv = tmp_path / "error_ratio.incident.csv"
    original = RecordedSource(tmp_path).load("error_ratio").frame
    lines = csv.read_text().splitlines()
    # the same instants written with a space and an offset: still ISO 8601, still the same series
    csv.write_text("\n".join([lines[0], *(ln.replace("T", " ").replace("Z", "+00:00") for ln in lines[1:])]) + "\n")
    pd.testing.assert_frame_equal(RecordedSource(tmp_path).load("error_ratio").frame, original, check_exact=True)
    csv.write_text("ts,value\n20/11/2025 13:30,0.1\n")  # a day-first date is not guessed at
    with pytest.raises(SourceUnavailable, match=r"error_ratio\.incident\.json is unreadable"):
        RecordedSource(tmp_path).load("error_ratio")


@given(
    st.lists(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
    st.booleans(),
)
def test_rfc3339_index_writes_exactly_what_rfc3339_writes_one_at_a_time(
    times: list[datetime], zone: str, whole_seconds: bool
) -> None:
    from irkit.times import rfc3339, rfc3339_index

    if whole_seconds:  # the common case (Prometheus steps): no fraction anywhere
        times = [t.replace(microsecond=0) for t in times]
    index = pd.DatetimeIndex(times).tz_convert(zone)
    assert rfc3339_index(index) == [rfc3339(t.to_pydatetime()) for t in index]


def test_rfc3339_index_refuses_naive_times_and_keeps_nanoseconds_on_the_slow_path() -> None:
    from irkit.times import rfc3339_index

    with pytest.raises(ValueError, match="naive"):
        rfc3339_index(pd.DatetimeIndex([datetime(2025, 1, 1)]))
    odd = pd.DatetimeIndex([pd.Timestamp("2025-11-20T14:32:00.000000001Z"), pd.Timestamp("2025-11-20T14:33:00Z")])
    with pytest.warns(UserWarning, match="nanoseconds"):  # as to_pydatetime() warns: the same path
        assert rfc3339_index(odd) == ["2025-11-20T14:32:00Z", "2025-11-20T14:33:00Z"]
