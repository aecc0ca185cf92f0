"""The ``irkit`` papermill engine, as papermill loads it (the ``papermill.engine`` entry point).

Inside :func:`irkit.runner.run_runbook` — which hands the kernel its environment — it is
:class:`irkit.engine.IrkitEngine`. Run by plain papermill (``papermill … --engine irkit``) with
``incident_id`` and ``records_dir`` among the parameters, it hands the whole run to ``run_runbook``
instead: ``notebook.started``, the executed copy redacted and sealed into the record with
``notebook.finished``, and papermill's output file is that same sealed copy. Without those parameters
it is the plain irkit engine.

This module imports nothing of irkit at load time: papermill loads its entry points while its own
engine module is still being imported, possibly from inside an irkit import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from papermill.engines import NBClientEngine


class SealingEngine(NBClientEngine):  # type: ignore[misc]
    """``papermill --engine irkit``: executes inside the runner; run by hand, runs and seals into the record."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, **kwargs: Any) -> Any:
        """Execute (inside the runner), or run and seal into the incident's record (from plain papermill)."""
        from irkit.engine import IrkitEngine

        params = dict(nb.metadata.get("papermill", {}).get("parameters") or {})
        if "kernel_env" in kwargs or not (params.get("incident_id") and params.get("records_dir")):
            return IrkitEngine.execute_notebook(nb, kernel_name, **kwargs)
        import click

        from irkit.errors import IrkitError

        try:
            return sealed_run(params, Path(str(kwargs.get("input_path"))), bool(kwargs.get("progress_bar", True)))
        except IrkitError as exc:  # papermill's CLI is click: this prints one line and exits 1, no traceback
            raise click.ClickException(f"irkit: {exc}") from None


def sealed_run(params: dict[str, Any], source: Path, progress: bool) -> Any:
    """Plain papermill's run of ``source``, done by ``run_runbook`` and sealed; returns the sealed copy."""
    from irkit.config import load_config
    from irkit.record import Record, validate_incident_id
    from irkit.store import open_store

    environ = dict(os.environ)
    config_path = str(params.get("config_path") or "") or None
    settings = load_config(config_path, environ)
    incident_id = validate_incident_id(str(params["incident_id"]))
    store = open_store(settings, environ, Path(str(params["records_dir"])))
    with store.writing(incident_id) as root:  # on a shared store: held, synced, pushed when the run ends
        record = Record.open(root, incident_id, **settings.record_options(environ))
        return _run_and_read(record, params, source, settings, environ, config_path, progress)


def _run_and_read(
    record: Any,
    params: dict[str, Any],
    source: Path,
    settings: Any,
    environ: dict[str, str],
    config_path: str | None,
    progress: bool,
) -> Any:
    import nbformat

    from irkit.errors import RunbookFailed
    from irkit.runner import LIFECYCLE, RESERVED_PARAMETERS, Runbook, RunbookRegistry, default_actor, run_runbook

    rb = next((r for r in LIFECYCLE if r.filename == source.name), Runbook(source.stem, 0, source.name, source.stem))
    result = run_runbook(
        record,
        rb.name,
        {k: v for k, v in params.items() if k not in RESERVED_PARAMETERS},
        settings=settings,
        environ=environ,
        actor=default_actor(environ, settings),
        config_path=config_path,
        registry=RunbookRegistry(source.parent, [rb]),
        progress=progress,
        batch=environ.get("IRKIT_BATCH") == "1",
    )
    if result.sha256 is None:  # nothing ran, so nothing was sealed
        raise RunbookFailed(f"{rb.name} for {record.id}: {result.summary()}")
    return nbformat.read(str(record.resolve_artifact(result.path)), as_version=4)
