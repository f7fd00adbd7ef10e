"""The worker: apply one queued content command to Microsoft Graph.

Delivery is at least once, so every step is safe to repeat: the upsert is a PATCH that creates or
replaces, and a delete that finds nothing has reached its goal. The ledger keeps an older event from
overwriting a newer one (a late retry, a redelivery, events that crossed in the queue) and records
what was pushed when. Failures are sorted three ways: transient ones are raised so the queue
redelivers the message (the host moves it to the poison queue after ``maxDequeueCount``); permanent
ones are parked in the poison queue at once with their reason; malformed messages are parked unread.
Commands of a disabled registration are held, not applied and not lost, until it is enabled.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared import telemetry
from shared.graph import MAX_ERROR_MESSAGE, GraphError, GraphPermanentError, GraphTransientError
from shared.ledger import ItemBusy, LedgerEntry
from shared.models import CommandError, ContentCommand
from shared.queue import CommandQueue

logger = logging.getLogger(__name__)

# Graph may ask for a longer wait than the queue's visibility timeout; the command then goes back
# to the queue hidden for that long (its dequeue count starts again), at most this many times
# (GRAPH_MAX_DEFERRALS).
MAX_DEFERRALS = 10
BUSY_RECHECK_SECONDS = 5.0


class Outcome(StrEnum):
    UPSERTED = "upserted"
    DELETED = "deleted"
    ALREADY_ABSENT = "already-absent"
    SKIPPED_STALE = "skipped-stale"
    HELD = "held"
    DEFERRED = "deferred"
    PARKED = "parked"


@dataclass(frozen=True)
class MessageInfo:
    """Queue metadata of the delivery, for logs and for knowing the final attempt."""

    message_id: str
    dequeue_count: int
    max_dequeue_count: int = 5

    @property
    def final_attempt(self) -> bool:
        return self.dequeue_count >= self.max_dequeue_count


class GraphPort(Protocol):
    """The two Graph calls the worker makes (``shared.graph.GraphClient``)."""

    async def upsert_content(
        self, registration_id: str, content: dict[str, Any], *, correlation_id: str | None = None
    ) -> dict[str, Any]: ...

    async def delete_content(
        self, registration_id: str, external_id: str, *, correlation_id: str | None = None
    ) -> bool: ...

    def for_tenant(self, tenant_id: str | None) -> GraphPort:
        """The same client asking for ``tenant_id``'s tokens (``None``: its own tenant)."""
        ...


class LedgerPort(Protocol):
    def for_tenant(self, tenant_id: str | None) -> LedgerPort:
        """The ledger rows of ``tenant_id`` (``None``: this ledger's own tenant)."""
        ...

    def registration_enabled(self, registration_id: str, *, fresh: bool = False) -> bool: ...

    def claim(
        self,
        registration_id: str,
        external_id: str,
        event_time: datetime,
        owner: str,
        lease_seconds: float,
        *,
        op: str = "upsert",
        source_event_id: str | None = None,
    ) -> bool: ...

    def release(self, registration_id: str, external_id: str, owner: str) -> None: ...

    def record(self, entry: LedgerEntry, owner: str | None = None) -> bool: ...


@dataclass(frozen=True)
class WorkerPorts:
    """What the worker talks to. The storage calls are synchronous SDK calls run off the event loop."""

    graph: GraphPort
    queue: CommandQueue
    ledger: LedgerPort
    lease_seconds: float = 120.0  # longer than one push can take, retries and timeouts included
    max_deferrals: int = MAX_DEFERRALS
    # A Retry-After up to this long is waited inside the invocation (GRAPH_MAX_INLINE_RETRY_SECONDS);
    # only a longer one sends the command back to the queue.
    max_inline_retry_seconds: float = 10.0

    def for_tenant(self, tenant_id: str | None) -> WorkerPorts:
        """The ports a command of ``tenant_id`` uses: its tokens, its ledger rows."""
        if tenant_id is None:
            return self
        return replace(self, graph=self.graph.for_tenant(tenant_id), ledger=self.ledger.for_tenant(tenant_id))


