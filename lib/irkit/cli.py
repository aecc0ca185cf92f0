"""The ``irkit`` command line: parse, build settings, call one library function, map errors.

Exit codes: 0 ok; 1 a runbook failed or a record did not verify; 2 bad usage or bad input;
3 could not check (a server unreachable). Every failure prints one line on stderr saying why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from irkit.errors import (
    BadInputError,
    ConfigError,
    IrkitError,
    RecordBroken,
    RecordError,
    RunbookFailed,
    SourceUnavailable,
    VerificationFailed,
)
from irkit.times import parse_ts, stamp, utcnow

if TYPE_CHECKING:  # settings and records load when a command needs them: `irkit --help` stays quick
    from irkit.config import Settings
    from irkit.record import Record
    from irkit.store import Store

LEVELS = ("P0", "P1", "P2", "P3", "P4")  # irkit.severity.Level's values (a test keeps them equal)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """What every command gets: settings built once, the records root, the environment, the actor."""

    settings: Settings
    records: Path
    config_path: str | None
    environ: dict[str, str]
    stack: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    _store: Store | None = None

    @property
    def store(self) -> Store:
        """Where records live (``store.url``): this directory, or the team's database and bucket."""
        if self._store is None:
            from irkit.store import open_store

            self._store = open_store(self.settings, self.environ, self.records)
            self.stack.callback(getattr(self._store, "close", lambda: None))
        return self._store

    @property
    def actor(self) -> str:
        """Who is running the command: ``IRKIT_ACTOR``, the settings' ``actor``, or the login name."""
        from irkit.runner import default_actor

        return default_actor(self.environ, self.settings)

    def record(self, incident_id: str) -> Record:
        """Open a record for writing: redacted and, when a key is configured, signed.

        On a shared store the incident stays held (a database lock) until the command ends; what the
        command appended is then pushed and committed, also when it fails.
        """
        from irkit.record import Record, validate_incident_id

        root = self.stack.enter_context(self.store.writing(validate_incident_id(incident_id)))
        return Record.open(root, incident_id, **self.settings.record_options(self.environ))

    def read(self, incident_id: str, *, artifacts: bool = True) -> Record:
        """Open a record to read (no signing key needed); on a shared store, a private copy of it."""
        from irkit.record import Record, validate_incident_id

        root = self.stack.enter_context(self.store.reading(validate_incident_id(incident_id), artifacts=artifacts))
        return Record.open(root, incident_id)


def common(fn: F) -> F:
    """``--records`` and ``--config`` on every verb; the command receives the built :class:`Ctx` as ``c``."""

    @functools.wraps(fn)
    def with_ctx(*args: Any, records: str | None, config: str | None, **kwargs: Any) -> Any:
        c = build(records, config)
        with c.stack:
            return fn(*args, c=c, **kwargs)

    wrapped: Any = with_ctx
    wrapped = click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        default=None,
        help="Settings file (default: $IRKIT_CONFIG or ./irkit.yaml if present).",
    )(wrapped)
    wrapped = click.option(
        "--records",
        "records",
        type=click.Path(file_okay=False),
        default=None,
        help="Records root (default: records_dir from settings, 'reports').",
    )(wrapped)
    return cast(F, wrapped)


def build(records: str | None, config: str | None) -> Ctx:
    """Settings, records root and environment for one command."""
    from irkit.config import load_config

    environ = dict(os.environ)
    path = config or environ.get("IRKIT_CONFIG")
    settings = load_config(path or "irkit.yaml", environ, required=bool(path))
    root = Path(records or settings.store.directory or settings.records_dir)
    cfg = str(Path(path).resolve()) if path else settings.source_path
    return Ctx(settings, root, cfg, environ)


def fail(exc: IrkitError) -> None:
    """Print the error as one ``irkit: …`` line on stderr and exit with its exit code."""
    click.echo(f"irkit: {exc}", err=True)
    sys.exit(exc.exit_code)


class IrkitGroup(click.Group):
    """Maps :class:`IrkitError` and usage errors to one line on stderr and their exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; an :class:`IrkitError` becomes one stderr line and its exit code."""
        try:
            return super().invoke(ctx)
        except IrkitError as exc:
            fail(exc)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI outside click's standalone mode so any failure ends as one stderr line and an exit code."""
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            cmd = f" {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else ""
            click.echo(f"irkit{cmd}: {exc.format_message()} (see irkit{cmd} --help)", err=True)
            sys.exit(2)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("irkit: aborted", err=True)
            sys.exit(1)
        except IrkitError as exc:
            fail(exc)
        except OSError as exc:  # a full or read-only disk, a vanished directory: one line, never a traceback
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"irkit: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)
        except (OverflowError, UnicodeError, RecursionError, ValueError) as exc:
            click.echo(
                f"irkit: bad input: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}", err=True
            )
            sys.exit(2)
        except Exception as exc:  # the last line of defence; IRKIT_DEBUG=1 shows the traceback
            if os.environ.get("IRKIT_DEBUG"):
                raise
            msg = str(exc).splitlines()[0][:300] if str(exc) else ""
            click.echo(
                f"irkit: internal error: {type(exc).__name__}: {msg} (IRKIT_DEBUG=1 shows the traceback)", err=True
            )
            sys.exit(1)


