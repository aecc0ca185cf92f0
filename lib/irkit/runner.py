"""Running runbooks into an incident record with papermill, and telling the truth about how it went.

papermill marks a notebook "completed" even when a cell timed out or the kernel died; it only raises.
:func:`run_runbook` turns every ending into an explicit outcome (ok, failed at cell N, timeout, kernel
died), writes the executed copy into the record *whatever* the outcome (redacted, with provenance in
its metadata and the failing cell marked), and seals it with a ``notebook.finished`` event carrying
its sha256. Papermill writes no file: the executed notebook stays in memory, and only redacted
copies (the partial crash evidence, then the sealed notebook) are written, so secrets never land in
the record. Secrets reach the kernel through its environment; a parameter that carries a secret
value is scrubbed like any other output.

Runbooks are looked up in a :class:`RunbookRegistry` (replaceable in tests). Execution goes through
the ``irkit`` papermill engine (:mod:`irkit.engine`).
"""

from __future__ import annotations

import html
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from irkit.config import Settings
from irkit.errors import BadInputError, ParameterError, RecordError, UnknownRunbook
from irkit.files import sha256_file
from irkit.record import Record
from irkit.redact import Redactor
from irkit.runstate import in_flight, recover_interrupted
from irkit.store import HELD, checkpoint
from irkit.times import ReplayClock, rfc3339, utcnow

RESERVED_PARAMETERS = ("incident_id", "records_dir", "config_path")
OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"
OUTCOME_TIMEOUT = "timeout"
OUTCOME_KERNEL_DIED = "kernel died"
OUTCOME_ERROR = "error"  # the run could not start or papermill itself failed


def default_notebooks_dir() -> Path:
    """The runbooks shipped inside the package (``irkit/runbooks``; the checkout's ``notebooks/`` links there).

    Read through ``importlib.resources``, so a wheel install finds them without the checkout.
    """
    from importlib.resources import files

    return Path(str(files("irkit").joinpath("runbooks")))


@dataclass(frozen=True)
class Runbook:
    """A runbook: its registry name, its order in the lifecycle (the NN of NN-name.ipynb), its file."""

    name: str
    order: int
    filename: str
    title: str


class RunbookRegistry:
    """Known runbooks by name; a fresh registry can be handed to the runner in tests."""

    def __init__(self, directory: str | Path, runbooks: list[Runbook] | None = None) -> None:
        self.directory = Path(directory)
        self._runbooks: dict[str, Runbook] = {}
        for rb in runbooks or []:
            self.register(rb)

    def register(self, runbook: Runbook) -> None:
        """Add ``runbook`` under its name, replacing any runbook of the same name."""
        self._runbooks[runbook.name] = runbook

    def names(self) -> list[str]:
        """Registered runbooks whose notebook file exists, in lifecycle order."""
        return [rb.name for rb in sorted(self._runbooks.values(), key=lambda r: r.order) if self.path(rb).is_file()]

    def get(self, name: str) -> Runbook:
        """The runbook called ``name`` if its notebook exists; else UnknownRunbook listing the available ones."""
        rb = self._runbooks.get(name)
        if rb is None or not self.path(rb).is_file():
            raise UnknownRunbook(f"unknown runbook {name!r}; available: {', '.join(self.names()) or 'none'}")
        return rb

    def path(self, runbook: Runbook) -> Path:
        """Where the runbook's notebook file is expected, whether or not it exists."""
        return self.directory / runbook.filename


LIFECYCLE = [
    Runbook("triage", 1, "triage.ipynb", "Detection, initial response and triage"),
    Runbook("investigation", 2, "investigation.ipynb", "Investigation checklist"),
    Runbook("mitigation", 3, "mitigation.ipynb", "Mitigation"),
    Runbook("resolution", 4, "resolution.ipynb", "Resolution"),
    Runbook("postmortem", 5, "postmortem.ipynb", "Post-incident review"),
]


def default_registry(settings: Settings) -> RunbookRegistry:
    """The plan's lifecycle runbooks, from ``runner.notebooks_dir`` or the bundled ``notebooks/``."""
    directory = Path(settings.runner.notebooks_dir) if settings.runner.notebooks_dir else default_notebooks_dir()
    return RunbookRegistry(directory, LIFECYCLE)


