"""The bench scripts are not run by the suite (they print timings), but they must stay importable.

A bench that no longer imports (a renamed library function) would only be found the day someone needs
its figures; importing each one here catches that, without running its ``main``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_imports_and_has_a_main(script: str) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions; main() is behind __name__ guard
    assert callable(getattr(module, "main", None)), f"bench/{script} has no main()"
