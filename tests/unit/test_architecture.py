"""The architecture rules of README "Development": layers, no import cycles, declared events, docstrings.

Imports are read from the source (every ``import`` anywhere in a module, including inside functions;
only ``if TYPE_CHECKING:`` blocks are left out, since they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from irkit.errors import BadInputError
from irkit.events import EVENT_TYPES
from irkit.record import Record

LIB = Path(__file__).resolve().parents[2] / "lib" / "irkit"

# Bottom to top. A module may import modules of its own layer or of a layer below, never above.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "times", "units", "files", "events", "redact", "signing", "http", "templating", "forked"}),
    ("policy and record", {"severity", "oncall", "config", "record", "runstate", "store"}),
    (
        "sources and readings",
        {"sources", "prom", "k8s", "cluster", "metrics", "alerts", "probes", "checklist", "plots", "scenarios"},
    ),
    ("actions and messages", {"mitigate", "resolve", "comms", "postmortem", "index"}),
    ("runner and intake", {"engine", "kernels", "zygote", "outstream", "runner", "intake", "serve", "scheduler", "replay", "nbval_env", "papermill_engine"}),
    ("session and CLI", {"views", "session", "demo", "cli", "__init__"}),
]
LAYER_OF = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(LIB)
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "__init__"


def imports(path: Path) -> set[str]:
    """Top-level irkit modules imported anywhere in ``path`` (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "irkit":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("irkit.")}
    return found


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in LIB.rglob("*.py"):
        name = module_name(path)
        g.setdefault(name, set()).update(imports(path) - {name})
    return g


def test_every_module_has_a_layer() -> None:
    assert set(graph()) - set(LAYER_OF) == set(), "add new modules to LAYERS (and to README's map)"


def test_no_module_imports_from_a_layer_above_it() -> None:
    wrong = [
        f"{mod} ({LAYERS[LAYER_OF[mod]][0]}) imports {dep} ({LAYERS[LAYER_OF[dep]][0]})"
        for mod, deps in graph().items()
        for dep in deps
        if dep in LAYER_OF and LAYER_OF[dep] > LAYER_OF[mod]
    ]
    assert wrong == []


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, …, a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_are_no_import_cycles_even_through_function_level_imports() -> None:
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def literal_event_types() -> dict[str, str]:
    """Every event type a library module appends with a literal (or f-string prefix) name → where."""
    found: dict[str, str] = {}
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            receiver = ast.unparse(node.func.value)
            if node.func.attr not in ("append", "_append_locked", "_write_event") or not (
                receiver == "self" or receiver.endswith(("record", "rec"))
            ):
                continue
            first = node.args[0] if node.func.attr == "append" else node.args[1]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and (
                "." in first.value or first.value == "note"
            ):
                found[first.value] = f"{path.name}:{node.lineno}"
    return found


def test_every_event_type_the_library_writes_is_declared() -> None:
    written = literal_event_types()
    assert len(written) > 20  # the scan sees the library's appends
    assert {t: where for t, where in written.items() if t not in EVENT_TYPES} == {}


def test_an_undeclared_event_type_or_field_is_refused_before_writing(records: Path) -> None:
    rec = Record.create(records, "INC-ARCH-1", title="t", service="s", actor="a")
    before = rec.events_path.read_bytes()
    with pytest.raises(BadInputError, match="undeclared event type 'notes'"):
        rec.append("notes", {"text": "typo in the type"}, actor="a")
    with pytest.raises(BadInputError, match="undeclared field"):
        rec.append("note", {"text": "x", "txet": "typo in a field"}, actor="a")
    with pytest.raises(BadInputError, match=r"data\.role"):
        rec.append("escalation.paged", {"who": "nobody"}, actor="a")
    assert rec.events_path.read_bytes() == before


def public_without_docstring() -> list[str]:
    missing = []
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name[0] == "_":
                continue
            if ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(LIB)}:{node.lineno} {node.name}")
            if isinstance(node, ast.ClassDef):
                missing += [
                    f"{path.relative_to(LIB)}:{m.lineno} {node.name}.{m.name}"
                    for m in node.body
                    if isinstance(m, ast.FunctionDef) and m.name[0] != "_" and ast.get_docstring(m) is None
                ]
    return missing


def test_every_public_function_class_and_method_has_a_docstring() -> None:
    assert public_without_docstring() == []
