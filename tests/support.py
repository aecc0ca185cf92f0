"""Helpers that tests import by name (``from support import …``; ``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

from collections.abc import Sequence
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
