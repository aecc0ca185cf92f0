"""The one way irkit speaks HTTP: a ``requests`` session with timeouts, bounded retries, and clean errors.

Probes, senders, the Sentry and Alertmanager checks and the smoke tests all go through :class:`Http`.
Every request has a timeout; connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff (when retries are asked for); and every error message names the URL with its
credentials and secret query values scrubbed, so a token in a webhook URL never reaches a record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from irkit.errors import SourceUnavailable
from irkit.redact import scrub_url

if TYPE_CHECKING:
    import requests

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, parsed JSON body (or text), elapsed milliseconds, and how many attempts it took."""

    status: int
    payload: Any
    reason: str
    elapsed_ms: float
    attempts: int

    def brief(self) -> str:
        """``HTTP 503: <first 120 characters of the body>`` for an error line."""
        return f"HTTP {self.status}: {str(self.payload)[:120]}"


class Http:
    """A ``requests`` session with a timeout on every call and ``retries`` extra attempts on transient failures."""

    def __init__(self, *, timeout_s: float = 10.0, retries: int = 0, backoff_s: float = 0.5, verify: Any = True):
        import requests

        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.session = requests.Session()
        self.session.verify = verify

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str = "",
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        allow_redirects: bool = True,
        secret_url: bool = False,
    ) -> Reply:
        """One request, retried on transient failures; raises :class:`SourceUnavailable` when no answer came.

        A final 429/5xx answer is returned (the caller decides what it means), not raised.
        """
        import requests

        # A webhook whose path is the secret (Slack) is named, never shown.
        label = what if secret_url else (f"{what} at {scrub_url(url)}" if what else scrub_url(url))
        attempts = 1 + max(0, self.retries)
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.session.request(
                    method,
                    url,
                    params=dict(params or {}),
                    json=json,
                    headers=dict(headers or {}),
                    auth=auth,
                    timeout=self.timeout_s,
                    allow_redirects=allow_redirects,
                )
            except requests.exceptions.RequestException as exc:
                if attempt >= attempts:
                    raise SourceUnavailable(f"no answer from {label}: {type(exc).__name__}") from None
            else:
                if resp.status_code not in RETRY_STATUS or attempt >= attempts:
                    return Reply(resp.status_code, _payload(resp), resp.reason or "", _ms(resp), attempt)
            time.sleep(self.backoff_s * 2 ** (attempt - 1))

    def get(self, url: str, **kw: Any) -> Reply:
        """GET; see :meth:`request`."""
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Reply:
        """POST; see :meth:`request`."""
        return self.request("POST", url, **kw)

    def get_json(self, url: str, *, what: str, **kw: Any) -> Any:
        """GET and return the JSON body of a 200 answer; any other answer is :class:`SourceUnavailable`."""
        reply = self.get(url, what=what, **kw)
        if reply.status != 200:
            raise SourceUnavailable(f"{what} answered HTTP {reply.status}")
        return reply.payload


def _payload(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _ms(resp: requests.Response) -> float:
    return round(resp.elapsed.total_seconds() * 1000, 1)
