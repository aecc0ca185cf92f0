"""``irkit demo``: the incident lifecycle, as far as it exists, on the bundled recorded incident.

No servers are needed: the incident is opened from a recorded Alertmanager notification and every
runbook reads the record (and, as they are added, recorded metric and cluster snapshots).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from irkit.alerts import incident_id_for, load_notification_file, open_from_notification
from irkit.cluster import RecordedCluster, capture
from irkit.cluster import snapshot as cluster_snapshot
from irkit.config import Settings
from irkit.errors import IncidentExists
from irkit.record import Record, VerifyReport
from irkit.runner import RunbookRegistry, RunResult, default_registry, run_runbook
from irkit.sources import RecordedSource, copy_recording

SCENARIO_DIR = Path(__file__).parent / "scenarios" / "pool-exhaustion"
DEMO_RUNBOOKS = ("triage", "investigation", "mitigation", "resolution", "postmortem")
# Runbooks read the record's recorded snapshots instead of live servers.
RECORDED: dict[str, object] = {"metrics_source": "recorded", "cluster_source": "recorded"}
RECORDED_PARAMETERS: dict[str, dict[str, object]] = {
    "triage": RECORDED,
    "investigation": {
        **RECORDED,
        # What the on-call engineer answered by hand in the recorded incident.
        "answers": {
            "sentry": [
                "problem found",
                "Sentry SR-1432: psycopg ConnectionTimeout in POST /subjects, first seen 14:27",
            ],
            "security": ["ok", "no auth anomalies in the gateway logs 13:30-14:40; no security alerts"],
        },
    },
}


@dataclass
class DemoResult:
    incident_id: str
    path: Path
    runs: list[RunResult] = field(default_factory=list)
    verify: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs) and self.verify is not None and self.verify.ok


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
    """Open the bundled incident in ``records_root`` and run every runbook that exists, in order."""
    registry = registry or default_registry(settings)
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    base = incident_id_for(note)
    rec: Record | None = None
    for n in range(1, 1000):
        try:
            rec = open_from_notification(
                records_root,
                note,
                service=settings.service.name,
                actor=actor,
                incident_id=base if n == 1 else f"{base}-{n}",
            )
            break
        except IncidentExists:
            continue
    assert rec is not None
    say(f"opened {rec.id} from the recorded Alertmanager notification ({note.title})")
    n = copy_recording(RecordedSource(SCENARIO_DIR / "signals"), rec, actor=actor)
    say(f"imported {n} recorded signal series (what Prometheus returned during the incident)")
    cluster_snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor=actor)
    say("imported the recorded cluster snapshot (pods, rollouts, Helm releases, events, logs)")
    result = DemoResult(rec.id, rec.path)
    available = set(registry.names())
    for name in DEMO_RUNBOOKS:
        if name not in available:
            continue
        say(f"running {name} …")
        run = run_runbook(
            rec,
            name,
            RECORDED_PARAMETERS.get(name),
            settings=settings,
            environ=environ,
            actor=actor,
            config_path=config_path,
            registry=registry,
            progress=progress,
        )
        result.runs.append(run)
        say(f"  {name}: {run.summary()} → {rec.path / run.path}")
        if not run.ok:
            break
    result.verify = rec.verify()
    return result
