"""Smoke tests proving each integration fixture runs a real, usable server.

They are cheap, but they pin down the contract the rest of the integration
suite relies on: the backfilled Prometheus answers PromQL exactly as the
scenario generator predicts, and PostgreSQL/Redis accept real client
connections with the configuration the fixtures claim.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
import redis
import requests
import scenario as sc
from scenario import Scenario

# Fixture handles are described structurally, so this module does not import
# conftest (whose module name is ambiguous when several conftest.py exist).


class PrometheusHandle(Protocol):
    """What the tests need from the ``prometheus_server`` fixture."""

    @property
    def url(self) -> str: ...
    @property
    def scenario(self) -> Scenario: ...
    @property
    def range_left_closed(self) -> bool: ...


class PostgresHandle(Protocol):
    """What the tests need from the ``postgres_server`` fixture."""

    @property
    def dsn(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def max_connections(self) -> int: ...


class RedisHandle(Protocol):
    """What the tests need from the ``redis_server`` fixture."""

    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


ERROR_RATIO_QUERY = 'sum(rate(http_requests_total{code="500"}[1m])) / sum(rate(http_requests_total[1m]))'
DURING_INCIDENT = datetime(2025, 11, 20, 14, 40, tzinfo=UTC)
BEFORE_INCIDENT = datetime(2025, 11, 20, 14, 0, tzinfo=UTC)
WHILE_INSTANCE_DOWN = datetime(2025, 11, 20, 14, 38, tzinfo=UTC)


def _http() -> requests.Session:
    """A session that ignores ``HTTP_PROXY``/``NO_PROXY``: the server is on loopback."""
    session = requests.Session()
    session.trust_env = False
    return session


def instant_query(server: PrometheusHandle, query: str, at: datetime) -> list[dict[str, Any]]:
    """Run an instant query at an explicit time and return the result vector.

    The explicit ``time=`` matters: without it Prometheus evaluates at "now",
    which is long after the recorded data and returns nothing.
    """
    with _http() as http:
        response = http.get(
            f"{server.url}/api/v1/query",
            params={"query": query, "time": f"{at.timestamp():.3f}"},
            timeout=10,
        )
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar_result(server: PrometheusHandle, query: str, at: datetime) -> float:
    """Value of a query that must return exactly one sample."""
    result = instant_query(server, query, at)
    assert len(result) == 1, f"{query} at {at.isoformat()} returned {result}"
    return float(result[0]["value"][1])


def test_scenario_is_deterministic() -> None:
    """Same seed, same bytes: expected values must not drift between runs."""
    assert sc.render_openmetrics(sc.build_scenario()) == sc.render_openmetrics(sc.build_scenario())
    assert sc.render_openmetrics(sc.build_scenario()).endswith("# EOF\n")


def test_prometheus_error_ratio_during_incident(prometheus_server: PrometheusHandle) -> None:
    """At 14:40Z the 5xx ratio is ~15 %, exactly as the generator predicts."""
    observed = scalar_result(prometheus_server, ERROR_RATIO_QUERY, DURING_INCIDENT)
    expected = prometheus_server.scenario.expected_error_ratio(
        DURING_INCIDENT, left_closed=prometheus_server.range_left_closed
    )
    assert math.isclose(observed, expected, rel_tol=1e-9), (observed, expected)
    assert abs(observed - sc.INCIDENT_ERROR_RATIO) <= sc.ERROR_RATIO_TOLERANCE


def test_prometheus_error_ratio_before_incident(prometheus_server: PrometheusHandle) -> None:
    """At 14:00Z the 5xx ratio is back at the ~1 % baseline."""
    observed = scalar_result(prometheus_server, ERROR_RATIO_QUERY, BEFORE_INCIDENT)
    expected = prometheus_server.scenario.expected_error_ratio(
        BEFORE_INCIDENT, left_closed=prometheus_server.range_left_closed
    )
    assert math.isclose(observed, expected, rel_tol=1e-9), (observed, expected)
    assert abs(observed - sc.NORMAL_ERROR_RATIO) <= sc.ERROR_RATIO_TOLERANCE


def test_prometheus_request_rate(prometheus_server: PrometheusHandle) -> None:
    """Total traffic is ~100 req/s; catches counters backfilled with ms timestamps."""
    observed = scalar_result(prometheus_server, "sum(rate(http_requests_total[1m]))", BEFORE_INCIDENT)
    expected = prometheus_server.scenario.expected_total_rps(
        BEFORE_INCIDENT, left_closed=prometheus_server.range_left_closed
    )
    assert math.isclose(observed, expected, rel_tol=1e-9), (observed, expected)
    assert math.isclose(observed, sc.BASE_RPS, rel_tol=sc.RPS_RELATIVE_TOLERANCE)


def test_prometheus_series_labels(prometheus_server: PrometheusHandle) -> None:
    """Both status codes exist with the exact label set the generator wrote."""
    result = instant_query(prometheus_server, "http_requests_total", BEFORE_INCIDENT)
    got = sorted(tuple(sorted(r["metric"].items())) for r in result)
    want = sorted(tuple(sorted([("__name__", "http_requests_total"), *sc.request_labels(code)])) for code in sc.CODES)
    assert got == want


def test_prometheus_up(prometheus_server: PrometheusHandle) -> None:
    """Three targets exist throughout; one of them is down mid-incident."""
    assert scalar_result(prometheus_server, "count(up)", BEFORE_INCIDENT) == 3
    assert scalar_result(prometheus_server, "count(up)", WHILE_INSTANCE_DOWN) == 3
    scenario = prometheus_server.scenario
    for at in (BEFORE_INCIDENT, WHILE_INSTANCE_DOWN):
        assert scalar_result(prometheus_server, "sum(up)", at) == scenario.expected_up_sum(at)
    assert scenario.expected_up_sum(WHILE_INSTANCE_DOWN) == 2
    down = instant_query(prometheus_server, "up == 0", WHILE_INSTANCE_DOWN)
    assert [r["metric"]["instance"] for r in down] == [sc.DOWN_INSTANCE]


def test_prometheus_has_no_data_outside_recording(prometheus_server: PrometheusHandle) -> None:
    """Nothing before the recording: proves no live scraping pollutes the TSDB."""
    before = datetime(2025, 11, 20, 13, 0, tzinfo=UTC)
    assert instant_query(prometheus_server, "up", before) == []


def test_postgres_select_one(postgres_server: PostgresHandle) -> None:
    """A real TCP connection with trust auth can run a query."""
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row == (1,)
        info = conn.info
        assert (info.host, info.port) == (postgres_server.host, postgres_server.port)


def test_postgres_settings(postgres_server: PostgresHandle) -> None:
    """The server runs with the fixture's settings, not a system cluster's."""
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        max_connections = conn.execute("SHOW max_connections").fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
    assert max_connections == (str(postgres_server.max_connections),)
    assert listen == ("127.0.0.1",)


def test_postgres_roundtrip(postgres_server: PostgresHandle) -> None:
    """DDL and DML work (the cluster is writable, not merely reachable)."""
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO t VALUES (%s, %s)", (1, "incident"))
        row = conn.execute("SELECT note FROM t WHERE id = %s", (1,)).fetchone()
    assert row == ("incident",)


def test_redis_ping_set_get(redis_server: RedisHandle) -> None:
    """PING, then a SET/GET round trip with an expiry through redis-py."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        assert client.ping() is True
        key = f"irkit-test:{uuid.uuid4()}"
        assert client.set(key, "schema-registry", ex=60) is True
        assert client.get(key) == b"schema-registry"
        ttl = client.ttl(key)
        assert isinstance(ttl, int)
        assert 0 < ttl <= 60
    finally:
        client.close()
