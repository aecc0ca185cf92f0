"""Incident communications: the plan's messages rendered from the record, and the senders that deliver them.

Messages (initial Slack alert, status page notice, stakeholder email for P0/P1, resolution Slack
message, resolution status page) are Jinja2 templates filled from the incident's state and events;
anything not known yet reads "not yet assessed" or "unknown", never "None". Each rendering is saved in
``comms/`` with a ``comms.rendered`` event. Senders (Slack webhook, SMTP, PagerDuty Events v2,
Statuspage, Jira) share one interface, retry with backoff, and never break a runbook: a failure is a
``comms.failed`` event, a success a ``comms.sent`` event carrying the provider's response id.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from irkit.config import Settings
from irkit.errors import BadInputError
from irkit.oncall import on_call
from irkit.record import Record, parse_ts
from irkit.severity import Level

UNKNOWN = "not yet assessed"
KINDS = ("slack_initial", "statuspage_initial", "email_stakeholders", "slack_resolved", "statuspage_resolved")
CHANNEL = {
    "slack_initial": "slack",
    "slack_resolved": "slack",
    "statuspage_initial": "statuspage",
    "statuspage_resolved": "statuspage",
    "email_stakeholders": "smtp",
    "page": "pagerduty",
    "ticket": "jira",
}
INITIAL = ("slack_initial", "statuspage_initial", "email_stakeholders")
RESOLVED = ("slack_resolved", "statuspage_resolved")


def _hm(delta: timedelta) -> str:
    mins = int(delta.total_seconds() // 60)
    return f"{mins // 60}h {mins % 60:02d}m" if mins >= 60 else f"{mins} minutes"


def _cadence(settings: Settings, level: str | None) -> str:
    if not level:
        return UNKNOWN
    every = settings.severity[level].update_every
    return _hm(every) if every else "no scheduled updates"


def context(record: Record, settings: Settings, *, now: datetime, root_cause: str = "") -> dict[str, Any]:
    """Everything the templates use, from the record; unknown values say so."""
    from irkit.session import compute_clocks

    st = record.state()
    events = record.events()
    level = st.get("severity")
    detected = parse_ts(st["detected_at"])
    clocks = compute_clocks(st, settings.severity, now)
    assessed = [e["data"] for e in events if e["type"] == "severity.assessed"]
    symptoms = [
        r.get("text") or f"{r.get('signal')} {r.get('value', 0):.3g} (implies {r.get('level')})"
        for r in (assessed[-1]["reasons"] if assessed else [])
    ]
    symptoms = [
        f"{e['data']['title']}: {e['data']['evidence'][:120]}"
        for e in events
        if e["type"] == "check.recorded" and e["data"].get("status") == "problem found"
    ][:4] or symptoms
    planned = {e["data"].get("key"): e["data"] for e in events if e["type"] == "action.planned"}
    executed = {e["data"].get("key"): e for e in events if e["type"] == "action.executed"}
    actions = []
    for key, plan in planned.items():
        if key in executed:
            ev = executed[key]
            actions.append(
                f"{parse_ts(ev['ts']):%H:%M} {plan.get('description')} (approved by {ev['actor']}, "
                f"verified: {ev['data'].get('verified')})"
            )
        else:
            actions.append(f"planned, not executed: {plan.get('description')}")
    acknowledger = next(
        (e["actor"] for e in events if e["type"] == "status.changed" and e["data"].get("to") == "acknowledged"), None
    )
    rota = on_call(settings.rotation, detected)
    tickets = [e["data"] for e in events if e["type"] == "comms.sent" and e["data"].get("channel") == "jira"]
    ticket = (
        (tickets[-1].get("url") or tickets[-1].get("response_id"))
        if tickets
        else (settings.comms.ticket_url or "not yet created")
    )
    impact = assessed[-1]["summary"] if assessed and assessed[-1].get("level") else UNKNOWN
    resolved = clocks.resolved_at
    timeline = [f"{detected:%H:%M}: Incident detected"]
    for key, label in (
        ("mitigating", "Mitigation started"),
        ("monitoring", "Monitoring: criteria passed"),
        ("resolved", "Confirmed stable"),
    ):
        if st["status_times"].get(key):
            timeline.append(f"{parse_ts(st['status_times'][key]):%H:%M}: {label}")
    review = settings.severity.review_due(level, resolved) if (level and resolved) else None
    return {
        "title": st.get("title") or UNKNOWN,
        "severity": level or UNKNOWN,
        "status": (st.get("status") or UNKNOWN).capitalize(),
        "component": settings.service.component,
        "service_name": f"LLM {settings.service.component}"
        if settings.service.component == "Schema Registry"
        else settings.service.component,
        "impact": impact,
        "user_impact": f"{settings.service.component} requests failing or slow ({impact})"
        if impact != UNKNOWN
        else UNKNOWN,
        "affected": UNKNOWN,
        "started": f"{detected:%Y-%m-%d %H:%M} UTC",
        "responder": acknowledger or f"{rota.primary} (on call)",
        "ticket": ticket,
        "symptoms": symptoms,
        "actions": actions,
        "next_update": f"{clocks.next_update_due:%H:%M} UTC" if clocks.next_update_due else "no scheduled updates",
        "cadence": _cadence(settings, level),
        "eta": f"within the {level} target ({clocks.resolution_due:%H:%M} UTC)" if clocks.resolution_due else UNKNOWN,
        "current": f"{(st.get('status') or UNKNOWN).capitalize()}; {len(events)} events in the incident record",
        "next_steps": [
            "Continue the investigation checklist",
            "Apply and verify mitigation",
            "Verify metrics back to normal",
        ],
        "dashboard": settings.service.dashboard_url,
        "duration": _hm(resolved - detected) if resolved else "ongoing",
        "root_cause": root_cause or UNKNOWN,
        "resolution": (actions[-1] if actions else "service recovered") if resolved else UNKNOWN,
        "timeline": timeline,
        "review": f"{review[0]:%Y-%m-%d %H:%M} UTC" if review else "to be scheduled",
    }


@dataclass(frozen=True)
class Rendered:
    kind: str
    text: str
    html: str | None
    path: str
    context: dict[str, Any]


def _env(html: bool) -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    common: dict[str, Any] = {
        "loader": PackageLoader("irkit", "templates/comms"),
        "undefined": StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    if html:
        return Environment(autoescape=True, **common)
    # Plain text; each channel escapes for its own format when sending (Slack: &, <, >).
    return Environment(autoescape=False, **common)  # noqa: S701


def applicable(kind: str, level: str | None) -> bool:
    """The stakeholder email is for P0/P1 only; everything else always applies."""
    if kind == "email_stakeholders":
        return level in (Level.P0.value, Level.P1.value)
    return True


def render(
    record: Record, settings: Settings, kind: str, *, now: datetime, actor: str, root_cause: str = ""
) -> Rendered:
    """Render one message into ``comms/NN-<kind>.txt`` (and ``.html`` for email) with a ``comms.rendered`` event."""
    if kind not in KINDS:
        raise BadInputError(f"unknown message kind {kind!r}; kinds: {', '.join(KINDS)}")
    ctx = context(record, settings, now=now, root_cause=root_cause)
    text = _env(False).get_template(f"{kind}.txt.j2").render(**ctx)
    html = _env(True).get_template(f"{kind}.html.j2").render(**ctx) if kind == "email_stakeholders" else None
    taken = {Path(p).name.split("-", 1)[0] for p in record.state()["artifacts"] if p.startswith("comms/")}
    first = len(taken)

    def files_for(n: int) -> dict[str, bytes]:
        # The number is the message's place in the incident's story; it is chosen under the record
        # lock, so concurrent renders get distinct files instead of overwriting each other.
        rel = f"comms/{first + n:02d}-{kind}.txt"
        out = {rel: text.encode()}
        if html is not None:
            out[rel.replace(".txt", ".html")] = html.encode()
        return out

    files = record.seal(files_for, actor=actor, kind="message", reuse_identical=False)
    rel = files[0]
    record.append("comms.rendered", {"kind": kind, "path": rel, "files": files}, actor=actor)
    return Rendered(kind, text, html, rel, ctx)


# --------------------------------------------------------------------------- senders


@dataclass
class SendResult:
    ok: bool
    channel: str
    response_id: str | None = None
    error: str | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Sender(Protocol):
    channel: str

    def send(self, message: Rendered, record_id: str) -> SendResult: ...


class _Http:
    """POST JSON with a timeout; retry 5xx, 429 and timeouts with exponential backoff."""

    channel = ""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.cfg = settings.comms
        self.environ = environ

    def _secret(self, name: str) -> str:
        value = self.environ.get(name)
        if not value:
            raise BadInputError(f"environment variable {name} is not set")
        return value

    def post(
        self, url: str, body: Any, headers: Mapping[str, str] | None = None, auth: tuple[str, str] | None = None
    ) -> tuple[int | None, Any, str | None, int]:
        import requests

        last_error = None
        for attempt in range(1, self.cfg.retries + 1):
            try:
                resp = requests.post(url, json=body, headers=dict(headers or {}), auth=auth, timeout=self.cfg.timeout_s)
                if resp.status_code < 500 and resp.status_code != 429:
                    try:
                        payload = resp.json()
                    except ValueError:
                        payload = resp.text
                    return resp.status_code, payload, None, attempt
                last_error = f"HTTP {resp.status_code}"
            except requests.exceptions.RequestException as exc:
                last_error = type(exc).__name__
            if attempt < self.cfg.retries:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
        return None, None, last_error, self.cfg.retries


class SlackSender(_Http):
    """Slack incoming webhook: Block Kit blocks plus the text fallback."""

    channel = "slack"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        assert self.cfg.slack is not None
        url = self._secret(self.cfg.slack.webhook_url_env)
        text = slack_escape(message.text)
        first, _, rest = text.partition("\n")
        body = {
            "text": text,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": first[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": rest.strip()[:2900] or first}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"irkit · {record_id}"}]},
            ],
        }
        status, payload, err, attempts = self.post(url, body)
        if status == 200:
            return SendResult(True, self.channel, str(payload)[:40], attempts=attempts)
        return SendResult(False, self.channel, error=err or f"HTTP {status}: {str(payload)[:120]}", attempts=attempts)


PD_SEVERITY = {"P0": "critical", "P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}


def slack_escape(text: str) -> str:
    """Slack's control characters: alert text must not become <!channel> pings or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class PagerDutySender(_Http):
    """PagerDuty Events API v2: trigger / acknowledge / resolve, ``dedup_key`` = incident id."""

    channel = "pagerduty"

    def event(
        self,
        action: str,
        record_id: str,
        summary: str,
        level: str | None,
        component: str,
        details: Mapping[str, Any] | None = None,
    ) -> SendResult:
        assert self.cfg.pagerduty is not None
        if action not in ("trigger", "acknowledge", "resolve"):
            raise BadInputError(f"PagerDuty event_action must be trigger, acknowledge or resolve, not {action!r}")
        body: dict[str, Any] = {
            "routing_key": self._secret(self.cfg.pagerduty.routing_key_env),
            "event_action": action,
            "dedup_key": record_id,
        }
        if action == "trigger":
            body["payload"] = {
                "summary": summary[:1024],
                "source": "irkit",
                "severity": PD_SEVERITY.get(level or "", "error"),
                "component": component,
                "custom_details": dict(details or {}),
            }
        status, payload, err, attempts = self.post(self.cfg.pagerduty.url, body)
        if status == 202:
            return SendResult(
                True, self.channel, payload.get("dedup_key") if isinstance(payload, dict) else None, attempts=attempts
            )
        return SendResult(False, self.channel, error=err or f"HTTP {status}: {str(payload)[:120]}", attempts=attempts)

    def send(self, message: Rendered, record_id: str) -> SendResult:
        ctx = message.context
        return self.event(
            "trigger",
            record_id,
            f"[{ctx['severity']}] {ctx['title']}",
            ctx["severity"],
            ctx["component"],
            {"status": ctx["status"], "impact": ctx["impact"]},
        )


