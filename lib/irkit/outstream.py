"""stdout/stderr for the pool's runbook kernels: a flush with nothing to send returns at once.

ipykernel flushes both streams twice around every cell, even when the cell printed nothing, and each
flush is a round trip to the kernel's IOPub thread (schedule the send, then wait for an event that
thread sets): about 2.5 ms of a trivial cell's 4.5 ms inside the kernel, some 60 ms of a warm triage.
When the stream holds no text and no send is pending there is nothing to put on the wire, so this
stream skips the round trip. What a flush still guarantees holds: text written before a flush is
sent before it returns; and every IOPub message (output, then the ``idle`` status) still leaves in
the order it was scheduled, because they all go through that one thread. What it no longer waits for
is output *another* IOPub message carried (a display), which could now reach a client after the
shell's ``execute_reply``: the Jupyter protocol lets that happen, and nbclient (which papermill and
the runner use) reads a cell's output until the ``idle`` status, not until the reply.

The kernel gets it through ipykernel's own setting, ``IPKernelApp.outstream_class``; only the pool's
kernels do, which import irkit anyway.
"""

from __future__ import annotations

from ipykernel.iostream import OutStream as _OutStream


class OutStream(_OutStream):
    """ipykernel's stream, without the IOPub round trip when there is nothing to flush."""

    def flush(self) -> None:
        """Send what is buffered and wait until it is sent; with nothing buffered or pending, return."""
        if self._nothing_to_send():
            return
        super().flush()  # type: ignore[no-untyped-call]

    def _nothing_to_send(self) -> bool:
        try:
            if self.echo is not None or self._flush_pending or self._subprocess_flush_pending:
                return False
            with self._buffer_lock:
                return not any(buffer.tell() for buffer in self._buffers.values())
        except AttributeError:  # an ipykernel whose stream keeps its state otherwise: always flush
            return False
