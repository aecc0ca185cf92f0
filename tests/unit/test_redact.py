import json
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from irkit.config import load_config
from irkit.redact import BUILT_IN_PATTERNS, Redactor


def test_secret_values_are_scrubbed_everywhere_in_nested_data() -> None:
    r = Redactor(["hunter2-long", "hunter2-long-er"], [])
    data = {"a": ["x hunter2-long-er y", {"hunter2-long": "k"}], "b": ("hunter2-long",), "n": 5}
    out = r.data(data)
    assert out == {"a": ["x [REDACTED] y", {"[REDACTED]": "k"}], "b": ["[REDACTED]"], "n": 5}


def test_short_secrets_are_not_used_as_needles() -> None:
    assert Redactor(["ab"], []).text("abc ab") == "abc ab"


def test_default_patterns() -> None:
    s = load_config(None, {})
    r = Redactor.from_settings(s, {})
    text = (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig "
        "postgresql://app:pa55word@db:5432/registry "
        "AKIAABCDEFGHIJKLMNOP https://hooks.slack.com/services/T000/B000/XXXXXXXX password=letmein"
    )
    out = r.text(text)
    for leaked in ("eyJhbGci", "pa55word", "AKIAABCDEFGHIJKLMNOP", "XXXXXXXX", "letmein"):
        assert leaked not in out
    assert "postgresql://app:[REDACTED]@db:5432/registry" in out  # the user stays readable


def test_configured_secrets_come_from_the_named_env_vars() -> None:
    s = load_config(None, {"IRKIT_SECRETS": "[MY_TOKEN]"})
    r = Redactor.from_settings(s, {"MY_TOKEN": "tok-123456789", "OTHER": "tok-999999999"})
    assert r.text("tok-123456789 tok-999999999") == "[REDACTED] tok-999999999"


def test_images_are_left_alone() -> None:
    r = Redactor(["AAAAAAAA"], [])
    nb = {"outputs": [{"output_type": "display_data", "data": {"image/png": "AAAAAAAABBBB", "text/plain": "AAAAAAAA"}}]}
    out = r.notebook(nb)
    assert out["outputs"][0]["data"] == {"image/png": "AAAAAAAABBBB", "text/plain": "[REDACTED]"}


# --------------------------------------------------------------------------- every form a secret takes

SECRET = "p@ss'w\"ord-ünï-0123456789"


def test_known_secret_is_caught_in_every_encoding_and_as_a_displayed_prefix() -> None:
    import base64
    from urllib.parse import quote, quote_plus

    r = Redactor([SECRET], [])
    shown = [
        SECRET,
        repr(SECRET),
        repr(SECRET.encode()),
        json.dumps(SECRET),
        quote(SECRET),
        quote_plus(SECRET),
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(b"user:" + SECRET.encode()).decode(),  # Basic auth header value
        base64.urlsafe_b64encode(b"xy" + SECRET.encode() + b"z").decode(),
        SECRET[:12] + "...",  # what pandas leaves of a long cell
    ]
    for text in shown:
        out = r.text(f"before {text} after")
        assert "[REDACTED]" in out and SECRET[:8] not in out, (text, out)
    assert r.text("p@ss'w") == "p@ss'w"  # shorter than 8 characters: not a prefix worth hiding


def test_patterns_catch_unconfigured_credentials_and_keep_the_context() -> None:
    r = Redactor.from_settings(load_config(None, {}), {})
    cases = {
        "dsn app:hunter2-secret@db.internal:5432/x": "app:[REDACTED]@db.internal",
        "postgres://app:pw-1234567@db/x": "postgres://app:[REDACTED]@db/x",
        "GET /x?token=abcdef123456&y=1": "token=[REDACTED]&y=1",
        "Authorization: Basic dXNlcjpwYXNzd29yZA==": "Authorization: [REDACTED]",
        '{"password": "hunter2-pw"}': '{"password": "[REDACTED]"}',
        "key AKIAZZCANARY7Q2W3E4R": "key [REDACTED]",
    }
    for text, expected in cases.items():
        assert expected in r.text(text), (text, r.text(text))
    for harmless in ("at 14:32 on host-1", "mail alice@example.com", "ratio 12.0% > 10%"):
        assert r.text(harmless) == harmless


def test_scrub_url_drops_userinfo_and_token_values() -> None:
    from irkit.redact import scrub_url

    assert scrub_url("postgresql://app:pw@db:5432/x?sslmode=require&password=pw") == (
        "postgresql://db:5432/x?sslmode=require&password=REDACTED"
    )
    assert scrub_url("https://u:p@[::1]:8443/h?access_token=t&x=1") == "https://[::1]:8443/h?access_token=REDACTED&x=1"
    assert scrub_url("app:pw@db.internal:6379") == "db.internal:6379"
    assert scrub_url("http://[bad") == "(an unparseable address)"


