"""Live Prometheus: the only module that imports the Prometheus client.

Every request has a timeout; connection failures, timeouts, auth refusals and server errors become
:class:`~irkit.errors.SourceUnavailable` ("could not check"), distinct from a signal that was read
and looks bad. Range reads pick a step that keeps each series under Prometheus's 11,000-point limit
(and about 1,000 points for plots), chunk long windows, and fetch several signals concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from irkit.config import PrometheusSettings, Settings
from irkit.errors import BadInputError, ConfigError, SourceUnavailable
from irkit.http import Http
from irkit.redact import scrub_url
from irkit.sources import (
    PLOT_MAX_POINTS,
    PROMETHEUS_MAX_POINTS,
    SignalSeries,
    choose_step,
    chunk_window,
    render_query,
)


def _series_name(metric: Mapping[str, str]) -> str:
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    if not labels:
        return "value"
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def result_to_frame(result: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Prometheus matrix/vector results → wide frame, UTC index ``ts``, one float column per series."""
    columns: dict[str, pd.Series] = {}
    for item in result:
        name = _series_name(item.get("metric", {}))
        points = item.get("values") or ([item["value"]] if "value" in item else [])
        ts = pd.to_datetime([float(p[0]) for p in points], unit="s", utc=True)
        columns[name] = pd.Series([float(p[1]) for p in points], index=ts, dtype="float64")
    if not columns:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="ts"), dtype="float64")
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "ts"
    return frame[sorted(frame.columns)]


def _api_error(text: str) -> str:
    """The ``error`` field of the Prometheus API error body inside the client's exception text, else the text."""
    import re

    m = re.search(r'"error":\s*"((?:[^"\\]|\\.)*)"', text)
    return (m.group(1).replace('\\"', '"') if m else text)[:300]


class PrometheusSource:
    """Named signals from a live Prometheus."""

    name = "prometheus"

    def __init__(self, settings: Settings, environ: Mapping[str, str], *, max_workers: int = 4) -> None:
        self.settings = settings
        self.cfg: PrometheusSettings = settings.prometheus
        self.max_workers = max_workers
        self.client = PrometheusConnect(
            url=self.cfg.url.rstrip("/"),
            headers=self._headers(environ),
            auth=self._basic(environ),
            disable_ssl=not self.cfg.verify_tls,
            retry=Retry(total=2, connect=1, read=1, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            timeout=self.cfg.timeout_s,
        )
        if self.cfg.verify_tls and self.cfg.ca_file:
            self.client._session.verify = self.cfg.ca_file

    def _headers(self, environ: Mapping[str, str]) -> dict[str, str] | None:
        env = self.cfg.auth.bearer_token_env
        if not env:
            return None
        token = environ.get(env)
        if not token:
            raise ConfigError(f"prometheus.auth.bearer_token_env: environment variable {env} is not set")
        return {"Authorization": f"Bearer {token}"}

    def _basic(self, environ: Mapping[str, str]) -> tuple[str, str] | None:
        basic = self.cfg.auth.basic
        if basic is None:
            return None
        password = environ.get(basic.password_env)
        if password is None:
            raise ConfigError(
                f"prometheus.auth.basic.password_env: environment variable {basic.password_env} is not set"
            )
        return (basic.username, password)

    # ---- raw queries

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        where = scrub_url(self.cfg.url)
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.Timeout as exc:
            raise SourceUnavailable(
                f"Prometheus at {where} timed out after {self.cfg.timeout_s}s ({what})"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise SourceUnavailable(f"Prometheus at {where} is unreachable ({what})") from exc
        except requests.exceptions.RequestException as exc:
            raise SourceUnavailable(f"Prometheus request failed ({what}): {type(exc).__name__}") from exc
        except PrometheusApiClientException as exc:
            text = str(exc)
            if text.startswith("HTTP Status Code 400") and "bad_data" in text:
                # The server parsed our request and refused the PromQL: a configuration error, not an outage.
                raise ConfigError(f"Prometheus rejected the query ({what}): {_api_error(text)}") from exc
            if "401" in text[:40] or "403" in text[:40]:
                raise SourceUnavailable(f"Prometheus at {where} refused our credentials ({what})") from exc
            raise SourceUnavailable(f"Prometheus could not answer {what}: {text[:200]}") from exc

    def query(self, promql: str, at: datetime | None = None) -> pd.DataFrame:
        """An instant query (at ``at`` or now) as a one-row-per-series frame."""
        params = {"time": f"{at.timestamp():.3f}"} if at else None
        result = self._call("instant query", self.client.custom_query, promql, params=params)
        return result_to_frame(result)

    def query_range(self, promql: str, start: datetime, end: datetime, step_s: float) -> pd.DataFrame:
        """A range query, chunked so no request exceeds the point limit."""
        frames = [
            result_to_frame(self._call("range query", self.client.custom_query_range, promql, s, e, f"{step_s:g}s"))
            for s, e in chunk_window(start, end, step_s, PROMETHEUS_MAX_POINTS)
        ]
        frame = pd.concat(frames).sort_index() if frames else result_to_frame([])
        frame = frame[~frame.index.duplicated(keep="last")]
        return frame[sorted(frame.columns)]

    # ---- named signals

    def signal_query(self, signal: str) -> str:
        """The PromQL for a named signal, with the service's name and namespace filled in safely."""
        template = self.settings.signals.get(signal)
        if template is None:
            raise ConfigError(
                f"signals.{signal}: no such signal; configured: {', '.join(sorted(self.settings.signals))}"
            )
        svc = self.settings.service
        try:
            return render_query(template, service=svc.name, namespace=svc.namespace)
        except BadInputError as exc:
            raise ConfigError(f"signals.{signal}: {exc}") from exc

    def range(
        self, signal: str, start: datetime, end: datetime, *, step_s: float | None = None, role: str = "incident"
    ) -> SignalSeries:
        """Signal ``signal`` over [start, end]; the step defaults to ≤ 1,000 points (plot resolution)."""
        query = self.signal_query(signal)
        step = step_s or choose_step(start, end, max_points=PLOT_MAX_POINTS)
        try:
            frame = self.query_range(query, start, end, step)
        except ConfigError as exc:
            raise ConfigError(f"signals.{signal}: {exc}") from exc
        return SignalSeries(signal, query, start, end, step, frame, role, self.name)

    def active_alerts(self, service: str) -> list[dict[str, Any]]:
        """Firing alerts whose ``service`` label is ``service`` (Prometheus ``/api/v1/alerts``)."""
        verify = (self.cfg.ca_file or True) if self.cfg.verify_tls else False
        body = Http(timeout_s=self.cfg.timeout_s, retries=1, verify=verify).get_json(
            f"{self.cfg.url.rstrip('/')}/api/v1/alerts",
            what="Prometheus alerts API",
            headers=self.client.headers or {},
            auth=self.client.auth,
        )
        alerts = body.get("data", {}).get("alerts", []) if isinstance(body, dict) else []
        return [a for a in alerts if a.get("state") == "firing" and a.get("labels", {}).get("service") == service]