class StatuspageSender(_Http):
    """Atlassian Statuspage: create an incident (investigating or resolved)."""

    channel = "statuspage"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        assert self.cfg.statuspage is not None
        sp = self.cfg.statuspage
        ctx = message.context
        resolved = message.kind.endswith("resolved")
        name = f"{ctx['component']} - Resolved" if resolved else f"{ctx['component']} Service Degradation"
        body = {
            "incident": {
                "name": name,
                "status": "resolved" if resolved else "investigating",
                "body": message.text,
                "deliver_notifications": True,
            }
        }
        status, payload, err, attempts = self.post(
            f"{sp.url.rstrip('/')}/pages/{sp.page_id}/incidents",
            body,
            headers={"Authorization": f"OAuth {self._secret(sp.api_key_env)}"},
        )
        if status in (200, 201) and isinstance(payload, dict):
            return SendResult(
                True, self.channel, str(payload.get("id")), attempts=attempts, extra={"url": payload.get("shortlink")}
            )
        return SendResult(False, self.channel, error=err or f"HTTP {status}: {str(payload)[:120]}", attempts=attempts)


class JiraSender(_Http):
    """Jira: create the incident ticket (REST API v2, basic auth with an API token)."""

    channel = "jira"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        assert self.cfg.jira is not None
        j = self.cfg.jira
        ctx = message.context
        body = {
            "fields": {
                "project": {"key": j.project},
                "issuetype": {"name": j.issue_type},
                "summary": f"[{ctx['severity']}] {ctx['title']} ({record_id})"[:255],
                "description": message.text,
                "labels": ["incident", "irkit"],
            }
        }
        status, payload, err, attempts = self.post(
            f"{j.url.rstrip('/')}/rest/api/2/issue", body, auth=(j.email, self._secret(j.token_env))
        )
        if status == 201 and isinstance(payload, dict):
            key = str(payload.get("key"))
            return SendResult(
                True, self.channel, key, attempts=attempts, extra={"url": f"{j.url.rstrip('/')}/browse/{key}"}
            )
        return SendResult(False, self.channel, error=err or f"HTTP {status}: {str(payload)[:120]}", attempts=attempts)


