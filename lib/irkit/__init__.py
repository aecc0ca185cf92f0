"""irkit: executable incident-response runbooks.

This is the thin front that runbooks and scripts import. It stays cheap to import (no pandas,
matplotlib or papermill here): heavy libraries are imported where they are used.
"""

# ruff: noqa: E402  (the guard below must run before any import that could reach jsonschema)
from __future__ import annotations

import sys as _sys

# jsonschema (under nbformat, papermill and scrapbook) imports the optional ``rfc3987_syntax`` when it
# is installed (jsonschema[format-nongpl] pulls it in, via jupyter-events), and that module compiles a
# Lark grammar at import: 1.7-3 s on every fresh process or kernel that touches a notebook. It only
# checks the "iri" string format, which no notebook schema irkit validates uses, and jsonschema checks
# formats only when asked. So a process that imports irkit marks it absent before jsonschema looks.
# An application that has already imported it keeps it (setdefault).
_sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


import typing as _typing

if _typing.TYPE_CHECKING:
    from irkit.config import Settings, load_config
    from irkit.errors import IrkitError
    from irkit.events import Status
    from irkit.record import Record, validate_incident_id
    from irkit.severity import Level, SeverityPolicy

# The front's names load on first use (PEP 562): ``import irkit`` alone costs a few milliseconds, and
# ``from irkit import Record`` imports exactly what Record needs.
_LAZY = {
    "Settings": "irkit.config",
    "load_config": "irkit.config",
    "IrkitError": "irkit.errors",
    "Status": "irkit.events",
    "Record": "irkit.record",
    "validate_incident_id": "irkit.record",
    "Level": "irkit.severity",
    "SeverityPolicy": "irkit.severity",
}


def __getattr__(name: str) -> _typing.Any:
    """The front's names, and ``irkit.__version__`` (from the installed metadata), loaded on first use."""
    if name == "__version__":
        from importlib.metadata import version

        return version("irkit")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'irkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "IrkitError",
    "Level",
    "Record",
    "Settings",
    "SeverityPolicy",
    "Status",
    "__version__",
    "load_config",
    "validate_incident_id",
]
