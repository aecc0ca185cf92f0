"""``irkit demo``: the whole incident lifecycle, replayed from the bundled recorded incident.

No servers are needed. The incident is opened from a recorded Alertmanager notification, the
recorded metric series and cluster snapshot are imported into the record, and every runbook runs
against them. The record is a *replay*: its events are stamped on the recorded incident's own clock
(alert 14:32, acknowledged 14:33, mitigation 14:40, …), which only a record opened as a replay
accepts, so the post-mortem's timeline reads like the real incident's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from irkit.alerts import incident_id_for, load_notification_file, open_from_notification, record_alerts
from irkit.cluster import RecordedCluster, capture
from irkit.cluster import snapshot as cluster_snapshot
from irkit.config import Settings
from irkit.errors import IncidentExists
from irkit.record import Record, VerifyReport
from irkit.runner import RunbookRegistry, RunResult, default_registry, run_runbook
from irkit.scenarios.pool_exhaustion import TIMELINE
from irkit.sources import RecordedSource, copy_recording
from irkit.times import ReplayClock

SCENARIO_DIR = Path(__file__).parent / "scenarios" / "pool-exhaustion"
RECORDED: dict[str, Any] = {"metrics_source": "recorded", "cluster_source": "recorded"}
RESOLVED_AT = TIMELINE["stable"] + timedelta(minutes=1)


@dataclass(frozen=True)
class Step:
    """A runbook run in the replay, at the moment of the recorded incident it happened."""

    runbook: str
    at: datetime
    parameters: dict[str, Any]


STEPS = (
    Step("triage", TIMELINE["acknowledged"], RECORDED),  # renders the P1 messages (no senders configured)
    Step(
        "investigation",
        TIMELINE["acknowledged"] + timedelta(minutes=2),
        {
            **RECORDED,
            # What the on-call engineer answered by hand during the recorded incident.
            "answers": {
                "sentry": [
                    "problem found",
                    "Sentry SR-1432: psycopg ConnectionTimeout in POST /subjects, first seen 14:27",
                ],
                "security": ["ok", "no auth anomalies in the gateway logs 13:30-14:40; no security alerts"],
            },
        },
    ),
    # Batch-safe: planned and dry-run only; the recorded cluster cannot be changed.
    Step("mitigation", TIMELINE["mitigation"], {"action": "rollback", "cluster_source": "recorded"}),
    Step(
        # Stable for 30 minutes once the 5-minute rates have settled (~14:46).
        "resolution",
        RESOLVED_AT,
        {
            "metrics_source": "recorded",
            "as_of": RESOLVED_AT.isoformat(),
            "watch_minutes": 30,
            "root_cause": "database connection pool exhausted after release 1.8.0 reduced its size",
        },
    ),
    Step(
        "postmortem",
        TIMELINE["stable"] + timedelta(hours=20),
        {
            "root_cause": "Release 1.8.0 (Helm 2.4.0, deployed 14:24) cut the database connection pool from 20 to 5; "
            "under normal afternoon load requests waited for a connection and timed out.",
            "contributing": [
                "No alert on connection-pool saturation; the first signal was the 5xx ratio",
                "The pool size changed inside a refactor, not as a reviewed config change",
            ],
            "action_items": [
                {
                    "item": "Add database connection pool monitoring",
                    "owner": "@sre-team",
                    "due": "2025-12-01",
                    "priority": "P0",
                },
                {"item": "Update rollback runbook", "owner": "@ops-team", "due": "2025-11-30", "priority": "P1"},
                {
                    "item": "Implement auto-scaling for connection pool",
                    "owner": "@eng-team",
                    "due": "2025-12-15",
                    "priority": "P1",
                },
                {
                    "item": "Add circuit breaker for database",
                    "owner": "@eng-team",
                    "due": "2026-01-15",
                    "priority": "P2",
                },
            ],
            "lessons": ["Pool sizes are capacity settings: review them like capacity changes"],
        },
    ),
)


@dataclass
class DemoResult:
    """What a demo replay produced: the record, each runbook run, the verification, post-mortem and index."""

    incident_id: str
    path: Path
    runs: list[RunResult] = field(default_factory=list)
    verify: VerifyReport | None = None
    postmortem: Path | None = None
    index: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every runbook run succeeded and the record verified."""
        return all(r.ok for r in self.runs) and self.verify is not None and self.verify.ok


