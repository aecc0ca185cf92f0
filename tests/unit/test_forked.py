"""Figures drawn ahead in a forked child: the same bytes, or nothing and the caller draws in process."""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
from pathlib import Path

import pytest

from irkit import forked, plots
from irkit.cluster import RecordedCluster, capture, snapshot
from irkit.config import load_config
from irkit.demo import SCENARIO_DIR, open_demo_incident
from irkit.errors import BadInputError
from irkit.events import Status
from irkit.session import Session
from irkit.sources import RecordedSource, copy_recording


def _gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie of ours."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped (by us or by the code under test)
    return False


def test_the_childs_bytes_come_back_whole_even_past_a_pipes_buffer() -> None:
    data = os.urandom(300_000)  # more than a pipe holds: the child blocks until the parent reads
    job = forked.start(lambda: data)
    assert job is not None
    assert job.result() == data and job.outcome == "ok"
    assert _gone(job.pid) and job.result() is None  # collected once


def _raise() -> bytes:
    raise RuntimeError("boom")


def _warn() -> bytes:
    warnings.warn("Glyph 128293 missing from font(s) DejaVu Sans.", UserWarning, stacklevel=1)
    return b"drawn with a missing glyph"


def _log() -> bytes:
    logging.getLogger("matplotlib.ticker").warning("Locator attempting to generate 5000 ticks")
    return b"drawn after a logged warning"


@pytest.mark.parametrize(("work", "outcome"), [(_raise, "failed"), (_warn, "warned"), (_log, "warned")])
def test_a_child_that_fails_or_warns_gives_nothing_so_the_caller_draws_in_process(work, outcome) -> None:
    job = forked.start(work)
    assert job is not None
    assert job.result() is None and job.outcome == outcome and _gone(job.pid)


def test_a_child_past_its_time_is_killed_and_reaped() -> None:
    job = forked.start(lambda: time.sleep(30) or b"late")
    assert job is not None
    t = time.monotonic()
    assert job.result(timeout_s=0.3) is None and job.outcome == "timed out"
    assert time.monotonic() - t < 10 and _gone(job.pid)


def test_work_given_up_or_dropped_leaves_no_child_behind() -> None:
    job = forked.start(lambda: b"x" * 200_000)  # blocks on the full pipe until someone reads or kills it
    assert job is not None
    job.cancel()
    assert job.outcome == "cancelled" and _gone(job.pid) and job.result() is None
    dropped = forked.start(lambda: b"x" * 200_000)
    assert dropped is not None
    pid = dropped.pid
    del dropped
    gc.collect()
    assert _gone(pid)


def test_only_linux_forks(monkeypatch) -> None:
    monkeypatch.setattr(forked.sys, "platform", "darwin")
    assert forked.start(lambda: b"x") is None


@pytest.fixture
def session(tmp_path: Path) -> Session:
    settings = load_config(None, {})
    records = tmp_path / "reports"
    rec = open_demo_incident(records, settings, "t")
    copy_recording(RecordedSource(SCENARIO_DIR / "signals"), rec, actor="t")
    snapshot(rec, capture(RecordedCluster(SCENARIO_DIR / "cluster")), actor="t")
    return Session(rec, settings, actor="t", batch=True)


def _sealed(session: Session, name: str) -> bytes:
    return (session.record.path / "figures" / f"{name}.png").read_bytes()


def _drawn(session: Session, name: str) -> str:
    """How the figure's event says it was drawn."""
    (found,) = [
        e["data"]["drawn"]
        for e in session.record.events()
        if e["type"] == "artifact.added" and e["data"]["path"] == f"figures/{name}.png"
    ]
    return str(found)


def test_a_figure_drawn_ahead_is_the_very_image_drawn_in_process(session) -> None:
    m = session.metrics("recorded", draw=["golden-signals", "error_ratio"])
    jobs = {name: job for name, (_, job) in session._ahead.items()}
    assert set(jobs) == {"golden-signals", "error_ratio"}
    shown = session.plot_golden_signals(m)
    session.plot_signal(m, "error_ratio")
    assert all(j.outcome == "ok" for j in jobs.values())  # the children's drawings were used
    args = session._plot_args(m)
    in_process = plots.png_bytes(plots.golden_signals_figure(m, **args))
    assert shown.data == _sealed(session, "golden-signals") == in_process
    assert _sealed(session, "error_ratio") == plots.png_bytes(plots.signal_figure(m, "error_ratio", **args))
    assert _drawn(session, "golden-signals") == _drawn(session, "error_ratio") == "ahead"


def test_a_drawing_made_before_the_record_changed_is_not_used(session) -> None:
    m = session.metrics("recorded", draw=["golden-signals"])
    (_, job), = session._ahead.values()
    for status in (Status.ACKNOWLEDGED, Status.INVESTIGATING, Status.MITIGATING):  # mitigating: a new marker
        session.record.set_status(status, actor="t", reason="rolled back")
    session.plot_golden_signals(m)
    assert job.outcome == "cancelled" and _gone(job.pid)
    fresh = plots.png_bytes(plots.golden_signals_figure(m, **session._plot_args(m)))
    assert _sealed(session, "golden-signals") == fresh
    assert any(mk.label == "mitigating" for mk in session._plot_args(m)["markers"])
    assert _drawn(session, "golden-signals") == "here: its inputs changed after it was drawn ahead"