def warm_client(settings: Settings, runbooks: Iterable[str]) -> list[str]:
    """Pay now for what a process's first run would: importing papermill, nbformat and the engine
    (~0.7 s on 2 cores) and reading and parameterizing each runbook, without running anything.

    ``irkit serve`` calls it as it starts, so the first alert's triage is as quick as the next one.
    A runbook that cannot be prepared is skipped here (its run will say why); returns those warmed.
    """
    import papermill

    import irkit.engine  # noqa: F401  # papermill finds the engine by its entry point

    registry = default_registry(settings)
    warmed = []
    with tempfile.TemporaryDirectory(prefix="irkit-warm-") as tmp:
        for name in runbooks:
            try:
                source = registry.path(registry.get(name))
                declared_parameters(source)
                papermill.execute_notebook(
                    str(source), str(Path(tmp) / "warm.ipynb"), prepare_only=True, progress_bar=False
                )
            except Exception:  # noqa: S112  # only a warm-up: the real run reports the problem
                continue
            warmed.append(name)
    return warmed


# --------------------------------------------------------------------------- parameters


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters a runbook declares in its ``parameters`` cell (name → papermill's description)."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def coerce_cli_parameters(declared: Mapping[str, Mapping[str, Any]], raw: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``-p NAME VALUE`` strings into typed values using each parameter's declared type.

    A ``str`` parameter keeps the text exactly (quotes, newlines and code stay data); other types are
    parsed as YAML scalars/collections (``5`` → 5, ``true`` → True, ``[a, b]`` → list).
    """
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in declared:
            raise ParameterError(f"runbook has no parameter {name!r}; it declares: {', '.join(declared) or 'none'}")
        typ = str(declared[name].get("inferred_type_name") or "").strip()
        if typ in ("str", "None") or typ.startswith(("str", "Optional[str]", "str |")):
            out[name] = value
        else:
            try:
                out[name] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ParameterError(f"parameter {name}: cannot parse {value!r} as {typ or 'a value'}") from exc
    return out


# --------------------------------------------------------------------------- outcome


@dataclass
class RunResult:
    """How a runbook run ended, and where its executed copy is."""

    runbook: str
    path: str  # relative to the record
    outcome: str
    sha256: str | None = None
    cell: int | None = None  # 1-based position of the failing cell in the executed notebook
    ename: str | None = None
    evalue: str | None = None
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # Where the run's time went, in seconds: "kernel" (taking or starting it and handing over the run's
    # variables), "cells" (papermill's per-cell durations), "redact", "write" (file and fsync),
    # "hash", "seal event". Kept in memory for benches and progress lines; never in the record.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run finished without a failing cell or timeout."""
        return self.outcome == OUTCOME_OK

    def summary(self) -> str:
        """One line: ``ok``, ``failed at cell 4 (ZeroDivisionError: division by zero)``, ``timeout at cell 3``."""
        if self.ok:
            return "ok"
        where = f" at cell {self.cell}" if self.cell else ""
        why = f" ({self.ename}: {self.evalue})" if self.ename else ""
        return f"{self.outcome}{where}{why}"

    def as_event(self) -> dict[str, Any]:
        """The result as ``notebook.finished`` event data (redacted by the caller before it is appended)."""
        return {
            "runbook": self.runbook,
            "path": self.path,
            "sha256": self.sha256,
            "outcome": self.outcome,
            "summary": self.summary(),
            "cell": self.cell,
            "ename": self.ename,
            "evalue": self.evalue,
            "duration_s": round(self.duration_s, 3),
        }


def _running_cell(nb: Any) -> int | None:
    """The cell that was executing when execution stopped: the last one papermill started."""
    last = None
    for i, cell in enumerate(nb.cells, start=1):
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") == "code" and meta.get("start_time"):
            last = i
    return last


def classify_exception(exc: BaseException | None, nb: Any) -> tuple[str, int | None, str | None, str | None]:
    """Map how papermill/nbclient ended to (outcome, cell, ename, evalue)."""
    if exc is None:
        return OUTCOME_OK, None, None, None
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        cell = None
        for i, c in enumerate(nb.cells, start=1) if nb is not None else []:
            if c.get("metadata", {}).get("papermill", {}).get("exception"):
                cell = i
        return OUTCOME_FAILED, cell, exc.ename, str(exc.evalue)[:500]
    cell = _running_cell(nb) if nb is not None else None
    if isinstance(exc, CellTimeoutError | TimeoutError):
        return OUTCOME_TIMEOUT, cell, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else None
    if isinstance(exc, DeadKernelError):
        return OUTCOME_KERNEL_DIED, cell, type(exc).__name__, str(exc)[:300]
    return OUTCOME_ERROR, cell, type(exc).__name__, str(exc)[:500]


def _mark_failure(nb: Any, result: RunResult) -> None:
    """Put a banner on top and a marker on the failing cell, so a reader sees the real ending."""
    import nbformat

    if result.ok:
        return
    if result.cell and 0 < result.cell <= len(nb.cells):
        nb.cells[result.cell - 1].metadata.setdefault("irkit", {})["outcome"] = result.outcome
        nb.cells[result.cell - 1].metadata.setdefault("tags", []).append("irkit-failed-cell")
        result.cell += 1  # the banner inserted below shifts every cell down by one
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red;font-weight:bold">irkit: this run ended with outcome '
        f"<code>{html.escape(result.summary())}</code>. Cells after that point did not run.</span>"
    )
    banner.metadata["tags"] = ["irkit-outcome"]
    nb.cells.insert(0, banner)


