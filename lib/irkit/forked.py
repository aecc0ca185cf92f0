"""Work done ahead in a forked child: a figure drawn on the other core while a runbook goes on.

Drawing the golden-signals figure is a third of a triage run, all of it Python holding the GIL, so a
thread cannot overlap it with the cells that follow. A ``fork`` can: the child has the kernel's memory
(the reading, the fonts, the imported libraries) at no copying cost, draws, and hands the bytes back
over a pipe. The parent takes them when it needs them; the record is written by the parent only.

The child is only trusted with a clean result: if it fails, is killed, times out, or anything in it
warns or logs a warning, :meth:`Forked.result` gives None and the caller does the work in process,
where warnings show exactly as they always did. Only Linux forks (elsewhere :func:`start` gives None).

The bytes come with their length first, so a complete result is known even where the exit status is
not (a kernel that set SIGCHLD to SIG_IGN has its children reaped for it). The child is signalled
through a pidfd where the kernel has them: a pid whose child was reaped by someone else may already
name another process, a pidfd never does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_WARNED = 0, 1, 3
_HEADER = 8  # bytes of the result's length, sent before it


def start(work: Callable[[], bytes], *, locks: Sequence[Any] = ()) -> Forked | None:
    """Run ``work`` in a forked child now; None where forking is not used (not Linux) or fails.

    ``locks``: locks ``work`` takes (Matplotlib's render lock, say). A child inherits each lock as it
    was at the fork, and one held by another of the parent's threads would never be released in the
    child, which would hang. So each is taken, without waiting, around the fork and released on both
    sides; if one is busy there is no child (None) and the caller does the work itself, later.
    """
    if not sys.platform.startswith("linux"):
        return None
    taken: list[Any] = []
    try:
        for lock in locks:
            if not lock.acquire(blocking=False):
                return None
            taken.append(lock)
        return _fork(work, taken)
    finally:  # in the parent; the child has left through os._exit, having released them itself
        for lock in reversed(taken):
            lock.release()


def _fork(work: Callable[[], bytes], taken: Sequence[Any]) -> Forked | None:
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException as exc:  # no child: nothing may be left open
        os.close(r)
        os.close(w)
        if isinstance(exc, OSError):
            return None
        raise
    if pid == 0:  # the child: never returns
        code = EXIT_FAILED
        try:
            os.close(r)
            code = _child(work, w, taken)
        finally:
            os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
    child: _Process | None = None
    w_open = True
    try:
        child = _Process.of(pid)  # at once: the sooner, the smaller the window in which it is reaped for us
        os.close(w)
        w_open = False
        return Forked(child, r)
    except BaseException:  # interrupted before anyone owned the child: it goes now, and its pipe
        if w_open:
            _close(w)
        _reap(child if child is not None else _Process(pid, None, False), r)
        raise


class _Process:
    """A forked child, signalled and waited for through a pidfd where the kernel has them.

    A child reaped for us (SIGCHLD set to SIG_IGN) leaves a pid that may soon name another process:
    one found gone when its pidfd was asked for is never signalled or waited for by pid.
    """

    def __init__(self, pid: int, pidfd: int | None, gone: bool) -> None:
        self.pid, self.pidfd, self.gone = pid, pidfd, gone

    @classmethod
    def of(cls, pid: int) -> _Process:
        try:
            return cls(pid, os.pidfd_open(pid), False)
        except ProcessLookupError:  # exited and reaped already
            return cls(pid, None, True)
        except (AttributeError, OSError):  # no pidfds here (before Linux 5.3): by pid, as before them
            return cls(pid, None, False)

    def kill(self) -> None:
        if self.gone:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int | None:
        """Its exit code (negative: the signal that ended it), or None if there is none to have."""
        if self.gone:
            return None
        self.gone = True
        pidfd, self.pidfd = self.pidfd, None
        try:
            if pidfd is not None and hasattr(os, "P_PIDFD"):
                got = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
                if got is None:  # only with WNOHANG, which is not asked for
                    return None
                return got.si_status if got.si_code == os.CLD_EXITED else -got.si_status
            return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:
            return None
        finally:
            _close(pidfd)


def _child(work: Callable[[], bytes], w: int, taken: Sequence[Any]) -> int:
    for lock in reversed(taken):  # taken by this thread just before the fork: ours to release
        lock.release()
    # A kernel interrupt signals the kernel's whole process group: it is meant for the cell, not for a
    # drawing that is only speed. The parent gives the child up if the interrupt stops its wait.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The kernel's stdout/stderr forward to threads the child does not have, and its fds 1 and 2 are
    # pipes the parent's threads read into the notebook: nothing the child prints may land there.
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives until os._exit
    os.dup2(sys.stdout.fileno(), 1)
    os.dup2(sys.stdout.fileno(), 2)
    logged = _Caught(logging.WARNING)
    logging.getLogger().addHandler(logged)
    # The parent's filters stay: what they hide would not show in process either, so it costs nothing
    # here; what they would show is recorded, and the caller then draws in process, where it shows.
    with warnings.catch_warnings(record=True) as caught:
        data = work()
    if caught or logged.records:
        return EXIT_WARNED
    view = memoryview(len(data).to_bytes(_HEADER, "big") + data)
    while view:
        view = view[os.write(w, view) :]
    return EXIT_OK


class _Caught(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Forked:
    """A child doing work ahead; :meth:`result` collects it once, :meth:`cancel` gives it up."""

    def __init__(self, child: _Process, fd: int) -> None:
        self._child = child
        self.pid = child.pid
        self._fd: int | None = fd
        self.outcome = "running"  # then: ok, failed, warned, timed out, cancelled
        # A session dropped without collecting must not leave a child blocked on the pipe.
        self._finalizer = weakref.finalize(self, _reap, child, fd)

    def result(self, timeout_s: float = 10.0) -> bytes | None:
        """The child's bytes, or None if it failed, warned or did not finish within ``timeout_s``.

        Read up to the length the child sent first, not to the end of the pipe: another process that
        holds the pipe's write end (a sibling forked meanwhile by another thread, or something ``work``
        started) cannot hold a whole result back.
        """
        fd = self._fd
        if fd is None:
            return None
        self._fd = None
        self._finalizer.detach()
        got = bytearray()
        need: int | None = None
        deadline = time.monotonic() + timeout_s
        timed_out = False
        try:
            while need is None or len(got) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    timed_out = True
                    break
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                got += chunk
                if need is None and len(got) >= _HEADER:
                    need = _HEADER + int.from_bytes(got[:_HEADER], "big")
        except BaseException:  # an interrupted wait (a responder's Ctrl-C): the child goes with it
            self.outcome = "cancelled"
            _reap(self._child, fd)
            raise
        if timed_out:
            self.outcome = "timed out"
            _reap(self._child, fd)
            return None
        os.close(fd)
        code = self._child.wait()
        # No exit status (reaped for us): the whole result, length and all, says the child finished.
        if need is not None and len(got) == need and code in (EXIT_OK, None):
            self.outcome = "ok"
            return bytes(got[_HEADER:])
        self.outcome = "warned" if code == EXIT_WARNED else "failed"
        return None

    def cancel(self) -> None:
        """Give the work up: the child is killed and reaped."""
        if self._fd is not None:
            self._fd = None
            self._finalizer()
            self.outcome = "cancelled"


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _reap(child: _Process, fd: int) -> None:
    child.kill()
    _close(fd)
    child.wait()
