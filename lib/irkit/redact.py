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
import itertools
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

BINARY_MIME_PREFIXES = ("image/", "application/pdf", "audio/", "video/")
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


SENSITIVE_QUERY_KEYS = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "auth",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
)
MIN_PREFIX = 8  # a displayed prefix this long (pandas cuts cells to "CANARYLONGPASSW...") is the secret


def scrub_url(url: str) -> str:
    """``url`` without userinfo and with the values of sensitive query keys removed, before it is text.

    ``postgres://app:pw@db/x?password=pw`` → ``postgres://db/x?password=REDACTED``
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an unparseable address)"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = [(k, "REDACTED" if k.lower() in SENSITIVE_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, True)]
    out = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
    return out if "://" in url else out.removeprefix("//")


def base64_forms(value: str) -> set[str]:
    """The characters of ``value``'s base64 that depend on its bytes alone, at each byte offset mod 3."""
    import base64

    raw = value.encode()
    forms = set()
    for b64 in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):
            enc = b64(b"\0" * pad + raw).decode()
            forms.add(enc[-(-8 * pad // 6) : 8 * (pad + len(raw)) // 6])
    return {f for f in forms if len(f) >= 4}


def escaped_forms(value: str) -> set[str]:
    """``value`` as code prints or encodes it: raw, ``repr`` (str and bytes), JSON, HTML, papermill's
    parameter literal, URL-encoded, and base64 (at every byte alignment inside a longer encoding)."""
    from urllib.parse import quote, quote_plus

    forms = {
        value,
        repr(value)[1:-1],
        repr(value.encode())[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        value.encode("unicode_escape").decode("ascii").replace('"', '\\"'),
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }
    forms |= base64_forms(value)
    return {f for f in forms if len(f) >= 4}


# The patterns every record is scrubbed with unless irkit.yaml names others (``redaction.patterns``), each
# with what all of its matches contain, lower-cased: in conjunctive form, one text of every group. Where a
# group has no text in an ASCII string, the pattern cannot match it and is not run (the patterns took most
# of redacting a notebook: each scans every string). Every quantifier is bounded and possessive (++):
# redaction runs under the record lock, so no input may make a pattern backtrack (64 KiB of "=a:" once
# took 20 s).
_SECRET_WORDS = ("passw", "pwd", "secret", "token", "apikey", "api_key", "x-amz-")  # password, passwd, access_token …
BUILT_IN: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    (r"(?i:\bbearer\s{1,8}+)[A-Za-z0-9._~+/=-]{8,4096}+", (("bearer",),)),
    # after "token", only a token-shaped value: a digit, +/=, or an upper-case letter after the first
    (
        r"(?i:\btoken\s{1,8}+)(?=[A-Za-z0-9._~+/=-]{0,512}?[0-9+/=]|[A-Za-z._~-]{1,512}?[A-Z])"
        r"[A-Za-z0-9._~+/=-]{8,4096}+",
        (("token",),),
    ),
    (
        r"(?i:\bbasic\s{1,8}+)(?=[A-Za-z0-9+/]{0,512}?[0-9+/=]|[A-Za-z]{1,512}?[A-Z])[A-Za-z0-9+/]{8,4096}+={0,2}",
        (("basic",),),
    ),
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", (("akia", "asia"),)),
    (r"(?i)aws_secret_access_key\W{1,4}+(?P<s>[A-Za-z0-9/+=]{40})", (("aws_secret_access_key",),)),
    (r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{1,256}+", (("https://hooks.slack.com/services/",),)),
    (r"\bxox[abprs]-[A-Za-z0-9-]{10,256}+", (("xox",),)),
    (r"\bgh[pousr]_[A-Za-z0-9]{36,255}+", (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),)),
    (  # JWTs
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,4096}+\.eyJ[A-Za-z0-9_-]{8,8192}+\.[A-Za-z0-9_-]{8,4096}+",
        (("eyj",),),
    ),
    (
        r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY-----(?:(?!-----END)[\s\S]){0,16384}+"
        r"(?:-----END (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY-----)?",
        (("-----begin ",), ("private key-----",)),
    ),
    # user:password@host, with or without a scheme in front (a DSN pasted into a note)
    (
        r"(?:(?<=://)|(?<![^\s'\"(=,<]))(?!mailto:)[A-Za-z_][^\s:/@'\"<>=,(\[\]]{0,127}+:"
        r"(?P<s>[^\s/@'\"<>]{1,256}+)(?=@[\w\[])",
        ((":",), ("@",)),
    ),
    (
        r"(?i)(?:password|passwd|pwd|secret|token|api_?key|access_token|client_secret|x-amz-signature|x-amz-credential|"
        r"x-amz-security-token)=(?P<s>[^\s&;\"'<>]{1,1024}+)",
        (("=",), _SECRET_WORDS),
    ),
    (
        r"(?i)[\"']?+(?:password|passwd|secret|token|api_?key|client_secret)[\"']?+\s{0,8}+:\s{0,8}+[\"']"
        r"(?P<s>[^\"'\n]{6,1024}+)(?=[\"'])",
        ((":",), ('"', "'"), _SECRET_WORDS),
    ),
)
BUILT_IN_PATTERNS = tuple(pattern for pattern, _ in BUILT_IN)
_NEEDS = dict(BUILT_IN)


DETECTORS = (
    "AWSKeyDetector",
    "ArtifactoryDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
# Where a detector plugin could match: their own prefixes and keywords (a cheap first pass).
CANDIDATE = re.compile(
    r"AKIA|ASIA|AKC|AP[0-9A-F]|AccountKey|://[^\s/@]{1,256}@|gh[pousr]_|gl[a-z]{2,6}-|GR1348941|eyJ[A-Za-z0-9_-]{8,512}+\.|npm_|"
    r"sk-|[sr]k_live|SG\.|xox|sq0|pypi-|-us[0-9]|[0-9]{8,10}:|AC[a-f0-9]{32}|SK[a-f0-9]{32}|"
    r"(?i:private key|putty|cloudant|softlayer|ibm|_authtoken|hooks\.slack|secret_access_key)"
)
MAX_WINDOWS = 200  # per line: a pathological line costs at most this many detector scans
_DETECTOR_LOCK = threading.Lock()
_CONFIGURED = False


def detected_secrets(text: str) -> set[str]:
    """Credentials of known shapes that nobody configured (detect-secrets' plugins, entropy ones excluded:
    they would take irkit's own sha256 digests for secrets)."""
    global _CONFIGURED
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import get_settings

    found: set[str] = set()
    with _DETECTOR_LOCK:  # detect-secrets keeps its plugin settings in a process-wide object
        if not _CONFIGURED:
            get_settings().configure_plugins([{"name": name} for name in DETECTORS])
            _CONFIGURED = True
        for line in text.splitlines():
            windows: list[tuple[int, int]] = []  # around each candidate, so a long line costs what its candidates cost
            for m in itertools.islice(CANDIDATE.finditer(line), MAX_WINDOWS):
                a, b = max(0, m.start() - 300), m.end() + 600
                if windows and a <= windows[-1][1]:
                    windows[-1] = (windows[-1][0], b)
                else:
                    windows.append((a, b))
            for a, b in windows:
                for hit in scan_line(line[a:b]):
                    value = hit.secret_value or ""
                    if len(value) >= 8 and "PRIVATE KEY" not in value and not value.startswith("BEGIN"):
                        found.add(value)
    return found


MEMO_MAX_CHARS = 4_000_000  # characters of results a Redactor remembers (a run's notebook: a few hundred thousand)


class Redactor:
    """Replaces secret values and configured patterns in strings and nested JSON-like data.

    A known secret is caught in every form of :func:`escaped_forms` and as any prefix of 8 or more
    characters of those forms (what a truncated display leaves). A pattern with a named group ``s``
    replaces only that group (``password=(?P<s>…)`` keeps the key readable).
    """

    def __init__(
        self,
        secret_values: Iterable[str] = (),
        patterns: Iterable[str] = (),
        *,
        replacement: str = "[REDACTED]",
        min_secret_length: int = 6,
        detect: bool = False,
    ) -> None:
        values = [v for v in secret_values if v and len(v) >= min_secret_length]
        needles = {form for v in values for form in escaped_forms(v)}
        self._needles = sorted(needles, key=len, reverse=True)
        self._base64 = {form for v in values for form in base64_forms(v)}
        self._patterns = [(re.compile(p), _NEEDS.get(p)) for p in patterns]  # a pattern of one's own is always run
        self.replacement = replacement
        # As an re.sub template the replacement would be read for escapes: "\\g<0>" would put each match
        # (the secret) back, and a lone backslash would make every redaction fail. It is literal text.
        self._template = replacement.replace("\\", "\\\\")
        self.detect = detect
        # text() is a pure function of its argument: a run redacts its notebook after cells (the partial
        # save) and at the end, and every dict key ("output_type", "text/html") again and again.
        self._seen: dict[str, str] = {}
        self._seen_chars = 0

    @classmethod
    def from_settings(cls, settings: Any, environ: Mapping[str, str], *, detect: bool | None = None) -> Redactor:
        """Build from :class:`irkit.config.Settings` and the environment holding the secrets
        (``detect``: run the secret detector; default from the settings)."""
        red = settings.redaction
        return cls(
            settings.secret_values(environ),
            red.patterns,
            replacement=red.replacement,
            min_secret_length=red.min_secret_length,
            detect=red.detect_secrets if detect is None else detect,
        )

    def _spans(self, s: str) -> list[tuple[int, int]]:
        """Where a secret occurs in ``s``: whole, or cut short by a display or a line break.

        A prefix of 8+ characters counts where a display cut it (followed by ``...`` or ``…``, as
        pandas truncates). For base64 forms only — wrapped at 64/76 columns — a prefix before a line
        break or the end, and a suffix after a line break or the start, count too. Elsewhere a shared
        beginning (``postgres`` of a secret DSN) is ordinary text and stays.
        """
        spans = []
        for needle in self._needles:
            wrapped = needle in self._base64
            head = needle[: min(MIN_PREFIX, len(needle))]
            i = s.find(head)
            while i >= 0:
                n = len(head)
                while n < len(needle) and i + n < len(s) and s[i + n] == needle[n]:
                    n += 1
                rest = s[i + n : i + n + 3]
                cut = rest == "..." or rest[:1] == "…" or (wrapped and (rest == "" or rest[:1] in "\r\n"))
                if n == len(needle) or cut:
                    spans.append((i, i + n))
                i = s.find(head, i + 1)
            if wrapped and len(needle) > MIN_PREFIX:
                tail = needle[-MIN_PREFIX:]
                j = s.find(tail)
                while j >= 0:
                    start = j
                    k = len(needle) - MIN_PREFIX
                    while k > 0 and start > 0 and s[start - 1] == needle[k - 1]:
                        start, k = start - 1, k - 1
                    if start == 0 or s[start - 1] in "\n\r":
                        spans.append((start, j + MIN_PREFIX))
                    j = s.find(tail, j + 1)
        return spans

    def text(self, s: str) -> str:
        """``s`` with every secret value (and its displayed prefixes) and pattern match replaced."""
        done = self._seen.get(s)
        if done is not None:
            return done
        out = self._text(s)
        if self._seen_chars + len(s) + len(out) <= MEMO_MAX_CHARS:  # bounded: a long-lived serve keeps one
            self._seen[s] = out
            self._seen_chars += len(s) + len(out)
        return out

    def _text(self, s: str) -> str:
        if self._needles:
            merged: list[list[int]] = []
            for a, b in sorted(self._spans(s)):
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            if merged:
                out, pos = [], 0
                for a, b in merged:
                    out += [s[pos:a], self.replacement]
                    pos = b
                out.append(s[pos:])
                s = "".join(out)
        low = s.lower() if s.isascii() else None  # beyond ASCII, (?i) also folds K (Kelvin) to k, ſ to s …
        for rx, needs in self._patterns:
            if needs is not None and low is not None and not all(any(t in low for t in group) for group in needs):
                continue  # a text that every match of it contains is missing: it cannot match here
            if "s" in rx.groupindex:
                after = rx.sub(
                    lambda m: m.group(0).replace(m.group("s"), self.replacement) if m.group("s") else m.group(0), s
                )
            else:
                after = rx.sub(self._template, s)
            if after != s:  # what the next patterns need is looked for in the text as it now is
                s, low = after, after.lower() if after.isascii() else None
        # After the patterns (which take whole key blocks): what no one configured, of known shapes.
        if self.detect and CANDIDATE.search(s):
            for found in sorted(detected_secrets(s), key=len, reverse=True):
                # a plugin may match a token's head only: the rest of the token goes with it
                s = re.sub(re.escape(found) + r"[A-Za-z0-9_+/=-]{0,256}+", self._template, s)
        return s

    def data(self, obj: Any, *, _bundle: bool = False) -> Any:
        """A copy of nested dicts/lists with every string (and dict key) redacted.

        Only inside a notebook output's ``data`` bundle is a base64 image/PDF/audio payload left as
        it is (rewriting it would corrupt it; a secret cannot appear there as text).
        """
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            is_output = obj.get("output_type") in ("display_data", "execute_result")
            for k, v in obj.items():
                key = self.text(k) if isinstance(k, str) else k
                binary = (
                    _bundle
                    and isinstance(k, str)
                    and k.startswith(BINARY_MIME_PREFIXES)
                    and not k.endswith(("+xml", "svg"))
                    and isinstance(v, str)
                    and BASE64.fullmatch(v) is not None
                )
                out[key] = v if binary else self.data(v, _bundle=is_output and k == "data")
            return out
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj

    def notebook(self, nb: Mapping[str, Any]) -> Any:
        """A redacted copy of a notebook (as a dict or ``NotebookNode``)."""
        return self.data(nb)
