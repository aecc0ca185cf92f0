"""stdout/stderr for the pool's runbook kernels: a flush with nothing to send returns at once.

ipykernel flushes both streams twice around every cell, even when the cell printed nothing, and each
flush is a round trip to the kernel's IOPub thread (schedule the send, then wait for an event that
thread sets): about 2.5 ms of a trivial cell's 4.5 ms inside the kernel, some 60 ms of a warm triage.
When there is nothing to put on the wire this stream skips the round trip. "Nothing" means all of:
no text buffered, no timed flush pending, no flush *under way* on the IOPub thread (one that has
taken the buffers but not yet queued its message: skipping then would let the cell's ``idle`` status
overtake its text, and nbclient would drop the text), no unread bytes in the pipe ipykernel reads a
subprocess's output from, and no echo. Then every IOPub message (output, then ``idle``) still leaves
in the order it was scheduled, because they all go through that one thread. What a skipped flush no
longer waits for is output *another* IOPub message carried (a display), which could now reach a
client after the shell's ``execute_reply``: the Jupyter protocol lets that happen, and nbclient
(which papermill and the runner use) reads a cell's output until the ``idle`` status.

The kernel gets it through ipykernel's own setting, ``IPKernelApp.outstream_class``; only the pool's
kernels do, which import irkit anyway.
"""

from __future__ import annotations

import array
import fcntl
import termios
from collections import deque
from typing import ClassVar

from ipykernel.iostream import OutStream as _OutStream


class OutStream(_OutStream):
    """ipykernel's stream, without the IOPub round trip when there is nothing to flush."""

    # One entry per _flush under way (normally on the IOPub thread), shared by stdout and stderr (a
    # flush of either keeps both from skipping). A deque's append and pop are atomic: no lock that a
    # process forked at the wrong moment could inherit held.
    _under_way: ClassVar[deque[None]] = deque()

    def _flush(self) -> None:
        self._under_way.append(None)
        try:
            super()._flush()  # type: ignore[no-untyped-call]
        finally:
            self._under_way.pop()

    def flush(self) -> None:
        """Send what is buffered and wait until it is sent; with nothing to send, return at once."""
        if self._nothing_to_send():
            return
        super().flush()  # type: ignore[no-untyped-call]

    def _nothing_to_send(self) -> bool:
        try:
            if self.echo is not None or self._flush_pending or self._subprocess_flush_pending:
                return False
            with self._buffer_lock:
                if any(buffer.tell() for buffer in self._buffers.values()):
                    return False
            if self._should_watch and self._fid is not None and _unread(self._fid):
                return False  # a subprocess wrote: let ipykernel's watcher thread take it, as a real flush does
            # Read last: a _flush that cleared _flush_pending after the check above counted itself first.
            return not self._under_way
        except (AttributeError, OSError):  # an ipykernel that keeps its state otherwise: always flush
            return False


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd``."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]