async def process(body: bytes, info: MessageInfo, ports: WorkerPorts) -> Outcome:
    """Apply one message. Returns the outcome, or raises to have the message redelivered."""
    try:
        command = ContentCommand.model_validate_json(body)
    except ValidationError as exc:
        logger.error(
            "parking malformed message %s: %s",
            info.message_id,
            "; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)[:5]),
        )
        await asyncio.to_thread(ports.queue.park, body.decode("utf-8", errors="replace"))
        telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": "malformed"})
        return Outcome.PARKED

    with telemetry.tracer.start_as_current_span(
        f"content {command.op}",
        context=telemetry.extract(command.trace_context),
        kind=SpanKind.CONSUMER,
        attributes={
            "vlsync.tenant_id": command.tenant_id or "",
            "vlsync.external_id": command.external_id,
            "vlsync.registration_id": command.registration_id,
            "vlsync.correlation_id": command.correlation_id,
            "messaging.message.id": info.message_id,
            "vlsync.dequeue_count": info.dequeue_count,
        },
    ) as span:
        outcome = await _apply(command, info, ports.for_tenant(command.tenant_id))
        span.set_attribute("vlsync.outcome", outcome.value)
        return outcome


async def _apply(command: ContentCommand, info: MessageInfo, ports: WorkerPorts) -> Outcome:
    log_args = (command.op, command.external_id, command.registration_id, info.message_id, command.correlation_id)
    try:
        if not await _enabled(ports.ledger, command.registration_id):
            await asyncio.to_thread(ports.queue.hold, command.to_json())
            logger.info("held %s %s reg=%s message=%s correlation=%s (registration disabled)", *log_args)
            telemetry.COMMANDS_HELD.add(1)
            return Outcome.HELD
        # The message id: a redelivery of this very message may take back the lease it left behind.
        owner = info.message_id or f"worker/{uuid.uuid4().hex[:8]}"
        try:
            claimed = await asyncio.to_thread(
                partial(
                    ports.ledger.claim,
                    command.registration_id,
                    command.external_id,
                    command.event_time,
                    owner,
                    ports.lease_seconds,
                    op=command.op,
                    source_event_id=command.source_event_id,
                )
            )
        except ItemBusy as busy:
            return await _wait_for_lease(command, busy, ports, log_args)
        if not claimed:
            logger.info(
                "skipped %s %s reg=%s message=%s correlation=%s: the ledger holds this event (%s) or a later one",
                *log_args,
                command.event_time.isoformat(),
            )
            telemetry.COMMANDS_SKIPPED_STALE.add(1)
            return Outcome.SKIPPED_STALE
        try:
            outcome = await _push(command, ports.graph)
            recorded = await asyncio.to_thread(
                ports.ledger.record,
                LedgerEntry(
                    registration_id=command.registration_id,
                    external_id=command.external_id,
                    op=command.op,
                    event_time=command.event_time,
                    pushed_at=datetime.now(UTC),
                    pushed_by="worker",
                    source=command.source,
                    source_event_id=command.source_event_id,
                ),
                owner,
            )
        except BaseException:  # a failed push or a failed record: the retry must not wait for the lease
            await asyncio.to_thread(ports.ledger.release, command.registration_id, command.external_id, owner)
            raise
        if not recorded:  # cannot happen under the lease unless it expired mid-push
            logger.warning("ledger kept a newer event than %s %s; lease expired mid-push?", *log_args[:2])
    except GraphTransientError as error:
        wait = error.retry_after or 0.0
        if wait <= ports.max_inline_retry_seconds or command.deferrals >= ports.max_deferrals:
            return await _retry_or_park(command, info, ports, log_args, error)
        deferred = command.model_copy(update={"deferrals": command.deferrals + 1})
        await asyncio.to_thread(ports.queue.defer, deferred.to_json(), wait)
        logger.warning(
            "deferred %s %s reg=%s message=%s correlation=%s for %.0fs (Graph Retry-After, deferral %d): %s",
            *log_args,
            wait,
            deferred.deferrals,
            error,
        )
        telemetry.COMMANDS_RETRIED.add(1, {"vlsync.deferred": True})
        return Outcome.DEFERRED
    except GraphPermanentError as error:
        logger.error("parking %s %s reg=%s message=%s correlation=%s: %s", *log_args, error)
        parked = command.model_copy(
            update={
                "last_error": CommandError(
                    kind="permanent",
                    status=error.status,
                    code=error.code,
                    message=error.message,
                    requestId=error.request_id,
                    at=datetime.now(UTC),
                )
            }
        )
        await asyncio.to_thread(ports.queue.park, parked.to_json())
        telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": f"http-{error.status}"})
        return Outcome.PARKED
    except Exception as error:
        return await _retry_or_park(command, info, ports, log_args, error)
    telemetry.COMMANDS_APPLIED.add(1, {"vlsync.outcome": outcome.value})
    logger.info("%s %s reg=%s message=%s correlation=%s", outcome.value, *log_args[1:])
    return outcome


