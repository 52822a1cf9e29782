"""Coalesce one tenant's user writes into SCIM /Bulk requests (RFC 7644 §3.7), behind the executor's port.

    Applier -> executor -> BulkPort (ScimPort) -> ScimClient -> Transport (gate, HTTP)

Many users' changes are applied at once (a backfill: thousands). Each worker calls `create_user` or
`patch_user` as it would without bulk; the POSTs and PATCHes of one tenant issued within `window`
seconds of each other leave as one `POST /Bulk` (at most the downstream's maxOperations, and below its
maxPayloadSize), and each caller gets its own operation's outcome, mapped by the one status -> error
function (service.scim.transport.error_for_status), exactly as a single request's:

    201 / 200 / 204        the created resource (its id from the response or the location) / None
    409                    ScimConflict: the executor's adoption rules run (their lookups are not bulked)
    404, other 4xx         ScimNotFound, ScimRejected, for this operation only
    429, 5xx, no outcome   ScimTransient for this operation only: the applier retries it
    the whole request      transient (5xx, 429, unreachable, open breaker): each operation is transient;
                           401 / 403: each is refused (the tenant is marked unauthorized); any other
                           refusal (400, 404, 413, 501 ...): the downstream does not take our bulk, so
                           bulk is off for this tenant config and each operation is sent on its own

failOnErrors is never set: one user's failure never stops another's write. Lookups and deletions pass
through unchanged. A batch that holds one operation goes out as the plain request, so a lone live change
pays the window and nothing else. Bulk is used only when the tenant's `bulk` option is `auto` and the
downstream's ServiceProviderConfig announces `bulk.supported` with limits (service.domain.bulk).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.domain import bulk, scim
from service.domain.activity import SentRequest
from service.domain.capabilities import UserWrites
from service.domain.downstreams import labels
from service.errors import ScimError, ScimRejected, ScimTransient
from service.metrics import Metrics
from service.scim.client import ScimClient, checked_id
from service.scim.transport import Downstream, error_for_status, note_sent, recording_into, sent_record

log = structlog.get_logger(__name__)

DEFAULT_WINDOW_SECONDS = 0.005

_Key = tuple[str, int, str]  # tenant, generation, base URL: a new enable or rotation starts afresh


@dataclass
class _Pending:
    method: str  # POST | PATCH
    path: str  # Users | Users/{id}, the id percent-encoded
    data: dict[str, Any]
    size: int  # bytes of the operation as sent
    answer: asyncio.Future[Any]
    sent: list[SentRequest] | None = None  # the caller's record of requests sent (activity log), if kept


@dataclass
class _Batch:
    ds: Downstream
    limits: bulk.BulkLimits
    pending: list[_Pending] = field(default_factory=list)
    size: int = bulk.EMPTY_REQUEST_BYTES
    timer: asyncio.TimerHandle | None = None

    def fits(self, item: _Pending) -> bool:
        extra = item.size + (bulk.SEPARATOR_BYTES if self.pending else 0)
        return len(self.pending) < self.limits.max_operations and self.size + extra <= self.limits.max_payload_bytes

    def add(self, item: _Pending) -> None:
        self.size += item.size + (bulk.SEPARATOR_BYTES if self.pending else 0)
        self.pending.append(item)


class BulkPort:
    """The executor's ScimPort (service.scim.executor) over a ScimClient, with writes coalesced per tenant."""

    def __init__(self, client: ScimClient, metrics: Metrics, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> None:
        self._client = client
        self._metrics = metrics
        self._window = window_seconds
        self._open: dict[_Key, _Batch] = {}
        self._refused: set[_Key] = set()  # configs whose downstream refused a bulk request as a whole
        self._sending: set[asyncio.Task[None]] = set()

    # -- the port ---------------------------------------------------------------------------------------

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        return await self._client.find_user(ds, attribute, value)

    async def find_users(self, ds: Downstream, attribute: str, value: str) -> list[dict[str, Any]]:
        return await self._client.find_users(ds, attribute, value)

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        await self._client.delete_user(ds, user_id)

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        limits = await self._limits(ds)
        if limits is None:
            return await self._client.create_user(ds, body)
        created = await self._submit(ds, limits, "POST", "Users", body)
        return created if isinstance(created, dict) else {}

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        limits = await self._limits(ds)
        if limits is None:
            await self._client.patch_user(ds, user_id, operations)
            return
        path = scim.user_path(checked_id(user_id, "PATCH", "Users/{id}"))
        try:
            await self._submit(ds, limits, "PATCH", path, scim.patch_request(operations))
        except ScimRejected as exc:
            if exc.status == 405:  # inside a bulk too: the tenant's users are PUT from now on
                self._client.refuse_patch(ds)
            raise

    async def replace_user(self, ds: Downstream, user_id: str, body: dict[str, Any]) -> None:
        """A PUT goes out on its own: downstreams without PATCH seldom take /Bulk either."""
        await self._client.replace_user(ds, user_id, body)

    async def user_writes(self, ds: Downstream) -> UserWrites:
        return await self._client.user_writes(ds)

    async def close(self) -> None:
        """Send what is gathered now and wait for every bulk request in flight."""
        for key in list(self._open):
            self._flush(key)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    # -- gathering --------------------------------------------------------------------------------------

    async def _limits(self, ds: Downstream) -> bulk.BulkLimits | None:
        if not ds.bulk or _key(ds) in self._refused:
            return None
        return bulk.bulk_limits(await self._client.capabilities(ds))

    async def _submit(
        self, ds: Downstream, limits: bulk.BulkLimits, method: str, path: str, data: dict[str, Any]
    ) -> Any:
        key = _key(ds)
        sized = bulk.size_of(bulk.operation(method, path, "op-000000", data))
        item = _Pending(method, path, data, sized, asyncio.get_running_loop().create_future(), sent_record())
        batch = self._open.get(key)
        if batch is not None and not batch.fits(item):
            self._flush(key)
            batch = None
        if batch is None:
            fresh = _Batch(ds, limits)
            if not fresh.fits(item):  # larger than a whole bulk request may be: the plain request
                self._start(_Batch(ds, limits, [item]))
                return await item.answer
            batch = self._open[key] = fresh
            batch.timer = asyncio.get_running_loop().call_later(self._window, self._flush, key)
        batch.add(item)
        if len(batch.pending) >= limits.max_operations:
            self._flush(key)
        return await item.answer

    def _flush(self, key: _Key) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.pending:
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    # -- sending ----------------------------------------------------------------------------------------

    async def _send(self, batch: _Batch) -> None:
        try:
            with recording_into(None):  # not the record of the caller that started it: each operation
                # is noted in its own caller's (_note, _alone)
                if len(batch.pending) == 1:
                    await self._alone(batch.ds, batch.pending[0])
                else:
                    await self._bulk(batch)
        except asyncio.CancelledError:
            for item in batch.pending:
                _settle(item, error=ScimTransient(None, item.method, _shown(item), detail="stopped before an answer"))
            raise
        except Exception as exc:  # every caller must hear something, whatever went wrong here
            log.exception("scim.bulk.failed", tenant=batch.ds.tenant)
            for item in batch.pending:
                _settle(item, error=exc)

    async def _alone(self, ds: Downstream, item: _Pending) -> None:
        """One operation as the plain request it stands for."""
        try:
            with recording_into(item.sent):  # noted in its caller's record
                if item.method == "POST":
                    _settle(item, result=await self._client.create_user(ds, item.data))
                else:
                    await self._client.send_once(ds, "PATCH", item.path, body=item.data)
                    _settle(item, result=None)
        except Exception as exc:
            _settle(item, error=exc)

    async def _bulk(self, batch: _Batch) -> None:
        ds = batch.ds
        ids = [f"op-{i:06d}" for i in range(len(batch.pending))]
        body = bulk.request(
            [
                bulk.operation(item.method, item.path, bulk_id, item.data)
                for item, bulk_id in zip(batch.pending, ids, strict=True)
            ]
        )
        try:
            doc = await self._client.send_once(ds, "POST", "Bulk", body=body)
        except ScimTransient as exc:
            if exc.status == 501:  # Not Implemented: announced, not served
                await self._refused_as_a_whole(batch, "POST /Bulk answered 501")
                return
            self._count(ds, "transient", len(batch.pending))
            for item in batch.pending:
                _note(item, "POST", "/Bulk", exc.status, exc.detail)
                _settle(item, error=exc)
            return
        except ScimRejected as exc:
            if exc.unauthorized:
                self._count(ds, "refused", len(batch.pending))
                for item in batch.pending:
                    _note(item, "POST", "/Bulk", exc.status, exc.detail)
                    _settle(item, error=exc)
                return
            await self._refused_as_a_whole(batch, f"POST /Bulk answered {exc.status} ({exc.reason})")
            return
        except ScimError as exc:  # 404 (no /Bulk after all), 409 on the request itself ...
            await self._refused_as_a_whole(batch, f"POST /Bulk answered {exc.status}")
            return
        answered = bulk.outcomes(doc)
        if not answered:
            await self._refused_as_a_whole(batch, "POST /Bulk answered no operation outcome")
            return
        for item, bulk_id in zip(batch.pending, ids, strict=True):
            outcome = answered.get(bulk_id)
            if outcome is None:
                _note(item, item.method, f"/{item.path} (in /Bulk)", None, "no outcome in the bulk response")
                self._count(ds, "no_outcome", 1)
                _settle(
                    item, error=ScimTransient(None, item.method, _shown(item), detail="no outcome in the bulk response")
                )
                continue
            _note(item, item.method, f"/{item.path} (in /Bulk)", outcome.status, outcome.response)
            error = error_for_status(outcome.status, item.method, _shown(item), outcome.response)
            self._count(ds, "ok" if error is None else "failed", 1)
            if error is not None:
                _settle(item, error=error)
            elif item.method == "POST":
                try:
                    _settle(item, result=_created(outcome))
                except ScimRejected as exc:  # an id we cannot put into a path
                    _settle(item, error=exc)
            else:
                _settle(item, result=None)

    async def _refused_as_a_whole(self, batch: _Batch, why: str) -> None:
        """The downstream announced bulk but does not take our request: off for this tenant config, and
        each operation goes out on its own now (no retry delay, no lost write)."""
        key = _key(batch.ds)
        if key not in self._refused:
            self._refused.add(key)
            log.warning("scim.bulk.refused", tenant=batch.ds.tenant, reason=why, hint="writes go one by one")
        self._count(batch.ds, "one_by_one", len(batch.pending))
        await asyncio.gather(*(self._alone(batch.ds, item) for item in batch.pending))

    def _count(self, ds: Downstream, outcome: str, n: int) -> None:
        self._metrics.bulk_operations.labels(*labels(ds.tenant), outcome).inc(n)


def _key(ds: Downstream) -> _Key:
    return (ds.tenant, ds.generation, ds.base_url)


def _shown(item: _Pending) -> str:
    """The operation's path as errors name it (never a body)."""
    return "Users" if item.method == "POST" else "Users/{id}"


def _created(outcome: bulk.OperationOutcome) -> dict[str, Any]:
    """The created resource as create_user returns it: at least its checked id."""
    resource_id = checked_id(bulk.created_id(outcome), "POST", "Users")
    resource = dict(outcome.response) if isinstance(outcome.response, dict) else {}
    resource["id"] = resource_id
    return resource


def _note(item: _Pending, method: str, path: str, status: int | None, answer: object) -> None:
    """The operation's outcome in its caller's record (the activity log's view of the change)."""
    with recording_into(item.sent):
        note_sent(method, path, status, answer)


def _settle(item: _Pending, *, result: Any = None, error: BaseException | None = None) -> None:
    if item.answer.done():
        return
    if error is not None:
        item.answer.set_exception(error)
    else:
        item.answer.set_result(result)
