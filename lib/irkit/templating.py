"""The one Jinja environment per output format, over the package's ``templates/``.

``html`` autoescapes; ``markdown`` passes every printed value through :func:`md_escape`, so alert
text can never become markup; ``text`` is plain (each channel escapes for its own format when it
sends: Slack's ``&``, ``<``, ``>``). Undefined names fail loudly rather than render as nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from jinja2 import Environment

Format = Literal["html", "markdown", "text"]


def md_escape(value: Any) -> str:
    """Incident text as inert Markdown: no HTML (entities), no table breaks (pipes, newlines)."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


@functools.cache
def environment(fmt: Format) -> Environment:
    """The shared environment for ``fmt`` (built once per process)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    common: dict[str, Any] = {
        "loader": PackageLoader("irkit", "templates"),
        "undefined": StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    if fmt == "html":
        return Environment(autoescape=True, **common)
    if fmt == "markdown":
        return Environment(autoescape=False, finalize=md_escape, **common)  # noqa: S701
    return Environment(autoescape=False, **common)  # noqa: S701


def render(template: str, fmt: Format, **context: Any) -> str:
    """Render ``templates/<template>`` in format ``fmt``."""
    return environment(fmt).get_template(template).render(**context)


SUFFIX_FORMATS: dict[str, Format] = {".html.j2": "html", ".md.j2": "markdown", ".txt.j2": "text"}


def warm() -> int:
    """Compile every template into its format's environment now (the kernel pool's preload calls this,
    so no runbook pays for compiling); returns how many were compiled."""
    compiled = 0
    for name in environment("text").list_templates():
        fmt = next((f for suffix, f in SUFFIX_FORMATS.items() if name.endswith(suffix)), None)
        if fmt is not None:
            environment(fmt).get_template(name)
            compiled += 1
    return compiled
