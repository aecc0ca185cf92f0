"""The CLI against a team store (real PostgreSQL, real S3 server), from two "machines" (two caches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from irkit.record import Record
from support import CONTRACT_PARAMETERS, write_notebook


@pytest.fixture
def team(tmp_path: Path, team_store, cli):
    """``run(machine, *args)``: irkit with the team's settings and ``--records <machine cache>``."""
    books = tmp_path / "books"
    books.mkdir()
    write_notebook(
        books / "triage.ipynb",
        CONTRACT_PARAMETERS,
        [
            "print('triaged by', incident_id)",
            "import os\nprint('bucket key', os.environ['AWS_SECRET_ACCESS_KEY'])",  # a secret a runbook prints
            # The runner holds the incident: the kernel's own writes must not wait for it (they would forever).
            "from irkit.session import Session\n"
            "Session.from_parameters(incident_id, records_dir, config_path).record.note('from the kernel', actor='k')",
        ],
    )
    cfg = tmp_path / "team.yaml"
    runner = {"notebooks_dir": str(books), "execution_timeout_s": 60}
    cfg.write_text(yaml.safe_dump({"store": team_store.store, "runner": runner}))
    bundled = tmp_path / "team-bundled-runbooks.yaml"
    bundled.write_text(yaml.safe_dump({"store": team_store.store}))

    def run(machine: str, *args: str, tiny_runbooks: bool = True):
        config = cfg if tiny_runbooks else bundled
        return cli(*args, "--records", str(tmp_path / machine), "--config", str(config), env=team_store.env)

    run.config = cfg  # type: ignore[attr-defined]
    return run


def test_a_responder_on_one_machine_and_a_reviewer_on_another_work_the_same_record(
    team, team_store, cli, tmp_path: Path
) -> None:
    opened = team("laptop-ana", "open", "--title", "checkout 5xx", "--severity", "P1")
    assert opened.exit_code == 0, opened.stderr
    iid = opened.stdout.strip()
    assert team("laptop-ana", "note", iid, "rolled back by hand").exit_code == 0
    prepared = team("laptop-ana", "open", iid, "triage")
    assert prepared.exit_code == 0, prepared.stderr
    assert Path(prepared.stdout.strip()).is_file()  # a local working copy, for JupyterLab
    sealed = team("laptop-ana", "seal", iid)
    assert sealed.exit_code == 0 and "sealed notebooks/" in sealed.stdout, sealed.stdout + sealed.stderr
    ran = team("laptop-ana", "run", iid, "triage", "--no-progress")
    assert ran.exit_code == 0, ran.stderr

    listed = json.loads(team("laptop-bo", "list", "--json").stdout)  # the other machine: nothing local yet
    assert [(r["id"], r["verifies"], r["severity"]) for r in listed] == [(iid, True, "P1")]
    shown = team("laptop-bo", "show", iid)
    assert shown.exit_code == 0 and "rolled back by hand" in shown.stdout and "from the kernel" in shown.stdout
    verified = team("laptop-bo", "verify", iid)
    assert verified.exit_code == 0 and verified.stdout.startswith(f"OK {iid}"), verified.stdout

    exported = team("laptop-bo", "export", iid, str(tmp_path / "review"))
    assert exported.exit_code == 0, exported.stderr
    offline = cli("verify", iid, "--records", str(tmp_path / "review"))  # no store configured at all
    assert offline.exit_code == 0, offline.stdout + offline.stderr
    rec = Record.open(tmp_path / "review", iid)
    runs = [e["data"] for e in rec.events() if e["type"] == "notebook.finished"]
    assert len(runs) == 1 and "triaged by" in (rec.path / runs[0]["path"]).read_text()
    again = team("laptop-bo", "export", iid, str(tmp_path / "review"))
    assert again.exit_code == 2 and "already exists" in again.stderr

    # The store's own secret never lands in it: not in the bucket, not in an event row.
    import boto3
    import psycopg

    secret = team_store.env["AWS_SECRET_ACCESS_KEY"]
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=team_store.env["AWS_ENDPOINT_URL"],
        aws_access_key_id=team_store.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
    )
    bucket = team_store.store["artifacts"].removeprefix("s3://").split("/")[0]
    bodies = [
        s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert any(b"bucket key [REDACTED]" in b for b in bodies)  # the run printed it, redacted
    assert not [b for b in bodies if secret.encode() in b]
    with psycopg.connect(team_store.dsn) as conn:
        rows = [bytes(r[0]) for r in conn.execute("SELECT line FROM irkit_events")]
    assert rows and not [r for r in rows if secret.encode() in r]


def test_import_loads_a_directory_record_once_and_refuses_broken_ones(team, cli, tmp_path: Path) -> None:
    made = cli("open", "--title", "from a laptop", "--records", str(tmp_path / "solo"))
    iid = made.stdout.strip()
    loaded = team("laptop-ana", "import", str(tmp_path / "solo" / iid))
    assert loaded.exit_code == 0 and loaded.stdout.startswith(f"imported {iid}: "), loaded.stderr
    assert team("laptop-bo", "show", iid).exit_code == 0
    twice = team("laptop-ana", "import", str(tmp_path / "solo" / iid))
    assert twice.exit_code == 2 and "already exists in the shared store" in twice.stderr

    other = cli("open", "--title", "tampered", "--records", str(tmp_path / "solo")).stdout.strip()
    events = tmp_path / "solo" / other / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b"tampered", b"harmless"))
    refused = team("laptop-ana", "import", str(tmp_path / "solo" / other))
    assert refused.exit_code == 2 and "does not verify, not imported" in refused.stderr
    assert [r["id"] for r in json.loads(team("laptop-bo", "list", "--json").stdout)] == [iid]

    on_a_directory = cli("import", str(tmp_path / "solo" / iid), "--records", str(tmp_path / "x"))
    assert on_a_directory.exit_code == 2 and "into a shared store" in on_a_directory.stderr