def test_a_reading_changed_after_its_drawing_began_is_drawn_again(session) -> None:
    m = session.metrics("recorded", draw=["golden-signals"])
    (_, job), = session._ahead.values()
    m.series["error_ratio"].frame.iloc[-1, 0] = 0.99  # someone edits the reading in JupyterLab
    session.plot_golden_signals(m)
    assert job.outcome == "cancelled"
    assert _sealed(session, "golden-signals") == plots.png_bytes(plots.golden_signals_figure(m, **session._plot_args(m)))


def test_drawing_an_unknown_figure_is_refused_before_any_work(session) -> None:
    with pytest.raises(BadInputError, match="neither 'golden-signals' nor a configured signal"):
        session.metrics("recorded", draw=["golden-signals", "nope"])
    assert not session._ahead and not any(e["type"] == "metrics.read" for e in session.record.events())


def test_nothing_the_child_prints_reaches_the_parents_output(capfd) -> None:
    def noisy() -> bytes:
        print("from python")
        os.write(1, b"from C on fd 1\n")
        os.write(2, b"from C on fd 2\n")
        return b"ok"

    job = forked.start(noisy)
    assert job is not None and job.result() == b"ok"
    out, err = capfd.readouterr()
    assert "from" not in out and "from" not in err


def test_an_interrupted_wait_takes_the_child_with_it(monkeypatch) -> None:
    job = forked.start(lambda: time.sleep(30) or b"late")
    assert job is not None

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(forked.select, "select", interrupted)
    with pytest.raises(KeyboardInterrupt):
        job.result()
    assert job.outcome == "cancelled" and _gone(job.pid)


def test_matplotlib_settings_changed_between_the_cells_draw_the_figure_again(session) -> None:
    import matplotlib

    m = session.metrics("recorded", draw=["golden-signals"])
    (_, job), = session._ahead.values()
    with matplotlib.rc_context({"lines.linewidth": 4.0}):  # a responder restyles before plotting
        session.plot_golden_signals(m)
        fresh = plots.png_bytes(plots.golden_signals_figure(m, **session._plot_args(m)))
    assert job.outcome == "cancelled" and _gone(job.pid)
    assert _sealed(session, "golden-signals") == fresh


def test_a_list_setting_edited_in_place_draws_the_figure_again(session) -> None:
    import matplotlib

    m = session.metrics("recorded", draw=["golden-signals"])
    (_, job), = session._ahead.values()
    with matplotlib.rc_context():
        matplotlib.rcParams["lines.dashed_pattern"][:] = [1.0, 1.0]  # the same list object, changed
        session.plot_golden_signals(m)
        fresh = plots.png_bytes(plots.golden_signals_figure(m, **session._plot_args(m)))
    assert job.outcome == "cancelled" and _gone(job.pid)
    assert _sealed(session, "golden-signals") == fresh


def test_a_failure_to_draw_ahead_never_costs_the_reading(session, monkeypatch) -> None:
    def broken(_record):
        raise KeyError("detected_at")

    monkeypatch.setattr(plots, "incident_markers", broken)
    m = session.metrics("recorded", draw=["golden-signals"])
    assert m.series and not session._ahead
    assert any(e["type"] == "metrics.read" for e in session.record.events())


def test_a_drawing_ahead_that_failed_is_drawn_here_and_the_event_says_why(session, monkeypatch) -> None:
    parent = os.getpid()
    real = plots.png_bytes

    def fails_in_the_child(fig, *a, **k):
        if os.getpid() != parent:
            raise RuntimeError("no memory left in the child")
        return real(fig, *a, **k)

    monkeypatch.setattr(plots, "png_bytes", fails_in_the_child)
    m = session.metrics("recorded", draw=["golden-signals"])
    (_, job), = session._ahead.values()
    shown = session.plot_golden_signals(m)
    assert job.outcome == "failed" and _drawn(session, "golden-signals") == "here: the drawing ahead failed"
    assert shown.data == _sealed(session, "golden-signals") == real(plots.golden_signals_figure(m, **session._plot_args(m)))


@pytest.fixture
def sigchld_ignored():
    """A kernel where someone set SIGCHLD to SIG_IGN: children are reaped for it, no exit status is left."""
    import signal

    before = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGCHLD, before)


def test_with_sigchld_ignored_a_whole_result_still_counts(sigchld_ignored) -> None:
    data = os.urandom(200_000)
    job = forked.start(lambda: data)
    assert job is not None
    assert job.result() == data and job.outcome == "ok"


class _Short(bytes):
    """Claims more bytes than it has: the child's header promises what the pipe never brings (a child
    killed mid-write looks the same to the parent)."""

    def __len__(self) -> int:
        return super().__len__() + 10