# --------------------------------------------------------------------------- provenance


_GIT: dict[str, str | None] = {}


def git_commit(directory: Path) -> str | None:
    """The git commit of the runbook sources, when they live in a git checkout."""
    key = str(directory)
    if key not in _GIT:
        try:
            out = subprocess.run(
                ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            )
            _GIT[key] = out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _GIT[key] = None
    return _GIT[key]


def default_actor(environ: Mapping[str, str], settings: Settings | None = None) -> str:
    """Who is running this: ``IRKIT_ACTOR``, the settings' ``actor``, or the login name."""
    from irkit.config import resolve_actor

    return resolve_actor(environ, settings)[0]


# --------------------------------------------------------------------------- naming


def _next_name(record: Record, runbook: Runbook, taken: set[str]) -> str:
    """``notebooks/NN-name.ipynb``, then ``.r2``, ``.r3`` … for re-runs (never reusing a name)."""
    base = f"notebooks/{runbook.order:02d}-{runbook.name}"
    n = 1
    while True:
        rel = f"{base}.ipynb" if n == 1 else f"{base}.r{n}.ipynb"
        if rel not in taken and not (record.path / rel).exists():
            return rel
        n += 1


def _reserve(record: Record, runbook: Runbook, event: str, data: dict[str, Any], actor: str) -> str:
    """Pick the next free name and record ``event`` for it under the record lock (no two runs share it)."""

    def _check(state: dict[str, Any]) -> dict[str, Any]:
        taken = set(state["artifacts"]) | set(state["reserved"])
        return {"path": _next_name(record, runbook, taken)}

    ev = record.append(event, {"runbook": runbook.name, **data}, actor=actor, check=_check)
    path: str = ev["data"]["path"]
    return path


# --------------------------------------------------------------------------- running


def _resolve_call(
    record: Record,
    runbook: str,
    parameters: Mapping[str, Any] | None,
    settings: Settings,
    config_path: str | None,
    registry: RunbookRegistry | None,
) -> tuple[Runbook, Path, dict[str, Any]]:
    """The runbook, its source and the full parameters for one run; undeclared or reserved names are refused."""
    registry = registry or default_registry(settings)
    rb = registry.get(runbook)
    source = registry.path(rb)
    declared = declared_parameters(source)
    params = dict(parameters or {})
    for name in params:
        if name in RESERVED_PARAMETERS:
            raise ParameterError(f"parameter {name} is set by irkit and cannot be overridden")
        if name not in declared:
            raise ParameterError(f"runbook {rb.name} has no parameter {name!r}; it declares: {', '.join(declared)}")
    cfg = config_path or settings.source_path or "irkit.yaml"
    full: dict[str, Any] = {
        "incident_id": record.id,
        "records_dir": str(record.root.resolve()),
        "config_path": str(Path(cfg).resolve()),
        **params,
    }
    return rb, source, full


