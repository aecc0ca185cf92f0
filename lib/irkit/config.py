"""Typed settings for irkit, read once at an entry point and passed down.

Sources, later winning: built-in defaults (the plan's policy and the plan's service), ``irkit.yaml``,
then ``IRKIT_*`` environment variables (``IRKIT_PROMETHEUS__URL`` sets ``prometheus.url``). Nothing
deeper in the code reads ``os.environ``: secrets are *named* here (environment-variable names, never
literal values) and resolved only by :meth:`Settings.secret_values` with the environment the entry
point hands in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from irkit.errors import ConfigError
from irkit.oncall import EscalationSettings, RotationSettings
from irkit.redact import BUILT_IN_PATTERNS
from irkit.severity import SeverityPolicy

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
EnvName = Annotated[str, Field(pattern=ENV_NAME.pattern, description="Name of an environment variable")]
ENV_PREFIX = "IRKIT_"
# IRKIT_ variables that steer a process rather than configure irkit; not settings overrides.
RUNTIME_VARS = frozenset({"IRKIT_CONFIG", "IRKIT_ACTOR", "IRKIT_BATCH", "IRKIT_CLOCK", "IRKIT_STORE_HELD"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSettings(_Model):
    """The service the runbooks are about."""

    name: str = "schema-registry"
    namespace: str = "schema-registry"
    component: str = "Schema Registry"
    health_url: str = "https://schema-registry.example.com/health"
    dashboard_url: str = "https://grafana.example.com/d/schema-registry"


class BasicAuth(_Model):
    """HTTP basic auth for Prometheus: a username and the env var holding the password."""

    username: str
    password_env: EnvName


class PrometheusAuth(_Model):
    """How to authenticate to Prometheus: a bearer token or basic auth, secrets named by env var."""

    bearer_token_env: EnvName | None = None
    basic: BasicAuth | None = None


class PrometheusSettings(_Model):
    """Where Prometheus is and how to talk to it."""

    url: str = "http://localhost:9090"
    timeout_s: float = Field(10.0, gt=0, le=300)
    verify_tls: bool = True
    ca_file: str | None = None
    auth: PrometheusAuth = PrometheusAuth()


DEFAULT_SIGNALS: dict[str, str] = {
    "request_rate": 'sum(rate(http_requests_total{{namespace="{namespace}",service="{service}"}}[5m]))',
    "error_ratio": (
        'sum(rate(http_requests_total{{namespace="{namespace}",service="{service}",code=~"5.."}}[5m]))'
        ' / sum(rate(http_requests_total{{namespace="{namespace}",service="{service}"}}[5m]))'
    ),
    "latency_p99": (
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{{namespace="{namespace}",service="{service}"}}[5m])))'
    ),
    "saturation_cpu": (
        'sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",container="{service}"}}[5m]))'
        ' / sum(kube_pod_container_resource_limits{{namespace="{namespace}",container="{service}",resource="cpu"}})'
    ),
    "saturation_memory": (
        'sum(container_memory_working_set_bytes{{namespace="{namespace}",container="{service}"}})'
        ' / sum(kube_pod_container_resource_limits{{namespace="{namespace}",container="{service}",resource="memory"}})'
    ),
    "saturation_disk": (
        'max(kubelet_volume_stats_used_bytes{{namespace="{namespace}"}}'
        ' / kubelet_volume_stats_capacity_bytes{{namespace="{namespace}"}})'
    ),
    "availability": 'avg(up{{namespace="{namespace}",job="{service}"}})',
    "error_ratio_by_route": (
        'sum by (route) (rate(http_requests_total{{namespace="{namespace}",service="{service}",code=~"5.."}}[5m]))'
        ' / sum by (route) (rate(http_requests_total{{namespace="{namespace}",service="{service}"}}[5m]))'
    ),
}


class KubernetesSettings(_Model):
    """Which cluster, namespace and workload the runbooks read and (with approval) change."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    namespace: str | None = Field(None, description="Defaults to service.namespace")
    deployment: str | None = Field(None, description="Defaults to service.name")
    label_selector: str | None = Field(None, description="Defaults to app=<service.name>")
    helm_release: str | None = Field(None, description="Defaults to service.name")
    log_tail_lines: int = Field(500, ge=1, le=100_000)
    log_patterns: tuple[str, ...] | None = Field(None, description="Regexes of error lines (default: built in)")
    rollback: Literal["replicaset", "helm"] = Field(
        "replicaset", description="How `rollback` rolls back: the ReplicaSet template PATCH, or `helm rollback`"
    )
    helm_binary: str = Field("helm", description="The helm executable for rollback: helm (name or path)")
    connect_timeout_s: float = Field(3.0, gt=0, le=60, description="Connecting to the API server")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="Waiting for one API answer")


