"""The one HTTP client: retries on transient answers, a clean error without credentials, JSON or text."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from irkit.errors import SourceUnavailable
from irkit.http import Http


class Script(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, str]]] = []
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status, body = self.answers.pop(0) if self.answers else (200, "{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Script.answers, Script.seen = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Script)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_503_then_a_200_is_one_answer_after_two_attempts(server: str) -> None:
    Script.answers = [(503, "busy"), (200, json.dumps({"ok": True}))]
    reply = Http(retries=2, backoff_s=0.01).get(f"{server}/x")
    assert (reply.status, reply.payload, reply.attempts) == (200, {"ok": True}, 2)


def test_the_last_transient_answer_is_returned_not_raised(server: str) -> None:
    Script.answers = [(503, "busy"), (503, "still busy")]
    reply = Http(retries=1, backoff_s=0.01).get(f"{server}/x")
    assert (reply.status, reply.attempts, reply.brief()) == (503, 2, "HTTP 503: still busy")


def test_get_json_refuses_anything_but_200(server: str) -> None:
    Script.answers = [(404, "{}")]
    with pytest.raises(SourceUnavailable, match="Sentry answered HTTP 404"):
        Http().get_json(f"{server}/x", what="Sentry")


def test_no_answer_names_the_url_without_its_credentials() -> None:
    url = f"http://admin:hunter2-canary@127.0.0.1:{closed_port()}/hook?token=tok-canary&page=1"
    with pytest.raises(SourceUnavailable) as err:
        Http(retries=1, backoff_s=0.01, timeout_s=2).get(url, what="Statuspage")
    text = str(err.value)
    assert text.startswith("no answer from Statuspage at http://127.0.0.1:") and "ConnectionError" in text
    assert "hunter2" not in text and "tok-canary" not in text and err.value.__cause__ is None


def test_a_secret_url_is_named_never_shown() -> None:
    url = f"http://127.0.0.1:{closed_port()}/services/T000/B000/secretpath"
    with pytest.raises(SourceUnavailable) as err:
        Http(timeout_s=2).post(url, json={}, what="slack", secret_url=True)
    assert "secretpath" not in str(err.value) and "slack" in str(err.value)
