"""Helpers that tests import by name (``from support import …``; ``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
CONTRACT_PARAMETERS = 'incident_id: str = "X-1"\nrecords_dir: str = "reports"\nconfig_path: str = "irkit.yaml"\n'


def write_notebook(path: Path, parameters: str, cells: Sequence[str]) -> Path:
    """A runbook-shaped notebook: a tagged parameters cell, then ``cells`` as code cells."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(parameters)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def wait_for(predicate: Callable[[], object], timeout: float = 90, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
