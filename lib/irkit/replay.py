"""Replay a past incident against today's runbooks and settings, and say which conclusions changed.

Every record carries its recordings (``data/signals*``, ``data/cluster*``) and the inputs that drove
it: the alerts, the runbooks run with their parameters at their moments, and what people did by hand
between runs (status changes, notes, checklist answers). :func:`replay` rebuilds the incident from
those inputs in a scratch copy — never in the record itself — running each runbook again on the
recorded sources at its recorded moment, then compares the conclusions: the severity and its
reasons, each checklist answer, the resolution decision, and the post-mortem's verdicts. So every
past incident is a regression test for the runbooks and the policy.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irkit.config import Settings
from irkit.errors import RecordBroken, SourceUnavailable
from irkit.events import Event
from irkit.files import owned_tempdir, remove_stale_tempdirs
from irkit.nbval_env import env_file
from irkit.record import Record
from irkit.runner import RESERVED_PARAMETERS, RunResult, run_runbook
from irkit.times import ReplayClock, parse_ts

# What people (or Alertmanager) did outside a runbook, which a replay does again at the same moment.
INPUT_EVENTS = frozenset({"alert.firing", "alert.resolved", "status.changed", "severity.set", "note", "check.recorded"})
# Which conclusions each runbook reaches (by their names' beginnings), for a partial replay.
CONCLUDES = {
    "triage": ("severity", "incident severity"),
    "investigation": ("checklist",),
    "resolution": ("resolution",),
    "postmortem": ("verdict",),
}
SCRATCH_PREFIX = "irkit-replay-"  # scratch copies of replays (``irkit replay``, ``--exact``) under the temp dir
# Recorded sources only, and nothing is delivered: a replay reads the record and talks to no server.
OFFLINE = {"metrics_source": "recorded", "cluster_source": "recorded", "send_comms": False}


@dataclass(frozen=True)
class Change:
    """One conclusion, as the record has it and as the replay reached it."""

    conclusion: str
    recorded: str
    replayed: str

    @property
    def same(self) -> bool:
        """Whether the replay reached the recorded conclusion."""
        return self.recorded == self.replayed


@dataclass
class ReplayResult:
    """The replay's runs, its scratch record, and every conclusion compared."""

    incident_id: str
    scratch: Path
    runs: list[RunResult] = field(default_factory=list)
    conclusions: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> list[Change]:
        """The conclusions the replay did not reach the same way."""
        return [c for c in self.conclusions if not c.same]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the runs' outcomes, every conclusion and whether it changed."""
        return {
            "incident": self.incident_id,
            "scratch": str(self.scratch),
            "runs": [{"runbook": r.runbook, "outcome": r.outcome, "summary": r.summary()} for r in self.runs],
            "changed": len(self.changed),
            "conclusions": [
                {"conclusion": c.conclusion, "recorded": c.recorded, "replayed": c.replayed, "same": c.same}
                for c in self.conclusions
            ],
        }


def conclusions(record: Record, settings: Settings) -> dict[str, str]:
    """What the incident concluded, as comparable text: severity and reasons, checklist, resolution, verdicts."""
    from irkit.checklist import checklist_rows
    from irkit.postmortem import build

    events = record.events()
    out: dict[str, str] = {}
    assessed = [e["data"] for e in events if e["type"] == "severity.assessed"]
    if assessed:
        last = assessed[-1]
        out["severity from metrics"] = str(last.get("level") or "none")
        out["severity reasons"] = "; ".join(str(r.get("text", "")) for r in last.get("reasons") or []) or "—"
    out["incident severity"] = str(record.state().get("severity") or "none")
    for row in checklist_rows(events):
        out[f"checklist: {row['item']}"] = str(row["status"])
    decisions = [e["data"] for e in events if e["type"] == "resolution.checked"]
    if decisions:
        out["resolution decision"] = str(decisions[-1].get("decision"))
    if any(e["type"] == "postmortem.rendered" for e in events):
        for v in build(record, settings).verdicts:
            out[f"verdict: {v.measure}"] = v.mark
    return out


