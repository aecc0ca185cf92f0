"""The warm kernel pool: isolation, dead idle kernels, clean shutdown, concurrency."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_runner import _kernel_children

from irkit.config import load_config
from irkit.kernels import KernelPool
from irkit.record import Record
from irkit.runner import Runbook, RunbookRegistry, run_runbook
from support import CONTRACT_PARAMETERS, write_notebook


@pytest.fixture
def book(tmp_path: Path) -> RunbookRegistry:
    d = tmp_path / "books"
    d.mkdir()
    reg = RunbookRegistry(d)
    write_notebook(d / "set.ipynb", CONTRACT_PARAMETERS, ["leak = 42", "import os\nprint(os.getcwd())"])
    write_notebook(
        d / "check.ipynb",
        CONTRACT_PARAMETERS,
        [
            "assert 'leak' not in globals(), 'state leaked from a previous run'",
            "import os, sys\nprint('actor', os.environ['IRKIT_ACTOR'], 'pandas' in sys.modules)",
        ],
    )
    reg.register(Runbook("set", 1, "set.ipynb", "set"))
    reg.register(Runbook("check", 2, "check.ipynb", "check"))
    return reg


@pytest.fixture
def rec(records: Path) -> Record:
    return Record.create(records, "INC-POOL-1", title="t", service="s", actor="tester")


def run(rec: Record, book: RunbookRegistry, name: str, pool: KernelPool, actor: str = "alice"):
    return run_runbook(rec, name, settings=load_config(None, {}), environ={}, actor=actor, registry=book, pool=pool)


def outputs(rec: Record, rel: str) -> str:
    return (rec.path / rel).read_text()


def test_runs_are_isolated_and_get_their_own_cwd_and_actor(rec: Record, book: RunbookRegistry) -> None:
    with KernelPool(1, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        first = run(rec, book, "set", pool)
        assert first.ok and str(rec.path) in outputs(rec, first.path)
        assert pool.wait_ready()
        second = run(rec, book, "check", pool, actor="bob")
        assert second.ok, second.summary()  # 'leak' from the first run is not visible
        assert "actor bob True" in outputs(rec, second.path)  # pre-imported pandas, this run's actor
        assert pool.started >= 2  # single use: each run had its own kernel


def test_a_kernel_killed_while_idle_is_replaced(rec: Record, book: RunbookRegistry) -> None:
    with KernelPool(1, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        idle = pool._ready.queue[0]
        os.kill(idle.km.provisioner.process.pid, signal.SIGKILL)
        idle.km.provisioner.process.wait()
        res = run(rec, book, "check", pool)
        assert res.ok, res.summary()
        assert pool.discarded == 1  # detected dead and discarded; the run got a live kernel


def test_no_kernel_is_left_after_shutdown(rec: Record, book: RunbookRegistry) -> None:
    pool = KernelPool(2, env=dict(os.environ))
    assert pool.wait_ready()
    assert run(rec, book, "set", pool).ok
    pool.shutdown()
    assert _kernel_children() == []


def test_eight_concurrent_runs_through_the_pool(rec: Record, book: RunbookRegistry) -> None:
    with KernelPool(2, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        with ThreadPoolExecutor(max_workers=8) as ex:
            results = list(ex.map(lambda i: run(rec, book, "check", pool, actor=f"user{i}"), range(8)))
    assert all(r.ok for r in results), [r.summary() for r in results]
    assert len({r.path for r in results}) == 8 and rec.verify().ok
    assert _kernel_children() == []


def test_stale_warm_kernel_dirs_of_a_dead_pool_are_removed(tmp_path) -> None:
    import subprocess
    import tempfile
    from pathlib import Path

    from irkit.kernels import remove_stale_kernel_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix="irkit-kernel-"))
    (stale / "owner.pid").write_text(str(dead.pid))
    (stale / "connection.json").write_text("{}")
    live = Path(tempfile.mkdtemp(prefix="irkit-kernel-"))
    (live / "owner.pid").write_text(str(os.getpid()))
    try:
        assert remove_stale_kernel_dirs() >= 1
        assert not stale.exists() and live.exists()
    finally:
        import shutil

        shutil.rmtree(live, ignore_errors=True)


def test_a_run_waits_for_the_kernel_already_starting_instead_of_starting_a_second() -> None:
    with KernelPool(1, env=dict(os.environ)) as pool:
        first = pool.take()  # at once: nothing is ready yet, but the pool's first kernel is on its way
        assert first is not None and first.alive()
        assert pool.started == 1
        pool.retire(first)


def test_a_replacement_waits_for_the_retirement_while_another_kernel_is_ready() -> None:
    """Taking a kernel while another waits starts nothing (the run keeps the CPU; the next caller is
    served by the other one); retiring it starts its replacement. Taking the last one starts every
    replacement at once, the one put off included: under load nothing waits for a retirement."""
    import time

    with KernelPool(2, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        first = pool.take()
        assert first is not None
        time.sleep(0.5)  # a replacement started now would be well under way
        assert (pool.launched, pool.ready()) == (2, 1)
        pool.retire(first)  # its replacement, put off until now
        assert pool.wait_ready(2, timeout=60) and pool.launched == 3
        a, b = pool.take(), pool.take()  # the second leaves none: both replacements start, neither retired
        assert a is not None and b is not None
        assert pool.wait_ready(2, timeout=60) and pool.launched == 5
        c = pool.take()  # a spare is left: c's replacement waits for c
        assert c is not None
        for k in (a, b):  # owed nothing, and c's replacement is not theirs to start
            pool.retire(k)
        time.sleep(0.5)
        assert pool.launched == 5 and pool.ready() == 1
        pool.retire(c)
        assert pool.wait_ready(2, timeout=60) and pool.launched == 6


def test_a_limited_pool_starts_no_kernel_beyond_its_limit() -> None:
    with KernelPool(1, env=dict(os.environ), limit=2) as pool:
        taken = [pool.take(), pool.take()]
        assert all(k is not None for k in taken)
        assert pool.take(timeout=1.0) is None  # the limit is reached: the caller starts its own kernel
        assert pool.launched == 2 and pool.started == 2
        for k in taken:
            assert k is not None
            pool.retire(k)


def _ask(wk, code: str, timeout: float = 30) -> str:
    """Run ``code`` on a taken kernel and return what it printed."""
    out: list[str] = []
    kc = wk.km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        kc.execute_interactive(
            code, timeout=timeout, output_hook=lambda m: out.append(m["content"].get("text", "")), allow_stdin=False
        )
    finally:
        kc.stop_channels()
    return "".join(out)


def test_pool_kernels_are_fresh_forks_of_one_preloaded_server() -> None:
    with KernelPool(2, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        a, b = pool.take(), pool.take()
        assert a is not None and b is not None
        ask = (
            "import gc, os, sys, ipykernel.debugger as d, irkit.plots as p\n"
            # the server froze what it imported: a module it imported is in no generation a collection walks
            "server = not any(o is d.__dict__ for o in gc.get_objects())\n"
            "print(os.getpid(), os.getppid(), 'pandas' in sys.modules, server, sorted(p._SPARE))"
        )
        said = [_ask(k, ask) for k in (a, b)]
        (pid_a, parent_a, pre_a, dbg_a, spare_a), (pid_b, parent_b, pre_b, dbg_b, spare_b) = (s.split(maxsplit=4) for s in said)
        server = str(pool._zygote.proc.pid)
        assert parent_a == parent_b == server and pid_a != pid_b  # two processes, forked by the one server
        assert pre_a == pre_b == "True"  # pandas came with the fork, imported once by the server
        assert dbg_a == dbg_b == "True"  # so did ipykernel's debugger, which every kernel imports as it starts
        assert spare_a.strip() == spare_b.strip() == "[(1, 1), (3, 2)]"  # each fork has its own prepared figures
        assert pool.forked >= 2
        for k in (a, b):
            pool.retire(k)


def test_an_interrupt_reaches_a_forked_kernel() -> None:
    with KernelPool(1, env=dict(os.environ)) as pool:
        wk = pool.take(timeout=60)
        assert wk is not None
        out: list[str] = []

        def hook(msg: dict) -> None:  # interrupt once the cell is surely running
            text = msg["content"].get("text", "")
            out.append(text)
            if "sleeping" in text:
                wk.km.interrupt_kernel()

        kc = wk.km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)
            code = (  # the print is inside the try: the interrupt may land right after it
                "import time\ntry:\n    print('sleeping', flush=True)\n    time.sleep(60)\n"
                "except KeyboardInterrupt:\n    print('interrupted')"
            )
            kc.execute_interactive(code, timeout=30, output_hook=hook, allow_stdin=False)
        finally:
            kc.stop_channels()
        assert "interrupted" in "".join(out)
        pool.retire(wk)


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(stat.parent.name))
        except OSError:  # a process that ended while we looked
            continue
    return found


def test_the_fork_server_and_its_kernels_end_when_the_pool_process_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    script = (
        "import os, sys\nfrom irkit.kernels import KernelPool\n"
        "pool = KernelPool(2, env=dict(os.environ)); assert pool.wait_ready()\n"
        "print(pool._zygote.proc.pid, flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server = int(proc.stdout.readline())
    forks = [
        p.parent.name
        for p in Path("/proc").glob("[0-9]*/stat")
        if p.read_text().rsplit(")", 1)[1].split()[1] == str(server)
    ]
    assert len(forks) == 2  # the two warm kernels are the server's children
    proc.kill()  # kill -9 the pool's process: nobody shuts anything down
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in [server, *forks]):
        time.sleep(0.1)
    assert [p for p in [server, *forks] if Path(f"/proc/{p}").exists()] == []


def test_the_engine_hands_each_completed_cell_over_and_the_notebook_without_a_file(tmp_path: Path) -> None:
    import nbformat
    import papermill

    from irkit.engine import ENGINE_NAME

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print({i} * 7)") for i in range(3)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "three.ipynb"
    nbformat.write(nb, str(source))
    done: list[tuple[str, str]] = []
    executed: list = []
    with KernelPool(1, env=dict(os.environ)) as pool:
        papermill.execute_notebook(
            str(source),
            None,
            engine_name=ENGINE_NAME,
            kernel_pool=pool,
            kernel_cwd=str(tmp_path),
            progress_bar=False,
            on_cell=lambda cell: done.append((cell.source, "".join(o.get("text", "") for o in cell.outputs))),
            executed=executed,
        )
    assert done == [(f"print({i} * 7)", f"{i * 7}\n") for i in range(3)]  # each cell, complete, in order
    assert len(executed) == 1 and executed[0].metadata.papermill["output_path"] is None
    assert [c.outputs[0]["text"] for c in executed[0].cells] == ["0\n", "7\n", "14\n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["three.ipynb"]  # nothing written beside it


def test_the_engine_hands_a_cell_over_once_the_next_one_is_under_way_and_all_of_them_by_the_end(
    tmp_path: Path,
) -> None:
    """The runner redacts handed-over cells on a thread of its own: handed over while the client is about
    to send the next request, that thread held the GIL the send was waiting for. A cell is handed over
    once the next code cell's request is on its way (papermill has marked that cell running), and by the
    end every cell that ran is, a failed one included; a cell after the failure is not."""
    import nbformat
    import papermill

    from irkit.engine import ENGINE_NAME

    sources = ["a = 1", "a + 1", "raise ValueError('stop here')", "a + 3"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.cells.insert(2, nbformat.v4.new_markdown_cell("between"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "four.ipynb"
    nbformat.write(nb, str(source))
    executed: list = []
    handed: list[tuple[str, list[str]]] = []  # each handed cell, and the status of every cell just then

    def on_cell(cell) -> None:
        handed.append((cell.source, [c.metadata.get("papermill", {}).get("status") for c in executed[0].cells]))

    with KernelPool(1, env=dict(os.environ)) as pool, pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(source), None, engine_name=ENGINE_NAME, kernel_pool=pool, kernel_cwd=str(tmp_path),
            progress_bar=False, on_cell=on_cell, executed=executed,
        )
    assert [h[0] for h in handed] == ["a = 1", "a + 1", "between", sources[2]]
    # Cells 0 and 1 wait for the next code cell to be under way; the markdown cell and the failed cell,
    # after which nothing is sent, are handed over when the run ends.
    assert handed[0][1][:2] == ["completed", "running"]
    assert handed[1][1][:4] == ["completed", "completed", "completed", "running"]
    assert handed[3][1] == ["completed", "completed", "completed", "failed", "pending"]


@pytest.mark.parametrize("how", ["forked", "from scratch"])
def test_runbook_kernels_keep_no_ipython_history(how: str, rec: Record, book: RunbookRegistry, tmp_path: Path) -> None:
    """IPython would copy every cell (parameters included) into a history file outside the record."""
    write_notebook(book.directory / "linger.ipynb", CONTRACT_PARAMETERS, ["leak = 42", "import time\ntime.sleep(1)"])
    book.register(Runbook("linger", 3, "linger.ipynb", "linger"))  # a second for a history writer to write
    ipython_dir = tmp_path / "ipython"
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    with KernelPool(1, env=env, fork=how == "forked") as pool:
        assert pool.wait_ready()
        result = run(rec, book, "linger", pool)
        assert (pool.forked > 0) == (how == "forked")
    assert result.ok, result.summary()
    assert (ipython_dir / "profile_default").is_dir()  # the kernel did use this IPython directory
    kept = [p.name for p in ipython_dir.rglob("*") if p.is_file() and b"leak = 42" in p.read_bytes()]
    assert kept == []


@pytest.mark.parametrize("how", ["forked", "from scratch"])
def test_pool_kernels_skip_empty_flushes_yet_every_output_lands_in_its_own_cell_in_order(
    how: str, rec: Record, book: RunbookRegistry
) -> None:
    """The pool's kernels use irkit.outstream, whose flush returns at once when nothing is buffered."""
    import nbformat

    cells = [
        "import sys\nprint(type(sys.stdout).__module__, type(sys.stderr).__module__)",
        "from IPython.display import HTML, display\nprint('before')\ndisplay(HTML('<b>shown</b>'))\nprint('after')",
        "import threading\nt = threading.Thread(target=lambda: print('from a thread'))\nt.start(); t.join()",
        "_ = sys.stdout.write('no newline at the end')",
        "print('x' * 200_000)\nprint('to stderr', file=sys.stderr)",
        "sys.stdout.flush(); sys.stderr.flush(); 'quiet cell'",
        *[TAKEN] * 3,
    ]
    write_notebook(book.directory / "streams.ipynb", CONTRACT_PARAMETERS, cells)
    book.register(Runbook("streams", 3, "streams.ipynb", "streams"))
    with KernelPool(1, env=dict(os.environ), fork=how == "forked") as pool:
        assert pool.wait_ready()
        result = run(rec, book, "streams", pool)
    assert result.ok, result.summary()
    nb = nbformat.read(str(rec.path / result.path), as_version=4)
    got = [_shown(c.outputs) for c in nb.cells if c.source in cells]
    assert got[0] == [("stream", "stdout", "irkit.outstream irkit.outstream\n")]
    assert got[1] == [("stream", "stdout", "before\n"), ("display_data", None, "<b>shown</b>"), ("stream", "stdout", "after\n")]
    assert got[2] == [("stream", "stdout", "from a thread\n")]
    assert got[3] == [("stream", "stdout", "no newline at the end")]
    assert got[4] == [("stream", "stdout", "x" * 200_000 + "\n"), ("stream", "stderr", "to stderr\n")]
    quiet = next(c for c in nb.cells if c.source == cells[5])
    assert got[5] == [("execute_result", None, "")] and quiet.outputs[0]["data"]["text/plain"] == "'quiet cell'"
    # The cell ends while the IOPub thread is still sending its text: the flush must wait for it, or
    # the cell's idle status overtakes the text and nbclient drops it (all three lost it before).
    assert got[6:] == [[("stream", "stdout", "x" * 1_000_000 + "\n")]] * 3