def test_line_wrapped_base64_and_binary_looking_keys_do_not_carry_a_secret_through() -> None:
    import base64

    secret = "ANARY-kkk-wrapped-secret-0123456789"
    r = Redactor([secret], [])
    for offset in range(0, 80):
        wrapped = base64.encodebytes(b"x" * offset + secret.encode()).decode()  # 76-character lines
        out = r.text(wrapped).replace("\n", "")
        whole = base64.b64encode(b"x" * offset + secret.encode()).decode()
        made_of_secret = whole[-(-8 * offset // 6) : 8 * (offset + len(secret)) // 6]
        for i in range(len(made_of_secret) - 12):
            assert made_of_secret[i : i + 12] not in out, (offset, out)
    # Only inside a notebook output bundle is a binary payload left alone.
    assert r.data({"annotations": {"audio/x": secret}}) == {"annotations": {"audio/x": "[REDACTED]"}}
    png = base64.b64encode(b"\x89PNG...").decode()
    bundle = {"outputs": [{"output_type": "execute_result", "data": {"image/png": png, "text/plain": secret}}]}
    assert r.data(bundle)["outputs"][0]["data"] == {"image/png": png, "text/plain": "[REDACTED]"}


def test_a_secret_url_does_not_swallow_every_url_and_ordinary_words_stay() -> None:
    r = Redactor(["https://hooks.slack.com/services/T0/B0/XYZsecret123"], load_config(None, {}).redaction.patterns)
    text = "see https://grafana.example.com; token validation failed; Basic authentication disabled"
    assert r.text(text) == text
    assert r.text("cut: https://hooks.slack.com/serv...") == "cut: [REDACTED]..."


def test_credentials_nobody_configured_are_found_by_the_secret_detector() -> None:
    r = Redactor.from_settings(load_config(None, {}), {})
    text = "stripe sk_live_51H8abcdefghijklmnopqrstuv slack xoxb-1234-5678-abcdefghijklmnopqrstuvwx done"
    out = r.text(text)
    assert "sk_live" not in out and "abcdefghijklmnopqrstuvwx" not in out and out.endswith("done")
    digest = "ab" * 32  # irkit's own sha256 digests are not secrets
    assert r.text(f'"sha256": "{digest}"') == f'"sha256": "{digest}"'
    off = Redactor.from_settings(load_config(None, {"IRKIT_REDACTION__DETECT_SECRETS": "false"}), {})
    assert "sk_live_51H8" in off.text(text)


def test_review_cases_private_keys_promql_and_a_secret_dsns_ordinary_words() -> None:
    r = Redactor.from_settings(load_config(None, {}), {})
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAAbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----"
    )
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in r.text(f"key: {key}")
    for ordinary in ("rate(x[1h:5m]@1609746000)", "mailto:ops@example.com", "12:30:00@node-1"):
        assert r.text(ordinary) == ordinary
    assert r.text("svc:hunter2-pw@127.0.0.1:9") == "svc:[REDACTED]@127.0.0.1:9"  # a netloc with an IP host
    dsn = Redactor(["postgres://app:pw@db.prod.svc.cluster.local:5432/orders"], [])
    for ordinary in ("postgres", "docker.io/library/postgres", "app: postgres"):
        assert dsn.text(ordinary) == ordinary
    assert dsn.data(
        {"parameters": {"data": {"image/png": "postgres://app:pw@db.prod.svc.cluster.local:5432/orders"}}}
    ) == {"parameters": {"data": {"image/png": "[REDACTED]"}}}


def test_results_are_remembered_within_a_bound_and_stay_right() -> None:
    import irkit.redact

    secret = "s3cr3t-canary-value-0123"
    r = Redactor([secret], load_config(None, {}).redaction.patterns)
    nb = {"cells": [{"outputs": [{"output_type": "stream", "text": f"dsn={secret}"}]}] * 50}
    first = r.notebook(nb)
    assert 0 < len(r._seen) < 10  # fifty cells, a handful of distinct strings
    assert r.notebook(nb) == first and secret not in json.dumps(first)
    assert r.text(f"again {secret}") == "again [REDACTED]"
    big = "x" * (irkit.redact.MEMO_MAX_CHARS // 2 + 1)
    before = r._seen_chars
    assert r.text(big) == big and r._seen_chars == before  # past the bound: redacted, not kept
    assert r._seen_chars <= irkit.redact.MEMO_MAX_CHARS


# What the built-in patterns look for, and what is near it, in either case and with the characters that
# (?i) folds onto ASCII letters (Kelvin sign, long s) and other non-ASCII ones.
_PIECES = (
    "Bearer ", "bearer\t", "TOKEN  ", "token ", "Basic ", "AKIA", "ASIA", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY: ",
    "https://hooks.slack.com/services/", "xoxb-", "xoxp-", "ghp_", "gho_", "eyJ", ".eyJ", "-----BEGIN ", "RSA ",
    "PRIVATE KEY-----", "-----END ", "postgres://", "://", "@", "@db", ":", "=", '"', "'", " ", "\n", "&", "password",
    "PassWd", "pwd", "secret", "Client_Secret", "api_key", "apiKey", "access_token", "x-amz-signature", "X-Amz-Credential",
    "mailto:", "\u212a", "\u017f", "to\u212aen", "pa\u017f\u017fword", "é", "[REDACTED]", "ABCDEFGHIJKLMNOP", "0123456789",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", "Zz9+/=", "_-.~",
)


def _every_pattern(text: str, replacement: str) -> str:
    """The built-in patterns applied one after another, each to the whole text (no looking ahead)."""
    for pattern in BUILT_IN_PATTERNS:
        rx = re.compile(pattern)
        if "s" in rx.groupindex:
            text = rx.sub(lambda m: m.group(0).replace(m.group("s"), replacement) if m.group("s") else m.group(0), text)
        else:
            text = rx.sub(replacement, text)
    return text


@settings(max_examples=800, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=6)), max_size=40).map("".join),
    # a replacement of one's own may hold what a later pattern looks for: that pattern must still run
    st.sampled_from(["[REDACTED]", "token=abc123", "<token='@:x'>", "AKIA", "-----BEGIN "]),
)
@example("u:pass1@db", "token=abc123")  # user:password@ redacted, then what took its place: token=…
def test_patterns_skipped_for_want_of_their_text_are_those_that_could_not_match(text: str, replacement: str) -> None:
    assert Redactor([], BUILT_IN_PATTERNS, replacement=replacement).text(text) == _every_pattern(text, replacement)


