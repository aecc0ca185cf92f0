"""A pytest plugin for ``irkit replay --exact``: each notebook's kernel gets its run's variables; figures compared.

nbval starts one kernel per notebook, in the notebook's directory, with the pytest process's
environment. A replayed runbook also needs the variables its run had (who ran it, batch or not, the
replayed moment), which differ from notebook to notebook: :func:`irkit.replay.reexecutions` writes
them beside each notebook as ``<notebook>.env.json`` (data, never code), and this hook applies them
before the notebook's first cell, which is when nbval starts its kernel. Load with
``pytest -p irkit.nbval_env``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_SUFFIX = ".env.json"


def env_file(notebook: Path) -> Path:
    """Where the runtime variables for ``notebook`` are kept."""
    return notebook.with_name(notebook.name + ENV_SUFFIX)


def pytest_runtest_setup(item: Any) -> None:
    """Before a notebook's cells run (and its kernel starts), apply that notebook's variables."""
    path = Path(str(getattr(item, "path", "") or getattr(item, "fspath", "")))
    env = env_file(path)
    if path.suffix == ".ipynb" and env.is_file():
        values = json.loads(env.read_text())
        os.environ.update({str(k): str(v) for k, v in values.items()})


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Compare figures too: nbval skips ``image/png`` unless told otherwise, but irkit's figures are
    rendered deterministically from the recordings (same data, same bytes), so a changed figure fails."""
    for item in items:
        parent: Any = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if isinstance(skip, tuple) and "image/png" in skip:
            parent.skip_compare = tuple(k for k in skip if k != "image/png")
