"""Scrubbing secrets out of anything before it is sealed into a record.

A runbook can leak a secret in many places: a printed value, a traceback, the cell papermill injects
with the parameters, papermill's own metadata copy of those parameters, a rich HTML output. Rather than
chase each place, :class:`Redactor` walks every string in the notebook JSON (sources, outputs,
metadata) and replaces configured patterns and the literal values of configured secrets. Binary
payloads (base64 images) are left alone: a secret cannot appear there as text, and rewriting them
would corrupt them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

BINARY_MIME_PREFIXES = ("image/", "application/pdf", "audio/", "video/")


def escaped_forms(value: str) -> set[str]:
    """``value`` as it appears raw, in ``repr``, JSON, HTML and papermill-injected Python literals."""
    forms = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        value.encode("unicode_escape").decode("ascii").replace('"', '\\"'),
    }
    return {f for f in forms if f}


class Redactor:
    """Replaces secret values and configured patterns in strings and nested JSON-like data."""

    def __init__(
        self,
        secret_values: Iterable[str] = (),
        patterns: Iterable[str] = (),
        *,
        replacement: str = "[REDACTED]",
        min_secret_length: int = 6,
    ) -> None:
        # Every form a secret takes when code prints it (repr, JSON, HTML, papermill's parameter
        # literal), longest first so a secret that contains another is replaced whole.
        needles = {form for v in secret_values if v and len(v) >= min_secret_length for form in escaped_forms(v)}
        self._secrets = [re.compile(re.escape(v)) for v in sorted(needles, key=len, reverse=True)]
        self._patterns = [re.compile(p) for p in patterns]
        self.replacement = replacement

    @classmethod
    def from_settings(cls, settings: Any, environ: Mapping[str, str]) -> Redactor:
        """Build from :class:`irkit.config.Settings` and the environment holding the secrets."""
        red = settings.redaction
        return cls(
            settings.secret_values(environ),
            red.patterns,
            replacement=red.replacement,
            min_secret_length=red.min_secret_length,
        )

    def text(self, s: str) -> str:
        """``s`` with every secret value and pattern match replaced."""
        for rx in self._secrets:
            s = rx.sub(self.replacement, s)
        for rx in self._patterns:
            s = rx.sub(self.replacement, s)
        return s

    def data(self, obj: Any) -> Any:
        """A copy of nested dicts/lists with every string (and dict key) redacted."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                key = self.text(k) if isinstance(k, str) else k
                if isinstance(k, str) and k.startswith(BINARY_MIME_PREFIXES) and not k.endswith(("+xml", "svg")):
                    out[key] = v
                else:
                    out[key] = self.data(v)
            return out
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj

    def notebook(self, nb: Mapping[str, Any]) -> Any:
        """A redacted copy of a notebook (as a dict or ``NotebookNode``)."""
        return self.data(nb)

    def found_in(self, text: str) -> bool:
        """Whether any secret value or pattern occurs in ``text`` (used to check a sealed file)."""
        return any(rx.search(text) for rx in (*self._secrets, *self._patterns))
