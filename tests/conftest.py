"""Fixtures shared by every test: a records root, settings, a CLI invoker, notebook builders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from irkit.cli import main
from irkit.config import Settings, load_config

REPO = Path(__file__).resolve().parents[1]


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


def write_notebook(path: Path, parameters: str, cells: Sequence[str]) -> Path:
    """A runbook-shaped notebook: a tagged parameters cell, then ``cells`` as code cells."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(parameters)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


CONTRACT_PARAMETERS = 'incident_id: str = "X-1"\nrecords_dir: str = "reports"\nconfig_path: str = "irkit.yaml"\n'