class Dependency(_Model):
    """Something the service depends on, probed during investigation."""

    name: str
    kind: Literal["http", "tcp", "postgres", "redis", "s3"]
    url: str | None = Field(None, description="Non-secret address (http(s)://, tcp://host:port, …)")
    url_env: EnvName | None = Field(None, description="Env var holding a secret address (DSN with password)")
    bucket: str | None = None
    region: str = "us-east-1"
    access_key_env: EnvName | None = Field(None, description="S3: env var holding the access key id")
    secret_key_env: EnvName | None = Field(None, description="S3: env var holding the secret access key")
    timeout_s: float = Field(5.0, gt=0, le=120)
    slow_query_s: float = Field(30.0, gt=0, description="PostgreSQL: queries running longer than this are a problem")


class SentrySettings(_Model):
    """Sentry's HTTP API, for the checklist's "review related Sentry errors"."""

    url: str = "https://sentry.io"
    org: str
    project: str
    token_env: EnvName
    timeout_s: float = Field(10.0, gt=0, le=120)


class SecurityQuery(_Model):
    """A PromQL query whose value above ``threshold`` means security events worth a look."""

    query: str
    threshold: float = 0.0
    description: str = "security events"


class SmokeTest(_Model):
    """An HTTP check the resolution runbook runs: the URL must answer ``expect_status``."""

    name: str
    url: str
    expect_status: int = 200
    timeout_s: float = Field(10.0, gt=0, le=120)


class ResolutionSettings(_Model):
    """The plan's "verify metrics back to normal" criteria and smoke tests."""

    error_ratio_below: float = Field(0.01, gt=0, le=1, description="Error rate < 1%")
    latency_tolerance: float = Field(0.2, ge=0, description="p99 within baseline × (1 + tolerance)")
    window: timedelta = Field(timedelta(minutes=5), description="Criteria hold over this window ending now")
    min_watch: timedelta = Field(
        timedelta(minutes=30), ge=timedelta(minutes=1), description="The shortest watch before resolved (plan: 30-60 min)"
    )
    smoke_tests: tuple[SmokeTest, ...] = ()
    smoke_command: tuple[str, ...] = Field(
        (), description="argv of a smoke-test command, e.g. [./scripts/smoke-test.sh, production]"
    )
    smoke_command_timeout_s: float = Field(300, gt=0)


class SlackSettings(_Model):
    """Slack incoming webhook: the env var holding its URL, and the channel it posts to."""

    webhook_url_env: EnvName
    channel: str = "#incidents"


