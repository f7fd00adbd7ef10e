"""What the ``vlsync`` commands do, without click: pure decisions plus thin async calls to Graph,
the ledger and the queues. The click layer (``providers.py``, ``content.py``) only parses and prints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.graph import Deadline, GraphClient, GraphError, GraphTransientError
from shared.ledger import (
    DEACTIVATED_BY_DISABLE,
    SEARCHABLE_WITHIN_HOURS,
    BusyWait,
    Ledger,
    LedgerConflict,
    LedgerEntry,
    PushTiming,
    push_timing,
)
from shared.queue import StorageCommandQueue

PUSHED_BY = "cli"
# A worker's push usually ends (and releases the lease) within a second; this waits out a slow one.
# Longer, and the item is reported busy (``ItemBusy``, with when the worker's lease ends).
BUSY_WAIT_SECONDS = 1.0
BUSY_ATTEMPTS = 30
# How far this machine's clock may be from Graph's. Event times come from Graph's clock, but the
# ledger's leases are judged on each machine's own: beyond this, a lease could look expired (or
# live) to a worker while the CLI still pushes.
MAX_CLOCK_SKEW = timedelta(seconds=60)
DATE_RESOLUTION = timedelta(seconds=1)  # an HTTP Date header has whole seconds
Progress = Callable[[str], None]


class ClockSkew(Exception):
    """This machine's clock is too far from Graph's (or Graph's time is unknown) to write the ledger."""


class RegistrationUncertain(Exception):
    """``provider register`` failed in a way that may or may not have registered the provider."""

    def __init__(self, message: str, lines: list[str], details: dict[str, Any]) -> None:
        super().__init__(message)
        self.lines = lines
        self.details = details


class ProviderMissing(Exception):
    """The provider an operator named does not exist."""


# -- pure decisions ---------------------------------------------------------------------------------


def replacement(item: dict[str, Any], active: bool) -> dict[str, Any] | None:
    """The full upsert body that sets ``isActive`` (the upsert replaces, so every writable property is
    sent again), or ``None`` when the item already has that state. Graph's default is active."""
    current = item.get("isActive")
    if (True if current is None else bool(current)) == active:
        return None
    body = {k: v for k, v in item.items() if k != "id" and not k.startswith("@odata.")}
    body["isActive"] = active
    return body


def searchable_by(pushed_at: datetime) -> datetime:
    """The service promises search within 24 hours of ingestion (the ledger module owns the number)."""
    return pushed_at + timedelta(hours=SEARCHABLE_WITHIN_HOURS)


def status_view(
    registration_id: str,
    external_id: str,
    item: dict[str, Any] | None,
    last: LedgerEntry | None,
    *,
    ledger_configured: bool,
    now: datetime,
) -> dict[str, Any]:
    """Everything ``content status`` reports, as one JSON-ready document."""
    view: dict[str, Any] = {
        "registrationId": registration_id,
        "externalId": external_id,
        "existsInGraph": item is not None,
        "id": item.get("id") if item else None,
        "isActive": item.get("isActive") if item else None,
        "isSearchable": item.get("isSearchable") if item else None,
        "ledger": "configured" if ledger_configured else "not configured",
        "lastPush": None,
        "searchableBy": None,
        "searchableByPassed": None,
    }
    if last is not None:
        view["lastPush"] = {
            "op": last.op,
            "pushedAt": last.pushed_at.isoformat(),
            "pushedBy": last.pushed_by,
            "eventTime": last.event_time.isoformat(),
            "source": last.source,
            "sourceEventId": last.source_event_id,
        }
        if last.op == "upsert":
            due = searchable_by(last.pushed_at)
            view["searchableBy"] = due.isoformat()
            view["searchableByPassed"] = now >= due
    return view


@dataclass
class Target:
    """What a write command is about to touch, printed before it does (and under ``target`` in JSON)."""

    graph: str  # host[:port] and API version
    registration: str
    storage: str | None  # account name, or None: the command does not write storage
    tenant: str | None = None
    announced: bool = False
    app_id: str | None = None  # the app the token was issued to (the registering app, for providers)

    def view(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "tenant": self.tenant,
            "registrationId": self.registration,
            "storage": self.storage,
        }

    def line(self) -> str:
        tenant = f"tenant {self.tenant}" if self.tenant else "tenant unknown"
        storage = f"storage account {self.storage}" if self.storage else "no storage"
        return f"target: Graph {self.graph}, {tenant}, registration {self.registration}, {storage}"


def storage_account(connection_string: str | None, account: str | None) -> str | None:
    """The storage account a connection string (or ``--storage-account``) names, for people."""
    if account:
        return account
    if not connection_string:
        return None
    pairs = (part.split("=", 1) for part in connection_string.split(";") if "=" in part)  # keys, SAS hold "="
    lowered = {key.strip().lower(): value.strip() for key, value in pairs}
    if lowered.get("usedevelopmentstorage", "").lower() == "true":
        return "devstoreaccount1 (Azurite)"
    if lowered.get("accountname"):
        return lowered["accountname"]
    for key in ("tableendpoint", "queueendpoint", "blobendpoint"):
        if lowered.get(key):
            return urlsplit(lowered[key]).netloc or lowered[key]
    return "unnamed (from the connection string)"


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token, read and not verified: they label output and guide diagnosis
    (Graph verifies the token; this process cannot and need not)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_tenant(token: str) -> str | None:
    """The ``tid`` claim of a JWT access token."""
    tenant = token_claims(token).get("tid")
    return str(tenant) if tenant else None


def token_app(token: str) -> str | None:
    """The app a token was issued to: ``appid`` (v1 tokens) or ``azp`` (v2)."""
    claims = token_claims(token)
    app = claims.get("appid") or claims.get("azp")
    return str(app) if app else None


def registration_report(
    error: GraphError, found: list[dict[str, Any]] | None, name: str, check_error: GraphError | None = None
) -> RegistrationUncertain:
    """What to tell an operator after a registration POST failed transiently: it may have been applied
    (Graph or the network failed after the request arrived), so it is not sent again; the providers
    named ``name`` (``found``; ``None`` when listing them failed too) say whether it was."""
    answered = f"registering {name!r} failed: Graph answered {error.status or 'nothing'} {error.code}"
    if error.may_have_applied:
        head = (
            f"{answered} after the request may have reached Graph; it was not sent again "
            "(a second POST could register the provider twice)"
        )
    else:
        head = f"{answered} - gave up retrying"
    details: dict[str, Any] = {
        "status": error.status,
        "code": error.code,
        "graphMessage": error.message,
        "requestId": error.request_id,
        "displayName": name,
        "matches": None if found is None else [p.get("id") for p in found],
    }
    if found is None:
        reason = f": {check_error}" if check_error else ""
        return RegistrationUncertain(
            f"{head}. Could not list the providers to check whether it was registered{reason}. "
            "Run `vlsync provider list` before registering again.",
            [],
            details,
        )
    if not found:
        return RegistrationUncertain(
            f"{head}. No provider named {name!r} exists: the registration did not succeed. Run the command again.",
            [],
            details,
        )
    if len(found) == 1:
        new_id = found[0].get("id")
        return RegistrationUncertain(
            f"{head}. A provider named {name!r} exists, id {new_id}: the registration probably succeeded. "
            f"Check it with `vlsync provider get {new_id}`; do not register it again.",
            [f"registrationId: {new_id}"],
            details,
        )
    return RegistrationUncertain(
        f"{head}. {len(found)} providers are named {name!r}; one of them may be from this attempt. "
        "Check them with `vlsync provider get ID` and delete the one you do not want.",
        [f"registrationId: {p.get('id')}" for p in found],
        details,
    )


@dataclass(frozen=True)
class GraphClock:
    """Graph's clock as seen from here: event times the ledger records come from it, so a laptop whose
    clock runs ahead cannot make the LMS's events look stale (or behind, make its own look stale)."""

    offset: timedelta  # Graph's time minus this machine's

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def clock_from(server: datetime | None, local: datetime) -> GraphClock:
    """Graph's clock from its ``Date`` header (``server``, received at ``local``); refuses when this
    machine's clock is too far off.

    ``Date`` has whole seconds (Graph's time at receipt lies in ``[Date, Date + 1s)``). A clock that
    agrees with it to within that resolution is left as it is: it is Graph's time as far as anyone can
    tell, and it keeps the CLI's own pushes in order (an upsert and a delete a moment later must not
    get their times the wrong way round from two roundings). A clock further off is corrected to the
    middle of that second.
    """
    if server is None:
        raise ClockSkew("Graph's answer had no Date header, so the ledger's event time is unknown; nothing was changed")
    skew = local - server
    if abs(skew) > MAX_CLOCK_SKEW:
        way = "ahead of" if skew > timedelta(0) else "behind"
        raise ClockSkew(
            f"this machine's clock is {abs(skew).total_seconds():.0f}s {way} Graph's "
            f"(Graph: {server.isoformat()}, here: {local.isoformat()}); the ledger's leases need clocks within "
            f"{MAX_CLOCK_SKEW.total_seconds():.0f}s. Set the clock right (e.g. turn on network time) and try again; "
            "nothing was changed"
        )
    if timedelta(0) - DATE_RESOLUTION <= skew <= 2 * DATE_RESOLUTION:  # receipt is up to 1 s after Date, plus latency
        return GraphClock(timedelta(0))
    return GraphClock(server + DATE_RESOLUTION / 2 - local)


def belongs_to(registration_id: str) -> Callable[[str], bool]:
    """Whether a held command (queue message JSON) is one of this registration's."""

    def check(text: str) -> bool:
        try:
            return bool(json.loads(text).get("registrationId") == registration_id)
        except (ValueError, AttributeError):
            return False

    return check


# -- content ------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """Per-item results of a command that touches many items."""

    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


async def _bounded(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


def _failure(external_id: str, error: GraphError | LedgerConflict) -> dict[str, Any]:
    if isinstance(error, LedgerConflict):
        return {"externalId": external_id, "status": None, "code": error.code, "message": str(error), "requestId": None}
    return {
        "externalId": external_id,
        "status": error.status,
        "code": error.code,
        "message": error.message,
        "requestId": error.request_id,
    }


async def graph_clock(graph: GraphClient, registration_id: str) -> GraphClock:
    """Graph's clock, from the ``Date`` of its last answer or, before any, of a one-item list call."""
    server = server_date(graph)
    if server is None:
        async for _ in graph.list_contents(registration_id, top=1):
            break
        server = server_date(graph)
    return clock_from(server, datetime.now(UTC))


def server_date(graph: GraphClient) -> datetime | None:
    """The ``Date`` header of Graph's last answer (``GraphClient.last_server_date``)."""
    return graph.last_server_date


async def upsert_all(
    graph: GraphClient,
    registration_id: str,
    items: list[dict[str, Any]],
    *,
    concurrency: int,
    ledger: Ledger | None,
    progress: Progress | None = None,
) -> BatchResult:
    """Upsert every item (at most ``concurrency`` at a time); record each push in the ledger if given.

    A Graph failure of one item is reported with the others' results, not raised.
    """
    outcome = BatchResult()
    total = len(items)
    clock = await graph_clock(graph, registration_id) if ledger is not None else None

    async def push(body: dict[str, Any]) -> None:
        external_id = str(body["externalId"])
        try:
            async with pushing(graph, ledger, registration_id, external_id, "upsert", clock) as deadline:
                answer = await graph.upsert_content(registration_id, body, deadline=deadline)
        except (GraphError, LedgerConflict) as error:
            outcome.failed.append(_failure(external_id, error))
            return
        outcome.done.append({"externalId": external_id, "id": answer.get("id")})
        if progress is not None and len(outcome.done) % 500 == 0:
            progress(f"upserted {len(outcome.done)} of {total}")

    await _bounded(concurrency, [functools.partial(push, body) for body in items])
    return outcome


async def deactivate_all(
    graph: GraphClient, ledger: Ledger, registration_id: str, *, concurrency: int = 4
) -> BatchResult:
    """Hide every active item of the registration (``isActive=false``) and mark it in the ledger as
    deactivated by ``provider disable``, each under the item's lease. An item that is already inactive
    (the LMS retired it) is left alone and not marked, so ``reactivate_marked`` will not show it again.

    The upsert replaces the item, so the GET item is sent back in full with only ``isActive`` changed.
    The mark is set before the upsert and taken back if it fails: a mark on an active item is harmless,
    an unmarked hidden item would stay hidden."""
    external_ids = [str(item["externalId"]) async for item in graph.list_contents(registration_id)]
    clock = await graph_clock(graph, registration_id)
    outcome = BatchResult()

    async def switch(external_id: str) -> None:
        try:
            async with leased(graph, ledger, registration_id, external_id, clock) as deadline:
                try:
                    item = await graph.get_content(registration_id, external_id, deadline=deadline)
                except GraphError as error:
                    if error.status != 404:  # deleted since it was listed: nothing to hide
                        raise
                    outcome.unchanged.append(external_id)
                    return
                body = replacement(item, False)
                if body is None:
                    outcome.unchanged.append(external_id)
                    return
                await _mark(ledger, registration_id, external_id, DEACTIVATED_BY_DISABLE)
                try:
                    await graph.upsert_content(registration_id, body, deadline=deadline)
                except BaseException:
                    await _mark(ledger, registration_id, external_id, None)
                    raise
        except (GraphError, LedgerConflict) as error:
            outcome.failed.append(_failure(external_id, error))
            return
        outcome.done.append({"externalId": external_id, "id": item.get("id")})

    await _bounded(concurrency, [functools.partial(switch, eid) for eid in external_ids])
    return outcome


async def reactivate_marked(
    graph: GraphClient, ledger: Ledger, registration_id: str, *, concurrency: int = 4
) -> BatchResult:
    """Show again (``isActive=true``) exactly the items ``deactivate_all`` hid, as the ledger records
    them, each under the item's lease, and clear their marks. Items the LMS retired were never marked;
    an item deleted or pushed since is no longer marked (a push clears the mark) or no longer there."""
    external_ids = await asyncio.to_thread(ledger.deactivated_items, registration_id, DEACTIVATED_BY_DISABLE)
    clock = await graph_clock(graph, registration_id) if external_ids else None
    outcome = BatchResult()

    async def switch(external_id: str) -> None:
        item: dict[str, Any] | None = None
        body: dict[str, Any] | None = None
        try:
            async with leased(graph, ledger, registration_id, external_id, clock) as deadline:
                try:
                    item = await graph.get_content(registration_id, external_id, deadline=deadline)
                except GraphError as error:
                    if error.status != 404:
                        raise
                body = replacement(item, True) if item is not None else None
                if body is not None:
                    await graph.upsert_content(registration_id, body, deadline=deadline)
                await _mark(ledger, registration_id, external_id, None)
        except (GraphError, LedgerConflict) as error:
            outcome.failed.append(_failure(external_id, error))
            return
        if body is None:
            outcome.unchanged.append(external_id)
        else:
            outcome.done.append({"externalId": external_id, "id": item.get("id") if item else None})

    await _bounded(concurrency, [functools.partial(switch, eid) for eid in external_ids])
    return outcome


async def _mark(ledger: Ledger, registration_id: str, external_id: str, by: str | None) -> None:
    await asyncio.to_thread(ledger.mark_deactivated, registration_id, external_id, by)


async def content_status(
    graph: GraphClient, registration_id: str, external_id: str, ledger: Ledger | None
) -> dict[str, Any]:
    try:
        item: dict[str, Any] | None = await graph.get_content(registration_id, external_id)
    except GraphError as error:
        if error.status != 404:
            raise
        item = None
    last = await asyncio.to_thread(ledger.last_push, registration_id, external_id) if ledger else None
    return status_view(
        registration_id, external_id, item, last, ledger_configured=ledger is not None, now=datetime.now(UTC)
    )


async def delete_one(
    graph: GraphClient,
    ledger: Ledger | None,
    registration_id: str,
    *,
    external_id: str | None = None,
    content_id: str | None = None,
) -> tuple[str | None, bool, bool]:
    """Delete one item as the worker does: under the item's lease, with a tombstone in the ledger
    even when Graph says it is already gone, so an older LMS upsert still queued cannot bring it back.

    By ``content_id`` the ledger's key (the externalId) is learned first with a GET; an item that GET
    does not find has nothing to delete and no key to record. Returns ``(externalId, existed, recorded)``.
    """
    if content_id is not None and ledger is not None:
        try:
            external_id = str((await graph.get_content_by_id(registration_id, content_id))["externalId"])
        except GraphError as error:
            if error.status != 404:
                raise
            return None, False, False

    async def send(deadline: Deadline | None = None) -> bool:
        if content_id is not None:
            return await graph.delete_content_by_id(registration_id, content_id, deadline=deadline)
        assert external_id is not None
        return await graph.delete_content(registration_id, external_id, deadline=deadline)

    if ledger is None or external_id is None:
        return external_id, await send(), False
    clock = await graph_clock(graph, registration_id)
    async with pushing(graph, ledger, registration_id, external_id, "delete", clock) as deadline:
        existed = await send(deadline)
    return external_id, existed, True


async def register_provider(graph: GraphClient, body: dict[str, Any]) -> dict[str, Any]:
    """Create a provider. A transient failure of the POST is not retried: it may have registered the
    provider already (Graph or the connection failed after the request arrived). The providers are
    listed instead, and ``RegistrationUncertain`` says whether one with this name exists."""
    try:
        return await graph.create_provider(body)
    except GraphTransientError as error:
        name = str(body.get("displayName"))
        try:
            found = [p async for p in graph.list_providers() if p.get("displayName") == name]
        except GraphError as check_error:
            raise registration_report(error, None, name, check_error) from None
        raise registration_report(error, found, name) from None


async def existing_provider(graph: GraphClient, registration_id: str) -> dict[str, Any]:
    """The provider, or ``ProviderMissing`` when Graph does not know it."""
    try:
        return await graph.get_provider(registration_id)
    except GraphError as error:
        if error.status == 404:
            raise ProviderMissing(f"no provider {registration_id}") from None
        raise


def push_timing_of(graph: GraphClient) -> PushTiming:
    """A CLI push's deadline and lease: the worker's rule (``shared.ledger.push_timing``) applied to this
    client's timeout and retry budget (``vlsync``'s own, which waits longer than the worker)."""
    return push_timing(graph.timeout_seconds, graph.max_inline_retry_seconds)


def _owner() -> str:
    return f"{PUSHED_BY}/{uuid.uuid4().hex[:8]}"


def _busy_wait() -> BusyWait:
    """Read when a lease is taken, so a test can shorten the wait."""
    return BusyWait(BUSY_ATTEMPTS, BUSY_WAIT_SECONDS)


def busy_wait() -> BusyWait:
    """How long a CLI push waits for a worker's lease (``_busy_wait``, which a test may shorten)."""
    return _busy_wait()


@contextlib.asynccontextmanager
async def leased(
    graph: GraphClient, ledger: Ledger, registration_id: str, external_id: str, clock: GraphClock | None
) -> AsyncIterator[Deadline]:
    """Hold the item's ledger lease (``Ledger.pushing``, as the worker) for a change that is not an LMS
    event, on Graph's clock; yields the deadline its Graph calls must keep. Nothing is recorded."""
    if clock is None:
        raise ClockSkew("no Graph time to take the item's lease with; nothing was changed")
    async with ledger.pushing(
        registration_id,
        external_id,
        owner=_owner(),
        timing=push_timing_of(graph),
        pushed_by=PUSHED_BY,
        clock=clock.now,
        busy=_busy_wait(),
    ) as push:
        yield push.deadline


@contextlib.asynccontextmanager
async def pushing(
    graph: GraphClient,
    ledger: Ledger | None,
    registration_id: str,
    external_id: str,
    op: Literal["upsert", "delete"],
    clock: GraphClock | None = None,
) -> AsyncIterator[Deadline | None]:
    """Push one item under the ledger's per-item lease, as the worker does (``Ledger.pushing``), then
    record the push; yields the deadline its Graph calls must keep (``None`` without a ledger).

    So a push from the CLI and a worker's push of an LMS event for the same item never overlap. A
    lease held by a worker is waited for (briefly); an LMS event newer than now (a sender's clock may
    run a little ahead) wins, and the item is reported (``StaleEvent``) instead of overwritten. "Now",
    for the event time and for the lease, is Graph's clock (``clock``), not this machine's.
    """
    if ledger is None:
        yield None
        return
    if clock is None:
        raise ClockSkew("no Graph time to record the push with; nothing was changed")
    async with ledger.pushing(
        registration_id,
        external_id,
        owner=_owner(),
        timing=push_timing_of(graph),
        pushed_by=PUSHED_BY,
        op=op,
        event_time=clock.now(),
        clock=clock.now,
        busy=_busy_wait(),
    ) as push:
        yield push.deadline


# -- registrations ------------------------------------------------------------------------------------


async def set_enabled(ledger: Ledger, registration_id: str, enabled: bool) -> None:
    await asyncio.to_thread(ledger.set_registration_enabled, registration_id, enabled)


async def release_held(queue: StorageCommandQueue, registration_id: str) -> int:
    return await asyncio.to_thread(queue.release_held, belongs_to(registration_id))