def run_runbook(
    record: Record,
    runbook: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    actor: str,
    config_path: str | None = None,
    registry: RunbookRegistry | None = None,
    progress: bool = False,
    batch: bool = False,
    tag: str | None = None,
    pool: Any = None,
) -> RunResult:
    """Execute ``runbook`` for ``record`` and seal the executed copy; never raises for a failed run.

    The kernel rebuilds its settings from ``config_path`` and its environment, which is ``environ``:
    pass the same environment the entry point built ``settings`` from.

    Returns the :class:`RunResult`; the caller decides whether a non-ok outcome is an error.
    """

    rb, source, full_params = _resolve_call(record, runbook, parameters, settings, config_path, registry)
    redactor = Redactor.from_settings(settings, environ)
    safe_params = redactor.data(full_params)
    started_at = utcnow()
    recover_interrupted(record, actor="irkit")
    with in_flight(record, redactor.notebook) as (run_id, on_progress):
        tmpdir = Path(tempfile.mkdtemp(prefix="irkit-run-"))
        try:
            rel = _reserve(
                record,
                rb,
                "notebook.started",
                {
                    "parameters": safe_params,
                    "batch": batch,
                    "source": str(source),
                    "run_id": run_id,
                    "workdir": str(tmpdir),
                    "host": platform.node(),
                    **({"tag": tag} if tag else {}),
                },
                actor,
            )
            checkpoint(record)  # on a shared store the run is on record now, whatever becomes of this process
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return _execute(
            record,
            rb,
            source,
            rel,
            full_params,
            safe_params,
            settings=settings,
            environ=environ,
            actor=actor,
            redactor=redactor,
            tmpdir=tmpdir,
            started_at=started_at,
            progress=progress,
            batch=batch,
            tag=tag,
            pool=pool,
            on_progress=on_progress,
        )


def _execute(
    record: Record,
    rb: Runbook,
    source: Path,
    rel: str,
    full_params: dict[str, Any],
    safe_params: Any,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    actor: str,
    redactor: Redactor,
    tmpdir: Path,
    started_at: Any,
    progress: bool,
    batch: bool,
    tag: str | None,
    pool: Any,
    on_progress: Any,
) -> RunResult:
    """Execute (the kernel's sockets in ``tmpdir``, private), then seal the redacted copy at ``rel`` with
    ``notebook.finished``."""
    import nbformat

    from irkit.engine import execute

    kernel_env = dict(environ)
    kernel_env["IRKIT_ACTOR"] = actor
    kernel_env["IRKIT_BATCH"] = "1" if batch else "0"
    kernel_env[HELD] = "1"  # whoever runs a runbook holds the incident for writing (irkit.store)
    if isinstance(record.clock, ReplayClock):  # a replayed incident: the kernel continues the replay's time
        kernel_env["IRKIT_CLOCK"] = rfc3339(record.clock())
    kernel_env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    executed: list[Any] = []  # the notebook object papermill executes: no file written and read back
    exc: BaseException | None = None
    t0 = time.monotonic()
    # Each completed cell is redacted on the run's second thread (the partial saves' own) once the next
    # cell's request is sent, while the kernel runs it (the client only waits then; the last and a failed
    # cell as soon as the cells are done, see irkit.engine): the redactor remembers the results, so
    # the final pass over the whole notebook, which alone decides what is sealed, finds most strings
    # done. Drained before that pass.
    try:
        execute(  # papermill's steps, writing nothing: the redacted copy is all that reaches the record
            source,
            full_params,
            kernel_name=settings.runner.kernel_name,
            execution_timeout=settings.runner.execution_timeout_s,
            start_timeout=settings.runner.start_timeout_s,
            progress_bar=progress,
            log_output=False,
            kernel_env=kernel_env,
            kernel_cwd=str(record.path),
            ipc_dir=str(tmpdir),
            kernel_pool=pool,
            on_progress=on_progress,
            on_cell=lambda cell: on_progress.submit(redactor.data, cell),
            executed=executed,
        )
    except Exception as e:  # every ending is classified below; nothing is lost
        exc = e
    finally:
        on_progress.drain()  # what still reads finished cells on that thread is done before they are marked
    duration = time.monotonic() - t0
    phases: dict[str, float] = {}
    try:
        nb = executed[0] if executed else None
        if nb is not None:
            phases["cells"] = cell_seconds(nb)
            phases["kernel"] = max(0.0, duration - phases["cells"])
        if nb is None or (exc is not None and _running_cell(nb) is None):
            # Nothing ran (no kernel, papermill refused the notebook): there is no executed copy to seal.
            _, _, ename, evalue = classify_exception(exc, None)
            result = RunResult(rb.name, rel, OUTCOME_ERROR, None, None, ename, redactor.text(evalue or ""), duration)
        else:
            outcome, cell, ename, evalue = classify_exception(exc, nb)
            evalue = redactor.text(evalue) if evalue else evalue
            result = RunResult(rb.name, rel, outcome, None, cell, ename, evalue, duration)
            _mark_failure(nb, result)
            nb.metadata["irkit"] = {
                "irkit_version": version("irkit"),
                "runbook": rb.name,
                "source": str(source),
                "source_sha256": sha256_file(source),
                "git_commit": git_commit(source.parent),
                "parameters": safe_params,
                "actor": actor,
                "host": platform.node(),
                "batch": batch,
                "started_at": rfc3339(started_at),
                "finished_at": rfc3339(utcnow()),
                "outcome": result.outcome,
                "outcome_summary": result.summary(),
                **({"clock": kernel_env["IRKIT_CLOCK"]} if "IRKIT_CLOCK" in kernel_env else {}),  # a replay's moment
            }
            t = time.monotonic()
            clean = nbformat.writes(nbformat.from_dict(redactor.notebook(nb))).encode()
            phases["redact"] = time.monotonic() - t
            dest = record.write_new(rel, clean)
            phases["write"] = time.monotonic() - t - phases["redact"]
            t = time.monotonic()
            result.sha256 = sha256_file(dest)
            phases["hash"] = time.monotonic() - t
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    t = time.monotonic()
    finished = redactor.data(result.as_event())
    if tag:
        finished["tag"] = tag  # lets a resumed job see that this run already completed
    record.append("notebook.finished", finished, actor=actor)
    phases["seal event"] = time.monotonic() - t
    result.phases = phases
    return result