@click.group(cls=IrkitGroup)
@click.version_option(package_name="irkit")
def main() -> None:
    """irkit — executable incident-response runbooks."""


# --------------------------------------------------------------------------- open / run / seal


@main.command("open")
@click.argument("incident_id", required=False)
@click.argument("runbook", required=False)
@click.option("--service", help="Service name (default from settings).")
@click.option("--title", help="A short description of what is wrong.")
@click.option("--severity", type=click.Choice(LEVELS), help="Initial severity, if known.")
@click.option("-p", "--parameter", "params", nargs=2, multiple=True, metavar="NAME VALUE")
@common
def open_cmd(
    incident_id: str | None,
    runbook: str | None,
    service: str | None,
    title: str | None,
    severity: str | None,
    params: tuple[tuple[str, str], ...],
    c: Ctx,
) -> None:
    """Open a new incident (no arguments), or prepare a runbook copy for JupyterLab (ID RUNBOOK)."""
    if incident_id is None:
        rec = open_incident(c, service=service, title=title, severity=severity)
        click.echo(rec.id)
        return
    if runbook is None:
        raise BadInputError("give both an incident id and a runbook to prepare, or no arguments to open an incident")
    from irkit.runner import coerce_cli_parameters, declared_parameters, default_registry, prepare_runbook
    from irkit.runstate import recover_interrupted

    rec = c.record(incident_id)
    recover_interrupted(rec)
    reg = default_registry(c.settings)
    typed = coerce_cli_parameters(declared_parameters(reg.path(reg.get(runbook))), dict(params))
    rel = prepare_runbook(
        rec,
        runbook,
        typed,
        settings=c.settings,
        environ=c.environ,
        actor=c.actor,
        config_path=c.config_path,
        registry=reg,
    )
    click.echo(rec.path / rel)
    click.echo(f"working copy: step through it in JupyterLab, then `irkit seal {rec.id} {rel}`", err=True)


def open_incident(c: Ctx, *, service: str | None, title: str | None, severity: str | None) -> Record:
    """A new incident, its id in the one format alerts use too: ``INC-<yyyymmdd>-<hhmm>-<8 hex>``."""
    import secrets

    from irkit.errors import IncidentExists
    from irkit.record import Record

    now = utcnow()
    for _ in range(1, 100):
        incident_id = f"INC-{now:%Y%m%d-%H%M}-{secrets.token_hex(4)}"
        try:
            root = c.stack.enter_context(c.store.writing(incident_id, new=True))
            rec = Record.create(
                root,
                incident_id,
                title=title or "untitled incident",
                service=service or c.settings.service.name,
                severity=severity,
                actor=c.actor,
                detected_at=now,
                data={"source": "cli"},
                **c.settings.record_options(c.environ),
            )
            if severity:
                rec.set_severity(severity, actor=c.actor, reason="set when opened")
            return rec
        except IncidentExists:
            continue
    raise BadInputError("could not find a free incident id")


@main.command("run")
@click.argument("incident_id")
@click.argument("runbook")
@click.option(
    "-p",
    "--parameter",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A runbook parameter (repeatable).",
)
@click.option("--batch", is_flag=True, help="Run as automation: observe and plan only, never act for a human.")
@click.option("--progress/--no-progress", default=True, help="Show a per-cell progress bar.")
@common
def run_cmd(
    incident_id: str,
    runbook: str,
    params: tuple[tuple[str, str], ...],
    batch: bool,
    progress: bool,
    c: Ctx,
) -> None:
    """Run RUNBOOK for INCIDENT_ID and seal the executed copy into the record."""
    from irkit.runner import coerce_cli_parameters, declared_parameters, default_registry, run_runbook

    rec = c.record(incident_id)
    reg = default_registry(c.settings)
    typed = coerce_cli_parameters(declared_parameters(reg.path(reg.get(runbook))), dict(params))
    pool = None
    if c.settings.runner.warm_pool:  # one run gains little; configured for symmetry with serve and demo
        from irkit.kernels import KernelPool

        # limit=1: one run, so no replacement is started to compete with it and be shut down unused
        pool = KernelPool(1, kernel_name=c.settings.runner.kernel_name, env=c.environ, limit=1)
        pool.wait_ready(timeout=c.settings.runner.start_timeout_s)
    try:
        result = run_runbook(
            rec,
            runbook,
            typed,
            settings=c.settings,
            environ=c.environ,
            actor=c.actor,
            config_path=c.config_path,
            registry=reg,
            progress=progress,
            batch=batch,
            pool=pool,
        )
    finally:
        if pool is not None:
            pool.shutdown()
    click.echo(f"{runbook}: {result.summary()} ({result.duration_s:.1f}s) → {rec.path / result.path}")
    if result.outcome == "error" and result.sha256 is None:
        raise SourceUnavailable(f"{runbook} could not run: {result.summary()}")
    if not result.ok:
        raise RunbookFailed(f"{runbook} {result.summary()}; the executed copy is {rec.path / result.path}")


