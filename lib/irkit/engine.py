"""The ``irkit`` papermill engine: nbclient execution with an explicit kernel environment.

papermill's stock engine starts the kernel with the caller's environment and working directory and
on loopback TCP ports. Runbooks need more control: secrets reach the kernel through the environment
the runner builds (never as parameters), the kernel works inside the incident record, and its
sockets are IPC files in a private temp dir, so other local users cannot reach it and parallel runs
never collide on ports. Papermill reaches it as ``irkit`` through :mod:`irkit.papermill_engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
from papermill.execute import prepare_notebook_metadata, raise_for_execution_errors, remove_error_markers
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from papermill.utils import merge_kwargs, remove_args

from irkit.kernels import handshake, kernel_arguments

ENGINE_NAME = "irkit"


def execute(source: Path, parameters: Mapping[str, Any], *, kernel_name: str, **engine_kwargs: Any) -> Any:
    """papermill's run of ``source`` with ``parameters`` on this engine (papermill finds it by name, through
    the entry point in :mod:`irkit.papermill_engine`), returning the executed notebook.

    The steps are papermill's own, in ``papermill.execute_notebook``'s order: read, inject the
    parameters cell, record papermill's metadata, drop old error markers, execute through the engine,
    raise :class:`~papermill.exceptions.PapermillExecutionError` for a failed cell. What is left out is
    its last step: with no output path, ``execute_notebook`` still serializes the whole executed
    notebook, figures included, and throws the text away (40-70 ms of every triage run). The runner
    writes the one copy that matters, redacted, itself.
    """
    nb = load_notebook_node(str(source))
    nb = parameterize_notebook(nb, dict(parameters), kernel_name=kernel_name, engine_name=ENGINE_NAME)
    nb = remove_error_markers(prepare_notebook_metadata(nb, str(source), None))
    nb = papermill_engines.execute_notebook_with_engine(
        ENGINE_NAME, nb, kernel_name, input_path=str(source), output_path=None, **engine_kwargs
    )
    raise_for_execution_errors(nb, None)
    return nb


class FinalSaveManager(NotebookExecutionManager):  # type: ignore[misc]
    """Writes the notebook once, when execution ends (however it ends), instead of after every cell.

    papermill re-serializes the whole notebook, images included, twice per cell; the runner reads the
    executed copy only at the end (and redacts it before anything reaches the record), so the
    per-cell writes are pure cost — most of a warm run's overhead.
    """

    _final = False
    on_progress: Callable[[Any], None] | None = None  # called with the notebook as cells are handed over
    on_cell: Callable[[Any], None] | None = None  # called with each cell once complete (final), see request_sent
    _held: list[Any] | None = None  # cells complete and not yet handed over

    def save(self, **kwargs: Any) -> None:
        """Write the notebook only once execution has finished; earlier saves are skipped."""
        if self._final:
            super().save(**kwargs)

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        """Mark the cell done; it is handed over once the next request is sent (:meth:`request_sent`)."""
        super().cell_complete(cell, cell_index=cell_index, **kwargs)
        if self._held is None:
            self._held = []
        self._held.append(cell)

    def request_sent(self, **_: Any) -> None:
        """Hand the notebook to ``on_progress`` and each cell completed since the last call to ``on_cell``.

        The runner gives both to a thread of its own (redaction, partial saves). Handed over as a cell
        completes, that thread took the GIL just as the client serialized and sent the next request,
        which then waited for it: ~0.5 ms of each turn between cells. The client calls this right after
        sending a request (nbclient's ``on_cell_complete`` hook, which nbclient 0.10 and 0.11 run right
        after ``kc.execute``: should a later one run it after the cell, only the timing changes), and
        :class:`HandOverClient` once the cells are done however that ended (the last cell and a failed
        one have no next request); :meth:`notebook_complete` hands over anything left.
        """
        held, self._held = self._held, None
        if not held:
            return
        if self.on_progress is not None:
            self.on_progress(self.nb)
        if self.on_cell is not None:
            for cell in held:
                self.on_cell(cell)

    def notebook_complete(self, **kwargs: Any) -> None:
        """Hand over what is left, allow the one final save, then let papermill finish (and write) the notebook."""
        self.request_sent()
        self._final = True
        super().notebook_complete(**kwargs)


class HandOverClient(PapermillNotebookClient):  # type: ignore[misc]
    """papermill's client that hands the last completed cells over as soon as no request can follow.

    Cells are handed over once the next request is sent (:meth:`FinalSaveManager.request_sent`); the
    last cell, and a failed one, have no next request. nbclient asks the kernel for its info and (a
    kernel it started) shuts it down before papermill completes the notebook: seconds, in which a
    killed runner's partial notebook would lack them.
    """

    def papermill_execute_cells(self) -> None:
        """Execute the cells as papermill does, then hand over what is held, however that ended."""
        try:
            super().papermill_execute_cells()
        finally:
            self.nb_man.request_sent()


class SetupClient(HandOverClient):
    """papermill's client that first runs ``setup`` (a warm kernel's per-run facts) on its own connection.

    One client, one handshake: a separate client for the setup cost a second kernel handshake per run.
    """

    setup = ""

    async def async_start_new_kernel_client(self) -> Any:
        """Connect to the warm kernel, run the setup snippet silently, and fail the run if it fails.

        jupyter_client's ``wait_for_ready`` ends by waiting 0.2 s for the IOPub channel to go quiet: a
        tenth of a warm run. A warm kernel has already answered once (the pool's preload), so being
        ready here only needs a ``kernel_info`` answer on the shell channel and its status message on
        IOPub (which proves this client's subscription is live). nbclient ignores IOPub messages that
        answer nobody's request, so there is nothing to flush.
        """
        from jupyter_core.utils import ensure_async
        from nbclient.util import run_hook

        assert self.km is not None
        self.kc = kc = self.km.client()
        try:
            await ensure_async(kc.start_channels())
            await handshake(kc, self.startup_timeout, self.km)
        except Exception:
            await self._async_cleanup_kernel()
            raise
        kc.allow_stdin = False
        await run_hook(self.on_notebook_start, notebook=self.nb)
        if self.setup:
            msg_id = kc.execute(self.setup, silent=True, store_history=False, allow_stdin=False)
            reply = await self.async_wait_for_reply(msg_id)
            content = (reply or {}).get("content", {})
            if content.get("status") != "ok":
                raise RuntimeError(f"warm kernel setup failed: {content.get('ename')}: {content.get('evalue')}")
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)  # the sync name papermill calls


class IrkitEngine(NBClientEngine):  # type: ignore[misc]
    """nbclient execution with ``kernel_env``, ``kernel_cwd`` and ``ipc_dir`` for the kernel."""

    @classmethod
    def execute_notebook(
        cls,
        nb: Any,
        kernel_name: str,
        output_path: Any = None,
        progress_bar: bool = True,
        log_output: bool = False,
        autosave_cell_every: int = 30,
        on_progress: Callable[[Any], None] | None = None,
        on_cell: Callable[[Any], None] | None = None,
        executed: list[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Execute ``nb`` under a :class:`FinalSaveManager`, so it is written once, at the end.

        ``executed``: a list the notebook being executed is appended to before the first cell runs, so a
        caller that passes no ``output_path`` still has it however execution ends (an error, a timeout,
        a dead kernel), without writing it to a file and reading it back.
        """
        nb_man = FinalSaveManager(
            nb,
            output_path=output_path,
            progress_bar=progress_bar,
            log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )
        nb_man.on_progress = on_progress
        nb_man.on_cell = on_cell
        if executed is not None:
            executed.append(nb_man.nb)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: float = 60,
        execution_timeout: float | None = None,
        kernel_env: Mapping[str, str] | None = None,
        kernel_cwd: str | None = None,
        ipc_dir: str | None = None,
        kernel_pool: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the notebook on a warm pooled kernel if one is free, else a fresh one with this env, cwd and IPC dir."""
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        final["on_cell_complete"] = nb_man.request_sent  # nbclient calls it once a cell's request is sent
        warm = kernel_pool.take() if kernel_pool is not None else None
        if warm is not None:
            # A pre-started, pre-imported kernel: apply this run's cwd and variables, then run on it.
            try:
                run_env = {k: v for k, v in (kernel_env or {}).items() if k.startswith("IRKIT_")}
                final["km"] = warm.km
                client = SetupClient(nb_man, **final)
                client.setup = kernel_pool.setup_code(cwd=kernel_cwd or str(warm.directory), env=run_env)
                return client.execute(cleanup_kc=False)
            finally:
                kernel_pool.retire(warm)  # single use, whatever happened; shut down off the hot path
        if ipc_dir is not None:
            final["km"] = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(Path(ipc_dir) / "kernel"))
            final["extra_arguments"] = kernel_arguments(final["km"].kernel_spec)
        # nbclient only shuts down kernels of managers it created itself; this one is ours to stop.
        start: dict[str, Any] = {"cleanup_kc": True}
        if kernel_env is not None:
            start["env"] = dict(kernel_env)
        if kernel_cwd is not None:
            start["cwd"] = kernel_cwd
        return HandOverClient(nb_man, **final).execute(**start)
