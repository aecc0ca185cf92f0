"""Real server processes for test fixtures: started in their own process group, logged to a file,
waited for, and stopped — shared by the integration fixtures and the browser test's JupyterLab."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

import pytest

from irkit.scenarios.tsdb import free_port

__all__ = ["LOG_TAIL_LINES", "POLL_INTERVAL_S", "STARTUP_DEADLINE_S", "STOP_TIMEOUT_S", "ServerProcess", "free_port"]

POLL_INTERVAL_S: Final = 0.05
STARTUP_DEADLINE_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
LOG_TAIL_LINES: Final = 40


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


class ServerProcess:
    """A server child process in its own session, with its output in a file.

    ``start_new_session`` makes the child a process-group leader, so the
    fallback kill also reaches grandchildren (``runuser`` -> ``postgres`` ->
    backends) instead of orphaning them.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path,
        *,
        env: Mapping[str, str] | None = None,
        startup_deadline_s: float = STARTUP_DEADLINE_S,
        tail_lines: int = LOG_TAIL_LINES,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.startup_deadline_s = startup_deadline_s
        self.tail_lines = tail_lines
        self._log: IO[bytes] = log_path.open("wb")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )

    def log_tail(self) -> str:
        """Last lines of the server's combined stdout/stderr.

        No flush needed: only the child writes, straight to the inherited fd.
        """
        return _tail(self.log_path, self.tail_lines)

    def fail(self, reason: str) -> None:
        """Kill the server and fail the test run with its log tail."""
        self.kill()
        pytest.fail(
            # The temp dir (log included) is removed at teardown, so inline the tail.
            f"{self.name}: {reason} (exit status {self.popen.returncode})\n--- last {self.tail_lines} lines of {self.name} output ---\n{self.log_tail()}",
            pytrace=False,
        )

    def wait_until(self, ready: Callable[[], bool], what: str) -> float:
        """Poll ``ready`` until true; fail early if the process dies.

        Returns the seconds elapsed since the process was spawned.
        """
        deadline = self.started_at + self.startup_deadline_s
        while True:
            if self.exited():
                self.fail(f"exited before {what}")
            if ready():
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                self.fail(f"not {what} after {self.startup_deadline_s:.0f}s")
            time.sleep(POLL_INTERVAL_S)

    def exited(self) -> bool:
        """Whether the leader has exited, WITHOUT reaping it.

        While the leader is an unreaped zombie its pid (the group id) cannot be reused, so a later
        ``killpg`` reaches this server's group and no one else's.
        """
        if self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the whole process group and wait for the leader; SIGKILL if stuck."""
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL_S)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process group, then reap the leader (idempotent) and close the log file."""
        # Even after the leader exits, stragglers may remain in its group. Signal the group only while
        # the leader is unreaped: once reaped, its pid may belong to an unrelated process group.
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()