def _runs(events: list[Event]) -> list[tuple[Event, Event | None]]:
    """Each ``notebook.started`` with its ``notebook.finished`` (None if it never finished)."""
    finished = {e["data"].get("path"): e for e in events if e["type"] == "notebook.finished"}
    return [(e, finished.get(e["data"].get("path"))) for e in events if e["type"] == "notebook.started"]


def _inputs(events: list[Event], runs: list[tuple[Event, Event | None]]) -> list[Event]:
    """Inputs made outside any runbook run (a run's own events are its conclusions, reached again)."""
    spans = [(s["seq"], f["seq"] if f else s["seq"]) for s, f in runs]
    first_run = min((a for a, _ in spans), default=None)
    return [
        e
        for e in events
        if e["type"] in INPUT_EVENTS
        and (first_run is None or e["seq"] > first_run)  # the opening prefix is copied as it is
        and not any(a <= e["seq"] <= b for a, b in spans)
    ]


def scratch_copy(record: Record, root: Path) -> Record:
    """The record's opening (events before its first run, with the recordings) as a new record under ``root``."""
    events = record.events()
    first_run = next((e["seq"] for e in events if e["type"] == "notebook.started"), len(events) + 1)
    return as_of(record, first_run - 1, root)


def as_of(record: Record, seq: int, root: Path) -> Record:
    """A copy of the record under ``root`` as it stood after event ``seq``: those events, and only the
    files sealed by then (derived exports and later artifacts are left out)."""
    dest = root / record.id
    shutil.copytree(record.path, dest, ignore=shutil.ignore_patterns(".runs", "*.lock"), symlinks=True)
    lines = (record.path / "events.jsonl").read_bytes().splitlines(keepends=True)[:seq]
    (dest / "events.jsonl").write_bytes(b"".join(lines))
    (dest / "incident.json").unlink(missing_ok=True)  # a cache of the later state
    copy = Record.open(root, record.id)
    state = copy.state()
    keep = {*state["artifacts"], *state["working_copies"], "events.jsonl"}
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return copy


@dataclass(frozen=True)
class Reexecution:
    """One sealed runbook, set up to execute again exactly as it first did (for nbval)."""

    runbook: str
    sealed: str  # the sealed notebook's path in the record
    notebook: Path  # its copy, parameterized for the scratch record; executes with cwd = the scratch record
    record: Path  # the scratch record, as the run found it
    env: dict[str, str]  # the run's runtime variables: actor, batch flag, replayed clock


def injected_parameters(nb: Any) -> dict[str, Any]:
    """The parameters papermill injected into an executed notebook, in their original order.

    Read back from the injected cell as Python literals (``ast.literal_eval``: data, never code); the
    notebook's metadata has them too, but with their keys sorted, and a runbook shows a dict parameter
    (checklist answers) in the order it was given.
    """
    import ast

    for cell in nb.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            out: dict[str, Any] = {}
            try:
                for node in ast.parse(cell.source).body:
                    if (
                        isinstance(node, ast.Assign)
                        and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name)
                    ):
                        out[node.targets[0].id] = ast.literal_eval(node.value)
            except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
                break  # not plain literals: fall back to the metadata's copy
            return out
    return dict(nb.metadata.get("papermill", {}).get("parameters") or {})


