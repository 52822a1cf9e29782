"""Prometheus metrics, built on an explicit registry (no import-time globals, so tests get their own).

Labels are bounded: never a user id. `tenant` is a realm name: operators run a short list of them; with it
goes `downstream`, the name of one of the realm's downstream apps (`default` for the realm's first one).
Call sites label with `*service.domain.downstreams.labels(tenant_key)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from service import __version__


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Info("outbound_scim_build", "Version of the running service", registry=r)
        self.build_info.info({"version": __version__})
        self.events = Counter(
            "outbound_scim_events_total",
            "Keycloak events read from the source topics, by event type and what became of them",
            ["type", "outcome"],
            registry=r,
        )
        self.changes = Counter(
            "outbound_scim_changes_total",
            "User changes applied from the keyed topic, by tenant and outcome"
            " (coalesced: its values went out in a later change's write)",
            ["tenant", "downstream", "outcome"],
            registry=r,
        )
        self.scim_requests = Counter(
            "outbound_scim_scim_requests_total",
            "HTTP requests sent to SCIM downstreams",
            ["tenant", "downstream", "method", "status_class"],
            registry=r,
        )
        self.downstream_tokens = Counter(
            "outbound_scim_downstream_tokens_total",
            "OAuth2 access tokens requested for downstreams, by tenant and result (fetched; refused: the "
            "token endpoint refused the client credentials; failed: it could not be reached or failed)",
            ["tenant", "downstream", "result"],
            registry=r,
        )
        self.scim_latency = Histogram(
            "outbound_scim_scim_request_duration_seconds",
            "Latency of SCIM requests",
            ["method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.bulk_operations = Counter(
            "outbound_scim_bulk_operations_total",
            "User writes sent inside SCIM /Bulk requests, by tenant and outcome (ok, failed: an error status for "
            "that operation, transient: the whole request failed, refused, no_outcome, one_by_one: the downstream "
            "refused bulk and each went out alone)",
            ["tenant", "downstream", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "outbound_scim_scim_retries_total",
            "Changes retried after a transient failure (the downstream or Keycloak unavailable, 429, 5xx)",
            ["tenant", "downstream"],
            registry=r,
        )
        self.dead_letters = Counter(
            "outbound_scim_dead_letters_total",
            "Records or changes written to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "outbound_scim_changes_in_flight", "Changes being applied downstream right now", registry=r
        )
        self.buffered = Gauge(
            "outbound_scim_changes_buffered",
            "Changes polled and not yet finished (queued + in flight)",
            registry=r,
        )
        self.tenants = Gauge("outbound_scim_tenants", "Tenants with outbound SCIM enabled", registry=r)
        self.tenants_unreadable = Gauge(
            "outbound_scim_tenants_unreadable",
            "Tenant records this replica cannot read (a token key missing from OUTBOUND_SCIM_TOKEN_KEY, or "
            "malformed): their realms' changes wait, then park, and the replica is not ready",
            registry=r,
        )
        self.parked = Counter(
            "outbound_scim_parked_total",
            "Changes parked (retry budget exhausted, token refused, or behind a parked change of the same user)",
            ["tenant", "downstream", "reason"],
            registry=r,
        )
        self.replayed = Counter(
            "outbound_scim_replayed_total",
            "Parked or dead-lettered changes replayed",
            ["tenant", "downstream"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "outbound_scim_circuit_state",
            "Circuit breaker per tenant: 0 closed (sending), 1 half-open (probing), 2 open (holding changes)",
            ["tenant", "downstream"],
            registry=r,
        )
        self.tenant_unauthorized = Gauge(
            "outbound_scim_tenant_unauthorized",
            "1 while the tenant's downstream refuses its token (changes are parked until a rotation)",
            ["tenant", "downstream"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "outbound_scim_consumer_lag",
            "Records of the changes topic not yet read, per partition, as this replica sees them",
            ["partition"],
            registry=r,
        )
        self.oldest_unfinished_age = Gauge(
            "outbound_scim_oldest_unfinished_age_seconds",
            "Age of the oldest change read but not finished (0 when idle)",
            registry=r,
        )
        self.backfilled = Counter(
            "outbound_scim_backfill_users_total",
            "Keycloak users fed into the pipeline by a backfill",
            ["tenant", "downstream"],
            registry=r,
        )
        self.drift = Gauge(
            "outbound_scim_drift_users",
            "Found out of step by the last reconciliation, by kind: users missing, stale or extra downstream "
            "(missing, stale, extra), users with more than one account (duplicates); with groups, groups "
            "(groups_missing, groups_stale, groups_extra) and memberships (members_missing, members_extra)",
            ["tenant", "downstream", "kind"],
            registry=r,
        )
        self.conflicts = Counter(
            "outbound_scim_conflicts_total",
            "Creates blocked by an account that is not provably this user's (owned by another externalId, "
            "or none matches): dead-lettered with reason conflict, never written",
            ["tenant", "downstream"],
            registry=r,
        )
        self.lookup_scans = Gauge(
            "outbound_scim_lookup_scan",
            "1 while lookups to the tenant's downstream list its accounts instead of filtering "
            "(filters unsupported, or answers that did not satisfy the filter)",
            ["tenant", "downstream"],
            registry=r,
        )
        self.clamped_times = Counter(
            "outbound_scim_event_time_clamped_total",
            "Events whose time was further ahead of the service's clock than OUTBOUND_SCIM_MAX_CLOCK_SKEW_SECONDS",
            registry=r,
        )
        self.group_changes = Counter(
            "outbound_scim_group_changes_total",
            "Group changes applied (group events, memberships and nesting hops), by tenant and outcome",
            ["tenant", "downstream", "outcome"],
            registry=r,
        )
        self.group_patches = Counter(
            "outbound_scim_group_patches_total",
            "PATCH requests sent to downstream groups (renames and member changes, coalesced per batch)",
            ["tenant", "downstream"],
            registry=r,
        )
        self.state_restored = Counter(
            "outbound_scim_state_restored_records_total",
            "User-state changelog records read on assignment, by where the read started: `checkpoint` (the "
            "local copy continued) or `scratch` (no usable checkpoint: read from the beginning)",
            ["from"],
            registry=r,
        )
        self.state_entries = Gauge(
            "outbound_scim_state_entries",
            "Users and groups (kind) held in the local state of the partitions this replica owns",
            ["kind"],
            registry=r,
        )
        self.commits = Counter("outbound_scim_offset_commits_total", "Offset commits of the apply stage", registry=r)
        self.activity = Counter(
            "outbound_scim_activity_entries_total",
            "Activity log entries (the console's provisioning activity), by what became of them: published "
            "(handed to Kafka), dropped (more were waiting to be sent than the bound, or Kafka refused one), "
            "unreadable (read back but not an entry)",
            ["outcome"],
            registry=r,
        )
