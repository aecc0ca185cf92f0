"""Random input to every verb: an exit code people can script against, one line, never a traceback,
and a record that still verifies afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irkit.cli import main
from irkit.record import Record

ID = "INC-FUZZ-1"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(st.characters(codec="utf-8"), max_size=300)
hostile = st.one_of(
    text,
    st.sampled_from(
        [
            "",
            "\x00",
            "../../etc/passwd",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "nan",
            ".inf",
            "-.inf",
            "2025-13-45",
            "[1, 2",
            "{a: b}",
            "!!binary aGVsbG8=",
            "!!set {a, b}",
            "!!python/object:os.system",
            "1e309",
            "x" * 70_000,
            "INC-" + "A" * 70,
            "P9",
        ]
    ),
)


def invoke(records: Path, *args: str, env: dict[str, str] | None = None):
    res = CliRunner().invoke(main, [*args, "--records", str(records)], env=env, catch_exceptions=False)
    return res


def assert_clean(res) -> None:
    assert res.exit_code in (0, 1, 2, 3), (res.exit_code, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    if res.exit_code != 0:
        assert res.stderr.strip().count("\n") <= 1, res.stderr


@pytest.fixture
def rec(records: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Record:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_ACTOR", "fuzzer")
    return Record.create(records, ID, title="t", service="svc", actor="tester")


@SETTINGS
@given(incident=hostile, status=hostile, reason=hostile)
def test_status_show_verify_take_any_input(records: Path, rec: Record, incident: str, status: str, reason: str) -> None:
    for args in (
        ("status", incident, status, "--reason", reason),
        ("status", ID, status, "--reason", reason),
        ("show", incident),
        ("verify", incident),
        ("verify", ID, "--expect-head", reason),
        ("verify", ID, "--public-key", reason),
    ):
        assert_clean(invoke(records, *args))
    assert rec.verify().ok


@SETTINGS
@given(title=hostile, severity=hostile, at=hostile, weeks=st.integers(-(10**12), 10**12))
def test_open_assess_oncall_take_any_input(
    records: Path, rec: Record, title: str, severity: str, at: str, weeks: int
) -> None:
    env = {"IRKIT_PROMETHEUS__URL": "http://127.0.0.1:9", "IRKIT_PROMETHEUS__TIMEOUT_S": "0.2"}
    for args in (
        ("open", "--title", title),
        ("open", "--title", "t", "--severity", severity),
        ("assess", "--at", at, "--window", severity),
        ("oncall", "--at", at, "--weeks", str(weeks)),
        ("list",),
    ):
        assert_clean(invoke(records, *args, env=env))
    for iid in os.listdir(records):
        if iid.startswith("INC-"):
            assert Record.open(records, iid).verify().ok


@SETTINGS
@given(name=hostile, value=hostile)
def test_runbook_parameters_and_config_values_take_any_input(
    records: Path, rec: Record, tmp_path: Path, name: str, value: str
) -> None:
    assert_clean(invoke(records, "open", ID, "triage", "-p", "metrics_source", value))
    assert_clean(invoke(records, "open", ID, "triage", "-p", name, value))
    assert_clean(invoke(records, "open", ID, "investigation", "-p", "answers", value))  # a typed (dict) parameter
    cfg = tmp_path / "fuzz.yaml"
    cfg.write_bytes(f"prometheus:\n  timeout_s: {value}\nservice:\n  name: {name}\n".encode(errors="surrogateescape"))
    assert_clean(invoke(records, "show", ID, "--config", str(cfg)))
    cfg.write_bytes(b"\xff\xfe not utf-8 " + value.encode()[:50])
    res = invoke(records, "show", ID, "--config", str(cfg))
    assert res.exit_code == 2 and "not UTF-8" in res.stderr
    assert Record.open(records, ID).verify().ok


def test_a_corrupt_first_event_and_an_empty_log_are_answers_not_tracebacks(records: Path, rec: Record) -> None:
    for content in (b"", b'{"seq": 1}\n', b"\xff\xfe\n", b'{"seq":1,"ts":"x","type":"incident.opened"}'):
        rec.events_path.write_bytes(content)
        for args in (("show", ID), ("verify", ID), ("status", ID, "acknowledged"), ("list",), ("index",)):
            res = invoke(records, *args)
            assert_clean(res)
            if args[0] in ("verify", "status"):
                assert res.exit_code == 1, (args, content, res.stderr)
