"""Plain papermill stays a first-class way in: the runbooks run from the papermill CLI, stock engine or irkit's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from irkit.cluster import RecordedCluster, capture
from irkit.cluster import snapshot as cluster_snapshot
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR, open_demo_incident
from irkit.record import Record
from irkit.sources import RecordedSource, copy_recording
from support import REPO


def _recorded_incident(records: Path) -> Record:
    rec = open_demo_incident(records, load_config(None, {}), actor="am")
    copy_recording(RecordedSource(SCENARIO_DIR / "signals"), rec, actor="am")
    cluster_snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor="am")
    return rec


@pytest.mark.parametrize("engine", [[], ["--engine", "irkit"]], ids=["stock-engine", "irkit-engine"])
def test_papermill_cli_runs_triage_on_a_record(records: Path, tmp_path: Path, engine: list[str]) -> None:
    rec = _recorded_incident(records)
    out = tmp_path / "triage-out.ipynb"
    argv = [
        sys.executable, "-m", "papermill", str(REPO / "notebooks" / "triage.ipynb"), str(out), *engine,
        "-p", "incident_id", rec.id, "-p", "records_dir", str(records), "-p", "config_path", str(tmp_path / "none.yaml"),
        "-p", "metrics_source", "recorded", "-p", "cluster_source", "recorded", "--no-progress-bar",
    ]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IRKIT_ACTOR": "Ana Ruiz", "IRKIT_BATCH": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(str(out), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors and nb.metadata["papermill"]["parameters"]["incident_id"] == rec.id
    events = Record.open(records, rec.id).events()
    assessed = [e for e in events if e["type"] == "severity.assessed"]
    assert assessed and assessed[-1]["data"]["level"] == "P1" and assessed[-1]["actor"] == "Ana Ruiz"
    finished = [e for e in events if e["type"] == "notebook.finished"]
    if not engine:  # the stock engine: the executed copy is only where papermill was told to write it
        assert not finished
        return
    # --engine irkit seals the run into the record, and papermill's output is that same sealed copy.
    assert [e["data"]["outcome"] for e in finished] == ["ok"] and finished[0]["actor"] == "Ana Ruiz"
    sealed = nbformat.read(str(rec.path / finished[0]["data"]["path"]), as_version=4)
    assert [c.get("outputs") for c in sealed.cells] == [c.get("outputs") for c in nb.cells]
    assert nb.metadata["irkit"]["runbook"] == "triage" and Record.open(records, rec.id).verify().ok


def test_papermill_irkit_engine_on_an_unknown_incident_says_so_in_one_line(records: Path, tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "papermill", str(REPO / "notebooks" / "triage.ipynb"), str(tmp_path / "out.ipynb"),
        "--engine", "irkit", "-p", "incident_id", "INC-NOT-THERE-1", "-p", "records_dir", str(records),
        "-p", "config_path", str(tmp_path / "none.yaml"), "--no-progress-bar",
    ]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IRKIT_ACTOR": "Ana Ruiz", "IRKIT_BATCH": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "INC-NOT-THERE-1" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
