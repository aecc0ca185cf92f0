import subprocess
import sys

import irkit


def test_public_front_exports_exactly_all() -> None:
    public = {n for n in dir(irkit) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(irkit, n)).__name__ == "module"}
    assert set(irkit.__all__) - {"__version__"} == public - modules


def test_import_does_not_pull_heavy_libraries() -> None:
    heavy = "('pandas', 'matplotlib', 'papermill', 'kubernetes')"
    code = f"import sys, irkit; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_front_loads_its_names_on_first_use() -> None:
    code = (
        "import sys, irkit; before = sorted(m for m in sys.modules if m.startswith(('irkit.', 'pydantic')));"
        "from irkit import Record, Level; print(before, Record.__module__, Level.P1.value, 'irkit.config' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] irkit.record P1 False"  # nothing until asked; then only what Record and Level need


def test_the_cli_lists_the_severity_levels_and_its_help_loads_no_settings_model() -> None:
    from irkit.cli import LEVELS
    from irkit.severity import Level

    assert tuple(lv.value for lv in Level) == LEVELS
    code = "import sys; sys.argv = ['irkit', '--help']\nfrom irkit.cli import main\ntry: main()\nexcept SystemExit: pass\n"
    code += "print('pydantic' in sys.modules, 'irkit.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and out.strip().endswith("False False")