def _shown(outputs: list) -> list[tuple[str, str | None, str]]:
    """A cell's outputs as a reader sees them: adjacent pieces of one stream read as one text.

    ``print`` writes its text and its newline separately, and ipykernel's timed flush may send them
    as two stream messages (so nbclient keeps two outputs): the same text, in the same place. What
    matters here is that no text is lost, moved to another cell or put out of order.
    """
    shown: list[tuple[str, str | None, str]] = []
    for o in outputs:
        text = o.get("text") or "".join(o.get("data", {}).get("text/html", ""))
        if shown and o["output_type"] == "stream" and shown[-1][:2] == ("stream", o.get("name")):
            shown[-1] = ("stream", o.get("name"), shown[-1][2] + text)
        else:
            shown.append((o["output_type"], o.get("name"), text))
    return shown


# Prints 1 MB, then ends only once the IOPub thread has taken the text (ipykernel's own attributes),
# while that thread is still serializing it.
TAKEN = (
    "print('x' * 1_000_000)\n"
    "while sys.stdout._flush_pending or any(b.tell() for b in sys.stdout._buffers.values()):\n"
    "    pass"
)


def test_a_kernel_is_ready_once_it_answers_even_while_its_iopub_never_goes_quiet() -> None:
    """Readiness is the kernel's own answer, not 0.2 s of IOPub silence (which a chatty kernel never gives)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from irkit.kernels import handshake

    chatter = (
        "import threading, time\n"
        "threading.Thread(target=lambda: [print('tick', flush=True) or time.sleep(0.02) for _ in range(1500)],"
        " daemon=True).start()"
    )
    with KernelPool(1, env=dict(os.environ)) as pool:
        assert pool.wait_ready()
        wk = pool.take()
        assert wk is not None
        try:
            kc = wk.km.client()
            kc.start_channels()
            kc.execute_interactive(chatter, timeout=10)
            kc.stop_channels()
            kc = wk.km.client()  # a new client, as the runner's is, while the kernel keeps printing
            kc.start_channels()
            # On a thread of its own, as the pool runs it: once a browser test has run on this xdist worker,
            # Playwright's sync API leaves this thread's asyncio loop marked as running.
            with ThreadPoolExecutor(1) as ex:  # raises "did not answer in 10 s" if it waited for quiet
                ex.submit(asyncio.run, handshake(kc, 10, wk.km)).result()
            assert kc.execute_interactive("1 + 1", timeout=10)["content"]["status"] == "ok"
            kc.stop_channels()
        finally:
            pool.retire(wk)


def test_the_last_and_a_failed_cell_are_handed_over_while_the_kernel_still_runs(tmp_path: Path) -> None:
    """A cell with no next request is handed over as soon as the cells are done, not after nbclient has
    shut its kernel down (seconds, in which a killed runner's partial notebook would lack it)."""
    import nbformat
    import papermill

    from irkit.engine import ENGINE_NAME

    sources = ["import os\nopen('kernel.pid', 'w').write(str(os.getpid()))", "1 / 0"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "fails.ipynb"
    nbformat.write(nb, str(source))
    kernel_alive: dict[str, bool] = {}

    def on_cell(cell) -> None:
        pid = (tmp_path / "kernel.pid").read_text()
        status = Path(f"/proc/{pid}/status")
        kernel_alive[cell.source] = status.exists() and "\nState:\tZ" not in status.read_text()

    with pytest.raises(papermill.PapermillExecutionError):  # a kernel of its own: nbclient starts and stops it
        papermill.execute_notebook(
            str(source), None, engine_name=ENGINE_NAME, kernel_cwd=str(tmp_path), progress_bar=False, on_cell=on_cell
        )
    assert kernel_alive == {sources[0]: True, sources[1]: True}