def reexecutions(record: Record, root: Path, *, runbooks: tuple[str, ...] = ()) -> list[Reexecution]:
    """Set up every sealed, successful runbook run of ``record`` (or of ``runbooks``) to execute again.

    Each gets its own scratch record under ``root`` as it stood when the run started (its events up to
    ``notebook.started``, the files sealed by then) and a copy of the sealed notebook whose injected
    parameters point at that scratch record, placed in the scratch record (a notebook kernel starts in
    its notebook's directory, and runbooks run inside their record). Nothing is written to ``record``.
    """
    import nbformat
    from papermill.parameterize import parameterize_notebook

    problem = record.broken()
    if problem:
        raise RecordBroken(f"{record.id} does not verify: {problem}; a replay needs an intact record")
    out: list[Reexecution] = []
    for started, finished in _runs(record.events()):
        d = started["data"]
        if (
            finished is None
            or finished["data"].get("outcome") != "ok"
            or (runbooks and d.get("runbook") not in runbooks)
        ):
            continue
        rel = str(d["path"])
        name = Path(rel).stem
        scratch = as_of(record, started["seq"], root / name)
        nb = nbformat.read(str(record.resolve_artifact(rel)), as_version=4)
        meta = nb.metadata.get("irkit", {})
        params = injected_parameters(nb)
        params["records_dir"] = str(scratch.root.resolve())
        nb = parameterize_notebook(nb, params, report_mode=False)
        copy = scratch.path / f"{name}.replay.ipynb"
        nbformat.write(nb, str(copy))
        env = {
            "IRKIT_ACTOR": str(started["actor"]),
            "IRKIT_BATCH": "1" if d.get("batch") else "0",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
        if meta.get("clock"):
            env["IRKIT_CLOCK"] = str(meta["clock"])
        env_file(copy).write_text(json.dumps(env))
        out.append(Reexecution(str(d.get("runbook")), rel, copy, scratch.path, env))
    return out


def sanitizers(record: Record, runs: list[Reexecution]) -> str:
    """nbval's ``--nbval-sanitize-with`` file for ``runs``: what may legitimately differ, and only that.

    A replay is exact by construction — the replayed moment is frozen (``IRKIT_CLOCK``), the sources are
    the record's recordings, the parameters are the run's own — except where a runbook prints where its
    record lives: the record's directory and each scratch copy's read ``<record>``.
    """
    paths = sorted({str(record.path.resolve()), *(str(r.record.resolve()) for r in runs)}, key=len, reverse=True)
    alternatives = "|".join(re.escape(p) for p in paths)
    return f"[record directory]\nregex: ({alternatives})\nreplace: <record>\n"


@dataclass
class ExactResult:
    """How nbval's re-execution of the sealed notebooks went."""

    runs: list[Reexecution]
    passed: int
    failed: int
    output: str  # nbval's report, with the diff of every output that differs
    exit_code: int

    @property
    def exact(self) -> bool:
        """Every cell of every sealed notebook gave the outputs it sealed."""
        return self.exit_code == 0 and self.failed == 0 and (self.passed > 0 or not self.runs)


def exact(
    record: Record,
    root: Path,
    *,
    runbooks: tuple[str, ...] = (),
    runs: list[Reexecution] | None = None,
    python: str | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> ExactResult:
    """Re-execute the record's sealed runbooks with nbval (one fresh kernel each) and compare every output.

    ``runs``: re-executions already set up under ``root`` by :func:`reexecutions` (default: set them up).
    ``redact``: applied to nbval's report, which shows the re-executed outputs *unredacted* where they
    differ from the sealed (redacted) ones — a secret a runbook printed would otherwise reach the screen.
    """
    import subprocess
    import sys
    from importlib.util import find_spec

    if find_spec("nbval") is None or find_spec("pytest") is None:
        raise SourceUnavailable("an exact replay needs nbval and pytest: pip install 'irkit[replay]'")
    runs = reexecutions(record, root, runbooks=runbooks) if runs is None else runs
    if not runs:
        return ExactResult(runs, 0, 0, "no sealed, successful runbook run to re-execute", 0)
    cfg = root / "sanitize.cfg"
    cfg.write_text(sanitizers(record, runs))
    argv = [python or sys.executable, "-m", "pytest", "-q", "--nbval", "--nbval-current-env"]
    argv += ["--nbval-sanitize-with", str(cfg), "-p", "irkit.nbval_env", "-p", "no:cacheprovider", "-p", "no:xdist"]
    argv += ["--rootdir", str(root), "-o", "addopts=", *(str(r.notebook) for r in runs)]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    return ExactResult(runs, passed, failed, redact(proc.stdout + proc.stderr), proc.returncode)


def replay(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    runbooks: tuple[str, ...] = (),
    config_path: str | None = None,
    workdir: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> ReplayResult:
    """Re-run the record's runbooks (or only ``runbooks``) in a scratch copy and compare the conclusions."""
    problem = record.broken()
    if problem:
        raise RecordBroken(f"{record.id} does not verify: {problem}; a replay needs an intact record")
    events = record.events()
    runs = _runs(events)
    wanted = [r for r in runs if not runbooks or r[0]["data"].get("runbook") in runbooks]
    remove_stale_tempdirs(SCRATCH_PREFIX)  # what a killed replay left behind
    root = workdir or owned_tempdir(SCRATCH_PREFIX)
    root.mkdir(parents=True, exist_ok=True)
    scratch = scratch_copy(record, root)
    result = ReplayResult(record.id, scratch.path)
    steps: list[tuple[int, Event, str]] = [(e["seq"], e, "input") for e in _inputs(events, runs)]
    steps += [(s["seq"], s, "run") for s, _ in wanted]
    from irkit.kernels import KernelPool

    # Runbooks in a row: the next single-use kernel starts while one runs (as in irkit demo).
    pool = KernelPool(
        min(len(wanted), max(2, settings.runner.warm_pool)),
        kernel_name=settings.runner.kernel_name,
        env=environ,
        limit=len(wanted),
    )
    try:
        _apply(scratch, sorted(steps, key=lambda s: s[0]), result, settings, environ, config_path, say, pool)
    finally:
        pool.shutdown()
    before = conclusions(record, settings)
    after = conclusions(scratch, settings)
    names = [*before, *(k for k in after if k not in before)]
    if runbooks:  # a partial replay is judged only on what its runbooks conclude
        prefixes = tuple(p for rb in runbooks for p in CONCLUDES.get(rb, ()))
        names = [n for n in names if n.startswith(prefixes)]
    result.conclusions = [Change(n, before.get(n, "—"), after.get(n, "—")) for n in names]
    return result


def _declared_only(record: Record, runbook: str, params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Today's runbook may no longer declare a parameter the old run had: pass only those it declares."""
    from irkit.runner import declared_parameters, default_registry

    registry = default_registry(settings)
    declared = declared_parameters(registry.path(registry.get(runbook)))
    return {k: v for k, v in params.items() if k in declared}


def _apply(
    scratch: Record,
    steps: list[tuple[int, Event, str]],
    result: ReplayResult,
    settings: Settings,
    environ: Mapping[str, str],
    config_path: str | None,
    say: Callable[[str], None],
    pool: Any,
) -> None:
    """Apply each input and repeat each run on the scratch record, in the record's order, at its moment."""
    for _, ev, kind in steps:
        scratch.clock = ReplayClock(parse_ts(ev["ts"]))
        if kind == "input":
            scratch.append(ev["type"], ev["data"], actor=ev["actor"])
            continue
        d = ev["data"]
        params = {k: v for k, v in (d.get("parameters") or {}).items() if k not in RESERVED_PARAMETERS}
        params.update(OFFLINE)
        say(f"{parse_ts(ev['ts']):%H:%M} {d.get('runbook')} …")
        run = run_runbook(
            scratch,
            str(d.get("runbook")),
            _declared_only(scratch, str(d.get("runbook")), params, settings),
            settings=settings,
            environ=environ,
            actor=ev["actor"],
            config_path=config_path,
            batch=bool(d.get("batch")),
            pool=pool,
        )
        result.runs.append(run)
        say(f"      {run.runbook}: {run.summary()}")
