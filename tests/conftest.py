"""Fixtures shared by every test: a records root, settings, a CLI invoker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from irkit.cli import main
from irkit.config import Settings, load_config


@pytest.fixture
def records(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    root.mkdir()
    return root


@pytest.fixture
def settings() -> Settings:
    return load_config(None, {})


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., CliResult]:
    """Invoke ``irkit`` in-process with a clean working directory; stdout and stderr kept apart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_ACTOR", "tester")

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        res = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return CliResult(res.exit_code, res.stdout, res.stderr)

    return run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One full ``irkit demo`` replay, shared by the tests that read its record (copy before changing it)."""
    from irkit.demo import run_demo

    root = tmp_path_factory.mktemp("demo") / "reports"
    settings = load_config(None, {})
    result = run_demo(root, settings=settings, environ={"IRKIT_ACTOR": "tester"}, actor="tester")
    assert result.ok, [r.summary() for r in result.runs]
    return result
