"""The one exception hierarchy of irkit.

Callers (the CLI, the webhook, notebooks) catch these and nothing lower: every third-party error is
wrapped with ``raise ... from exc`` at the module that talks to that party. Each class carries the
CLI exit code it maps to, so "bad input" (2), "the check/run/verification found a problem" (1) and
"we could not check" stay distinct all the way to the shell::

    IrkitError
    ├── BadInputError            (exit 2) the caller gave us something we refuse
    │   ├── ConfigError          a config file or key is missing or invalid
    │   ├── InvalidIncidentId    an id that could become a path, or is malformed
    │   ├── UnknownRunbook       a runbook name that is not registered
    │   └── ParameterError       a runbook parameter that the notebook does not declare
    ├── RecordError              (exit 2) the incident record cannot be used as asked
    │   ├── IncidentNotFound
    │   ├── IncidentExists
    │   ├── TransitionError      an illegal status change (detected -> resolved, ...)
    │   ├── ActionRefused        a guard refused a mitigation (resolved incident, repeat, batch run)
    │   ├── RecordBroken         (exit 1) the chain does not verify: nothing more is appended
    │   └── StorageError         (exit 1) the disk refused a write (full, read-only, gone)
    ├── VerificationFailed       (exit 1) the record's chain or an artifact does not verify
    ├── RunbookFailed            (exit 1) a runbook ended in any outcome but ok
    └── SourceUnavailable        (exit 3) we could not check: a server was unreachable or refused us
"""

from __future__ import annotations


class IrkitError(Exception):
    """Root of every error irkit raises on purpose."""

    exit_code = 2


class BadInputError(IrkitError):
    """The caller gave us input we refuse; nothing was changed."""

    exit_code = 2


class ConfigError(BadInputError):
    """A configuration file or key is missing or invalid."""


class InvalidIncidentId(BadInputError):
    """An incident id that does not match the id pattern (and so must never become a path)."""


class UnknownRunbook(BadInputError):
    """A runbook name that is not in the runbook registry."""


class ParameterError(BadInputError):
    """A runbook parameter that the runbook does not declare, or that is not allowed."""


class RecordError(IrkitError):
    """The incident record cannot be used as asked."""

    exit_code = 2


class IncidentNotFound(RecordError):
    """No record exists for this incident id."""


class IncidentExists(RecordError):
    """A record already exists for this incident id."""


class TransitionError(RecordError):
    """An illegal status transition was requested."""


class ActionRefused(RecordError):
    """A guard refused to execute a mitigation (resolved incident, resolved alerts, a repeat, a batch run)."""


class RecordBroken(RecordError):
    """The record's chain does not verify, so nothing may be appended to it."""

    exit_code = 1


class StorageError(RecordError):
    """The file system refused a write (no space, read-only, permission): nothing half-written stays."""

    exit_code = 1


class VerificationFailed(IrkitError):
    """The record's hash chain or one of its artifacts does not verify."""

    exit_code = 1


class RunbookFailed(IrkitError):
    """A runbook ran and ended in an outcome other than ok; its executed copy is in the record."""

    exit_code = 1


class SourceUnavailable(IrkitError):
    """We could not check: a server was unreachable, timed out or refused us (retry later)."""

    exit_code = 3
