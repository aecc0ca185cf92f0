"""Third-party failures reach callers as IrkitError subclasses with one readable line, never raw."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest

from irkit.config import load_config
from irkit.errors import ActionRefused, IrkitError, RecordError, SourceUnavailable
from irkit.mitigate import Context, FlushCache, Plan, Rollback
from irkit.sources import RecordedSource


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_action_refused_is_part_of_the_one_tree() -> None:
    assert issubclass(ActionRefused, RecordError) and issubclass(ActionRefused, IrkitError)
    assert ActionRefused("x").exit_code == 2


def test_redis_failures_in_every_step_are_source_unavailable(tmp_path: Path) -> None:
    cfg = tmp_path / "irkit.yaml"
    dep = {"name": "cache", "kind": "redis", "url": f"redis://127.0.0.1:{closed_port()}/0", "timeout_s": 1}
    cfg.write_text(json.dumps({"dependencies": [dep]}))
    settings = load_config(cfg, {})
    ctx = Context(settings, {})
    action = FlushCache()
    plan = Plan("flush_cache", {}, "redis cache", "delete ALL keys", {}, {}, "")
    for step in (lambda: action.plan(ctx, {}), lambda: action.dry_run(ctx, plan), lambda: action.verify(ctx, plan)):
        with pytest.raises(SourceUnavailable, match=r"^cache: ConnectionError"):
            step()


def test_a_helm_that_cannot_run_is_source_unavailable(tmp_path: Path) -> None:
    hung = tmp_path / "helm"
    hung.write_text("#!/bin/sh\necho 'Error: release: not found' >&2\nexit 1\n")
    hung.chmod(hung.stat().st_mode | stat.S_IEXEC)
    ctx = Context(load_config(None, {}), {})
    for argv, message in (
        ([str(tmp_path / "missing-helm"), "rollback", "rel", "3"], "could not run"),
        ([str(hung), "rollback", "rel", "3"], "failed: Error: release: not found"),
    ):
        plan = Plan("rollback", {}, "helm release rel", "helm rollback rel 3", {}, {}, "", {"helm": argv})
        with pytest.raises(SourceUnavailable, match=message):
            Rollback().dry_run(ctx, plan)
        with pytest.raises(SourceUnavailable, match=message):
            Rollback().execute(ctx, plan)


def test_a_corrupt_recording_is_could_not_check_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "error_ratio.incident.json").write_text('{"signal": "error_ratio"')  # cut short
    src = RecordedSource(tmp_path)
    with pytest.raises(SourceUnavailable, match="unreadable"):
        src.window()
    with pytest.raises(SourceUnavailable, match=r"error_ratio\.incident\.json is unreadable"):
        src.load("error_ratio")
