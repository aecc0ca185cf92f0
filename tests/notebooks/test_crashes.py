"""Runs that die (kill -9) and disks that fill: the record keeps what happened and still verifies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from irkit.record import Record
from support import CONTRACT_PARAMETERS, write_notebook

ID = "INC-CRASH-1"
CANARY = "canary-crash-9f8e7d6c5b4a"


def irkit(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "irkit.cli", *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )


@pytest.fixture
def setup(tmp_path: Path, records: Path) -> tuple[Path, dict[str, str]]:
    books = tmp_path / "books"
    books.mkdir()
    write_notebook(
        books / "triage.ipynb",
        CONTRACT_PARAMETERS,
        ["import os\nprint('step one done', os.environ['CRASH_TOKEN'])", "import time\ntime.sleep(120)"],
    )
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(yaml.safe_dump({"runner": {"notebooks_dir": str(books)}, "secrets": ["CRASH_TOKEN"]}))
    env = {**os.environ, "IRKIT_CONFIG": str(cfg), "IRKIT_ACTOR": "tester", "CRASH_TOKEN": CANARY}
    Record.create(records, ID, title="t", service="svc", actor="tester")
    return records, env


def start_run(records: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``irkit run ID triage`` in its own process group (so kill -9 takes its kernel too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "irkit.cli", "run", ID, "triage", "--records", str(records), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _printed(path: Path) -> str:
    """Every stream text in the notebook at ``path`` (what its cells printed); "" while it is being replaced."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_kill_9_mid_run_seals_the_partial_notebook_as_interrupted(setup) -> None:
    records, env = setup
    proc = start_run(records, env)
    runs = records / ID / ".runs"
    deadline = time.monotonic() + 90
    # In the cell's output, not its source: the partial notebook holds what the cell printed.
    while time.monotonic() < deadline and not any("step one done" in _printed(p) for p in runs.glob("*.partial.ipynb")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    partial = next(runs.glob("*.partial.ipynb"))
    assert CANARY not in partial.read_text()  # the partial copy is redacted too
    started = next(e for e in Record.open(records, ID).events() if e["type"] == "notebook.started")
    workdir = Path(started["data"]["workdir"])
    assert workdir.is_dir()
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel
    proc.wait()

    res = irkit("verify", ID, "--records", str(records), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "was interrupted" in res.stderr
    rec = Record.open(records, ID)
    interrupted = [e for e in rec.events() if e["type"] == "run.interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["data"]["partial"] is True
    rel = interrupted[0]["data"]["path"]
    assert rel == "notebooks/01-triage.ipynb" and rel in rec.state()["artifacts"]
    nb = nbformat.read(str(rec.path / rel), as_version=4)
    text = json.dumps(nb.dict())
    assert "step one done" in _printed(rec.path / rel) and "interrupted" in nb.cells[0].source and CANARY not in text
    assert not workdir.exists() and not partial.exists()
    # Recovery happens once; the next verify has nothing to recover and the record still verifies.
    again = irkit("verify", ID, "--records", str(records), env=env)
    assert again.returncode == 0 and "interrupted" not in again.stderr
    assert [r["outcome"] for r in rec.state()["runs"]] == ["interrupted"]


def test_a_live_run_is_not_taken_for_an_interrupted_one(setup) -> None:
    records, env = setup
    proc = start_run(records, env)
    try:
        runs = records / ID / ".runs"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list(runs.glob("*.partial.ipynb")):
            time.sleep(0.1)
        res = irkit("verify", ID, "--records", str(records), env=env)
        assert res.returncode == 0 and "interrupted" not in res.stderr
        assert not [e for e in Record.open(records, ID).events() if e["type"] == "run.interrupted"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.fail("cannot mount a tmpfs (the suite runs as root on CI)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def fill(disk: Path) -> Path:
    """Fill every byte left on ``disk`` with one file; returns it (unlink it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_while_sealing_is_one_line_and_the_record_still_verifies(tiny_disk: Path, tmp_path: Path) -> None:
    records = tiny_disk / "reports"
    env = {**os.environ, "IRKIT_ACTOR": "tester"}
    rec = Record.create(records, ID, title="t", service="svc", actor="tester")
    rec.note("before the disk filled", actor="tester")
    filler = fill(tiny_disk)
    from irkit.errors import StorageError

    with pytest.raises(StorageError, match="cannot write"):
        rec.seal_one("figures/big.png", os.urandom(64 * 1024), actor="tester", kind="figure")
    for verb in (["status", ID, "acknowledged"], ["open", "--title", "another"]):
        res = irkit(*verb, "--records", str(records), env=env)
        assert res.returncode in (0, 1), res.stderr
        assert "Traceback" not in res.stderr and res.stderr.count("\n") <= 1, res.stderr
    filler.unlink()
    shutil.rmtree(records / ID / ".runs", ignore_errors=True)
    res = irkit("verify", ID, "--records", str(records), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list((records / ID / "figures").glob("big*"))  # nothing half-written is kept


def test_a_set_sealed_together_is_all_sealed_or_leaves_no_file_when_the_disk_fills_midway(tiny_disk: Path) -> None:
    from irkit.errors import StorageError

    records = tiny_disk / "reports"
    rec = Record.create(records, ID, title="t", service="svc", actor="tester")
    reserve = tiny_disk / "reserve"
    reserve.write_bytes(b"\0" * 100 * 1024)  # what will be left once the rest is full
    filler = fill(tiny_disk)
    reserve.unlink()
    files = {f"data/signals/s{i}.csv": os.urandom(60 * 1024) for i in range(3)}  # the first fits, not the second
    before = len(rec.events())
    with pytest.raises(StorageError) as failed:
        rec.seal(lambda n: files, actor="tester", kind="signal")
    assert "\n" not in str(failed.value)
    assert len(rec.events()) == before and not list((records / ID / "data" / "signals").iterdir())
    report = rec.verify()
    assert report.ok and not report.unaccounted, report.summary()

    filler.unlink()
    assert rec.seal(lambda n: files, actor="tester", kind="signal") == list(files)
    added = [e for e in rec.events() if e["type"] == "artifact.added"]
    assert [e["data"]["path"] for e in added] == list(files)
    assert [e["seq"] for e in added] == list(range(before + 1, before + 4))
    report = rec.verify()
    assert report.ok and not report.unaccounted, report.summary()
