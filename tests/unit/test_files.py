"""Temp directories that survive their process (kill -9) are removed by the next one, and only those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from irkit.files import owned_tempdir, remove_stale_tempdirs
from irkit.replay import SCRATCH_PREFIX


def test_a_killed_replays_scratch_dir_is_removed_and_a_live_ones_is_kept() -> None:
    code = f"from irkit.files import owned_tempdir; print(owned_tempdir({SCRATCH_PREFIX!r}))"
    left = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip())
    (left / "INC-1").mkdir()  # a scratch record inside it
    mine = owned_tempdir(SCRATCH_PREFIX)
    try:
        assert left.is_dir()
        assert remove_stale_tempdirs(SCRATCH_PREFIX) >= 1
        assert not left.exists() and mine.is_dir()  # its owner is gone; this process is alive
    finally:
        import shutil

        shutil.rmtree(mine, ignore_errors=True)
