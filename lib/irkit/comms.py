"""Incident communications: the plan's messages rendered from the record, and the senders that deliver them.

Messages (initial Slack alert, status page notice, stakeholder email for P0/P1, resolution Slack
message, resolution status page) are Jinja2 templates filled from the incident's state and events;
anything not known yet reads "not yet assessed" or "unknown", never "None". Each rendering is saved in
``comms/`` with a ``comms.rendered`` event. Senders (Slack webhook, SMTP, PagerDuty Events v2,
Statuspage, Jira) share one interface, retry with backoff, and never break a runbook: a failure is a
``comms.failed`` event, a success a ``comms.sent`` event carrying the provider's response id.
"""

from __future__ import annotations

import json
import smtplib
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from irkit import templating
from irkit.config import Settings
from irkit.errors import BadInputError, SourceUnavailable
from irkit.events import Status
from irkit.http import Http
from irkit.oncall import on_call
from irkit.record import Record
from irkit.severity import compute_clocks
from irkit.times import human, parse_ts

UNKNOWN = "not yet assessed"
KINDS = (
    "slack_initial",
    "statuspage_initial",
    "email_stakeholders",
    "slack_resolved",
    "statuspage_resolved",
    "ticket",
)
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


def _cadence(settings: Settings, level: str | None) -> str:
    if not level:
        return UNKNOWN
    every = settings.severity[level].update_every
    return human(every) if every else "no scheduled updates"


def context(record: Record, settings: Settings, *, now: datetime, root_cause: str = "") -> dict[str, Any]:
    """Everything the templates use, from the record; unknown values say so."""
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
        f"{e['data']['title']}: {textwrap.shorten(str(e['data']['evidence']), 160, placeholder=' …')}"
        for e in events
        if e["type"] == "check.recorded" and e["data"].get("status") == "problem found"
    ][:4] or symptoms
    planned = {e["data"].get("key"): e["data"] for e in events if e["type"] == "action.planned"}
    executed = {e["data"].get("key"): e for e in events if e["type"] == "action.executed"}
    actions, done = [], []
    for key, plan in planned.items():
        if key in executed:
            done.append(str(plan.get("description")))
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
    providers = st.get("providers") or {}
    ticket = providers.get("jira_url") or providers.get("jira") or settings.comms.ticket_url or "not yet created"
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
        "incident_id": record.id,
        "statuspage_id": providers.get("statuspage"),
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
        "current": (st.get("status") or UNKNOWN).capitalize() + (f"; latest action: {actions[-1]}" if actions else ""),
        "next_steps": [
            "Continue the investigation checklist",
            "Apply and verify mitigation",
            "Verify metrics back to normal",
        ],
        "dashboard": settings.service.dashboard_url,
        "duration": human(resolved - detected) if resolved else "ongoing",
        "root_cause": root_cause or UNKNOWN,
        "resolution": (done[-1] if done else "service recovered; no mitigation was executed through irkit")
        if resolved
        else UNKNOWN,
        "timeline": timeline,
        "review": f"{review[0]:%Y-%m-%d %H:%M} UTC" if review else "to be scheduled",
    }


@dataclass(frozen=True)
class Rendered:
    """One rendered message: its kind, text (and HTML for email), path in the record, and the template context."""

    kind: str
    text: str
    html: str | None
    path: str
    context: dict[str, Any]
    new: bool = True  # False: identical to the last message of this kind, which is reused (not rendered again)


# What a message says that moves by itself: the next update's time moves each time one is sent.
VOLATILE = frozenset({"next_update"})


def _substance(kind: str, ctx: Mapping[str, Any]) -> str:
    """A digest of what a message says (its kind and context, less ``VOLATILE``), to tell news from a re-run."""
    import hashlib

    said = {k: v for k, v in ctx.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps([kind, said], sort_keys=True, default=str).encode()).hexdigest()


def _unchanged(record: Record, kind: str, substance: str) -> str | None:
    """The path of the last ``kind`` message when it said the same thing: re-running a runbook must not
    pile up copies of a message with nothing new in it."""
    last = next(
        (e["data"] for e in reversed(record.events()) if e["type"] == "comms.rendered" and e["data"].get("kind") == kind),
        None,
    )
    return str(last["path"]) if last is not None and last.get("substance") == substance else None


def message_set(requested: str, status: str | None) -> str:
    """Which set of messages to send: a request for the ``initial`` set on an incident that is already
    resolved gets the ``resolved`` set (never "INCIDENT ALERT … Status: Resolved")."""
    if requested == "initial" and status in (Status.RESOLVED, Status.REVIEWED):
        return "resolved"
    return requested


def applicable(kind: str, level: str | None, settings: Settings) -> bool:
    """The stakeholder email goes out only where the level's policy says so (plan: P0/P1); the rest always applies."""
    if kind == "email_stakeholders":
        return level is not None and settings.severity[level].stakeholder_email
    return True