@main.command("seal")
@click.argument("incident_id")
@click.argument("paths", nargs=-1)
@common
def seal_cmd(incident_id: str, paths: tuple[str, ...], c: Ctx) -> None:
    """Redact working copies (all, or PATHS relative to the record) and record their hashes."""
    from irkit.runner import seal_notebook

    rec = c.record(incident_id)
    targets = list(paths) or sorted(rec.state()["working_copies"])
    if not targets:
        click.echo("nothing to seal: no working copies")
        return
    for rel in targets:
        digest = seal_notebook(rec, rel, settings=c.settings, environ=c.environ, actor=c.actor)
        click.echo(f"sealed {rel} sha256={digest[:16]}…")


# --------------------------------------------------------------------------- reading


def _row(state: dict[str, Any]) -> dict[str, Any]:
    """An incident's summary with machine values: ISO times, booleans, counts."""
    return {k: state.get(k) for k in ("id", "title", "service", "severity", "status", "detected_at")} | {
        "events": state["head"]["seq"],
        "runs": len(state["runs"]),
        "alerts": len(state.get("alerts") or {}),
        "alerts_resolved": bool(state.get("alerts")) and bool(state.get("alerts_resolved")),
    }


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns under a header (the last column is free text, not padded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False)), r[-1]]).rstrip()
        for r in [header, *rows]
    ]


def _review_overdue(state: dict[str, Any], settings: Settings) -> bool:
    """Whether the incident's post-incident review window has closed without a review."""
    from irkit.severity import compute_clocks, judged_at

    return compute_clocks(state, settings.severity, judged_at(state)).review_overdue


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common
def list_cmd(as_json: bool, c: Ctx) -> None:
    """List every incident under the records root."""
    from irkit.record import Record

    rows = []
    for iid in c.store.ids():
        try:  # one corrupt record never hides the others
            with c.store.reading(iid, artifacts=False) as root:
                rec = Record.open(root, iid)
                problem = rec.broken()
                row = _row(rec.state())
                row["review_overdue"] = _review_overdue(rec.state(), c.settings) if problem is None else False
        except Exception as exc:  # whatever is wrong with one record, list the others
            problem, row = str(exc) or type(exc).__name__, {"id": iid}
        rows.append(row | {"id": iid, "verifies": problem is None, "problem": problem})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no incidents under {c.records}" if not c.store.shared else "no incidents in the shared store")
        return
    lines = []
    for r in rows:
        if not r["verifies"]:
            lines.append((r["id"], "", "DOES NOT VERIFY", "", "", str(r["problem"])))
            continue
        alerts = "—" if not r.get("alerts") else ("resolved" if r.get("alerts_resolved") else "firing")
        flag = "  [REVIEW OVERDUE]" if r.get("review_overdue") else ""
        detected = stamp(r["detected_at"]) if r.get("detected_at") else "—"
        lines.append((r["id"], r["severity"] or "—", r["status"], detected, alerts, f"{r['title']}{flag}"))
    for line in _table(("INCIDENT", "SEV", "STATUS", "DETECTED (UTC)", "ALERTS", "TITLE"), lines):
        click.echo(line)