def test_every_built_in_pattern_still_redacts_what_it_is_for_in_any_case() -> None:
    r = Redactor([], BUILT_IN_PATTERNS)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    cases = {
        "Authorization: BEARER abcdefghijklmnop1234": "abcdefghijklmnop1234",
        "Authorization: Token abcDEF0123456789": "abcDEF0123456789",
        "Authorization: basic dXNlcjpwYXNzd29yZA==": "dXNlcjpwYXNzd29yZA",
        "key AKIAABCDEFGHIJKLMNOP here": "AKIAABCDEFGHIJKLMNOP",
        "key ASIAABCDEFGHIJKLMNOP here": "ASIAABCDEFGHIJKLMNOP",
        "AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYZ": "wJalrXUtnFEMI/K7MDENG",
        "see https://hooks.slack.com/services/T000/B000/XXXXXXXX": "XXXXXXXX",
        "xoxb-1234567890-abcdefghij": "xoxb-1234567890",
        "ghp_" + "a1" * 18: "a1a1a1a1",
        "jwt " + jwt: "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----": "b3BlbnNzaC1r",
        "redis://default:s3cr3tpass@cache:6379": "s3cr3tpass",
        "?X-Amz-Signature=abcdef0123&x=1": "abcdef0123",
        '{"Client_Secret": "hunter2hunter2"}': "hunter2hunter2",
        "pa\u017fsword=hunter2hunter2": "hunter2hunter2",  # long s: (?i) takes it for an s
        "to\u212aen=abcdef123456": "abcdef123456",  # Kelvin sign: (?i) takes it for a k
    }
    for text, secret in cases.items():
        assert secret not in r.text(text), text


def test_a_replacement_with_backslashes_is_literal_text_on_every_path() -> None:
    """``redaction.replacement`` is text, not an re.sub template: ``\\g<0>`` must not put the secret back,
    and a lone backslash must not make redaction fail."""
    text = (
        "token=abcdef0123456789 password=hunter2pass postgres://u:s3cretpw@db/x "
        "stripe sk_live_51H8abcdefghijklmnopqrstuv configured opensesame-42"
    )
    for replacement in ("\\g<0>", "\\1", "<\\\\>", "\\"):
        settings = load_config(None, {"IRKIT_REDACTION__REPLACEMENT": replacement, "IRKIT_SECRETS": '["CANARY"]'})
        out = Redactor.from_settings(settings, {"CANARY": "opensesame-42"}).text(text)
        for secret in ("abcdef0123456789", "hunter2pass", "s3cretpw", "sk_live_51H8", "opensesame-42"):
            assert secret not in out, (replacement, out)
        assert out.count(replacement) >= 5, (replacement, out)
