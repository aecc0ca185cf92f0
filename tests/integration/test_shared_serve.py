"""Two ``irkit serve`` replicas on one team store (real PostgreSQL, real S3 server); one dies by kill -9.

What must hold: every accepted notification is applied (0 lost), one incident per alert group, every
record verifies, and no runbook runs twice to completion, whichever replica took the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import requests
import yaml

from irkit.record import Record
from irkit.scenarios.launch import serve_process, storm_notification
from support import CONTRACT_PARAMETERS, wait_for, write_notebook

TOKEN = "ha-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(tmp_path: Path, team_store, **serve: Any) -> Path:
    cfg = tmp_path / "irkit.yaml"
    body = {
        "store": {**team_store.store, "lease": 4},
        "serve": {"token_env": "WEBHOOK_TOKEN", "tick_s": 0, "warm_pool": False, **serve},
        "prometheus": {"url": "http://127.0.0.1:9", "timeout_s": 1},
        "kubernetes": {"kubeconfig": str(tmp_path / "no-kubeconfig")},
    }
    if "notebooks_dir" in serve:
        body["runner"] = {"notebooks_dir": serve.pop("notebooks_dir")}
        body["serve"] = {k: v for k, v in body["serve"].items() if k != "notebooks_dir"}
    cfg.write_text(yaml.safe_dump(body))
    return cfg


@contextlib.contextmanager
def replica(tmp_path: Path, name: str, cfg: Path, team_store) -> Iterator[tuple[str, Any]]:
    env = {**os.environ, **team_store.env, "WEBHOOK_TOKEN": TOKEN, "IRKIT_ACTOR": f"irkit-serve-{name}"}
    with serve_process(tmp_path / f"cache-{name}", cfg, env=env, log=tmp_path / f"serve-{name}.log") as (url, proc):
        yield url, proc


def kill_9(proc: Any) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the replica and any kernel it started
    proc.wait()


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def drained(dsn: str) -> bool:
    pending = query(dsn, "SELECT count(*) FROM irkit_notifications WHERE NOT processed")[0][0]
    jobs = query(dsn, "SELECT count(*) FROM irkit_jobs WHERE state <> 'done'")[0][0]
    return pending == 0 and jobs == 0


def all_verify(tmp_path: Path, team_store, cfg: Path, *, cli: bool = False) -> list[str]:
    """Export every incident (from the database and the bucket) and verify the copies offline.

    ``cli``: through ``irkit export`` (a process per incident), else through the library.
    """
    import subprocess
    import sys

    from irkit.config import load_config
    from irkit.store import open_store

    env = {**os.environ, **team_store.env}
    out = tmp_path / "exported"
    ids = [r[0] for r in query(team_store.dsn, "SELECT id FROM irkit_incidents ORDER BY id")]
    store = open_store(load_config(cfg, env, required=True), env, tmp_path / "c")
    for iid in ids:
        if not cli:
            store.export(iid, out)
            continue
        argv = ["export", iid, str(out), "--config", str(cfg), "--records", str(tmp_path / "c")]
        res = subprocess.run(
            [sys.executable, "-m", "irkit.cli", *argv], env=env, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
    bad = [iid for iid in ids if not Record.open(out, iid).verify().ok]
    assert bad == [], bad
    return ids


def test_1000_notifications_over_two_replicas_one_killed_halfway_lose_nothing(tmp_path: Path, team_store) -> None:
    cfg = config(tmp_path, team_store, runbooks=[], workers=2)
    notes = []
    for i in range(1000):
        n = storm_notification(i % 100, i // 100)
        n["commonAnnotations"] = {"summary": f"storm group {i % 100}", "n": str(i)}  # no two bodies alike
        notes.append(n)
    accepted: set[int] = set()

    def send(url: str, note: dict[str, Any]) -> int | None:
        try:
            res = requests.post(f"{url}/alerts", json=note, headers=AUTH, timeout=10)
        except requests.RequestException:
            return None
        return res.json()["accepted"] if res.status_code == 200 else None

    with replica(tmp_path, "a", cfg, team_store) as (url_a, proc_a), replica(tmp_path, "b", cfg, team_store) as (url_b, _):
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda k: send((url_a, url_b)[k % 2], notes[k]), range(500)))
        assert None not in first
        accepted |= set(first)
        kill_9(proc_a)  # halfway: replica a dies with claimed notifications and jobs in hand
        with ThreadPoolExecutor(8) as pool:  # Alertmanager's retries now reach the survivor only
            rest = list(pool.map(lambda k: send(url_b, notes[k]), range(500, 1000)))
        assert None not in rest
        accepted |= set(rest)
        wait_for(lambda: drained(team_store.dsn), 180, "replica b to apply every notification and finish every job")

    assert len(accepted) == 1000
    rows = query(team_store.dsn, "SELECT id, incident_id, error FROM irkit_notifications")
    assert {r[0] for r in rows} == accepted  # 0 lost
    assert [r for r in rows if r[1] is None or r[2] is not None] == []
    ids = all_verify(tmp_path, team_store, cfg)
    assert len(ids) == 100  # one incident per group, whichever replica saw its first notification
    groups = query(team_store.dsn, "SELECT count(DISTINCT incident_id) FROM irkit_notifications")[0][0]
    assert groups == 100
    jobs = query(team_store.dsn, "SELECT state, count(*) FROM irkit_jobs GROUP BY state")
    assert jobs == [("done", 100)]


def test_a_replica_killed_mid_run_hands_its_jobs_over_and_no_runbook_completes_twice(
    tmp_path: Path, team_store
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    write_notebook(books / "triage.ipynb", CONTRACT_PARAMETERS, ["import time\ntime.sleep(4)\nprint('triaged')"])
    cfg = config(tmp_path, team_store, runbooks=["triage"], workers=2, notebooks_dir=str(books))
    with replica(tmp_path, "a", cfg, team_store) as (url_a, proc_a):
        for g in range(3):
            assert requests.post(f"{url_a}/alerts", json=storm_notification(g), headers=AUTH, timeout=10).ok
        wait_for(
            lambda: query(team_store.dsn, "SELECT count(*) FROM irkit_jobs WHERE state = 'running'")[0][0] == 2,
            60,
            "replica a to be running two jobs",
        )
        time.sleep(1.5)  # inside the runbooks' cells
        kill_9(proc_a)
    assert query(team_store.dsn, "SELECT count(*) FROM irkit_events WHERE type = 'notebook.finished'")[0][0] == 0
    # Each run was on record as soon as it started (a checkpoint under the hold), so the dead runs show.
    assert query(team_store.dsn, "SELECT count(*) FROM irkit_events WHERE type = 'notebook.started'")[0][0] == 2
    with replica(tmp_path, "b", cfg, team_store):
        wait_for(lambda: drained(team_store.dsn), 120, "replica b to take over and finish every job")
    ids = all_verify(tmp_path, team_store, cfg, cli=True)
    assert len(ids) == 3
    out = tmp_path / "exported"
    for iid in ids:
        events = Record.open(out, iid).events()
        finished = [e["data"] for e in events if e["type"] == "notebook.finished"]
        assert [(f["tag"].split(":")[1], f["outcome"]) for f in finished] == [("triage", "ok")], finished
        sealed = Record.open(out, iid).path / finished[0]["path"]
        assert "triaged" in sealed.read_text()  # the executed copy came back from the bucket
    attempts = sorted(r[0] for r in query(team_store.dsn, "SELECT attempts FROM irkit_jobs"))
    assert attempts == [1, 2, 2]  # the two a held were taken again after their lease; the third once
    interrupted = [
        [e["data"]["outcome"] for e in Record.open(out, iid).events() if e["type"] == "run.interrupted"] for iid in ids
    ]
    assert sorted(map(len, interrupted)) == [0, 1, 1] and {o for i in interrupted for o in i} == {"interrupted"}


def test_a_replica_whose_database_is_unreachable_says_so_in_one_line(tmp_path: Path, team_store) -> None:
    from servers import free_port

    cfg = config(tmp_path, team_store, runbooks=[])
    with replica(tmp_path, "a", cfg, team_store) as (url, _proc):
        assert requests.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
    broken = yaml.safe_load(cfg.read_text())
    broken["store"]["url"] = f"postgresql://irkit@127.0.0.1:{free_port()}/irkit"
    cfg.write_text(yaml.safe_dump(broken))
    env = {**os.environ, **team_store.env, "WEBHOOK_TOKEN": TOKEN}
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "irkit.cli", "serve", "--config", str(cfg), "--records", str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = res.stderr.strip().splitlines()
    assert res.returncode == 1 and said[-1].startswith("irkit: cannot reach the shared store at 127.0.0.1:"), said
    assert "Traceback" not in res.stderr and len(said) == 2  # the banner, then the one-line error


def test_when_the_database_goes_away_intake_answers_503_and_health_says_unavailable(tmp_path: Path, team_store) -> None:
    from starlette.testclient import TestClient

    from irkit.config import load_config
    from irkit.serve import create_app
    from servers import free_port

    env = {**team_store.env, "WEBHOOK_TOKEN": TOKEN}
    settings = load_config(config(tmp_path, team_store, runbooks=[]), env, required=True)
    app = create_app(settings, env, tmp_path / "cache", start_workers=False)
    with TestClient(app) as client:
        assert client.post("/alerts", json=storm_notification(1), headers=AUTH).status_code == 200
        app.state.queue.dsn = f"postgresql://irkit@127.0.0.1:{free_port()}/irkit"  # gone from here on
        query(  # and the connection the replica holds is cut, as a database restart or failover would
            team_store.dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        for n in (2, 3):  # the cut connection, then a new one that cannot be made
            refused = client.post("/alerts", json=storm_notification(n), headers=AUTH)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"].startswith(("the shared queue failed: ", "cannot reach the shared store"))
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert health.json()["error"].startswith("cannot reach the shared store at 127.0.0.1:")
    assert query(team_store.dsn, "SELECT count(*) FROM irkit_notifications")[0][0] == 1
