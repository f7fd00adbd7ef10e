"""What the ``vlsync`` commands do, without click: pure decisions plus thin async calls to Graph,
the ledger and the queues. The click layer (``providers.py``, ``content.py``) only parses and prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.graph import GraphClient, GraphError
from shared.ledger import SEARCHABLE_WITHIN_HOURS, ItemBusy, Ledger, LedgerConflict, LedgerEntry, StaleEvent
from shared.queue import StorageCommandQueue

PUSHED_BY = "cli"
CLI_LEASE_SECONDS = 120.0  # as the worker's: longer than one push with its retries
BUSY_WAIT_SECONDS = 1.0
BUSY_ATTEMPTS = 30
Progress = Callable[[str], None]


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

    async def push(body: dict[str, Any]) -> None:
        external_id = str(body["externalId"])
        try:
            async with pushing(ledger, registration_id, external_id, "upsert"):
                answer = await graph.upsert_content(registration_id, body)
        except (GraphError, LedgerConflict) as error:
            outcome.failed.append(_failure(external_id, error))
            return
        outcome.done.append({"externalId": external_id, "id": answer.get("id")})
        if progress is not None and len(outcome.done) % 500 == 0:
            progress(f"upserted {len(outcome.done)} of {total}")

    await _bounded(concurrency, [functools.partial(push, body) for body in items])
    return outcome


async def set_active_all(
    graph: GraphClient, registration_id: str, active: bool, *, concurrency: int = 4
) -> BatchResult:
    """Set ``isActive`` on every item of the registration: list them, then GET each and upsert the full
    item with the new state. Not recorded in the ledger: it is a visibility switch, not a content change,
    and a ledger time of now would make the LMS's held (older) events look stale."""
    external_ids = [str(item["externalId"]) async for item in graph.list_contents(registration_id)]
    outcome = BatchResult()

    async def switch(external_id: str) -> None:
        try:
            item = await graph.get_content(registration_id, external_id)
            body = replacement(item, active)
            if body is None:
                outcome.unchanged.append(external_id)
                return
            await graph.upsert_content(registration_id, body)
        except GraphError as error:
            outcome.failed.append(_failure(external_id, error))
            return
        outcome.done.append({"externalId": external_id, "id": item.get("id")})

    await _bounded(concurrency, [functools.partial(switch, eid) for eid in external_ids])
    return outcome


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


@contextlib.asynccontextmanager
async def pushing(
    ledger: Ledger | None, registration_id: str, external_id: str, op: Literal["upsert", "delete"]
) -> AsyncIterator[None]:
    """Push one item under the ledger's per-item lease, as the worker does, then record the push.

    So a push from the CLI and a worker's push of an LMS event for the same item never overlap. A
    lease held by a worker is waited for (briefly); an LMS event newer than now (a sender's clock may
    run a little ahead) wins, and the item is reported instead of overwritten.
    """
    if ledger is None:
        yield
        return
    owner = f"{PUSHED_BY}/{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    for _ in range(BUSY_ATTEMPTS):
        try:
            claimed = await asyncio.to_thread(ledger.claim, registration_id, external_id, now, owner, CLI_LEASE_SECONDS)
            break
        except ItemBusy:
            await asyncio.sleep(BUSY_WAIT_SECONDS)
    else:
        raise ItemBusy(f"{external_id!r} is being pushed by the function app; try again")
    if not claimed:
        raise StaleEvent("the ledger holds a newer event for this item; it was not overwritten")
    try:
        yield
    except BaseException:
        await asyncio.to_thread(ledger.release, registration_id, external_id, owner)
        raise
    entry = LedgerEntry(
        registration_id, external_id, op, event_time=now, pushed_at=datetime.now(UTC), pushed_by=PUSHED_BY
    )
    await asyncio.to_thread(ledger.record, entry, owner)


async def record(
    ledger: Ledger | None, registration_id: str, external_id: str, op: Literal["upsert", "delete"]
) -> bool:
    if ledger is None:
        return False
    now = datetime.now(UTC)
    entry = LedgerEntry(registration_id, external_id, op, event_time=now, pushed_at=now, pushed_by=PUSHED_BY)
    return await asyncio.to_thread(ledger.record, entry)


# -- registrations ------------------------------------------------------------------------------------


async def set_enabled(ledger: Ledger, registration_id: str, enabled: bool) -> None:
    await asyncio.to_thread(ledger.set_registration_enabled, registration_id, enabled)


async def release_held(queue: StorageCommandQueue, registration_id: str) -> int:
    return await asyncio.to_thread(queue.release_held, belongs_to(registration_id))