@main.command("show")
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--events", "n_events", default=20, show_default=True, help="How many recent events to list.")
@common
def show_cmd(incident_id: str, as_json: bool, n_events: int, c: Ctx) -> None:
    """Status, severity, policy clocks (with overdue flags) and recent events of one incident."""
    from irkit.severity import compute_clocks, judged_at
    from irkit.views import describe_event

    rec = c.read(incident_id, artifacts=False)  # read only: needs no signing key
    problem = rec.broken()
    state = rec.state()
    if state["id"] is None:
        raise RecordBroken(f"{incident_id} does not verify and has no intact first event: {problem}")
    if problem:
        warning = f"WARNING: {incident_id} does not verify: {problem}; the state below stops at the break"
        click.echo(click.style(warning, fg="red", bold=True), err=True)
    now = judged_at(state)  # a replayed incident is judged at its own last moment
    clocks = compute_clocks(state, c.settings.severity, now)
    events = rec.events()
    recent = events[-n_events:] if n_events > 0 else []
    if as_json:
        from irkit.oncall import ladder as _ladder

        out = _row(state) | {
            "escalations": [s.row() for s in _ladder(c.settings.escalation, c.settings.rotation, state, events, now)],
            "clocks": {name: {"at": when or None, "state": st} for name, when, st in clocks.rows(machine=True)},
            "overdue": {
                "response": clocks.response_overdue,
                "resolution": clocks.resolution_overdue,
                "update": clocks.update_overdue,
                "review": clocks.review_overdue,
            },
            "providers": state.get("providers"),
            "working_copies": sorted(state["working_copies"]),
            "events": recent,
        }
        click.echo(json.dumps(out, indent=2, default=str))
        return
    alerts = state.get("alerts") or {}
    firing = sum(1 for a in alerts.values() if a.get("status") != "resolved")
    click.echo(f"{state['id']}  {state['title']}")
    click.echo(f"  service   {state['service']}")
    click.echo(f"  severity  {state['severity'] or 'not yet assessed'}")
    click.echo(f"  status    {state['status']}")
    if alerts:
        click.echo(f"  alerts    {len(alerts)}: " + ("all resolved" if firing == 0 else f"{firing} still firing"))
    for name, when, st in clocks.rows():
        flag = click.style(st, fg="red", bold=True) if st in ("OVERDUE", "missed") else st
        click.echo(f"  {name:<16} {when:<28} {flag}")
    from irkit.oncall import ladder

    for step in ladder(c.settings.escalation, c.settings.rotation, state, events, now):
        flag = click.style(step.state, fg="red", bold=True) if step.state == "OVERDUE" else step.state
        click.echo(f"  escalation  {step.role:<20} {step.who:<22} due {step.due_at:%H:%M:%S}  {flag}")
    providers = state.get("providers") or {}
    if providers.get("jira") or providers.get("statuspage") or providers.get("pagerduty"):
        pd = ", ".join(providers.get("pagerduty") or []) or "—"
        click.echo(f"  ticket {providers.get('jira') or '—'}  status page {providers.get('statuspage') or '—'}  "
                   f"PagerDuty {pd}")  # fmt: skip
    if state["working_copies"]:
        click.echo(f"  working copies (unsealed): {', '.join(sorted(state['working_copies']))}")
    click.echo(f"events ({len(events)}):")
    for ev in recent:
        what = describe_event(ev)
        click.echo(f"  {ev['seq']:>4}  {stamp(ev['ts'])}  {ev['actor']:<14} {what}")


@main.command("replay")
@click.argument("incident_id")
@click.option("--runbooks", default="", help="Only these runbooks, comma-separated (default: every run in the record).")
@click.option(
    "--keep", "keep", type=click.Path(file_okay=False, path_type=Path), help="Build the scratch copy here and keep it."
)
@click.option(
    "--exact",
    is_flag=True,
    help="Instead: re-execute each sealed notebook as it was (nbval) and fail on any output that differs.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common
def replay_cmd(incident_id: str, runbooks: str, keep: Path | None, exact: bool, as_json: bool, c: Ctx) -> None:
    """Re-run a past incident's runbooks on its recordings with today's runbooks and settings, in a
    scratch copy (never the record), and show which conclusions changed: exit 1 when any did.

    With --exact, re-execute the sealed notebooks themselves against the record's recordings and
    compare every output, figures included (nbval): exit 1 when any differs."""
    import shutil

    from irkit.replay import replay

    rec = c.read(incident_id)  # read only: the replay writes a copy
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise BadInputError(f"--keep {keep}: not empty; give a new or empty directory")
    names = tuple(n.strip() for n in runbooks.split(",") if n.strip())
    if exact:
        _replay_exact(rec, names, keep, as_json, c.settings, dict(c.environ))
        return
    say = (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))
    result = replay(rec, c.settings, c.environ, runbooks=names, config_path=c.config_path, workdir=keep, say=say)
    try:
        if as_json:
            click.echo(json.dumps(result.as_dict(), indent=2))
        else:
            rows = [
                (ch.conclusion, ch.recorded, ch.replayed, "same" if ch.same else "CHANGED") for ch in result.conclusions
            ]
            for line in _table(("CONCLUSION", "RECORDED", "REPLAYED", ""), rows):
                click.echo(line)
            failed = [r for r in result.runs if not r.ok]
            click.echo(
                f"{incident_id}: {len(result.runs)} runbooks replayed"
                + (f" ({len(failed)} not ok)" if failed else "")
                + f"; {len(result.changed)} of {len(result.conclusions)} conclusions changed"
                + (f"; scratch copy kept in {result.scratch}" if keep else "")
            )
    finally:
        if keep is None:
            shutil.rmtree(result.scratch.parent, ignore_errors=True)
    if result.changed or any(not r.ok for r in result.runs):
        raise SystemExit(1)


