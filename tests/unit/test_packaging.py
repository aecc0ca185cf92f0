"""The package's declared dependencies: environment.yml mirrors pyproject.toml, floor for floor."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# conda-forge names for the few packages whose PyPI name differs
CONDA_NAMES = {
    "redis": "redis-py",
    "build": "python-build",
    "kubernetes": "python-kubernetes",
    "playwright": "playwright-python",
}
REQ = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_yml_mirrors_every_pyproject_floor() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {}
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    for req in [*project["dependencies"], *extras]:
        m = REQ.match(req)
        assert m, f"pyproject dependency without a >= floor: {req}"
        name = _norm(m.group(1))
        wanted[_norm(CONDA_NAMES.get(name, name))] = m.group(2)
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    have = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and (m := REQ.match(dep)):
            have[_norm(m.group(1))] = m.group(2)
    missing = {k: v for k, v in wanted.items() if k not in have}
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    differ = {k: (v, have[k]) for k, v in wanted.items() if have[k] != v}
    assert not differ, f"floors differ (pyproject, environment.yml): {differ}"


def test_runbooks_and_templates_are_package_data() -> None:
    from importlib.resources import files

    from irkit.runner import LIFECYCLE, default_notebooks_dir

    assert all((default_notebooks_dir() / rb.filename).is_file() for rb in LIFECYCLE)
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["irkit"]
    root = Path(str(files("irkit")))
    shipped = {p.relative_to(root).as_posix() for pattern in package_data for p in root.glob(pattern) if p.is_file()}
    for sub in ("templates", "runbooks"):
        on_disk = {p.relative_to(root).as_posix() for p in (root / sub).rglob("*") if p.is_file()}
        assert on_disk <= shipped, f"not shipped in the wheel: {sorted(on_disk - shipped)}"


def test_importing_irkit_keeps_the_slow_iri_checker_out_and_notebooks_still_validate() -> None:
    """irkit marks ``rfc3987_syntax`` absent (its import compiles a grammar for seconds); validation still works."""
    import subprocess
    import sys

    code = (
        "import irkit, sys, nbformat\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
        "nbformat.validate(nb)\n"
        "bad = nbformat.from_dict({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'cell_type': 'nope'}]})\n"
        "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n    print('invalid caught')\n"
        "print('loaded' if sys.modules.get('rfc3987_syntax') else 'absent')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["invalid", "caught", "absent"]


def test_serve_warms_the_run_client_for_its_runbooks_and_skips_unknown_ones(tmp_path) -> None:
    import json
    import subprocess
    import sys

    code = (
        "import sys, json, tempfile, os\n"
        "from irkit.config import load_config\n"
        "from irkit.runner import warm_client\n"
        "before = 'papermill' in sys.modules\n"
        "warmed = warm_client(load_config(None, {}), ['triage', 'no-such-runbook', 'investigation'])\n"
        "left = [n for n in os.listdir(tempfile.gettempdir()) if n.startswith('irkit-warm-')]\n"
        "print(json.dumps([before, 'papermill' in sys.modules, 'irkit.engine' in sys.modules, warmed, left]))\n"
    )
    env = {**__import__("os").environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before, papermill, engine, warmed, left = json.loads(out.stdout.strip().splitlines()[-1])
    assert (before, papermill, engine) == (False, True, True)  # a fresh process: warming imported the client
    assert warmed == ["triage", "investigation"] and left == []  # the unknown one skipped; nothing left behind
