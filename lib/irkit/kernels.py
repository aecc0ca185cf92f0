"""A pool of warm, single-use Jupyter kernels for running runbooks quickly.

Starting a kernel and importing pandas, matplotlib and irkit costs seconds; during an incident those
are seconds before the first table. The pool keeps ``size`` kernels started and pre-imported. Each
kernel runs exactly one notebook and is then shut down (no state can leak from one run to the next),
and a background thread starts its replacement. Every kernel has its own IPC socket directory, so
parallel runs never collide. A kernel found dead when taken is discarded; an empty pool means the
caller starts a fresh kernel as usual.

Per-run facts (working directory, actor, batch flag, replay clock) are applied by a setup snippet
before the notebook runs; the values are passed as JSON string literals, never as code.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from irkit.files import owned_tempdir, remove_stale_tempdirs
from irkit.zygote import Zygote

KERNEL_DIR_PREFIX = "irkit-kernel-"
# Runbook kernels keep no IPython history. A single-use kernel never reads it back, and IPython would
# otherwise copy every cell it runs (parameters included) into ~/.ipython's history.sqlite: a
# world-readable file outside the incident's record that is never redacted and grows without end. Its
# writer thread also cost each cell about a millisecond.
KERNEL_ARGUMENTS = ("--HistoryManager.enabled=False",)


# The pool's kernels import irkit anyway (the preload): their stdout/stderr skip the flushes that have
# nothing to send (see irkit.outstream). A kernel started from scratch for papermill keeps ipykernel's.
# Named, not imported: the parent needs no ipykernel.
POOL_KERNEL_ARGUMENTS = ("--IPKernelApp.outstream_class=irkit.outstream.OutStream",)


def kernel_arguments(spec: Any, *, pooled: bool = False) -> list[str]:
    """The extra arguments every runbook kernel gets (and with ``pooled``, a pool's kernel), if the
    kernel ``spec`` starts an ipykernel."""
    if not any("ipykernel" in str(a) for a in getattr(spec, "argv", None) or ()):
        return []
    return [*KERNEL_ARGUMENTS, *(POOL_KERNEL_ARGUMENTS if pooled else ())]


PRELOAD = """
import irkit, irkit.config, irkit.templating, irkit.session, irkit.plots, irkit.metrics, irkit.cluster, irkit.checklist, irkit.comms
import irkit.prom, irkit.k8s, irkit.probes, irkit.mitigate, irkit.resolve, irkit.postmortem, irkit.scheduler
import irkit.redact, irkit.signing, irkit.outstream  # the kernel's streams; every Session builds its redactor and (when configured) signer
import pandas, matplotlib, scrapbook, jinja2
import matplotlib_inline.backend_inline
from matplotlib.figure import Figure
# First uses are slow (font cache, Agg, HTML table rendering): pay for them before the incident does.
_f = Figure(figsize=(2, 1), layout="constrained"); _ax = _f.add_subplot(); _ax.plot([0, 1], [0, 1])
_ax.set_title("warm"); _ax.axvspan(0, 1, alpha=0.1); irkit.plots.png_bytes(_f)
pandas.DataFrame({"a": [1.5]}).to_html()
irkit.plots.prepare_layouts()  # the figures' panels, built once in the server: each kernel has its own copy
irkit.templating.warm()  # every message and report template compiled once, in the server every kernel forks from
irkit.redact.Redactor.from_settings(irkit.config.Settings(), {})  # the settings' first validation; patterns compiled
del _f, _ax
"""
# Run in each kernel once it is up (after PRELOAD, which a forked kernel already has from its server):
# what belongs to the kernel's own shell, such as its display formatters' first table.
KERNEL_WARM = """
import pandas as _pd
get_ipython().display_formatter.format(_pd.DataFrame({"value": ["x"]}, index=_pd.Index(["f"], name="field")))
del _pd
"""


@dataclass
class WarmKernel:
    """A started, pre-imported kernel and its private temp directory (IPC sockets, connection file)."""

    km: KernelManager
    directory: Path

    def alive(self) -> bool:
        """True if the kernel process is still running (False on any error asking)."""
        try:
            return bool(self.km.is_alive())
        except Exception:
            return False

    def shutdown(self) -> None:
        """Kill the kernel, release its resources and delete its socket directory; never raises."""
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            self.km.cleanup_resources()
        shutil.rmtree(self.directory, ignore_errors=True)


async def handshake(kc: Any, timeout: float, km: Any) -> None:
    """Until ``timeout``: ask for ``kernel_info``; done when its reply and its IOPub status have arrived.

    jupyter_client's ``wait_for_ready`` ends by waiting 0.2 s for IOPub to go quiet; this does not: the
    status message answering this very request proves the IOPub subscription is live. ``kc`` may be a
    blocking or an async client.
    """
    import time
    from queue import Empty

    from jupyter_core.utils import ensure_async

    deadline = time.monotonic() + timeout
    while True:
        msg_id = kc.kernel_info()
        replied = subscribed = False
        wait_until = time.monotonic() + 1.0
        while not (replied and subscribed) and time.monotonic() < wait_until:
            channel = kc.iopub_channel if replied else kc.shell_channel
            try:
                msg = await ensure_async(channel.get_msg(timeout=0.2 if replied else 1.0))
            except Empty:
                break  # no status on IOPub (a subscription not live yet) or no reply: ask again
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            replied = replied or msg["msg_type"] == "kernel_info_reply"
            subscribed = subscribed or channel is kc.iopub_channel
        if replied and subscribed:
            return
        if not await ensure_async(km.is_alive()):
            raise RuntimeError("the kernel died before answering kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kernel did not answer in {timeout:g} s")


def _run(km: KernelManager, code: str, timeout: float) -> None:
    """Execute ``code`` on a fresh client and wait for it to finish; raise on error."""
    import asyncio

    kc = km.client()
    kc.start_channels()
    try:
        asyncio.run(handshake(kc, timeout, km))  # ready without wait_for_ready's 0.2 s of quiet
        reply = kc.execute_interactive(code, silent=True, store_history=False, timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(
                f"kernel setup failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}"
            )
    finally:
        kc.stop_channels()


def remove_stale_kernel_dirs() -> int:
    """Remove warm-kernel directories (connection files, IPC sockets) left by a pool whose process died."""
    return remove_stale_tempdirs(KERNEL_DIR_PREFIX)


class KernelPool:
    """``size`` pre-started, pre-imported kernels; take one per run, never return it."""

    def __init__(
        self,
        size: int,
        *,
        kernel_name: str = "python3",
        env: Mapping[str, str] | None = None,
        preload: str = PRELOAD,
        start_timeout: float = 60,
        limit: int | None = None,
        fork: bool = True,
    ) -> None:
        """``limit``: start at most this many kernels in all (a caller that knows how many runs it has
        does not leave a last kernel starting, and competing for the CPU, after its last run).
        ``fork``: start kernels as forks of one pre-imported server (irkit.zygote), not from scratch."""
        self.size = max(1, size)
        self.limit = limit
        self.kernel_name = kernel_name
        self.env = dict(env if env is not None else os.environ)
        self.preload = preload
        self.start_timeout = start_timeout
        self._ready: queue.Queue[WarmKernel] = queue.Queue()
        self._want = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._launching = False  # a kernel is being started, or is about to be
        self._failing = False  # the last start failed: nobody waits for the next
        self._in_start = 0
        self._claimed = False  # a caller is waiting for that kernel
        self.launched = 0
        self._owed: set[int] = set()  # ids of kernels taken while another was ready: replaced when retired
        self._retiring: list[threading.Thread] = []
        self.started = 0
        self.discarded = 0
        self.forked = 0
        self._zygote: Zygote | None = None
        self._zygote_dir: Path | None = None
        self._zygote_ready = threading.Event()
        if not fork:
            self._zygote_ready.set()
        remove_stale_kernel_dirs()
        # Kernels start in parallel, up to two at a time (most of a start is imports: one core each).
        self._threads = [
            threading.Thread(target=self._fill, name=f"irkit-kernel-pool-{i}", daemon=True)
            for i in range(min(self.size, 2))
        ]
        if fork:
            self._threads.append(threading.Thread(target=self._start_zygote, name="irkit-zygote", daemon=True))
        for t in self._threads:
            t.start()
        self._request()

    # ---- filling

    def _start_zygote(self) -> None:
        """Start the fork server; until it is up (or if it cannot start) kernels start from scratch."""
        try:
            self._zygote_dir = owned_tempdir(KERNEL_DIR_PREFIX)
            self._zygote = Zygote(self._zygote_dir, self.preload, dict(self.env), timeout=self.start_timeout)
        except Exception:
            self._zygote = None
        finally:
            self._zygote_ready.set()

    def _start_one(self) -> WarmKernel:
        directory = owned_tempdir(KERNEL_DIR_PREFIX)
        km = KernelManager(
            kernel_name=self.kernel_name,
            transport="ipc",
            ip=str(directory / "kernel"),
            connection_file=str(directory / "connection.json"),
        )
        extra = kernel_arguments(km.kernel_spec, pooled=True)  # the spec's own, before a fork's stand-in replaces it
        self._zygote_ready.wait(self.start_timeout)  # a fork is ready sooner than a from-scratch start
        zygote = self._zygote
        if zygote is not None and (not zygote.alive() or self._stop.is_set()):
            zygote = None
        if zygote is not None:
            km._kernel_spec = zygote.spec(km.kernel_spec)  # jupyter_client launches the fork's stand-in
            self.forked += 1
        km.start_kernel(env=dict(self.env), cwd=str(directory), extra_arguments=extra)
        wk = WarmKernel(km, directory)
        try:  # a fork has the server's preload already: only what is the kernel's own is left to warm
            _run(km, KERNEL_WARM if zygote is not None else self.preload + KERNEL_WARM, self.start_timeout)
        except Exception:
            wk.shutdown()
            raise
        self.started += 1
        return wk

    def _fill(self) -> None:
        """One starter: start kernels while fewer than ``size`` are ready, starting or owed (taken while
        another was ready: replaced once retired), and the limit allows."""
        while not self._stop.is_set():
            self._want.wait(0.5)
            self._want.clear()
            while not self._stop.is_set():
                with self._lock:
                    if self._ready.qsize() + self._in_start + len(self._owed) >= self.size:
                        break
                    if self.limit is not None and self.launched >= self.limit:
                        return
                    self.launched += 1
                    self._in_start += 1
                    self._launching = True
                try:
                    wk = self._start_one()
                except Exception:  # a kernel that cannot start: callers fall back to fresh kernels
                    with self._lock:
                        self._in_start -= 1
                        self._failing, self._launching = True, self._in_start > 0
                    self._stop.wait(1.0)
                    break
                if self._stop.is_set():
                    wk.shutdown()
                else:
                    self._ready.put(wk)
                with self._lock:
                    self._in_start -= 1
                    self._failing, self._launching = False, self._in_start > 0

    def _request(self) -> None:
        """Ask the filler for a kernel, marking one as on its way when the filler will start it."""
        with self._lock:
            under_limit = self.limit is None or self.launched < self.limit
            wanted = self._ready.qsize() + len(self._owed) < self.size  # as the filler counts (it adds those starting)
            if under_limit and not self._stop.is_set() and not self._failing and wanted:
                self._launching = True
        self._want.set()

    # ---- taking

    def take(self, timeout: float = 0.0) -> WarmKernel | None:
        """A live warm kernel, or None (the caller then starts a fresh one).

        When none is ready but one is being started, the first caller waits for that one: it is
        already importing, so it is ready sooner than a fresh kernel would be, and two kernels
        starting at once would only slow each other down. Other callers do not wait for it.

        The replacement starts at once if no other kernel is left waiting. If one is, the next caller
        is served anyway, so the replacement starts when this kernel is retired (starting a kernel
        takes a core for ~0.3 s, which the run that just took this one would otherwise share), or
        as soon as the pool runs out: under load, replacements are never put off.
        """
        import time

        deadline = time.monotonic() + timeout
        while True:
            wk = self._get(deadline)
            if wk is None:
                return None
            alive = wk.alive()
            with self._lock:
                spare = self._ready.qsize() > 0
                self.discarded += not alive
                if alive and spare:
                    self._owed.add(id(wk))
                elif not spare:  # the pool ran out: every replacement is wanted now, those put off included
                    self._owed.clear()
            if not (alive and spare):
                self._request()  # a dead kernel's place, or the last kernel's, is filled at once
            if alive:
                return wk
            wk.shutdown()

    def _get(self, deadline: float) -> WarmKernel | None:
        import time

        try:
            return self._ready.get_nowait()
        except queue.Empty:
            self._request()
        with self._lock:
            claim = claimed = self._launching and not self._claimed
            if claimed:
                self._claimed = True
        try:
            while True:
                left = deadline - time.monotonic()
                if not claim and left <= 0:
                    return None
                try:
                    return self._ready.get(timeout=0.05 if claim else min(left, 0.05))
                except queue.Empty:
                    if claim and (not self._launching or self._stop.is_set()):
                        claim = False  # its start failed or the pool is closing: fall back at once
                        if deadline - time.monotonic() <= 0:
                            return None
        finally:
            if claimed:
                with self._lock:
                    self._claimed = False

    @staticmethod
    def setup_code(*, cwd: str, env: Mapping[str, str]) -> str:
        """The snippet that applies one run's working directory and runtime variables (JSON data, not code).

        The engine runs it on the same kernel client as the notebook, before the first cell.
        """
        return (
            "import os as _os, json as _json\n"
            f"_os.chdir(_json.loads({json.dumps(json.dumps(cwd))}))\n"
            f"_os.environ.update(_json.loads({json.dumps(json.dumps(dict(env)))}))\n"
            "del _os, _json\n"
        )

    def retire(self, wk: WarmKernel) -> None:
        """Shut a used kernel down in the background (it is never reused; ``shutdown`` waits for these),
        and start its replacement if ``take`` left that for now."""
        t = threading.Thread(target=wk.shutdown, name="irkit-kernel-retire", daemon=True)
        with self._lock:
            self._retiring.append(t)
            owed = id(wk) in self._owed  # this kernel's own replacement, not another's
            self._owed.discard(id(wk))
        t.start()
        if owed:
            self._request()

    def ready(self) -> int:
        """Number of warm kernels waiting to be taken."""
        return self._ready.qsize()

    def wait_ready(self, n: int | None = None, timeout: float = 120) -> bool:
        """Block until ``n`` (default: all) kernels are warm; for benches and tests. A kernel taken while
        another was ready is replaced only once retired: retire it first, or this waits out ``timeout``."""
        import time

        want = self.size if n is None else n
        deadline = time.monotonic() + timeout
        while self._ready.qsize() < want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def shutdown(self) -> None:
        """Stop refilling and shut every idle kernel down."""
        self._stop.set()
        self._want.set()
        for t in self._threads:
            t.join(self.start_timeout + 5)
        while True:
            try:
                self._ready.get_nowait().shutdown()
            except queue.Empty:
                break
        with self._lock:
            retiring = list(self._retiring)
        for t in retiring:
            t.join(30)
        self._zygote_ready.wait(self.start_timeout)
        if self._zygote is not None:
            self._zygote.stop()
        if self._zygote_dir is not None:
            shutil.rmtree(self._zygote_dir, ignore_errors=True)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