def _replay_exact(
    rec: Record, names: tuple[str, ...], keep: Path | None, as_json: bool, settings: Settings, environ: dict[str, str]
) -> None:
    import shutil

    from irkit.files import owned_tempdir, remove_stale_tempdirs
    from irkit.redact import Redactor
    from irkit.replay import SCRATCH_PREFIX, exact

    remove_stale_tempdirs(SCRATCH_PREFIX)  # what a killed replay left behind
    root = keep or owned_tempdir(SCRATCH_PREFIX)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if not as_json:
            click.echo(f"re-executing the sealed runbooks of {rec.id} with nbval (one fresh kernel each) …", err=True)
        result = exact(rec, root, runbooks=names, redact=Redactor.from_settings(settings, environ).text)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "incident": rec.id,
                        "exact": result.exact,
                        "notebooks": [r.sealed for r in result.runs],
                        "cells_same": result.passed,
                        "cells_different": result.failed,
                    },
                    indent=2,
                )
            )
        else:
            if not result.exact:
                click.echo(result.output.rstrip())
            verdict = "every output is the sealed one" if result.exact else f"{result.failed} cell(s) differ (above)"
            if not result.runs:
                verdict = "nothing to compare: no runbook run of it finished ok"
            click.echo(
                f"{rec.id}: {len(result.runs)} sealed notebooks re-executed, {result.passed} cells the same; {verdict}"
                + (f"; scratch copies kept in {root}" if keep else "")
            )
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if not result.exact:
        raise SystemExit(1)


@main.command("verify")
@click.argument("incident_ids", nargs=-1, required=True)
@click.option("--expect-head", metavar="HASH", help="Also require this head hash (one kept outside the record).")
@click.option(
    "--public-key", metavar="KEY", help="Require every event to be signed by this Ed25519 key (file or base64)."
)
@common
def verify_cmd(
    incident_ids: tuple[str, ...],
    expect_head: str | None,
    public_key: str | None,
    c: Ctx,
) -> None:
    """Recompute the hash chain and every sealed artifact's hash; name the first break."""
    from irkit.signing import load_verifier

    if expect_head is not None and len(incident_ids) != 1:
        raise BadInputError("--expect-head checks one incident at a time")
    verifier = load_verifier(public_key) if public_key is not None else None
    from irkit.runstate import recover_interrupted

    failed = []
    for iid in incident_ids:
        try:  # a run whose runner died is sealed as interrupted first (a writer's job: it needs the key)
            for rel in recover_interrupted(c.record(iid)):
                click.echo(f"{iid}: run {rel} was interrupted; sealed what it had as partial", err=True)
        except ConfigError as exc:
            click.echo(f"irkit: not sealing interrupted runs ({exc}); verifying as is", err=True)
        except RecordError:
            pass
        report = c.read(iid).verify(expect_head=expect_head, verifier=verifier)
        click.echo(report.summary())
        for extra in report.problems[1:]:
            click.echo(f"  also: {extra}")
        for wc in report.working_copies:
            click.echo(f"  unsealed working copy: {wc}")
        for loose in report.unaccounted:
            click.echo(f"  not sealed, not part of the record: {loose}")
        if not report.ok:
            failed.append(iid)
    if failed:
        raise VerificationFailed(f"{', '.join(failed)} did not verify")


@main.command("export")
@click.argument("incident_id")
@click.argument("dest", type=click.Path(file_okay=False))
@common
def export_cmd(incident_id: str, dest: str, c: Ctx) -> None:
    """Write a record in the directory layout under DEST/<id> (events and sealed files), to review anywhere."""
    from irkit.record import validate_incident_id

    out = c.store.export(validate_incident_id(incident_id), Path(dest))
    click.echo(out)
    click.echo(f"check it offline: irkit verify --records {dest} {incident_id}", err=True)


@main.command("import")
@click.argument("source", type=click.Path(file_okay=False, exists=True))
@common
def import_cmd(source: str, c: Ctx) -> None:
    """Load a record directory (SOURCE is <records>/<id>) into the shared store; it must verify. Never merges."""
    from irkit.store import SharedStore

    store = c.store
    if not isinstance(store, SharedStore):
        raise BadInputError(
            "import loads a record into a shared store: set store.url (postgresql://…) and store.artifacts"
        )
    iid, n = store.import_record(Path(source))
    click.echo(f"imported {iid}: {n} events, head verified")


@main.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Private key file to create.")
def keygen_cmd(out: str) -> None:
    """Create an Ed25519 signing key (kept outside every record); print its public key."""
    from irkit.signing import generate, write_private_key

    pem, public = generate()
    write_private_key(Path(out), pem)
    click.echo(f"private key: {out} (mode 0600; configure signing.key_file: {Path(out).resolve()})")
    click.echo(f"public key:  {public}")
    click.echo(f"check with:  irkit verify ID --public-key {public}")


