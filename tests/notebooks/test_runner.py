"""The runner against real kernels: true outcomes, secrets kept out, parameters kept as data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nbformat
import pytest

from irkit.config import load_config
from irkit.errors import ParameterError
from irkit.record import Record
from irkit.runner import Runbook, RunbookRegistry, prepare_runbook, run_runbook, seal_notebook
from support import CONTRACT_PARAMETERS, write_notebook

ID = "INC-RUN-1"
CANARY = 'canary-7f3c"9d2e\\s3cr3t<&>'  # quotes, a backslash and HTML metacharacters: escaped forms too


@pytest.fixture
def book(tmp_path: Path) -> RunbookRegistry:
    d = tmp_path / "books"
    d.mkdir()
    return RunbookRegistry(d)


def add(reg: RunbookRegistry, name: str, cells: list[str], extra_params: str = "") -> None:
    write_notebook(reg.directory / f"{name}.ipynb", CONTRACT_PARAMETERS + extra_params, cells)
    reg.register(Runbook(name, len(reg.names()) + 1, f"{name}.ipynb", name))


@pytest.fixture
def rec(records: Path) -> Record:
    return Record.create(records, ID, title="t", service="svc", actor="tester")


def run(rec: Record, reg: RunbookRegistry, name: str, params=None, *, timeout: float = 30, env=None, config=None):
    env = dict(env or {})
    settings = config or load_config(None, {"IRKIT_RUNNER__EXECUTION_TIMEOUT_S": str(timeout)})
    return run_runbook(rec, name, params, settings=settings, environ=env, actor="tester", registry=reg)


def executed(rec: Record, rel: str) -> nbformat.NotebookNode:
    return nbformat.read(str(rec.path / rel), as_version=4)


def test_ok_run_is_sealed_with_provenance(rec: Record, book: RunbookRegistry) -> None:
    add(book, "hello", ["import scrapbook as sb\nsb.glue('answer', 42)\nprint('hi', incident_id)"])
    res = run(rec, book, "hello")
    assert res.ok and res.summary() == "ok"
    assert res.path == "notebooks/01-hello.ipynb"
    nb = executed(rec, res.path)
    prov = nb.metadata["irkit"]
    assert prov["outcome"] == "ok" and prov["actor"] == "tester" and prov["runbook"] == "hello"
    assert prov["source_sha256"] == hashlib.sha256((book.directory / "hello.ipynb").read_bytes()).hexdigest()
    assert prov["parameters"]["incident_id"] == ID
    assert any("hi INC-RUN-1" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    finished = [e for e in rec.events() if e["type"] == "notebook.finished"][-1]["data"]
    assert finished["sha256"] == hashlib.sha256((rec.path / res.path).read_bytes()).hexdigest()
    assert finished["outcome"] == "ok"
    assert rec.verify().ok
    # the kernel ran inside the record
    assert rec.state()["runs"][0]["outcome"] == "ok"


def test_papermill_serializes_nothing_but_its_steps_are_all_there(
    rec: Record, book: RunbookRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """papermill's steps run (parameters cell injected, its metadata, a failed cell raised) but it writes
    no copy of its own: ``execute_notebook`` used to serialize the whole executed notebook at the end
    with no output path, only to drop the text."""
    import papermill.execute
    import papermill.iorw

    writes: list[object] = []
    for module in (papermill.execute, papermill.iorw):
        real = module.write_ipynb
        monkeypatch.setattr(module, "write_ipynb", lambda nb, path, real=real: (writes.append(path), real(nb, path)))
    add(book, "hello", ["print('hi', incident_id)"])
    add(book, "boom", ["1 / 0"])
    ok, failed = run(rec, book, "hello"), run(rec, book, "boom")
    assert ok.ok and failed.outcome == "failed" and failed.ename == "ZeroDivisionError"
    assert writes == [None]  # only a failed run's: papermill's error markers, written nowhere
    nb = executed(rec, ok.path)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and f'incident_id = "{ID}"' in injected[0].source
    assert nb.metadata["papermill"]["input_path"] == str(book.directory / "hello.ipynb")
    assert nb.metadata["papermill"]["parameters"]["incident_id"] == ID


def _kernel_children() -> list[str]:
    """Command lines of this process's descendants that are Jupyter kernels, their stand-ins, or the
    kernel fork server (irkit.zygote: its forks keep its command line)."""
    parents: dict[str, str] = {}
    cmds: dict[str, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[stat.parent.name], cmds[stat.parent.name] = fields[1], cmd
    mine, grew = {str(os.getpid())}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return [cmds[p] for p in mine if p in cmds and ("ipykernel" in cmds[p] or "irkit.zygote" in cmds[p])]


@pytest.mark.parametrize("cells", [["1"], ["1 / 0"]], ids=["ok", "failed"])
def test_no_kernel_is_left_behind(rec: Record, book: RunbookRegistry, cells: list[str]) -> None:
    add(book, "hello", cells)
    run(rec, book, "hello")
    assert _kernel_children() == []


def test_reruns_get_r2_r3(rec: Record, book: RunbookRegistry) -> None:
    add(book, "hello", ["1 + 1"])
    paths = [run(rec, book, "hello").path for _ in range(3)]
    assert paths == ["notebooks/01-hello.ipynb", "notebooks/01-hello.r2.ipynb", "notebooks/01-hello.r3.ipynb"]


def test_raising_cell_is_failed_at_cell_n(rec: Record, book: RunbookRegistry) -> None:
    add(book, "boom", ["x = 1", "raise ValueError('</code><img src=x onerror=alert(1)>')", "print('never')"])
    res = run(rec, book, "boom")
    assert res.outcome == "failed" and res.ename == "ValueError"
    nb = executed(rec, res.path)
    assert "raise ValueError" in nb.cells[res.cell - 1].source
    assert "irkit-failed-cell" in nb.cells[res.cell - 1].metadata["tags"]
    banner = nb.cells[0].source
    assert f"failed at cell {res.cell} " in banner  # the banner names the same cell as the event
    assert "<img" not in banner and "&lt;img" in banner
    assert res.summary().startswith(f"failed at cell {res.cell} (ValueError")
    assert nb.metadata["irkit"]["outcome"] == "failed"
    assert rec.verify().ok


def test_timeout_is_not_ok(rec: Record, book: RunbookRegistry) -> None:
    add(book, "slow", ["x = 1", "import time\ntime.sleep(30)", "print('never')"])
    res = run(rec, book, "slow", timeout=2)
    assert res.outcome == "timeout", res.summary()
    nb = executed(rec, res.path)
    assert "time.sleep(30)" in nb.cells[res.cell - 1].source
    assert nb.cells[0].metadata["tags"] == ["irkit-outcome"] and "timeout" in nb.cells[0].source
    assert nb.metadata["irkit"]["outcome"] == "timeout"
    assert rec.verify().ok


def test_kernel_death_is_not_ok(rec: Record, book: RunbookRegistry) -> None:
    add(book, "die", ["x = 1", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "print('never')"])
    res = run(rec, book, "die")
    assert res.outcome == "kernel died", res.summary()
    nb = executed(rec, res.path)
    assert "SIGKILL" in nb.cells[res.cell - 1].source
    finished = [e for e in rec.events() if e["type"] == "notebook.finished"][-1]["data"]
    assert finished["outcome"] == "kernel died"


def test_canary_secret_never_lands_in_the_record(rec: Record, book: RunbookRegistry, tmp_path: Path) -> None:
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text("secrets: [IRKIT_TEST_CANARY]\n")
    settings = load_config(cfg, {}, required=True)
    add(
        book,
        "leaky",
        [
            "import os, hashlib\nsecret = os.environ['IRKIT_TEST_CANARY']\n"
            "print('digest', hashlib.sha256(secret.encode()).hexdigest())",
            "print('leaking', secret)\nprint(repr(secret))\nprint({'dsn': secret})",
            "import json\nprint(json.dumps(secret))\ntoken",
            "from IPython.display import HTML\nimport html\nHTML('<b>' + html.escape(secret) + '</b>')",
            "raise RuntimeError('failed with ' + secret)",
        ],
        extra_params='token: str = ""\n',
    )
    res = run_runbook(
        rec,
        "leaky",
        {"token": CANARY},  # passed by mistake as a parameter
        settings=settings,
        environ={"IRKIT_TEST_CANARY": CANARY},
        actor="tester",
        registry=book,
    )
    assert res.outcome == "failed"  # the traceback with the secret is in the notebook, redacted
    assert "canary" not in res.summary()
    raw = (rec.path / res.path).read_text()
    digest = hashlib.sha256(CANARY.encode()).hexdigest()
    assert f"digest {digest}" in raw  # the secret reached the kernel through its environment …
    assert CANARY not in raw  # … and appears nowhere in the sealed file
    assert "[REDACTED]" in raw
    for f in rec.path.rglob("*"):
        if f.is_file():
            assert b"7f3c" not in f.read_bytes(), f  # no form of the secret, escaped or not


def test_hostile_parameter_string_is_data(rec: Record, book: RunbookRegistry, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = (
        f'"; open({str(marker)!r}, "w").write("x"); x = "\n'
        f"''' \\\" \\n {{}} %s $(touch {marker}) \n__import__('os').system('touch {marker}')\n\\"
    )
    add(
        book,
        "echo",
        ["import json, pathlib\npathlib.Path('received.json').write_text(json.dumps(title))"],
        extra_params='title: str = ""\n',
    )
    res = run(rec, book, "echo", {"title": hostile})
    assert res.ok, res.summary()
    assert json.loads((rec.path / "received.json").read_text()) == hostile
    assert not marker.exists()


def test_undeclared_and_reserved_parameters_are_refused(rec: Record, book: RunbookRegistry) -> None:
    add(book, "hello", ["1"])
    with pytest.raises(ParameterError, match="no parameter 'nope'"):
        run(rec, book, "hello", {"nope": 1})
    with pytest.raises(ParameterError, match="set by irkit"):
        run(rec, book, "hello", {"incident_id": "INC-OTHER-1"})
    assert [e["type"] for e in rec.events()] == ["incident.opened"]


def test_prepare_then_seal(rec: Record, book: RunbookRegistry, tmp_path: Path) -> None:
    add(book, "hello", ["print('step')"])
    settings = load_config(None, {})
    rel = prepare_runbook(rec, "hello", settings=settings, environ={}, actor="tester", registry=book)
    assert rel == "notebooks/01-hello.ipynb"
    nb = executed(rec, rel)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    report = rec.verify()
    assert report.ok and report.working_copies == [rel]
    # the responder leaves a secret-looking output behind; sealing scrubs it
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="Authorization: Bearer abcdefghijklmnop\n")]
    nbformat.write(nb, str(rec.path / rel))
    seal_notebook(rec, rel, settings=settings, environ={}, actor="tester")
    report = rec.verify()
    assert report.ok and report.working_copies == [] and report.artifacts == 1
    assert "abcdefghijklmnop" not in (rec.path / rel).read_text()
    (rec.path / rel).write_text((rec.path / rel).read_text().replace("step", "STEP"))
    assert not rec.verify().ok


def test_kernel_that_cannot_start_seals_nothing(rec: Record, book: RunbookRegistry) -> None:
    add(book, "hello", ["1"])
    settings = load_config(None, {"IRKIT_RUNNER__KERNEL_NAME": "no-such-kernel"})
    res = run_runbook(rec, "hello", settings=settings, environ={}, actor="tester", registry=book)
    assert res.outcome == "error" and res.sha256 is None and res.ename == "NoSuchKernel"
    assert not (rec.path / res.path).exists()
    assert rec.verify().ok


def test_prepared_working_copy_holds_no_secret(rec: Record, book: RunbookRegistry, tmp_path: Path) -> None:
    add(book, "leaky", ["token"], extra_params='token: str = ""\n')
    settings = load_config(None, {"IRKIT_SECRETS": "[IRKIT_TEST_CANARY]"})
    rel = prepare_runbook(
        rec,
        "leaky",
        {"token": CANARY},
        settings=settings,
        environ={"IRKIT_TEST_CANARY": CANARY},
        actor="tester",
        registry=book,
    )
    assert b"7f3c" not in (rec.path / rel).read_bytes()
    assert b"7f3c" not in rec.events_path.read_bytes()
