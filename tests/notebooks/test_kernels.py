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


def test_a_limited_pool_starts_no_kernel_beyond_its_limit() -> None:
    with KernelPool(1, env=dict(os.environ), limit=2) as pool:
        taken = [pool.take(), pool.take()]
        assert all(k is not None for k in taken)
        assert pool.take(timeout=1.0) is None  # the limit is reached: the caller starts its own kernel
        assert pool.launched == 2 and pool.started == 2
        for k in taken:
            assert k is not None
            pool.retire(k)