def render(
    record: Record, settings: Settings, kind: str, *, now: datetime, actor: str, root_cause: str = ""
) -> Rendered:
    """Render one message into ``comms/NN-<kind>.txt`` (and ``.html`` for email) with a ``comms.rendered`` event."""
    if kind not in KINDS:
        raise BadInputError(f"unknown message kind {kind!r}; kinds: {', '.join(KINDS)}")
    ctx = context(record, settings, now=now, root_cause=root_cause)
    text = templating.render(f"comms/{kind}.txt.j2", "text", **ctx)
    html = templating.render(f"comms/{kind}.html.j2", "html", **ctx) if kind == "email_stakeholders" else None
    substance = _substance(kind, ctx)
    if (same := _unchanged(record, kind, substance)) is not None:
        return Rendered(kind, text, html, same, ctx, new=False)  # a re-run: nothing new to say, no new file
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
    record.append("comms.rendered", {"kind": kind, "path": rel, "files": files, "substance": substance}, actor=actor)
    return Rendered(kind, text, html, rel, ctx)


# --------------------------------------------------------------------------- senders


@dataclass
class SendResult:
    """What a delivery attempt came to: ok or the error, the provider's response id, attempts made."""

    ok: bool
    channel: str
    response_id: str | None = None
    error: str | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Sender(Protocol):
    """Delivers a rendered message on one channel."""

    channel: str

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """Deliver ``message`` for incident ``record_id``; a failed delivery is reported in the result."""
        ...


SenderFactory = Callable[["Settings", Mapping[str, str]], Sender]


class _Http:
    """A sender over HTTP: POST JSON with the comms timeout, retrying 5xx, 429 and no-answer with backoff."""

    channel = ""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.cfg = settings.comms
        self.environ = environ
        self.http = Http(timeout_s=self.cfg.timeout_s, retries=self.cfg.retries - 1, backoff_s=self.cfg.backoff_s)

    def _secret(self, name: str) -> str:
        value = self.environ.get(name)
        if not value:
            raise BadInputError(f"environment variable {name} is not set")
        return value

    def _post(
        self,
        url: str,
        body: Any,
        ok: tuple[int, ...],
        answer: Callable[[Any], tuple[str | None, dict[str, Any]] | None],
        **kw: Any,
    ) -> SendResult:
        """POST (or ``method``) ``body``; a status in ``ok`` whose payload ``answer`` accepts (→ id, extra) is sent."""
        try:
            reply = self.http.request(kw.pop("method", "POST"), url, json=body, what=self.channel, **kw)
        except SourceUnavailable as exc:
            return SendResult(False, self.channel, error=str(exc), attempts=self.http.retries + 1)
        accepted = answer(reply.payload) if reply.status in ok else None
        if accepted is None:
            return SendResult(False, self.channel, error=reply.brief(), attempts=reply.attempts)
        return SendResult(True, self.channel, accepted[0], attempts=reply.attempts, extra=accepted[1])


def _json_object(payload: Any) -> dict[str, Any] | None:
    return payload if isinstance(payload, dict) else None


class SlackSender(_Http):
    """Slack incoming webhook: Block Kit blocks plus the text fallback."""

    channel = "slack"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """POST the message to the Slack webhook as a header and body block, tagged with the incident id."""
        assert self.cfg.slack is not None
        url = self._secret(self.cfg.slack.webhook_url_env)
        text = slack_escape(message.text)
        first, _, rest = text.partition("\n")
        body = {
            "channel": self.cfg.slack.channel,  # legacy webhooks post there; app webhooks keep their own channel
            "text": text,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": first[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": rest.strip()[:2900] or first}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"irkit · {record_id}"}]},
            ],
        }
        return self._post(url, body, (200,), lambda payload: (str(payload)[:40], {}), secret_url=True)


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
        """Send a PagerDuty Events v2 trigger/acknowledge/resolve, deduplicated on the incident id."""
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
        return self._post(
            self.cfg.pagerduty.url, body, (202,), lambda p: ((_json_object(p) or {}).get("dedup_key"), {})
        )

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """Trigger a PagerDuty incident with the message's severity, title, component, status and impact."""
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
    """Atlassian Statuspage: one incident per irkit incident, created once, then updated and resolved in place."""

    channel = "statuspage"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """Create the incident, or PATCH the one this record already opened (a later update, the resolution)."""
        assert self.cfg.statuspage is not None
        sp = self.cfg.statuspage
        ctx = message.context
        resolved = message.kind.endswith("resolved")
        incident: dict[str, Any] = {
            "status": "resolved" if resolved else "investigating",
            "body": message.text,
            "deliver_notifications": True,
        }
        existing = ctx.get("statuspage_id")
        base = f"{sp.url.rstrip('/')}/pages/{sp.page_id}/incidents"
        if not existing:
            incident["name"] = f"{ctx['component']} - Resolved" if resolved else f"{ctx['component']} Service Degradation"
        return self._post(
            f"{base}/{existing}" if existing else base,
            {"incident": incident},
            (200, 201),
            lambda p: (str(p.get("id")), {"url": p.get("shortlink")}) if _json_object(p) else None,
            method="PATCH" if existing else "POST",
            headers={"Authorization": f"OAuth {self._secret(sp.api_key_env)}"},
        )


