"""Fixtures shared by every test: a records root, settings, a CLI invoker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import settings as hypothesis_settings

from irkit.cli import main
from irkit.config import Settings, load_config

# Hypothesis's per-example deadline (200 ms) is a wall-clock assertion: on 2 busy cores under xdist an
# example can take 500 ms with nothing wrong. Tests do not assert times; benches in bench/ measure them.
hypothesis_settings.register_profile("irkit", deadline=None)
hypothesis_settings.load_profile("irkit")


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


@dataclass(frozen=True)
class DemoCli:
    """One ``irkit demo --records demo-records`` through the CLI: what it printed, and what it built."""

    cwd: Path  # the working directory it ran in; its ``--records`` was relative to it, as with ``make demo``
    records: Path  # cwd / "demo-records"
    output: CliResult
    result: Any  # the irkit.demo.DemoResult behind that output, its paths made absolute


@pytest.fixture(scope="session")
def demo_cli(tmp_path_factory: pytest.TempPathFactory) -> DemoCli:
    """The demo replays five runbooks (a minute of kernels), so the session runs it once, through the CLI.

    Shared by the tests that read its output or its record: copy the record before changing it. The
    CLI's own ``run_demo`` call is observed, not replaced, to hand its result to the tests as well.
    Under xdist these tests share one worker (see ``pytest_collection_modifyitems``).
    """
    import dataclasses

    import irkit.demo

    cwd = tmp_path_factory.mktemp("demo")
    seen: list[Any] = []
    real = irkit.demo.run_demo

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(irkit.demo, "run_demo", observed)
        mp.chdir(cwd)
        mp.setenv("IRKIT_ACTOR", "tester")
        res = CliRunner().invoke(main, ["demo", "--records", "demo-records", "--no-progress"], catch_exceptions=False)
    output = CliResult(res.exit_code, res.stdout, res.stderr)
    assert len(seen) == 1, output  # its exit code and output are the tests' to judge
    result = seen[0]
    absolute = dataclasses.replace(
        result,
        path=cwd / result.path,
        postmortem=result.postmortem and cwd / result.postmortem,
        index=result.index and cwd / result.index,
    )
    return DemoCli(cwd, cwd / "demo-records", output, absolute)


@pytest.fixture(scope="session")
def demo_run(demo_cli: DemoCli) -> Any:
    """The replayed demo's result (its record shared: copy before changing it)."""
    assert demo_cli.result.ok, [r.summary() for r in demo_cli.result.runs]
    return demo_cli.result


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that share the demo run first, and under xdist on one worker, so it runs once.

    xdist's schedulers hand each worker a first run of consecutive tests (``worksteal``: an equal share,
    later stolen from its end; ``load``: a quarter of it), so tests at the front land on one worker.
    (``--dist loadgroup`` would say this directly, but its groups are lost with pytest 9.2's structured
    node ids: pytest-xdist#1386.)
    Starting the longest shared setup first also keeps it from being the last thing a run waits for.
    """
    shared = [item for item in items if {"demo_cli", "demo_run"} & set(getattr(item, "fixturenames", ()))]
    if shared:
        ids = {id(item) for item in shared}
        items[:] = shared + [item for item in items if id(item) not in ids]
