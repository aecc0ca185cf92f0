from irkit.config import load_config
from irkit.redact import Redactor


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
    assert "postgresql://[REDACTED]@db:5432/registry" in out


def test_configured_secrets_come_from_the_named_env_vars() -> None:
    s = load_config(None, {"IRKIT_SECRETS": "[MY_TOKEN]"})
    r = Redactor.from_settings(s, {"MY_TOKEN": "tok-123456789", "OTHER": "tok-999999999"})
    assert r.text("tok-123456789 tok-999999999") == "[REDACTED] tok-999999999"


def test_images_are_left_alone() -> None:
    r = Redactor(["AAAAAAAA"], [])
    nb = {"outputs": [{"data": {"image/png": "AAAAAAAABBBB", "text/plain": "AAAAAAAA"}}]}
    out = r.notebook(nb)
    assert out["outputs"][0]["data"] == {"image/png": "AAAAAAAABBBB", "text/plain": "[REDACTED]"}