class SmtpSettings(_Model):
    """SMTP server, login (password named by env var), sender and recipients for stakeholder email."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: EnvName | None = None
    sender: str = "irkit@example.com"
    to: tuple[str, ...] = ("oncall-schema-registry@example.com",)
    timeout_s: float = Field(10.0, gt=0, le=120)


class PagerDutySettings(_Model):
    """PagerDuty Events v2: the env var holding the routing key, and the endpoint."""

    routing_key_env: EnvName
    url: str = "https://events.pagerduty.com/v2/enqueue"


class StatuspageSettings(_Model):
    """Statuspage page id, the env var holding the API key, and the API base URL."""

    page_id: str
    api_key_env: EnvName
    url: str = "https://api.statuspage.io/v1"


class JiraSettings(_Model):
    """Jira site, project, issue type and account (API token named by env var) for incident tickets."""

    url: str
    project: str
    email: str
    token_env: EnvName
    issue_type: str = "Incident"


class CommsSettings(_Model):
    """Where messages go. Every sender is optional; secrets are named by env var."""

    slack: SlackSettings | None = None
    smtp: SmtpSettings | None = None
    pagerduty: PagerDutySettings | None = None
    statuspage: StatuspageSettings | None = None
    jira: JiraSettings | None = None
    ticket_url: str | None = Field(None, description="Ticket link for messages when Jira is not configured")
    timeout_s: float = Field(10.0, gt=0, le=120)
    retries: int = Field(3, ge=1, le=10)
    backoff_s: float = Field(0.5, ge=0, le=30)


class ServeSettings(_Model):
    """``irkit serve``: the Alertmanager webhook receiver and its batch runner."""

    host: str = "127.0.0.1"
    port: int = Field(9095, ge=1, le=65535)
    token_env: EnvName | None = Field(None, description="Bearer token (Alertmanager http_config.authorization)")
    basic: BasicAuth | None = Field(None, description="Or basic auth (http_config.basic_auth)")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    workers: int | None = Field(None, ge=1, le=64, description="Concurrent runbook runs (default: CPU count)")
    warm_pool: bool = Field(True, description="Run on pre-started, pre-imported single-use kernels")
    runbooks: tuple[str, ...] = ("triage", "investigation")
    group_by: tuple[str, ...] | None = Field(None, description="Group alerts by these labels (default: groupKey)")
    relink_window: timedelta = Field(
        timedelta(minutes=30), description="Re-firing within this after resolution joins the same incident"
    )
    queue_path: str | None = Field(None, description="SQLite queue (default: <records>/.irkit/queue.sqlite)")
    tick_s: float = Field(60, ge=0, le=600, description="Evaluate escalations and update reminders this often (0: off)")


class StoreSettings(_Model):
    """Where records live: a directory (the default), or PostgreSQL plus an S3-compatible bucket for a team.

    With ``url: postgresql://…`` the event chains, the intake queue and the jobs are in PostgreSQL,
    sealed files are in the bucket (addressed by their sha256), and ``records_dir`` is this
    machine's working cache. Passwords never go in the url: libpq reads ``PGPASSWORD`` (or
    ``~/.pgpass``); the bucket's endpoint and keys are read from the env vars named here.
    """

    url: str = Field("file://", description="file:// (records_dir) or postgresql://user@host:5432/db")
    artifacts: str | None = Field(None, description="s3://bucket/prefix for sealed files (with postgresql://)")
    endpoint_env: EnvName = Field("AWS_ENDPOINT_URL", description="Env var with the S3 endpoint (unset: AWS)")
    access_key_env: EnvName = "AWS_ACCESS_KEY_ID"
    secret_key_env: EnvName = "AWS_SECRET_ACCESS_KEY"  # noqa: S105  # the name of the variable, not a secret
    lease: timedelta = Field(
        timedelta(seconds=60), description="A claimed job or notification is taken back after this"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in ("file", "postgresql", "postgres"):
            raise ValueError(f"must start with file:// or postgresql://, not {v.split('@')[-1][:60]!r}")
        if scheme != "file" and re.match(r"^[a-z]+://[^/@]*:[^/@]*@", v):
            raise ValueError("holds a password: leave it out and set PGPASSWORD (or use ~/.pgpass)")
        return v

    @field_validator("artifacts")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?", v):
            raise ValueError(f"must be s3://bucket or s3://bucket/prefix, not {v[:80]!r}")
        return v

    @property
    def shared(self) -> bool:
        """True for the team store (PostgreSQL and a bucket), False for a directory."""
        return not self.url.startswith("file://")

    @property
    def directory(self) -> str | None:
        """The records directory a ``file:///path`` url names (None for ``file://``: use ``records_dir``)."""
        return (self.url.removeprefix("file://") or None) if not self.shared else None


class RedactionSettings(_Model):
    """What is scrubbed from notebooks and events before they are sealed into a record."""

    patterns: tuple[str, ...] = BUILT_IN_PATTERNS  # irkit.redact: what each one is, and why it is bounded
    replacement: str = "[REDACTED]"
    min_secret_length: int = Field(6, ge=1, description="Shorter secret values are not scrubbed (too many hits)")
    detect_secrets: bool = Field(True, description="Also remove credentials of known shapes (detect-secrets plugins)")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {p!r} does not compile: {exc}") from exc
        return v


class RunnerSettings(_Model):
    """How runbooks are executed."""

    kernel_name: str = Field(
        "python3",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Jupyter kernelspec the runbooks run on (see `jupyter kernelspec list`)",
    )
    execution_timeout_s: float = Field(600, gt=0, description="Per-cell timeout")
    start_timeout_s: float = Field(60, gt=0)
    notebooks_dir: str | None = Field(None, description="Where runbook sources live; default: bundled")
    warm_pool: int = Field(0, ge=0, le=32, description="Warm kernels for irkit run/demo (0: a fresh kernel per run)")


class SigningSettings(_Model):
    """The Ed25519 key that signs every event irkit writes (kept outside the record; see ``irkit keygen``)."""

    key_file: str | None = Field(None, description="Private key file (PEM), readable by irkit only")
    key_env: EnvName | None = Field(None, description="Env var holding the private key (PEM or base64)")


