"""irkit: executable incident-response runbooks.

This is the thin front that runbooks and scripts import. It stays cheap to import (no pandas,
matplotlib or papermill here): heavy libraries are imported where they are used.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from irkit.config import Settings, load_config
from irkit.errors import IrkitError
from irkit.events import Status
from irkit.record import Record, validate_incident_id
from irkit.severity import Level, SeverityPolicy

__version__ = _version("irkit")  # one source: pyproject.toml

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
