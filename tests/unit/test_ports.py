"""free_port: ports for the test and bench servers come from outside the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest

from irkit.scenarios import tsdb


def test_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    low = int(tsdb._EPHEMERAL.read_text().split()[0])
    ports = {tsdb.free_port() for _ in range(20)}
    assert all(10000 <= p < low for p in ports)
    assert len(ports) > 1  # random, not one fixed port every fixture would fight over
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(tsdb, "_below_ephemeral", lambda: range(taken, taken + 1))
        port = tsdb.free_port()
        assert port != taken
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