@main.command("status")
@click.argument("incident_id")
@click.argument("to")
@click.option("--reason", default="", help="Why (goes into the timeline).")
@common
def status_cmd(incident_id: str, to: str, reason: str, c: Ctx) -> None:
    """Move an incident to status TO (detected → acknowledged → investigating → … → reviewed)."""
    from irkit.events import Status

    try:
        status = Status(to)
    except ValueError:
        raise BadInputError(f"unknown status {to!r}; one of: {', '.join(s.value for s in Status)}") from None
    ev = c.record(incident_id).set_status(status, actor=c.actor, reason=reason)
    click.echo(f"{incident_id}: {ev['data']['from']} → {ev['data']['to']}")


@main.command("note")
@click.argument("incident_id")
@click.argument("text")
@common
def note_cmd(incident_id: str, text: str, c: Ctx) -> None:
    """Add a responder's note to the incident's timeline (e.g. a step done by hand)."""
    ev = c.record(incident_id).note(text, actor=c.actor)
    click.echo(f"{incident_id}: noted by {ev['actor']} at {ev['ts'][:19].replace('T', ' ')} UTC")


# --------------------------------------------------------------------------- metrics

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90``, ``30s``, ``15m``, ``2h``, ``7d``, ``1w``."""
    m = DURATION.fullmatch(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise BadInputError(f"bad duration {text!r}: use e.g. 15m, 1h, 7d")
    return timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])


def parse_time(text: str | None) -> datetime:
    """Parse an RFC 3339 ``--at`` value (now when omitted); a bad one is a :class:`BadInputError`."""
    if not text:
        return utcnow()
    try:
        return parse_ts(text)
    except ValueError:
        raise BadInputError(f"bad time {text!r}: use RFC 3339, e.g. 2025-11-20T14:40:00Z") from None


@main.command("assess")
@click.option("--service", help="Service label value (default from settings).")
@click.option("--at", "at", help="Assess at this time (RFC 3339; default now).")
@click.option("--window", default="15m", show_default=True, help="Evaluation window ending at --at.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common
def assess_cmd(service: str | None, at: str | None, window: str, as_json: bool, c: Ctx) -> None:
    """Severity from live Prometheus signals, per the plan's thresholds, with every reason.

    Exit 0 with a level (or none crossed) when every key signal was read; exit 2 when the server
    rejected a configured query (naming the signal); exit 3 when a key signal (error ratio, p99
    latency, availability) could not be read — a level from the rest is then only a lower bound.
    """
    from irkit.metrics import KEY_SIGNALS, configured_signals, read_metrics
    from irkit.prom import PrometheusSource

    settings = c.settings
    if service:
        settings = settings.model_copy(update={"service": settings.service.model_copy(update={"name": service})})
    when, span = parse_time(at), parse_duration(window)
    m = read_metrics(
        PrometheusSource(settings, c.environ),
        signals=configured_signals(settings),
        start=when - span,
        end=when,
        eval_end=when,
        baseline_offset=settings.baseline_offset,
        evaluation=span,
    )
    if m.misconfigured:
        raise ConfigError("; ".join(m.misconfigured.values()))
    a = m.assess(settings.severity.metric_rules)
    unchecked = {k: v for k, v in a.unavailable.items() if k in KEY_SIGNALS or k not in m.series}
    complete = not any(k in KEY_SIGNALS for k in a.unavailable)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "service": settings.service.name,
                    "at": when.isoformat(),
                    "window_s": span.total_seconds(),
                    "level": a.level.value if a.level else None,
                    "complete": complete,
                    "summary": a.summary(),
                    "reasons": [r.as_dict() for r in a.reasons],
                    "unavailable": a.unavailable,
                    "signals": m.signal_rows(a),
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{settings.service.name} at {when:%Y-%m-%d %H:%M:%S} UTC (worst over the last {window}):")
        click.echo(m.table(settings.severity.metric_rules).to_string())
        if a.level and complete:
            click.echo(f"level: {a.level.value}")
        elif a.level:
            click.echo(f"level: at least {a.level.value} (not every key signal could be checked)")
        elif complete:
            click.echo("level: no severity threshold crossed")
        else:
            click.echo("level: unknown (not every key signal could be checked)")
        for r in a.reasons:
            click.echo(f"  {r.level.value}  {r.text}")
        for name, why in unchecked.items():
            click.echo(f"  could not check {name}: {why}")
    if not complete:
        names = ", ".join(k for k in KEY_SIGNALS if k in a.unavailable)
        raise SourceUnavailable(
            f"could not check {names}: {next(v for k, v in a.unavailable.items() if k in KEY_SIGNALS)}"
        )


@main.command("check")
@click.argument("incident_id")
@click.option("--cluster-source", type=click.Choice(["live", "recorded"]), default="live", show_default=True)
@click.option("--metrics-source", type=click.Choice(["live", "recorded"]), default="live", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common
def check_cmd(incident_id: str, cluster_source: str, metrics_source: str, as_json: bool, c: Ctx) -> None:
    """Run the investigation checklist's automated checks, record them, print the checklist."""
    from irkit.checklist import checklist_rows
    from irkit.session import Session

    rec = c.record(incident_id)
    session = Session(rec, c.settings, actor=c.actor, batch=False, environ=c.environ)
    session.run_checklist(cluster_source, metrics_source)
    rows = checklist_rows(rec.events())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        status = r["status"]
        color = {"ok": "green", "problem found": "red", "could not check": "yellow"}.get(status)
        shown = click.style(f"{status:<16}", fg=color) if color else f"{status:<16}"
        click.echo(f"{r['#']:>2}. {r['item']:<48} {shown} {r['evidence'][:110]}")