async def _retry_or_park(
    command: ContentCommand, info: MessageInfo, ports: WorkerPorts, log_args: tuple[str, ...], error: Exception
) -> Outcome:
    """Raise for a redelivery; on the final attempt park the command instead.

    The host would copy it to ``-poison`` with the queue's default 7-day time-to-live, where an
    outage's commands would vanish a week later; parked by the worker, it never expires and says why.
    """
    _log_retry(info, log_args, error)
    if not info.final_attempt:
        raise error
    graph = error if isinstance(error, GraphError) else None
    parked = command.model_copy(
        update={
            "last_error": CommandError(
                kind="transient",
                status=graph.status if graph else None,
                code=graph.code if graph else type(error).__name__,
                message=(graph.message if graph else str(error))[:MAX_ERROR_MESSAGE],
                requestId=graph.request_id if graph else None,
                at=datetime.now(UTC),
                attempts=info.dequeue_count,
            )
        }
    )
    await asyncio.to_thread(ports.queue.park, parked.to_json())
    telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": "attempts-exhausted"})
    return Outcome.PARKED


async def _wait_for_lease(
    command: ContentCommand, busy: ItemBusy, ports: WorkerPorts, log_args: tuple[str, ...]
) -> Outcome:
    """Another message holds the item: come back hidden, as a new message, without spending an attempt.

    At most ``BUSY_RECHECK_SECONDS`` later, not at the lease's end: the holder usually finishes
    (and releases) within a second, and the lease is only its bound.
    """
    remaining = (busy.until - datetime.now(UTC)).total_seconds() if busy.until else BUSY_RECHECK_SECONDS
    delay = max(1.0, min(remaining, BUSY_RECHECK_SECONDS))
    await asyncio.to_thread(ports.queue.defer, command.to_json(), delay)
    logger.info("busy %s %s reg=%s message=%s correlation=%s: back in %.0fs (%s)", *log_args, delay, busy)
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.busy": True})
    return Outcome.DEFERRED


async def _enabled(ledger: LedgerPort, registration_id: str) -> bool:
    """Enabled per the cached state; a "disabled" is read again fresh before anything is held, so a
    command is never held just after ``vlsync provider enable`` released the others."""
    if await asyncio.to_thread(ledger.registration_enabled, registration_id):
        return True
    return await asyncio.to_thread(partial(ledger.registration_enabled, registration_id, fresh=True))


def _log_retry(info: MessageInfo, log_args: tuple[str, ...], error: BaseException) -> None:
    level = logging.ERROR if info.final_attempt else logging.WARNING
    logger.log(
        level,
        "retrying %s %s reg=%s message=%s correlation=%s attempt=%d/%d: %s",
        *log_args,
        info.dequeue_count,
        info.max_dequeue_count,
        error,
    )
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.final_attempt": info.final_attempt})


async def _push(command: ContentCommand, graph: GraphPort) -> Outcome:
    if command.op == "upsert":
        assert command.content is not None  # guaranteed by the model
        await graph.upsert_content(
            command.registration_id, command.content.to_graph(), correlation_id=command.correlation_id
        )
        return Outcome.UPSERTED
    existed = await graph.delete_content(
        command.registration_id, command.external_id, correlation_id=command.correlation_id
    )
    return Outcome.DELETED if existed else Outcome.ALREADY_ABSENT