class JiraSender(_Http):
    """Jira: create the incident ticket (REST API v2, basic auth with an API token)."""

    channel = "jira"

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """Create a Jira issue titled with severity, title and incident id; the text is its description."""
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
        return self._post(
            f"{j.url.rstrip('/')}/rest/api/2/issue",
            body,
            (201,),
            lambda p: (str(p.get("key")), {"url": f"{j.url.rstrip('/')}/browse/{p.get('key')}"}) if _json_object(p) else None,
            auth=(j.email, self._secret(j.token_env)),
        )


class SmtpSender:
    """SMTP email with text and HTML parts (STARTTLS and login when configured)."""

    channel = "smtp"

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.cfg = settings.comms
        self.environ = environ

    def send(self, message: Rendered, record_id: str) -> SendResult:
        """Email the message (subject from its first line, HTML alternative if any) over SMTP, retrying with backoff."""
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


SENDERS: dict[str, SenderFactory] = {
    "slack": SlackSender,
    "smtp": SmtpSender,
    "pagerduty": PagerDutySender,
    "statuspage": StatuspageSender,
    "jira": JiraSender,
}


def sender_for(
    channel: str, settings: Settings, environ: Mapping[str, str], senders: Mapping[str, SenderFactory] | None = None
) -> Sender | None:
    """The configured sender for a channel, or None when that channel is not configured."""
    if getattr(settings.comms, channel, None) is None:
        return None
    return (SENDERS if senders is None else senders)[channel](settings, environ)


def deliver(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    message: Rendered,
    *,
    actor: str,
    channel: str | None = None,
    senders: Mapping[str, SenderFactory] | None = None,
    key: str = "",
) -> SendResult:
    """Send a rendered message on its channel; record ``comms.sent`` or ``comms.failed``; never raise.

    ``key`` (the scheduler's) is carried on the event, so a firing is recognised as done.
    """
    ch = channel or CHANNEL[message.kind]
    sender = sender_for(ch, settings, environ, senders)
    keyed = {"key": key} if key else {}
    if sender is None:
        result = SendResult(False, ch, error=f"{ch} is not configured (comms.{ch})")
        skipped = {"kind": message.kind, "channel": ch, "reason": result.error, **keyed}
        record.append("comms.skipped", skipped, actor=actor)
        return result
    try:
        result = sender.send(message, record.id)
    except BadInputError as exc:
        result = SendResult(False, ch, error=str(exc))
    data = {"kind": message.kind, "channel": ch, "path": message.path, "attempts": result.attempts, **keyed}
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
        render(record, settings, k, now=now, actor=actor, root_cause=root_cause) for k in kinds if applicable(k, level, settings)
    ]


def communicate(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    which: str,
    *,
    send: bool,
    now: datetime,
    actor: str,
    root_cause: str = "",
    senders: Mapping[str, SenderFactory] | None = None,
) -> tuple[list[Rendered], list[SendResult | None]]:
    """Render the plan's ``initial`` or ``resolved`` messages into comms/; deliver each when ``send``.

    A message whose text did not change since it was last rendered is reused, and not delivered again
    if it already was (its result is None)."""
    which = message_set(which, record.state().get("status"))
    kinds = {"initial": INITIAL, "resolved": RESOLVED}.get(which)
    if kinds is None:
        raise BadInputError("which must be 'initial' or 'resolved'")
    rendered = render_set(record, settings, kinds, now=now, actor=actor, root_cause=root_cause)
    if not send:
        return rendered, []
    sent = {e["data"].get("path") for e in record.events() if e["type"] == "comms.sent"}
    # An unchanged message that already went out is not sent again (None: nothing was attempted).
    results = [
        deliver(record, settings, environ, r, actor=actor, senders=senders) if r.new or r.path not in sent else None
        for r in rendered
    ]
    return rendered, results


def open_ticket(
    record: Record,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    now: datetime,
    actor: str,
    key: str = "",
    senders: Mapping[str, SenderFactory] | None = None,
) -> SendResult:
    """Plan 1.2, "create incident ticket": once per incident, even with two processes at it; its key fills the messages."""
    with record.exclusive("ticket", wait=True):
        existing = record.state()["providers"]["jira"]
        if existing:
            return SendResult(True, "jira", existing, extra={"existing": True})
        message = render(record, settings, "ticket", now=now, actor=actor)
        return deliver(record, settings, environ, message, actor=actor, senders=senders, key=key)