class Settings(_Model):
    """Everything irkit needs to know, validated."""

    service: ServiceSettings = ServiceSettings()
    actor: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Your name as the incident record shows it (IRKIT_ACTOR overrides; default: the login name)",
    )
    records_dir: str = "reports"
    store: StoreSettings = StoreSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    signals: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SIGNALS))
    kubernetes: KubernetesSettings = KubernetesSettings()
    dependencies: tuple[Dependency, ...] = ()
    alertmanager_url: str | None = Field(
        None, description="Alertmanager for 'no active alerts' (else Prometheus alerts)"
    )
    resolution: ResolutionSettings = ResolutionSettings()
    serve: ServeSettings = ServeSettings()
    comms: CommsSettings = CommsSettings()
    rotation: RotationSettings = RotationSettings()
    escalation: EscalationSettings = EscalationSettings()
    maintenance_tables: tuple[str, ...] = Field((), description="Tables the db_maintenance action vacuums")
    sentry: SentrySettings | None = None
    security_query: SecurityQuery | None = None
    secrets: tuple[EnvName, ...] = Field((), description="Env var names whose values must never be saved")
    redaction: RedactionSettings = RedactionSettings()
    runner: RunnerSettings = RunnerSettings()
    signing: SigningSettings = SigningSettings()
    severity: SeverityPolicy = SeverityPolicy()
    baseline_offset: timedelta = Field(
        timedelta(days=7), description="'Normal' is the same window this long earlier (seconds or ISO 8601)"
    )
    source_path: str | None = Field(None, description="The file these settings came from (set by the loader)")

    @field_validator("signals", mode="before")
    @classmethod
    def _signals_extend_defaults(cls, v: object) -> object:
        # Naming a few signals keeps the others; `name: null` removes a default signal.
        if isinstance(v, Mapping):
            merged = {**DEFAULT_SIGNALS, **v}
            return {k: val for k, val in merged.items() if val is not None}
        return v

    def secret_env_names(self) -> tuple[str, ...]:
        """Every env var name that holds a secret: the list plus those referenced by other settings."""
        names = list(self.secrets)
        auth = self.prometheus.auth
        if auth.bearer_token_env:
            names.append(auth.bearer_token_env)
        if auth.basic:
            names.append(auth.basic.password_env)
        for d in self.dependencies:
            names += [n for n in (d.url_env, d.access_key_env, d.secret_key_env) if n]
        if self.sentry and self.sentry.token_env:
            names.append(self.sentry.token_env)
        if self.serve.token_env:
            names.append(self.serve.token_env)
        if self.serve.basic:
            names.append(self.serve.basic.password_env)
        if self.signing.key_env:
            names.append(self.signing.key_env)
        if self.store.shared:
            names += ["PGPASSWORD", self.store.secret_key_env]
        c = self.comms
        for env in (
            c.slack and c.slack.webhook_url_env,
            c.smtp and c.smtp.password_env,
            c.pagerduty and c.pagerduty.routing_key_env,
            c.statuspage and c.statuspage.api_key_env,
            c.jira and c.jira.token_env,
        ):
            if env:
                names.append(env)
        return tuple(dict.fromkeys(names))

    def record_options(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """What every writer of a record needs: the redactor and, when a key is configured, the signer."""
        from irkit.redact import Redactor
        from irkit.signing import load_signer

        return {
            "redactor": Redactor.from_settings(self, environ),
            "signer": load_signer(self.signing.key_file, self.signing.key_env, environ),
        }

    def secret_values(self, environ: Mapping[str, str]) -> list[str]:
        """The current values of every configured secret that is set in ``environ``."""
        return [environ[n] for n in self.secret_env_names() if environ.get(n)]


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``IRKIT_A__B=value`` → ``{"a": {"b": value}}``, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in RUNTIME_VARS:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with another IRKIT_ variable")
        node[path[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def describe_validation_error(source: str, exc: ValidationError) -> str:
    """One line naming the first bad key and the problem (plus how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (secrets are referenced by env var name: use *_env keys or `secrets:`)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    required: bool = False,
) -> Settings:
    """Load settings from ``path`` (YAML) and ``IRKIT_*`` variables in ``environ``.

    A missing file is an error only when ``required`` (the user named it); otherwise the plan's
    defaults apply. Any problem raises :class:`ConfigError` with one line naming key and problem.
    """
    environ = environ or {}
    data: dict[str, Any] = {}
    source = "(defaults and IRKIT_* environment)"
    if path is not None:
        p = Path(path)
        if p.is_file():
            source = str(p)
            try:
                loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark is not None else ""
                raise ConfigError(f"{p}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
            except OSError as exc:
                raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{p}: top level must be a mapping of keys, not {type(loaded).__name__}")
            data = loaded
            data["source_path"] = str(p.resolve())
        elif required:
            raise ConfigError(f"{p}: config file not found")
    data = _deep_merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from exc


def resolve_actor(environ: Mapping[str, str], settings: Settings | None = None) -> tuple[str, bool]:
    """Who is acting, and whether that is a person's chosen name: ``IRKIT_ACTOR``, then ``actor`` in
    the settings, then the login name (``False``: "root" or "jovyan" names an account, not a responder)."""
    import getpass

    if environ.get("IRKIT_ACTOR", "").strip():
        return environ["IRKIT_ACTOR"].strip(), True
    if settings is not None and settings.actor:
        return settings.actor, True
    try:
        return getpass.getuser(), False
    except (KeyError, OSError):
        return "unknown", False