class SmtpSender:
    """SMTP email with text and HTML parts (STARTTLS and login when configured)."""

    channel = "smtp"

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.cfg = settings.comms
        self.environ = environ

    def send(self, message: Rendered, record_id: str) -> SendResult:
        assert self.cfg.smtp is not None
        s = self.cfg.smtp
        subject, _, body = message.text.partition("\n")
        msg = EmailMessage()
        msg["Subject"] = subject.removeprefix("Subject: ").strip()
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.to)
        msg["Message-ID"] = f"<{record_id}.{int(time.time() * 1000)}@irkit>"
        msg.set_content(body.lstrip("\n"))
        if message.html:
            msg.add_alternative(message.html, subtype="html")
        last = None
        for attempt in range(1, self.cfg.retries + 1):
            try:
                with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as smtp:
                    if s.starttls:
                        smtp.starttls()
                    if s.username and s.password_env:
                        smtp.login(s.username, self.environ.get(s.password_env, ""))
                    smtp.send_message(msg)
                return SendResult(True, self.channel, msg["Message-ID"], attempts=attempt)
            except (OSError, smtplib.SMTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"[:160]
                if attempt < self.cfg.retries:
                    time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
        return SendResult(False, self.channel, error=last, attempts=self.cfg.retries)


SENDERS: dict[str, Callable[[Settings, Mapping[str, str]], Sender]] = {
    "slack": SlackSender,
    "smtp": SmtpSender,
    "pagerduty": PagerDutySender,
    "statuspage": StatuspageSender,
    "jira": JiraSender,
}


def sender_for(channel: str, settings: Settings, environ: Mapping[str, str]) -> Sender | None:
    """The configured sender for a channel, or None when that channel is not configured."""
    if getattr(settings.comms, channel, None) is None:
        return None
    return SENDERS[channel](settings, environ)


def deliver(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    message: Rendered,
    *,
    actor: str,
    channel: str | None = None,
) -> SendResult:
    """Send a rendered message on its channel; record ``comms.sent`` or ``comms.failed``; never raise."""
    ch = channel or CHANNEL[message.kind]
    sender = sender_for(ch, settings, environ)
    if sender is None:
        result = SendResult(False, ch, error=f"{ch} is not configured (comms.{ch})")
        record.append("comms.skipped", {"kind": message.kind, "channel": ch, "reason": result.error}, actor=actor)
        return result
    try:
        result = sender.send(message, record.id)
    except BadInputError as exc:
        result = SendResult(False, ch, error=str(exc))
    data = {"kind": message.kind, "channel": ch, "path": message.path, "attempts": result.attempts}
    if result.ok:
        record.append("comms.sent", {**data, "response_id": result.response_id, **result.extra}, actor=actor)
    else:
        record.append("comms.failed", {**data, "error": result.error}, actor=actor)
    return result


def render_set(
    record: Record, settings: Settings, kinds: tuple[str, ...], *, now: datetime, actor: str, root_cause: str = ""
) -> list[Rendered]:
    """Render every applicable message of a set (initial or resolved)."""
    level = record.state().get("severity")
    return [
        render(record, settings, k, now=now, actor=actor, root_cause=root_cause) for k in kinds if applicable(k, level)
    ]
