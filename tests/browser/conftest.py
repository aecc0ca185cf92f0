"""A real browser (Debian's Chromium, driven by Playwright) and a real JupyterLab server, as fixtures.

What a responder sees is what JupyterLab renders from the kernel's outputs and what a browser shows of
the published HTML, so these tests look at exactly that. Each JupyterLab runs on a free loopback port
with its own token, root directory and Jupyter config/data/runtime dirs in the test's temp dir (no
restored tabs, no shared state, parallel runs never collide). It is stopped with its whole process group
(kernels included) at teardown, and a failing test prints the tail of its log.

A missing Chromium or Playwright is a hard failure that names the install command: ``make test``
installs both (.ci/system-packages.sh and the ``dev`` extra), and a silently skipped browser test would
hide what responders see.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from servers import ServerProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
STARTUP_DEADLINE_S = 90.0  # ~8 s alone on 2 cores; much more beside a full `pytest -n auto`
LOG_TAIL_LINES = 60

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether a test's setup or call failed, for the server fixture's teardown."""
    report = yield
    if report.failed:
        item.stash[_failed] = True
    return report


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (Playwright's own browser downloads are not used)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            f"playwright is not installed: {sys.executable} -m pip install 'playwright>=1.55' "
            "(or: make test, which installs the dev extra)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: apt-get install -y chromium fonts-liberation (or: bash .ci/system-packages.sh as root)",
            pytrace=False,
        )
    with sync_playwright() as pw:
        # root needs --no-sandbox; --disable-dev-shm-usage keeps small /dev/shm (containers) from crashing tabs
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------- JupyterLab


# What JupyterLab would otherwise pop over the notebook: the news prompt and the update check.
_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


@dataclass
class JupyterLab:
    """A running ``jupyter lab`` and where it serves from."""

    root: Path
    port: int
    token: str
    env: dict[str, str]  # the server's environment (and so its kernels'); subprocesses of the test use it too
    process: ServerProcess

    def url(self, path: Path) -> str:
        """The JupyterLab URL that opens ``path`` (a file under the root) in a tab."""
        rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        return f"http://127.0.0.1:{self.port}/lab/tree/{quote(rel)}?token={self.token}"

    def log_tail(self) -> str:
        """The last lines of the server's (and its kernels') output."""
        return self.process.log_tail()

    def answers(self) -> bool:
        """Whether the REST API answers (plain http.client: no proxy variables apply to loopback probes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/api/status", headers={"Authorization": f"token {self.token}"})
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()


def jupyter_env(base: Path) -> dict[str, str]:
    """This process's environment with private Jupyter/IPython dirs under ``base`` and a named responder."""
    env = dict(os.environ)
    for var in ("IRKIT_CONFIG", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTERLAB_DIR"):
        env.pop(var, None)
    dirs = {
        "JUPYTER_CONFIG_DIR": base / "jupyter-config",
        "JUPYTER_DATA_DIR": base / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": base / "jupyter-runtime",
        "IPYTHONDIR": base / "ipython",
        "MPLCONFIGDIR": base / "matplotlib",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["IRKIT_ACTOR"] = "Ana Ruiz"  # a person: the runbook does not stop to ask for a name
    return env


@pytest.fixture
def jupyter_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JupyterLab]:
    """``jupyter lab`` (the venv's) serving ``tmp_path/lab`` on a free loopback port; stopped at teardown."""
    root = tmp_path / "lab"
    root.mkdir()
    env = jupyter_env(tmp_path / "jupyter")
    settings = Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings"
    for rel, values in _USER_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.fail(f"{jupyter} not found: install irkit into this venv (pip install -e '.[dev]')", pytrace=False)
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp_path / "jupyter-lab.log"
    argv = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    # The server and its kernels share one process group: stopping it (SIGTERM, then SIGKILL) reaches both.
    process = ServerProcess(
        "jupyter lab", argv, log_path, root, env=env, startup_deadline_s=STARTUP_DEADLINE_S, tail_lines=LOG_TAIL_LINES
    )
    lab = JupyterLab(root, port, token, env, process)
    try:
        process.wait_until(lab.answers, f"answering on port {port}")
        yield lab
    finally:
        process.terminate()
        if request.node.stash.get(_failed, False):
            print(f"\n--- last {LOG_TAIL_LINES} lines of jupyter lab's log ({log_path}) ---\n{lab.log_tail()}")
