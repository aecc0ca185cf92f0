"""A fork server for kernels: one process imports ipykernel, irkit, pandas and matplotlib once, and
every fresh kernel is a fork of it.

Starting a kernel the usual way costs about 2.7 CPU-seconds, almost all of it imports; on two cores
that, not the notebook, bounds a storm of runbook runs. A fork costs milliseconds and gives a fresh
process that has run no notebook: each kernel is still used for exactly one run and then shut down.

How a kernel is started: jupyter_client launches ``python -m irkit.zygote connect SOCKET -- ARGS`` as
if it were the kernel. That small proxy sends its working directory, environment, ARGS and its own
stdin/stdout/stderr (SCM_RIGHTS) to the server over a Unix socket; the server forks a child, which
takes those, starts a session of its own and runs ipykernel with ARGS. The proxy stays as the
kernel's stand-in: signals it receives (interrupt, terminate) go to the kernel, it exits with the
kernel's status, and when the proxy dies (jupyter_client kills it with SIGKILL on shutdown) the
server kills the kernel. The server starts no Python thread (a fork of a threaded process could
inherit a held lock); the native threads libraries start as they load (numpy's OpenBLAS pool, the
jemalloc background thread under pyarrow) are theirs to quiesce around a fork, which both do through
pthread_atfork handlers. It ends with its parent or when its socket is closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MAX_REQUEST = 1 << 20
_stopping = False  # set by SIGTERM: the server kills its kernels and ends


# --------------------------------------------------------------------------- the server


def serve(path: str, preload: str) -> None:
    """Import everything (``preload``), then fork a kernel for every request on the socket at ``path``."""
    import gc

    exec(compile(preload, "<irkit kernel preload>", "exec"), {"__name__": "__irkit_preload__"})  # noqa: S102  # irkit's own PRELOAD
    import ipykernel.kernelapp  # what every fork runs: imported once, here
    # Every kernel's traits import ipykernel's debugger as it starts (~65 ms of CPU): here, once. Its
    # debugpy warns at import that frozen modules may hide breakpoints, a notice for someone debugging
    # (the kernel spec's own remedy, when it has one); a fork's environment is its request's, not this.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    import ipykernel.debugger  # noqa: F401
    # Everything imported so far goes to a permanent generation: a forked kernel's collector never
    # walks (and so never copies, page by page) the server's objects it shares.
    gc.collect()
    gc.freeze()
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    kernels: dict[socket.socket, int] = {}  # proxy connection -> kernel pid
    print("ready", flush=True)  # the pool reads this line on our stdout
    while not _stopping:
        if os.getppid() != parent:  # the pool's process is gone: so are we (and our kernels)
            break
        readable, _, _ = select.select([server, *kernels], [], [], 0.2)
        for conn in readable:
            if conn is server:
                client, _ = server.accept()
                pid = _fork_kernel(client, server, kernels)
                if pid is None:
                    client.close()
                else:
                    kernels[client] = pid
            else:  # a proxy went away (or wrote, which it never does): its kernel goes too
                with contextlib.suppress(OSError):
                    conn.recv(1)
                _kill(kernels.pop(conn))
                conn.close()
        for conn, pid in list(kernels.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                conn.close()
                del kernels[conn]
    for conn, pid in kernels.items():
        _kill(pid)
        conn.close()
    server.close()


def _fork_kernel(client: socket.socket, server: socket.socket, kernels: dict[socket.socket, int]) -> int | None:
    client.settimeout(10)
    fds: list[int] = []
    try:
        msg, fds, _flags, _addr = socket.recv_fds(client, 65536, 3)
        while not msg.endswith(b"\n") and len(msg) < MAX_REQUEST:  # a stream: the rest may come later
            more = client.recv(65536)
            if not more:
                break
            msg += more
        request = json.loads(msg)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        return None
    if len(fds) != 3 or not isinstance(request, dict):
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:  # the kernel
        try:
            server.close()
            for other in kernels:
                other.close()
            os.setsid()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            client.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
            client.close()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            args = list(request["args"])
            parent_pid = str(request["env"].get("JPY_PARENT_PID", ""))
            if parent_pid.isdigit():  # ipykernel reads it when imported, and the server imported it before forking
                args.append(f"--IPKernelApp.parent_handle={parent_pid}")
            sys.argv = ["ipykernel_launcher", *args]
            from ipykernel import kernelapp

            kernelapp.launch_new_instance()
        except BaseException:  # a child never returns into the server's loop
            import traceback

            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    for fd in fds:
        os.close(fd)
    client.settimeout(None)
    return pid


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session: this takes its children too
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --------------------------------------------------------------------------- the proxy jupyter_client starts


def connect(path: str, args: list[str]) -> int:
    """Ask the server at ``path`` for a kernel running ``args``; stand in for it until it exits."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = {"cwd": os.getcwd(), "env": dict(os.environ), "args": args}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    reader = conn.makefile("rb")
    first = reader.readline()
    if not first:
        print("irkit.zygote: the kernel server refused the request", file=sys.stderr)
        return 1
    pid = json.loads(first)["pid"]

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            line = reader.readline()
        except InterruptedError:
            continue
        if not line:
            return 1  # the server died: the kernel died with it
        return int(json.loads(line)["exit"])


# --------------------------------------------------------------------------- the pool's handle


class Zygote:
    """A running kernel server; :meth:`spec` turns a kernel spec into one that forks from it."""

    def __init__(self, directory: Path, preload: str, env: dict[str, str], timeout: float = 120) -> None:
        self.path = str(directory / "zygote.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "irkit.zygote", "serve", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(directory),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(preload.encode())
        self.proc.stdin.close()
        line = _readline(self.proc.stdout, timeout)
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"the kernel server did not start (exit {self.proc.poll()})")

    def alive(self) -> bool:
        """Whether the server is still running."""
        return self.proc.poll() is None

    def spec(self, spec: Any) -> Any:
        """A copy of ``spec`` (``python -m ipykernel_launcher ARGS``) that starts the kernel as a fork."""
        from jupyter_client.kernelspec import KernelSpec

        argv = list(spec.argv)
        if "ipykernel_launcher" not in argv:
            raise ValueError("not an ipykernel spec")
        args = argv[argv.index("ipykernel_launcher") + 1 :]
        forked = KernelSpec(**spec.to_dict())
        forked.argv = [sys.executable, "-m", "irkit.zygote", "connect", self.path, "--", *args]
        return forked

    def stop(self) -> None:
        """End the server (the kernels it forked end with it)."""
        from irkit.files import terminate

        terminate(self.proc)


def _readline(stream: Any, timeout: float) -> bytes:
    end = time.monotonic() + timeout
    fd = stream.fileno()
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            return bytes(stream.readline())
    return b""


def main(argv: list[str]) -> int:
    """``serve PATH`` (preload code on stdin) or ``connect PATH -- ARGS``."""
    if len(argv) >= 2 and argv[0] == "serve":

        def stop(*_: Any) -> None:
            global _stopping
            _stopping = True

        signal.signal(signal.SIGTERM, stop)
        serve(argv[1], sys.stdin.read())
        return 0
    if len(argv) >= 3 and argv[0] == "connect" and argv[2] == "--":
        return connect(argv[1], argv[3:])
    print("usage: python -m irkit.zygote serve PATH | connect PATH -- ARGS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