def test_with_sigchld_ignored_a_cut_short_result_is_not_trusted(sigchld_ignored) -> None:
    job = forked.start(lambda: _Short(b"half a png"))
    assert job is not None
    assert job.result() is None and job.outcome == "failed"


def test_a_cut_short_result_is_not_trusted_even_with_a_clean_exit() -> None:
    job = forked.start(lambda: _Short(b"half a png"))
    assert job is not None
    assert job.result() is None and job.outcome == "failed" and _gone(job.pid)


def test_a_child_reaped_by_someone_else_is_cancelled_without_signalling_by_pid(sigchld_ignored, monkeypatch) -> None:
    """Its pid may already name another process: the kill goes through the pidfd (here: to nothing)."""
    job = forked.start(lambda: b"done")
    assert job is not None
    time.sleep(0.3)  # the child has exited and, with SIGCHLD ignored, been reaped: its pid is free
    killed: list[int] = []
    monkeypatch.setattr(forked.os, "kill", lambda pid, sig: killed.append(pid))
    job.cancel()
    assert job.outcome == "cancelled" and killed == []


def test_a_lock_held_by_another_thread_at_the_fork_means_no_child(session) -> None:
    """Another kernel thread in the middle of a draw holds Matplotlib's render lock: a child would inherit
    it held, by a thread it does not have, and hang. No child then; the figure is drawn here, later."""
    import threading

    from matplotlib.figure import Figure

    held, release = threading.Event(), threading.Event()

    def drawing_elsewhere() -> None:
        with Figure._render_lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=drawing_elsewhere)
    t.start()
    held.wait(10)
    try:
        m = session.metrics("recorded", draw=["golden-signals"])
        assert not session._ahead  # nothing forked
    finally:
        release.set()
        t.join()
    session.plot_golden_signals(m)
    assert _drawn(session, "golden-signals").startswith("here: no child could be started (Matplotlib drawing")
    assert _sealed(session, "golden-signals") == plots.png_bytes(plots.golden_signals_figure(m, **session._plot_args(m)))


def test_locks_are_taken_around_the_fork_and_released_on_both_sides() -> None:
    import threading

    lock, rlock = threading.Lock(), threading.RLock()

    def needs_both() -> bytes:  # in the child: hangs (then times out) if either was left held
        with lock, rlock:
            return b"drawn"

    job = forked.start(needs_both, locks=[lock, rlock])
    assert job is not None and job.result(timeout_s=5) == b"drawn" and job.outcome == "ok"
    assert lock.acquire(blocking=False) and rlock.acquire(blocking=False)  # the parent let them go
    lock.release()
    rlock.release()


def test_a_warning_the_parents_filters_hide_does_not_cost_the_drawing() -> None:
    """In process it would not show, so the child's drawing is as good as one made here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph 128293 missing")
        job = forked.start(_warn)
        assert job is not None
        assert job.result() == b"drawn with a missing glyph" and job.outcome == "ok"


def test_a_kernel_interrupt_meant_for_a_cell_does_not_cost_the_drawing() -> None:
    """Jupyter interrupts a kernel by signalling its process group, which the child shares."""
    import signal

    job = forked.start(lambda: time.sleep(0.5) or b"drawn")
    assert job is not None
    time.sleep(0.2)
    os.kill(job.pid, signal.SIGINT)
    assert job.result() == b"drawn" and job.outcome == "ok"


def test_a_child_reaped_before_its_pidfd_was_had_is_never_signalled_by_pid(sigchld_ignored, monkeypatch) -> None:
    """Reaped for us between the fork and pidfd_open: its pid may already be another process's."""

    def reaped_already(pid: int) -> int:
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(forked.os, "pidfd_open", reaped_already)
    job = forked.start(lambda: time.sleep(0.2) or b"done")
    assert job is not None
    killed: list[int] = []
    monkeypatch.setattr(forked.os, "kill", lambda pid, sig: killed.append(pid))
    job.cancel()
    assert job.outcome == "cancelled" and killed == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_interrupted_fork_leaves_no_pipe_open(monkeypatch) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    before = _open_fds()
    monkeypatch.setattr(forked.os, "fork", interrupted)
    with pytest.raises(KeyboardInterrupt):
        forked.start(lambda: b"never")
    assert _open_fds() == before


def test_a_whole_result_is_not_held_back_by_another_holder_of_the_pipe(tmp_path) -> None:
    """Something the work started outlives it and keeps the pipe's write end: the length says when
    the result is whole, the end of the pipe would not come until that process ends."""
    import signal

    pidfile = tmp_path / "helper.pid"

    def starts_a_helper() -> bytes:
        pid = os.fork()
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        pidfile.write_text(str(pid))
        return b"drawn"

    job = forked.start(starts_a_helper)
    assert job is not None
    try:
        assert job.result(timeout_s=8) == b"drawn" and job.outcome == "ok"  # not "timed out"
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