def open_demo_incident(records_root: str | Path, settings: Settings, actor: str) -> Record:
    """Open a record for the bundled notification; a second demo in the same root gets the next free id."""
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    base = incident_id_for(note)
    for n in range(1, 1000):
        try:
            return open_from_notification(
                records_root,
                note,
                service=settings.service.name,
                actor="alertmanager",
                incident_id=base if n == 1 else f"{base}-{n}",
                clock=ReplayClock(TIMELINE["alert"]),
                replay=True,
            )
        except IncidentExists:
            continue
    raise IncidentExists(f"no free id for {base} under {records_root}")


def run_demo(
    records_root: str | Path,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    actor: str,
    config_path: str | None = None,
    registry: RunbookRegistry | None = None,
    progress: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
) -> DemoResult:
    """Replay the bundled incident into ``records_root``, running every runbook that exists, in order."""
    registry = registry or default_registry(settings)
    # Five runbooks in a row: a warm kernel (single-use, like every run's) starts while the last one runs.
    from irkit.kernels import KernelPool

    # Two kernels starting at once (one per core) keep up with five short runbooks; one could not.
    runs = sum(1 for step in STEPS if step.runbook in set(registry.names()))
    size = min(runs, max(2, settings.runner.warm_pool))
    pool = KernelPool(size, kernel_name=settings.runner.kernel_name, env=environ, limit=runs)
    try:
        return _replay(
            records_root,
            settings=settings,
            environ=environ,
            actor=actor,
            config_path=config_path,
            registry=registry,
            progress=progress,
            say=say,
            pool=pool,
        )
    finally:
        pool.shutdown()


def _replay(
    records_root: str | Path,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    actor: str,
    config_path: str | None,
    registry: RunbookRegistry,
    progress: bool,
    say: Callable[[str], None],
    pool: Any,
) -> DemoResult:
    rec = open_demo_incident(records_root, settings, actor)
    say(
        f"opened {rec.id} from the recorded Alertmanager notification (replayed from {TIMELINE['alert']:%Y-%m-%d %H:%M} UTC)"
    )
    n = copy_recording(RecordedSource(SCENARIO_DIR / "signals"), rec, actor="irkit-demo")
    cluster_snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor="irkit-demo")
    say(f"imported {n} recorded signal series and the recorded cluster snapshot")
    result = DemoResult(rec.id, rec.path)
    available = set(registry.names())
    for step in STEPS:
        if step.runbook == "resolution":
            rec.clock = ReplayClock(TIMELINE["restored"] + timedelta(minutes=2))
            resolved = load_notification_file(SCENARIO_DIR / "alertmanager-resolved.json")
            record_alerts(rec, resolved, actor="alertmanager")
            say("alert resolved at 14:47 (recorded notification)")
        if step.runbook not in available:
            continue
        rec.clock = ReplayClock(step.at)
        say(f"{step.at:%H:%M} {step.runbook} …")
        run = run_runbook(
            rec,
            step.runbook,
            step.parameters,
            settings=settings,
            environ=environ,
            actor=actor,
            config_path=config_path,
            registry=registry,
            progress=progress,
            pool=pool,
        )
        result.runs.append(run)
        say(f"      {step.runbook}: {run.summary()} → {rec.path / run.path}")
        if not run.ok:
            break
    result.verify = rec.verify()
    latest = rec.latest_file("postmortem.html")
    if latest:
        result.postmortem = rec.path / latest
    from irkit.index import build_index

    result.index = build_index(records_root, settings)
    return result