def cell_seconds(nb: Any) -> float:
    """Total time papermill measured inside the notebook's code cells."""
    return float(
        sum(
            (c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
            for c in nb.cells
            if c.get("cell_type") == "code"
        )
    )


def prepare_runbook(
    record: Record,
    runbook: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    actor: str,
    config_path: str | None = None,
    registry: RunbookRegistry | None = None,
) -> str:
    """Write a parameterized working copy into the record for stepping through in JupyterLab.

    Uses papermill's ``prepare_only`` mode (parameters injected, nothing executed). The copy is a
    *working copy* until ``irkit seal`` redacts it and records its hash.
    """
    import papermill

    rb, source, full = _resolve_call(record, runbook, parameters, settings, config_path, registry)
    redactor = Redactor.from_settings(settings, environ)
    rel = _reserve(record, rb, "notebook.prepared", {"parameters": redactor.data(full)}, actor)
    import nbformat

    with tempfile.TemporaryDirectory(prefix="irkit-prepare-") as tmp:
        out = Path(tmp) / "prepared.ipynb"
        papermill.execute_notebook(str(source), str(out), parameters=full, prepare_only=True, progress_bar=False)
        # Even an unsealed working copy must not hold a secret passed by mistake as a parameter.
        nb = nbformat.read(str(out), as_version=4)
    record.write_new(rel, nbformat.writes(nbformat.from_dict(redactor.notebook(nb))).encode())
    return rel


def seal_notebook(record: Record, relpath: str, *, settings: Settings, environ: Mapping[str, str], actor: str) -> str:
    """Redact a working copy in place and record its hash (``notebook.sealed``); returns the sha256."""
    import nbformat

    state = record.state()
    if relpath not in state["working_copies"]:
        raise RecordError(f"{relpath} is not an unsealed working copy of {record.id}")
    full = record.resolve_artifact(relpath)
    if full.is_symlink():
        raise BadInputError(f"{relpath} is a symlink; refusing to read through it")
    try:
        nb = nbformat.read(str(full), as_version=4)
    except (OSError, ValueError) as exc:
        raise RecordError(f"{relpath}: cannot read the working copy: {exc}") from None
    clean = nbformat.from_dict(Redactor.from_settings(settings, environ).notebook(nb))
    digest = record.seal_working_copy(relpath, nbformat.writes(clean).encode(), actor=actor)
    record.remove_checkpoints()  # JupyterLab's unredacted copies of what was just sealed
    return digest
