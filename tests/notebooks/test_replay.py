"""irkit replay: a past incident re-run on its recordings with today's runbooks, in a scratch copy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and ".runs" not in p.parts and p.name != ".lock":
            h.update(str(p.relative_to(directory)).encode() + p.read_bytes())
    return h.hexdigest()


def test_replaying_the_demo_reaches_every_conclusion_again_and_never_touches_the_record(
    demo_cli, cli, tmp_path: Path
) -> None:
    incident = demo_cli.result.incident_id
    before = _digest(demo_cli.records / incident)
    res = cli("replay", incident, "--records", str(demo_cli.records), "--json", "--keep", str(tmp_path / "scratch"))
    assert res.exit_code == 0, (res.stdout[-3000:], res.stderr)
    out = json.loads(res.stdout)
    assert [r["runbook"] for r in out["runs"]] == ["triage", "investigation", "mitigation", "resolution", "postmortem"]
    assert all(r["outcome"] == "ok" for r in out["runs"]) and out["changed"] == 0
    names = {c["conclusion"] for c in out["conclusions"]}
    assert {"severity from metrics", "severity reasons", "resolution decision", "verdict: time to resolve (SLA)"} <= names
    assert sum(n.startswith("checklist: ") for n in names) == 10
    assert _digest(demo_cli.records / incident) == before  # the record itself is never written
    assert (tmp_path / "scratch" / incident / "notebooks" / "01-triage.ipynb").is_file()  # the replay's own runs


def test_a_changed_threshold_is_a_changed_conclusion_and_exit_1(demo_cli, cli, tmp_path: Path) -> None:
    cfg = tmp_path / "irkit.yaml"
    p1_at_half = [
        {"level": "P1", "threshold": 0.5, "inclusive": False},
        {"level": "P2", "threshold": 0.05},
        {"level": "P3", "threshold": 0.01},
    ]
    cfg.write_text(yaml.safe_dump({"severity": {"metric_rules": {"error_ratio": p1_at_half}}}))
    incident = demo_cli.result.incident_id
    args = ("replay", incident, "--records", str(demo_cli.records), "--runbooks", "triage", "--config", str(cfg))
    res = cli(*args)
    assert res.exit_code == 1, res.stderr
    changed = [line for line in res.stdout.splitlines() if line.endswith("CHANGED")]
    assert len(changed) == 1 and changed[0].startswith("severity reasons") and "error ratio 15.7% ≥ 5%" in changed[0]
    assert "1 of 3 conclusions changed" in res.stdout and "checklist" not in res.stdout  # triage concludes no checklist


def test_replaying_a_broken_record_is_refused_in_one_line(cli, records: Path) -> None:
    from irkit.record import Record

    rec = Record.create(records, "INC-BROKEN-1", title="t", service="s", actor="a")
    rec.note("x", actor="a")
    raw = bytearray(rec.events_path.read_bytes())
    raw[raw.index(b'"x"') + 1] ^= 0x01
    rec.events_path.write_bytes(bytes(raw))
    res = cli("replay", "INC-BROKEN-1", "--records", str(records))
    assert res.exit_code == 1 and "does not verify" in res.stderr and res.stderr.count("\n") == 1
