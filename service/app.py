"""Composition root: builds every part from settings and owns the start / stop order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections import defaultdict
from collections.abc import Coroutine
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service import heap
from service.api.app import ApiDeps, build_api
from service.console.app import ConsoleConfig
from service.console.oidc import OidcLogin, oidc_login
from service.domain.changes import UserChange
from service.domain.downstreams import labels, split_tenant_key
from service.domain.stamps import ChangeSource
from service.errors import StageExited, TenantUnreadable
from service.jsonhttp import client_session
from service.kafka_access import KafkaAccessDenied, denied
from service.kafka_topics import ensure_topics
from service.keycloak_admin.client import KeycloakAdminClient
from service.metrics import Metrics
from service.pipeline.activity import ActivityFollower, ActivityPublisher, circuit_entry
from service.pipeline.apply import ApplyStage
from service.pipeline.backfill import Backfills
from service.pipeline.reconcile import Reconciler
from service.pipeline.rekey import RekeyStage
from service.pipeline.rekey_process import STOP_GRACE_SECONDS, RekeyProcess
from service.pipeline.set_aside import REASON, HeldTopic
from service.retry import RetryPolicy
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy, GuardedResolver
from service.scim.health import BreakerMonitor
from service.settings import Settings
from service.tenants.models import TokenCipher
from service.tenants.store import TenantStore, TenantUpdate

log = structlog.get_logger(__name__)


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.tenants = TenantStore(settings, TokenCipher(settings.token_key.get_secret_value()), self.metrics)
        self._http: aiohttp.ClientSession | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self.rekey: RekeyStage | RekeyProcess | None = None
        self.apply: ApplyStage | None = None
        self.api_port: int | None = None
        self.parked: HeldTopic | None = None
        self.dead_letters: HeldTopic | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None
        self.backfills: Backfills | None = None
        self.keycloak: KeycloakAdminClient | None = None  # None: no Keycloak admin access configured
        self._keycloak_http: aiohttp.ClientSession | None = None
        self._replay_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.scim: ScimClient | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.tenants.observe(self._tenant_updated)
        # the activity log (settings.activity_enabled): published by this replica, read back from every one
        self.activity_sink: ActivityPublisher | None = None
        self.activity: ActivityFollower | None = None

    def is_ready(self) -> bool:
        return not self.unready_reasons()

    def unready_reasons(self) -> list[str]:
        """Why this replica should get no traffic yet, each saying what fixes it; empty when ready."""
        reasons = []
        if not self.tenants.loaded.is_set():
            reasons.append("the tenant store is still loading the tenants topic")
        if self.rekey is None or not self.rekey.assigned.is_set():
            reasons.append("stage 1 (rekey) has no partition assignment yet")
        if self.apply is None or not self.apply.assigned.is_set():
            reasons.append("stage 2 (apply) has no partition assignment yet")
        reasons += [f"{exc}: {exc.fix}" for exc in self.tenants.unreadable()]
        return reasons

    async def start(self) -> None:
        """Start every part; a Kafka refusal (a missing ACL) stops it with a ConfigError naming the ACL."""
        try:
            await self._start()
        except BaseException as exc:
            await self.stop()
            refusal = denied(self.settings, exc) if isinstance(exc, KafkaError) else exc
            if isinstance(refusal, KafkaAccessDenied):
                log.error("kafka.access.denied", missing=[str(acl) for acl in refusal.missing])
                raise refusal from exc
            raise

    async def _start(self) -> None:
        s = self.settings
        await ensure_topics(s)
        await self.tenants.start()
        egress = EgressPolicy(s.http_hosts, s.allow_private_networks)
        connector = aiohttp.TCPConnector(
            limit=s.http_connections,
            limit_per_host=s.http_connections,
            resolver=GuardedResolver(egress),
            ssl=ssl.create_default_context(cafile=s.ca_bundle),  # verified; a custom CA bundle if set
        )
        self._http = client_session(connector)
        scim = self.scim = ScimClient.over_http(
            self._http,
            self.metrics,
            timeout_seconds=s.http_timeout_seconds,
            egress=egress,
            max_response_bytes=s.http_max_response_bytes,
            tenant_concurrency=s.tenant_max_concurrency,
            breaker=CircuitBreaker(s.breaker_threshold, s.breaker_open_seconds, s.breaker_max_open_seconds),
            capabilities_refresh_seconds=s.capabilities_refresh_minutes * 60,
            on_breaker=self._circuit_moved,
        )
        self._producer = AIOKafkaProducer(**s.kafka_client_options(), acks="all", enable_idempotence=True, linger_ms=5)
        await self._producer.start()
        if s.activity_enabled:
            self.activity_sink = ActivityPublisher(self._producer, s.activity_topic, self.metrics)
            self.activity_sink.start()
            self.activity = ActivityFollower(s, self.metrics)
            await self.activity.start()  # reads in the background: readiness does not wait for it
        keycloak = self.keycloak = self._keycloak()
        pages = s.keycloak_page_size
        retry = RetryPolicy(s.retry_attempts, s.retry_base_seconds, s.retry_max_seconds)
        self.backfills = (
            Backfills(
                keycloak,
                self._producer,
                s.changes_topic,
                self.metrics,
                pages,
                tenants=self.tenants,
                downstream=scim,
                retry=retry,
                activity=self.activity_sink,
            )
            if keycloak
            else None
        )
        reconciler = (
            Reconciler(
                keycloak,
                scim,
                self._producer,
                s.changes_topic,
                self.metrics,
                pages,
                retry=retry,
                scim_groups=scim,
                activity=self.activity_sink,
            )
            if keycloak
            else None
        )
        self.parked = HeldTopic(s, s.parking_topic, self._producer)
        self.dead_letters = HeldTopic(s, s.dead_letter_topic, self._producer)
        api = build_api(
            ApiDeps(
                admin_token=s.admin_token.get_secret_value(),
                tenants=self.tenants,
                scim=scim,
                egress=egress,
                metrics=self.metrics,
                readiness=self,
                parked=self.parked,
                dead_letters=self.dead_letters,
                replay=self.replay,
                link=self.link_user,
                max_body_bytes=s.api_max_body_bytes,
                backfills=self.backfills,
                reconciler=reconciler,
                keycloak=keycloak,
                event_listeners=s.event_listener_ids,
                console=self._console(),
                oidc=self._console_oidc(),
                activity=self.activity,
                activity_sink=self.activity_sink,
            )
        )
        self._runner = web.AppRunner(api, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.api_host, s.api_port)
        await site.start()
        self.api_port = self._runner.addresses[0][1]
        self.apply = ApplyStage(
            s,
            self.metrics,
            self.tenants,
            scim,
            self._producer,
            keycloak,
            authoritative=s.keycloak_authoritative,
            activity=self.activity_sink,
        )
        await self.apply.start()
        if s.rekey_process:
            self.rekey = RekeyProcess(s, self.metrics, s.drain_timeout_seconds + STOP_GRACE_SECONDS)
        else:
            self.rekey = RekeyStage(s, self.metrics)
        await self.rekey.start()
        monitor = BreakerMonitor(scim, self._downstream_of, self._recovered)
        self._monitor = asyncio.create_task(monitor.run(), name="breaker-monitor")
        if reconciler is not None:
            self._periodic = asyncio.create_task(self._reconcile_periodically(reconciler), name="reconcile")
        self._in_background(self._replay_once_readable())
        log.info("service.started", api_port=self.api_port)

    async def failed(self) -> StageExited:
        """Returns once a part the service cannot run without has ended on its own (stage 1's child
        process); never, when stage 1 runs in this process."""
        if isinstance(self.rekey, RekeyProcess):
            return StageExited("stage 1 (rekey)", await asyncio.shield(self.rekey.exited))
        await asyncio.Future()  # nothing else ends on its own
        raise AssertionError("unreachable")

    def _keycloak(self) -> KeycloakAdminClient | None:
        s = self.settings
        if not (s.keycloak_url and s.keycloak_client_id and s.keycloak_client_secret):
            return None
        # Keycloak is the operator's own (often internal) service: not behind the tenants' egress policy.
        self._keycloak_http = client_session(aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=s.ca_bundle)))
        return KeycloakAdminClient(
            self._keycloak_http,
            s.keycloak_url,
            s.keycloak_client_id,
            s.keycloak_client_secret.get_secret_value(),
            auth_realm=s.keycloak_auth_realm,
            retry=RetryPolicy(s.retry_attempts, s.retry_base_seconds, s.retry_max_seconds),
            timeout_seconds=s.http_timeout_seconds,
        )

    def _console(self) -> ConsoleConfig | None:
        s = self.settings
        if not s.console_enabled:
            return None
        secret = s.console_secret.get_secret_value() if s.console_secret else None
        token_sign_in = s.console_token_sign_in
        if token_sign_in is None:  # with a Keycloak sign-in, console access follows Keycloak's roles only
            token_sign_in = not s.console_oidc_client_id
        return ConsoleConfig(secret, s.console_session_minutes, token_sign_in)

    def _console_oidc(self) -> OidcLogin | None:
        """The console's Keycloak sign-in, over the Admin API client's session (or one like it)."""
        s = self.settings
        if not (s.console_enabled and s.console_oidc_client_id):
            return None
        if self._keycloak_http is None:
            self._keycloak_http = client_session(
                aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=s.ca_bundle))
            )
        return oidc_login(s, self._keycloak_http)

    async def _reconcile_periodically(self, reconciler: Reconciler) -> None:
        """Tenants with a reconcile interval are reconciled by the replica owning changes partition 0
        (one replica does it; after a rebalance the new owner starts its own clock)."""
        last: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.settings.reconcile_check_seconds)
            if self.apply is None or not self.apply.owns(0):
                last.clear()
                continue
            now = time.monotonic()
            for tenant in self.tenants.all():
                interval = tenant.reconcile_interval_minutes
                if interval and now - last.setdefault(tenant.key, now) >= interval * 60:
                    last[tenant.key] = now
                    try:
                        groups = tenant.group_options if tenant.groups else None
                        await reconciler.run(tenant.downstream, dry_run=False, groups=groups)
                    except Exception as exc:  # reported; the next interval tries again
                        log.error("reconcile.failed", tenant=tenant.realm, downstream=tenant.name, error=str(exc)[:300])

    def _circuit_moved(self, key: str, state: BreakerState) -> None:
        """A breaker of this replica changed state: into the activity log, for every replica's console."""
        if self.activity_sink is not None:
            self.activity_sink.record(circuit_entry(key, state, time.time()))

    def _downstream_of(self, key: str) -> Downstream | None:
        try:
            tenant = self.tenants.get(key)
        except TenantUnreadable:
            return None  # nothing to probe with: its gate was dropped when the record turned unreadable
        return tenant.downstream if tenant else None

    async def _recovered(self, key: str) -> None:
        assert self.parked is not None
        await self.replay(self.parked, key)

    async def link_user(self, key: str, user_id: str, downstream_id: str) -> None:
        """Queue an operator's link on the user's keyed partition (of the downstream with tenant key
        `key`), behind the user's earlier changes."""
        assert self._producer is not None
        realm, name = split_tenant_key(key)
        change = UserChange(
            realm,
            user_id,
            "link",
            int(time.time() * 1000),
            "LINK",
            link_to=downstream_id,
            source=ChangeSource.OPERATOR,
            downstream=name,
        )
        await self._producer.send_and_wait(self.settings.changes_topic, key=change.key.encode(), value=change.to_json())

    def _tenant_updated(self, update: TenantUpdate) -> None:
        """Every replica follows the tenants topic: an enable / rotation gives the tenant a fresh gate
        here too, a disable drops it, and a record readable again releases what its realm parked."""
        if self.scim is not None:
            if update.tenant is None:
                self.scim.drop(update.key)
            else:
                self.scim.refresh(update.tenant.downstream)
        # one replica replays (the owner of changes partition 0); a replay done twice would be harmless
        if update.readable_again and self.parked is not None and self.apply is not None and self.apply.owns(0):
            self._in_background(self._recovered(update.key))

    async def _replay_once_readable(self) -> None:
        """At start: changes parked because their tenant record was unreadable go through if it reads now
        (the operator restarted with the missing key in OUTBOUND_SCIM_TOKEN_KEY)."""
        assert self.parked is not None
        if not self.tenants.all():
            return  # no readable tenant: nothing to release
        held = await self.parked.list(None, limit=1 << 30)
        realms = {r.tenant for r in held if r.tenant and r.headers.get(REASON) == TenantUnreadable.label}
        for realm in sorted(realms - {e.realm for e in self.tenants.unreadable()}):
            await self._recovered(realm)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def replay(self, held: HeldTopic, tenant: str | None) -> int:
        """Replay set-aside records of a tenant (or all), one replay per tenant at a time."""
        async with self._replay_locks[f"{held.topic}/{tenant}"]:
            sent = await held.replay(tenant)
        if sent:
            self.metrics.replayed.labels(*labels(tenant) if tenant else ("*", "*")).inc(sent)
            log.info("replay.sent", topic=held.topic, tenant=tenant, records=sent)
        return sent

    async def stop(self) -> None:
        """Intake first, then the apply stage drains and commits, then the clients close."""
        if self.backfills:
            await self.backfills.stop()
        for task in (self._monitor, self._periodic, *self._background):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.rekey:
            await self.rekey.stop()
        if self.apply:
            await self.apply.stop()
        if self._runner:
            await self._runner.cleanup()
        if self.activity_sink:
            await self.activity_sink.stop()  # before the producer: what waits is handed to it
        if self._producer:
            await self._producer.stop()
        if self._http:
            await self._http.close()
        if self._keycloak_http:
            await self._keycloak_http.close()
        if self.activity:
            await self.activity.stop()
        await self.tenants.stop()
        log.info("service.stopped")


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background.failed", task=task.get_name(), error=str(exc)[:300])


async def run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; raises StageExited, after the same
    shutdown, when stage 1's child process ended on its own."""
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    if settings.gc_settle:
        heap.settle_after_start()
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(service.failed())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, failed):
        task.cancel()
    log.info("service.stopping")
    await service.stop()
    if failed.done() and not failed.cancelled():
        raise failed.result()
