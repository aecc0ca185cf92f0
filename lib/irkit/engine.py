"""The ``irkit`` papermill engine: nbclient execution with an explicit kernel environment.

papermill's stock engine starts the kernel with the caller's environment and working directory and
on loopback TCP ports. Runbooks need more control: secrets reach the kernel through the environment
the runner builds (never as parameters), the kernel works inside the incident record, and its
sockets are IPC files in a private temp dir, so other local users cannot reach it and parallel runs
never collide on ports. Registered under papermill's ``papermill.engine`` entry point as ``irkit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.utils import merge_kwargs, remove_args

ENGINE_NAME = "irkit"


class IrkitEngine(NBClientEngine):  # type: ignore[misc]
    """nbclient execution with ``kernel_env``, ``kernel_cwd`` and ``ipc_dir`` for the kernel."""

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
        **kwargs: Any,
    ) -> Any:
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
        if ipc_dir is not None:
            final["km"] = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(Path(ipc_dir) / "kernel"))
        # nbclient only shuts down kernels of managers it created itself; this one is ours to stop.
        start: dict[str, Any] = {"cleanup_kc": True}
        if kernel_env is not None:
            start["env"] = dict(kernel_env)
        if kernel_cwd is not None:
            start["cwd"] = kernel_cwd
        return PapermillNotebookClient(nb_man, **final).execute(**start)


def register() -> str:
    """Make sure papermill knows the engine (the entry point does this when installed)."""
    papermill_engines.register(ENGINE_NAME, IrkitEngine)
    return ENGINE_NAME
