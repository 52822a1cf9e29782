"""All settings, read from environment variables prefixed OUTBOUND_SCIM_ (and, for `outbound-scim run`, from
an optional .env file: load_settings). No I/O at import."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Literal, Required, TypedDict

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigError


class KafkaClientOptions(TypedDict, total=False):
    """The connection keyword arguments every aiokafka client takes."""

    bootstrap_servers: Required[str]
    security_protocol: Required[str]
    sasl_mechanism: str
    sasl_plain_username: str | None
    sasl_plain_password: str | None
    ssl_context: ssl.SSLContext


class StaticMembership(TypedDict):
    """The consumer keyword arguments of a static member (KIP-345), the same in both groups."""

    group_instance_id: str
    session_timeout_ms: int
    heartbeat_interval_ms: int


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTBOUND_SCIM_", extra="ignore")

    # Kafka connection
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka brokers, comma-separated host:port")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how the service talks to the brokers"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, with a SASL_* protocol"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle (PEM file) for the brokers' TLS; default: the system CAs"
    )

    # Topics: the plugin's input, and the service's own internal topics
    events_topic: str = Field("keycloak-events", description="the plugin's user-event topic (its KAFKA_TOPIC)")
    admin_events_topic: str = Field(
        "keycloak-admin-events", description="the plugin's admin-event topic (its KAFKA_ADMIN_TOPIC)"
    )
    changes_topic: str = Field("outbound-scim.changes", description="internal: changes keyed by <realm>/<user id>")
    user_state_topic: str = Field(
        "outbound-scim.user-state", description="internal, compacted: per-user state, co-partitioned with the changes"
    )
    tenants_topic: str = Field(
        "outbound-scim.tenants", description="internal, compacted: tenant configuration (tokens encrypted)"
    )
    dead_letter_topic: str = Field("outbound-scim.dead-letter", description="poison records and rejected changes")
    parking_topic: str = Field(
        "outbound-scim.parked", description="changes set aside until a replay (keyed like the changes topic)"
    )
    replay_cursors_topic: str = Field(
        "outbound-scim.replay-cursors", description="internal, compacted: how far each tenant was replayed"
    )
    activity_topic: str = Field(
        "outbound-scim.activity",
        description="time-retained: what was done for each downstream (the console's activity log; no secrets)",
    )
    internal_partitions: int = Field(
        6, ge=1, description="partitions of the changes / user-state topics (= the most replicas that can work)"
    )
    internal_replication_factor: int = Field(
        1, ge=1, description="replication of the internal topics (3 in production)"
    )
    group_id: str = Field("outbound-scim", description="prefix of the two consumer groups (.rekey, .apply)")
    instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="this replica's stable name (the chart sets the pod name; default: the host name): its "
        "consumers' group.instance.id (static membership) and its stage-1 transactional id, so a restarted "
        "process fences its predecessor's open transaction at once and takes its partitions back",
    )
    kafka_session_timeout_ms: int = Field(
        30_000,
        ge=6000,
        description="consumer session timeout: how long a replica that died without leaving holds its partitions "
        "(a restart under the same instance id takes them back sooner)",
    )
    state_dir: str | None = Field(
        None,
        description="directory of the on-disk copy of the user-state topic (one SQLite file per process, restored "
        "from the topic when missing); default: outbound-scim-state under the system's temporary directory",
    )
    state_cache_size: int = Field(
        10_000, ge=0, description="decoded user / group states kept in memory (the rest is read from the state dir)"
    )
    kafka_partition_assignor: Literal["roundrobin", "sticky"] = Field(
        "roundrobin",
        description="how both consumer groups deal partitions at a rebalance: roundrobin deals them anew, sticky "
        "keeps each replica's partitions where they were; every replica must use the same (change it with all "
        "replicas stopped)",
    )
    max_record_bytes: int = Field(1_000_000, ge=1024, description="larger records are dead-lettered unread")
    max_clock_skew_seconds: float = Field(
        300.0,
        ge=0,
        description="event times further ahead of the service's clock are clamped to it and counted "
        "(outbound_scim_event_time_clamped_total)",
    )

    # Work scheduling
    max_in_flight: int = Field(1000, ge=1, description="changes being applied at once, all users")
    max_buffered: int = Field(20_000, ge=1, description="polled but unfinished changes before the consumer pauses")
    group_batch_quiet_seconds: float = Field(
        0.3, gt=0, description="a group's queued changes are applied together once none arrived for this long"
    )
    group_batch_max_seconds: float = Field(
        3.0, gt=0, description="... or once the first has waited this long (a burst of memberships: few PATCHes)"
    )
    rekey_process: bool = Field(
        True,
        description="run stage 1 (re-keying the plugin's events) in a child process of its own, beside stage 2 "
        "and the API, so each stage can use a core; the child ending stops the service (exit 3); false: one "
        "process",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the event loop of `run` and its stage 1 child: uvloop (less CPU per request and "
        "callback) or asyncio (the standard library's)",
    )
    gc_settle: bool = Field(
        True,
        description="once started, freeze the objects made at start out of the garbage collector's scans "
        "and collect its youngest generation every 50,000 allocations (service.heap): full collections "
        "of the start-up heap paused the event loop for tens of ms; false: Python's defaults",
    )
    drain_timeout_seconds: float = Field(
        20.0, gt=0, description="how long a rebalance or SIGTERM waits for running changes"
    )
    rebalance_timeout_ms: int = Field(60_000, ge=1000, description="consumer rebalance timeout (must exceed the drain)")

    # Downstream HTTP
    http_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one SCIM request")
    http_connections: int = Field(500, ge=1, description="connection pool size, all downstreams")
    http_max_response_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="largest SCIM response body read (a list page fits); a larger one is refused (response_too_large), "
        "not retried",
    )
    tenant_max_concurrency: int = Field(16, ge=1, description="requests in flight to one downstream")
    retry_attempts: int = Field(6, ge=1, description="tries of one request before the change backs off as a whole")
    retry_base_seconds: float = Field(0.2, gt=0, description="first backoff (doubles, full jitter)")
    retry_max_seconds: float = Field(30.0, gt=0, description="backoff cap, also for Retry-After")
    change_retry_budget_seconds: float = Field(
        300.0, gt=0, description="how long one change may keep retrying before it is parked"
    )
    breaker_threshold: int = Field(
        10, ge=1, description="consecutive transient failures that open a tenant's circuit breaker"
    )
    breaker_open_seconds: float = Field(5.0, gt=0, description="first open period before the downstream is probed")
    breaker_max_open_seconds: float = Field(300.0, gt=0, description="open period cap (doubles per failed probe)")
    capabilities_refresh_minutes: float = Field(
        60.0,
        gt=0,
        description="how often a downstream's ServiceProviderConfig is read again (an app upgraded or reconfigured "
        "behind an enabled tenant: PATCH, filter, bulk, ETag support and page size follow it)",
    )

    # Egress policy for downstream URLs
    allow_http_hosts: str = Field(
        "", description="comma-separated hosts that may be reached over plain http (development only)"
    )
    allow_private_networks: bool = Field(
        False, description="allow downstreams on private, loopback and shared addresses"
    )
    ca_bundle: str | None = Field(
        None, description="PEM bundle to verify downstream TLS certificates (and Keycloak's); default: the system CAs"
    )

    # Secrets
    token_key: SecretStr = Field(
        description="Fernet keys that encrypt downstream tokens at rest (outbound-scim gen-key), comma-separated: "
        "the first encrypts, all decrypt"
    )
    admin_token: SecretStr = Field(description="bearer token of the admin HTTP API")

    # Keycloak Admin REST API (backfill); a service account with view-users on the tenants' realms
    keycloak_url: str | None = Field(
        None,
        description="Keycloak base URL for the Admin REST API, e.g. https://sso.example.com; with the client id and "
        "secret it turns on backfill, reconciliation, provisioning on demand and authoritative mode",
    )
    keycloak_auth_realm: str = Field("master", description="realm of the service-account client")
    keycloak_client_id: str | None = Field(
        None,
        description="client with a service account holding view-users (and query-users) on the tenants' realms, "
        "and view-events for the enable-time check of their event settings",
    )
    keycloak_client_secret: SecretStr | None = Field(None, description="the client's secret")
    reconcile_check_seconds: float = Field(
        30.0, gt=0, description="how often the tenants' reconcile intervals are checked"
    )
    keycloak_authoritative: bool = Field(
        True,
        description="with Keycloak access configured, each change re-reads the user from Keycloak and applies it as "
        "Keycloak stores it (authoritative mode)",
    )
    keycloak_page_size: int = Field(
        500,
        ge=1,
        description="users per Admin API page in backfill and reconciliation (each page's users are stamped with the "
        "time it was requested)",
    )
    keycloak_event_listeners: str = Field(
        "kafka,playa-kafka-event-listener",
        description="comma-separated ids of the event listeners that send to the service's topics; enabling a tenant "
        "warns (listener_missing) when its realm lists none of them",
    )

    # HTTP API
    api_host: str = Field("0.0.0.0", description="API listen address")
    api_port: int = Field(8080, description="API port (health, readiness, metrics, tenants)")
    api_max_body_bytes: int = Field(64 * 1024, description="largest accepted API request body")

    # provisioning activity (published by every replica, read back by every replica)
    activity_enabled: bool = Field(
        True, description="publish what is done for each downstream to the activity topic and read it back"
    )
    activity_retention_hours: float = Field(72.0, gt=0, description="how long the activity topic keeps an entry")
    activity_retention_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="the most the activity topic keeps per partition"
    )
    activity_recent_per_downstream: int = Field(
        500, ge=10, description="activity entries each replica keeps in memory per downstream (newest)"
    )

    # operator console (/ui/)
    console_enabled: bool = Field(True, description="serve the operator console under /ui/ on the API port")
    console_secret: SecretStr | None = Field(
        None,
        description="key signing the console's session cookies (the same on every replica); "
        "default: derived from the admin token",
    )
    console_session_minutes: float = Field(480.0, gt=0, description="how long a console sign-in lasts")
    console_oidc_client_id: str | None = Field(
        None,
        description="a Keycloak client (standard flow, PKCE S256) for signing in to the console with Keycloak; "
        "needs keycloak_url",
    )
    console_oidc_client_secret: SecretStr | None = Field(
        None, description="the console client's secret, if confidential"
    )
    console_oidc_realm: str | None = Field(
        None, description="realm of the console client (default: keycloak_auth_realm)"
    )
    console_token_sign_in: bool | None = Field(
        None,
        description="whether the console also takes the admin token for a sign-in (a way in while Keycloak is "
        "down); default: only without a Keycloak sign-in (console_oidc_client_id)",
    )
    console_role: str = Field(
        "outbound-scim-operator",
        description="the role a Keycloak sign-in needs: a realm role, or <client id>:<role> for a client role",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG also logs every forwarded / skipped event"
    )

    @property
    def http_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.allow_http_hosts.split(",") if h.strip())

    @property
    def event_listener_ids(self) -> tuple[str, ...]:
        return tuple(i.strip() for i in self.keycloak_event_listeners.split(",") if i.strip())

    @property
    def instance_name(self) -> str:
        """The instance id, or the host name (in a pod: the pod name) when none is set."""
        return self.instance_id or socket.gethostname()

    @property
    def source_topics(self) -> list[str]:
        return [self.events_topic, self.admin_events_topic]

    def static_membership(self) -> StaticMembership:
        """A restart under the same instance id takes its partitions back without a rebalance."""
        return {
            "group_instance_id": self.instance_name,
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": max(1000, self.kafka_session_timeout_ms // 10),
        }

    def kafka_client_options(self) -> KafkaClientOptions:
        """Connection options shared by every aiokafka client."""
        options: KafkaClientOptions = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile)
        return options


ENV_FILE = ".env"
ENV_EXAMPLE = ".env.example"

# How to make a value, for the settings someone starting the service must supply.
HOW_TO_MAKE = {
    "token_key": "make one with `outbound-scim gen-key`",
    "admin_token": "any secret string, e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`",
}


def load_settings(env_file: str | None = ENV_FILE) -> Settings:
    """Settings from OUTBOUND_SCIM_* variables and `env_file` in the working directory (when it exists;
    the variables win). Raises ConfigError naming each missing or invalid variable and how to make it;
    the message never holds a value."""
    try:
        settings = Settings(_env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(_explain(_problems(exc), env_file)) from None
    problems = _secret_problems(settings)
    if problems:
        raise ConfigError(_explain(problems, env_file))
    return settings


def _variable(field: str) -> str:
    return f"OUTBOUND_SCIM_{field.upper()}"


def _problem(field: str, what: str) -> str:
    line = f"{_variable(field)} {what}"
    return f"{line}\n      -> {HOW_TO_MAKE[field]}" if field in HOW_TO_MAKE else line


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        info = Settings.model_fields.get(field)
        if error["type"] == "missing":
            what = f"is missing: {info.description}" if info and info.description else "is missing"
        else:
            what = f"is invalid: {error['msg']}"
        problems.append(_problem(field, what))
    return problems


def _secret_problems(settings: Settings) -> list[str]:
    """The two secrets must hold something usable; an empty admin token would protect nothing."""
    problems = []
    keys = [k.strip() for k in settings.token_key.get_secret_value().split(",") if k.strip()]
    if not keys:
        problems.append(_problem("token_key", "is empty"))
    elif not all(_is_fernet_key(key) for key in keys):
        problems.append(
            _problem("token_key", "is invalid: each comma-separated key must be 32 url-safe base64-encoded bytes")
        )
    if not settings.admin_token.get_secret_value().strip():
        problems.append(_problem("admin_token", "is empty"))
    return problems


def _is_fernet_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return False
    return True


def _explain(problems: list[str], env_file: str | None) -> str:
    count = "1 setting is" if len(problems) == 1 else f"{len(problems)} settings are"
    lines = [f"cannot start: {count} missing or invalid.", *(f"  {p}" for p in problems)]
    source = "OUTBOUND_SCIM_* environment variables"
    if env_file:
        source += f" and {Path.cwd() / env_file} if it exists (the variables win)"
    lines.append(f"Settings are read from {source}.")
    if env_file and Path(ENV_EXAMPLE).exists():
        lines.append(f"To start locally: cp {ENV_EXAMPLE} {env_file}, fill in the two secrets, run again.")
    return "\n".join(lines)