def test_the_demo_lands_in_the_shared_store_and_verifies_from_another_machine(team) -> None:
    ran = team("laptop-ana", "demo", "--no-progress", tiny_runbooks=False)
    assert ran.exit_code == 0, ran.stderr
    iid = ran.stdout.strip().splitlines()[-1]
    assert f"imported into the shared store: {iid} (" in ran.stderr
    verified = team("laptop-bo", "verify", iid)  # every sealed notebook and figure fetched from the bucket
    assert verified.exit_code == 0 and verified.stdout.startswith(f"OK {iid}"), verified.stdout


def test_a_notebook_outside_any_runner_commits_each_write_and_never_loses_one(team, team_store, tmp_path: Path) -> None:
    from irkit.session import Session

    iid = team("laptop-ana", "open", "--title", "checkout 5xx").stdout.strip()
    assert team("laptop-ana", "open", iid, "triage").exit_code == 0  # the working copy JupyterLab opens
    env = {**team_store.env, "IRKIT_ACTOR": "ana"}  # a JupyterLab kernel: nobody holds the incident for it
    session = Session.from_parameters(iid, str(tmp_path / "laptop-ana"), str(team.config), environ=env)
    session.record.note("first look", actor="ana")
    assert "first look" in team("laptop-bo", "show", iid).stdout  # committed at once, visible elsewhere
    assert team("laptop-bo", "note", iid, "bo was here").exit_code == 0  # meanwhile, on another machine
    session.record.note("second look", actor="ana")  # starts from the database's head: after bo's note
    assert team("laptop-ana", "seal", iid).exit_code == 0
    shown = json.loads(team("laptop-bo", "show", iid, "--json").stdout)
    notes = [e["data"]["text"] for e in shown["events"] if e["type"] == "note"]
    assert notes == ["first look", "bo was here", "second look"]
    assert team("laptop-bo", "verify", iid).exit_code == 0
    assert not (tmp_path / "laptop-ana" / ".irkit" / "uncommitted").exists()  # nothing was set aside