@main.command("comms")
@click.argument("incident_id")
@click.argument("action", type=click.Choice(["render", "send"]))
@click.argument("kind")
@click.option("--root-cause", default="", help="For resolution messages.")
@common
def comms_cmd(incident_id: str, action: str, kind: str, root_cause: str, c: Ctx) -> None:
    """Render or send a message: KIND is one of the plan's messages, 'initial', 'resolved', 'ticket' or 'page'."""
    from irkit import comms

    rec = c.record(incident_id)
    now = utcnow()
    if kind == "page":
        pager = comms.sender_for("pagerduty", c.settings, c.environ)
        if action != "send" or not isinstance(pager, comms.PagerDutySender):
            raise BadInputError("page: use `send page` with comms.pagerduty configured")
        st = rec.state()
        res = pager.event(
            "trigger",
            rec.id,
            f"[{st.get('severity')}] {st.get('title')}",
            st.get("severity"),
            c.settings.service.component,
        )
        rec.append(
            "comms.sent" if res.ok else "comms.failed",
            {"kind": "page", "channel": "pagerduty", "response_id": res.response_id, "error": res.error},
            actor=c.actor,
        )
        click.echo(f"page: {'sent ' + str(res.response_id) if res.ok else 'FAILED ' + str(res.error)}")
        if not res.ok:
            raise SourceUnavailable(f"page failed: {res.error}")
        return
    if kind == "ticket" and action == "send":
        ticket = comms.open_ticket(rec, c.settings, c.environ, now=now, actor=c.actor)
        if not ticket.ok:
            raise SourceUnavailable(f"ticket not created: {ticket.error} (recorded in the incident's events)")
        click.echo(f"ticket: {ticket.response_id}" + (" (already open)" if ticket.extra.get("existing") else ""))
        return
    kinds = {"initial": comms.INITIAL, "resolved": comms.RESOLVED}.get(kind, (kind,))
    level = rec.state().get("severity")
    failed = []
    for k in kinds:
        if not comms.applicable(k, level, c.settings):
            click.echo(f"{k}: not applicable to {level or 'unassessed'} incidents")
            continue
        msg = comms.render(rec, c.settings, k, now=now, actor=c.actor, root_cause=root_cause)
        if action == "render":
            click.echo(f"--- {k} → {rec.path / msg.path}\n{msg.text}")
            continue
        res = comms.deliver(rec, c.settings, c.environ, msg, actor=c.actor)
        click.echo(f"{k}: " + (f"sent via {res.channel} ({res.response_id})" if res.ok else f"NOT sent: {res.error}"))
        if not res.ok:
            failed.append(k)
    if failed:
        raise SourceUnavailable(f"not delivered: {', '.join(failed)} (recorded in the incident's events)")


@main.command("oncall")
@click.option("--at", "at", help="RFC 3339 time (default now).")
@click.option(
    "--weeks", default=4, show_default=True, type=click.IntRange(0, 520), help="How far ahead to list handovers."
)
@common
def oncall_cmd(at: str | None, weeks: int, c: Ctx) -> None:
    """Who is on call, and the next handovers."""
    from irkit.oncall import handovers, on_call

    when = parse_time(at)
    oc = on_call(c.settings.rotation, when)
    click.echo(
        f"on call at {when:%Y-%m-%d %H:%M} UTC: primary {oc.primary}, secondary {oc.secondary} "
        f"(shift {oc.shift_start:%a %Y-%m-%d %H:%M %Z} → {oc.shift_end:%a %Y-%m-%d %H:%M %Z})"
    )
    for t, frm, to in handovers(c.settings.rotation, when, when + timedelta(weeks=weeks)):
        click.echo(f"  handover {t:%a %Y-%m-%d %H:%M %Z} ({t.astimezone(UTC):%H:%M} UTC): {frm} → {to}")


