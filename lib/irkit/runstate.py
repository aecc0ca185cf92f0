"""Runs in flight: the lock a live run holds, its partial notebook, and what happens when it dies.

A run that is killed (``kill -9``, a crash, a power cut) must not vanish. While a runbook executes,
its runner holds an exclusive ``flock`` on ``.runs/<name>.lock`` inside the record and, after every
cell, saves the *redacted* notebook so far to ``.runs/<name>.partial.ipynb``. When a later ``irkit
open``/``run``/``verify`` or ``irkit serve`` start finds a ``notebook.started`` with no ending and can
take that lock (so its runner is gone), :func:`recover_interrupted` seals the partial notebook at
the run's reserved path with a banner, records ``run.interrupted``, and removes the kernel's
leftover connection files. ``.runs/`` holds nothing sealed; verify does not report it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import html
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from irkit.errors import BadInputError, IrkitError, RecordError, StorageError
from irkit.files import atomic_write_bytes, sha256_file
from irkit.record import Record

RUNS_DIR = ".runs"
SAVE_EVERY_S = 1.0  # a partial save per cell at most this often (the first cell always saves)


def _paths(record: Record, run_id: str) -> tuple[Path, Path]:
    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise RecordError(f"bad run id {run_id[:40]!r}")
    base = record.path / RUNS_DIR
    return base / f"{run_id}.lock", base / f"{run_id}.partial.ipynb"


def _lock(path: Path, *, block: bool) -> int | None:
    path.parent.mkdir(exist_ok=True)
    if path.parent.is_symlink():
        raise BadInputError(f"{path.parent} is a symlink; refusing to keep run state through it")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class PartialSaves:
    """``save(nb)`` as cells complete keeps the redacted partial notebook (crash evidence) up to date.

    A call only takes a snapshot (the cells papermill marked done, by reference: nothing changes them
    any more; copies of the others and of the notebook's metadata) and returns: redacting and writing
    happen on a thread of their own while the kernel runs the next cell, at most every
    ``SAVE_EVERY_S`` (the first call always saves). A call within that interval owes a save: a timer
    writes it when the interval is up — the last snapshot with every cell done since taken from the
    notebook by reference — so the cells done before a long one are on disk within ``SAVE_EVERY_S``
    even when no later call comes (a cell that sleeps, hangs or waits for the network). ``submit``
    gives the same thread other work on finished cells (the runner redacts each one ahead), in order
    with the saves. ``drain()`` waits for all of it (an owed save is dropped: the run has ended): call
    it before changing finished cells; ``close()`` (drain, then end the thread) is called before the
    partial file is removed.
    """

    def __init__(self, path: Path, redact: Callable[[Any], Any]) -> None:
        self.path = path
        self.redact = redact
        self._last = 0.0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="irkit-partial-save")
        self._pending: Future[Any] | None = None  # the last work asked for (one thread: it all runs in order)
        self._lock = threading.Lock()  # submissions come from the caller's thread and the owed save's timer
        self._base: dict[str, Any] | None = None  # the last snapshot taken on the caller's thread
        self._owed: threading.Timer | None = None
        self._ended = False

    def __call__(self, nb: Any) -> None:
        now = time.monotonic()
        if self._last and now - self._last < SAVE_EVERY_S:
            self._owe(nb, self._last + SAVE_EVERY_S - now)
            return
        self._last = now
        self._drop_owed()  # this save pays it
        self._base = _snapshot(nb)
        self.submit(self._write, self._base)

    def _owe(self, nb: Any, delay: float) -> None:
        with self._lock:
            if self._owed is not None or self._ended:
                return
            self._owed = threading.Timer(delay, self._pay, args=(nb,))
            self._owed.daemon = True
            self._owed.start()

    def _pay(self, nb: Any) -> None:
        """On the timer's thread: the last snapshot, with every cell done since taken as it is now."""
        with self._lock:
            if self._owed is None or self._ended or self._base is None:
                return  # dropped by drain() or close() meanwhile
            self._owed = None
            self._last = time.monotonic()
            base = self._base
            cells = [c if _final(c) else old for c, old in zip(nb.cells, base["cells"], strict=False)]
            self._submit_locked(self._write, {**base, "cells": cells})

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the save thread, after what was asked before it."""
        with self._lock:
            self._submit_locked(fn, *args)

    def _submit_locked(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = self._writer.submit(fn, *args)

    def _write(self, snapshot: Any) -> None:
        import nbformat

        # A failed partial save never stops the run (RuntimeError: a cell changed while it was read,
        # possible only in the microseconds papermill takes to finish a failed cell; the run ends next).
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            data = nbformat.writes(nbformat.from_dict(self.redact(snapshot))).encode()
            atomic_write_bytes(self.path, data, durable=False)

    def _drop_owed(self) -> None:
        with self._lock:
            if self._owed is not None:
                self._owed.cancel()
                self._owed = None

    def drain(self) -> None:
        """Drop an owed save and wait until everything asked for is done (or has failed); later calls still run."""
        self._drop_owed()
        with self._lock:
            pending = self._pending
        if pending is not None:
            wait([pending])

    def close(self) -> None:
        """Drain and end the thread."""
        with self._lock:
            self._ended = True
        self._drop_owed()
        self._writer.shutdown(wait=True)


@contextlib.contextmanager
def in_flight(record: Record, redact: Callable[[Any], Any]) -> Iterator[tuple[str, PartialSaves]]:
    """Take a new run id and hold its lock for the whole run — from *before* ``notebook.started`` is
    written, so no one can take a live run for a dead one — and yield ``(run_id, save)``, where
    ``save(nb)`` keeps the redacted partial notebook (see :class:`PartialSaves`; called after every cell)."""
    run_id = uuid.uuid4().hex
    lock, partial = _paths(record, run_id)
    try:
        fd = _lock(lock, block=True)
    except OSError as exc:
        raise StorageError(f"cannot create the run lock in {record.id}: {exc.strerror}") from exc
    save = PartialSaves(partial, redact)
    try:
        yield run_id, save
    finally:
        save.close()  # no late save outlives the run
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        if fd is not None:
            os.close(fd)


def _final(cell: Any) -> bool:
    """Done, and through papermill's ``cell_complete`` (a failed cell is marked before its end time is
    set): nothing changes it any more, so another thread may read it while the cells go on."""
    papermill = cell.get("metadata", {}).get("papermill", {})
    return papermill.get("status") == "completed" or (papermill.get("status") == "failed" and "end_time" in papermill)


def _snapshot(nb: Any) -> dict[str, Any]:
    """``nb`` as it stands, for another thread: cells papermill has finished as they are, the rest copied."""
    from copy import deepcopy

    return {
        **{k: v for k, v in nb.items() if k not in ("cells", "metadata")},
        "metadata": deepcopy(nb.get("metadata", {})),
        "cells": [c if _final(c) else deepcopy(c) for c in nb.cells],
    }


def open_runs(record: Record) -> list[dict[str, Any]]:
    """``notebook.started`` events with no ``notebook.finished`` or ``run.interrupted`` for their path."""
    started: dict[str, dict[str, Any]] = {}
    for ev in record.events():
        d = ev["data"]
        if ev["type"] == "notebook.started" and d.get("path"):
            started[d["path"]] = {**d, "seq": ev["seq"]}
        elif ev["type"] in ("notebook.finished", "run.interrupted"):
            started.pop(d.get("path", ""), None)
    return list(started.values())


def _banner(nb: Any, started_seq: int) -> None:
    import nbformat

    done = sum(1 for c in nb.cells if c.get("cell_type") == "code" and c.get("execution_count") is not None)
    cell = nbformat.v4.new_markdown_cell(
        '<span style="color:red;font-weight:bold">irkit: this run was interrupted (its runner died) '
        f"after the run started at event {html.escape(str(started_seq))}. This is the partial notebook "
        f"as it stood at the last completed cell ({done} code cells); nothing after that ran.</span>"
    )
    cell.metadata["tags"] = ["irkit-outcome"]
    nb.cells.insert(0, cell)
    nb.metadata.setdefault("irkit", {})["outcome"] = "interrupted"


def recover_interrupted(record: Record, *, actor: str = "irkit") -> list[str]:
    """Seal every run whose runner died as ``run.interrupted`` (with its partial notebook); returns their paths."""
    recovered = []
    for run in open_runs(record):
        if not run.get("run_id"):
            continue  # started by an older irkit without a run lock: nothing tells whether it is alive
        try:
            if _recover_one(record, run, actor):
                recovered.append(run["path"])
        except IrkitError:
            continue  # reported by verify; one stuck run never blocks the others or new runs
    return recovered


def _recover_one(record: Record, run: dict[str, Any], actor: str) -> bool:
    import nbformat

    rel = run["path"]
    lock, partial = _paths(record, str(run["run_id"]))
    fd = _lock(lock, block=False)
    if fd is None:
        return False  # its runner is alive
    try:
        if rel not in {r["path"] for r in open_runs(record)}:
            return False  # it ended between our look and the lock
        data: dict[str, Any] = {
            "runbook": run.get("runbook"),
            "path": rel,
            "outcome": "interrupted",
            "started_seq": run["seq"],
        }
        final = record.resolve_artifact(rel)
        if final.is_file() and not final.is_symlink():
            # The runner died after writing its notebook but before recording the end: seal what it wrote.
            data |= {"sha256": sha256_file(final), "partial": False, "reason": "the run's end was never recorded"}
        elif partial.is_file() and not partial.is_symlink():
            try:
                nb = nbformat.read(str(partial), as_version=4)
                _banner(nb, run["seq"])
                body = nbformat.writes(nb).encode()
                record.write_new(rel, body)
                data |= {"sha256": hashlib.sha256(body).hexdigest(), "partial": True}
            except (ValueError, OSError) as exc:
                data["reason"] = f"the partial notebook could not be read: {exc}"[:300]
        elif run.get("host") and run["host"] != platform.node():
            data["reason"] = f"its runner on {run['host']} died; what it had done stayed on that machine"[:300]
        else:
            data["reason"] = "no cell had completed: there is no partial notebook"
        if run.get("workdir") and run.get("host", platform.node()) == platform.node():
            _remove_workdir(run["workdir"])
        record.append("run.interrupted", data, actor=actor)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


def _remove_workdir(path: str) -> None:
    """Remove a dead run's private temp dir (kernel connection file, IPC sockets) — only ours."""
    p = Path(path)
    if p.parent == Path(tempfile.gettempdir()) and p.name.startswith("irkit-run-") and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)


def recover_all(root: str | Path, options: dict[str, Any], *, actor: str = "irkit") -> int:
    """Recover interrupted runs in every record under ``root`` (``irkit serve`` at start); returns how many."""
    from irkit.record import list_incidents, remove_stale_creations

    remove_stale_creations(root)
    n = 0
    for iid in list_incidents(root):
        with contextlib.suppress(IrkitError):  # a broken record is reported by verify, not here
            n += len(recover_interrupted(Record.open(root, iid, **options), actor=actor))
    return n