@main.command("serve")
@click.option("--host", help="Listen address (default serve.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default serve.port, 9095).")
@common
def serve_cmd(host: str | None, port: int | None, c: Ctx) -> None:
    """Receive Alertmanager webhooks (POST /alerts), open incidents, run triage and investigation in batch."""
    from irkit.serve import serve

    click.echo(
        f"irkit serve: http://{host or c.settings.serve.host}:{port or c.settings.serve.port}/alerts → {c.records}",
        err=True,
    )
    serve(c.settings, c.environ, c.records, host=host, port=port)


@main.command("postmortem")
@click.argument("incident_id")
@click.option("--root-cause", default="", help="The root cause as the team states it.")
@click.option(
    "--action-items",
    "action_items",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML list of {item, owner, due, priority}.",
)
@click.option("--title", default="", help="Title of the review.")
@click.option("--progress/--no-progress", default=True)
@common
def postmortem_cmd(
    incident_id: str,
    root_cause: str,
    action_items: str | None,
    title: str,
    progress: bool,
    c: Ctx,
) -> None:
    """Run the post-mortem runbook: postmortem.md and postmortem.html from the record alone."""
    from irkit.runner import run_runbook

    rec = c.record(incident_id)
    params: dict[str, Any] = {"root_cause": root_cause, "title": title}
    if action_items:
        params["action_items_file"] = str(Path(action_items).resolve())
    result = run_runbook(
        rec,
        "postmortem",
        params,
        settings=c.settings,
        environ=c.environ,
        actor=c.actor,
        config_path=c.config_path,
        progress=progress,
    )
    if not result.ok:
        raise RunbookFailed(f"postmortem {result.summary()}; the executed copy is {rec.path / result.path}")
    for name in ("postmortem.md", "postmortem.html"):
        click.echo(rec.path / (rec.latest_file(name) or name))


@main.command("tick")
@click.option("--at", "at", help="Evaluate replayed incidents at this moment (RFC 3339); live ones use the real time.")
@common
def tick_cmd(at: str | None, c: Ctx) -> None:
    """One pass of the plan's clock over every open incident: escalations, update reminders (cron-friendly)."""
    from irkit.scheduler import tick

    when = parse_time(at) if at else None
    lines = tick(c.records, c.settings, c.environ, now=when, actor=c.actor, store=c.store)
    for iid, said in lines.items():
        for line in said:
            click.echo(f"{iid}: {line}")
    if not lines:
        click.echo("nothing due")
    broken = [
        iid for iid, said in lines.items() if said and said[0].startswith(("does not verify", "could not evaluate"))
    ]
    if broken:
        raise VerificationFailed(f"not evaluated: {', '.join(broken)} (see above)")


@main.command("index")
@common
def index_cmd(c: Ctx) -> None:
    """Write <records>/index.html: every incident, its notebooks (as HTML) and post-mortem."""
    from irkit.index import build_index

    if c.store.shared:
        raise BadInputError("index reads a records directory: export the incidents first (irkit export ID DIR)")
    click.echo(build_index(c.records, c.settings))


# --------------------------------------------------------------------------- demo


@main.command("demo")
@click.option("--progress/--no-progress", default=True, help="Show a per-cell progress bar.")
@common
def demo_cmd(progress: bool, c: Ctx) -> None:
    """Run the incident lifecycle on the bundled recorded incident (no servers needed)."""
    from irkit.demo import run_demo

    started = datetime.now()
    result = run_demo(
        c.records,
        settings=c.settings,
        environ=c.environ,
        actor=c.actor,
        config_path=c.config_path,
        progress=progress,
        say=lambda m: click.echo(m, err=True),
    )
    secs = (datetime.now() - started).total_seconds()
    if result.verify is not None:
        click.echo(result.verify.summary(), err=True)
    click.echo(f"incident {result.incident_id} — record {result.path} ({secs:.1f}s)", err=True)
    if result.postmortem:
        click.echo(f"post-mortem: {result.postmortem}", err=True)
    if result.index:
        click.echo(f"index:       {result.index}", err=True)
    if result.ok and c.store.shared:  # the demo runs on this machine's cache; the team sees it once it verified
        from irkit.store import SharedStore

        store = c.store
        assert isinstance(store, SharedStore)
        iid, n = store.import_record(result.path)
        click.echo(f"imported into the shared store: {iid} ({n} events)", err=True)
    click.echo(result.incident_id)
    if not result.ok:
        failed = next((r for r in result.runs if not r.ok), None)
        if failed is not None:
            raise RunbookFailed(f"demo: {failed.runbook} {failed.summary()}")
        raise VerificationFailed(f"demo: record {result.incident_id} did not verify")


if __name__ == "__main__":
    main()
