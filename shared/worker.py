"""The worker: apply one queued content command to Microsoft Graph.

Delivery is at least once, so every step is safe to repeat: the upsert is a PATCH that creates or
replaces, and a delete that finds nothing has reached its goal. The ledger keeps an older event from
overwriting a newer one (a late retry, a redelivery, events that crossed in the queue) and records
what was pushed when; the push runs under the item's lease and within a deadline that ends before it
(``shared.ledger.Ledger.pushing``, the one protocol of every writer). Failures are sorted three ways:
transient ones are raised so the queue redelivers the message (on the final attempt the worker parks
it itself); permanent ones are parked in the poison queue at once with their reason; malformed
messages are parked unread. Commands of a disabled registration are held, not applied and not lost,
until it is enabled.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared import telemetry
from shared.fetchback import FetchError, FetchPort
from shared.graph import (
    MAX_ERROR_MESSAGE,
    Deadline,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    WriteBudget,
)
from shared.ledger import (
    ItemBusy,
    LeaseLost,
    LedgerEntry,
    Push,
    PushTiming,
    StaleEvent,
    Superseded,
    is_stale,
    push_timing,
)
from shared.lms import LmsError, LmsPermanentError, LmsTransientError
from shared.models import CommandError, ContentCommand
from shared.queue import CommandQueue
from shared.ratebudget import RATE_BUDGET
from shared.settings import Settings

logger = logging.getLogger(__name__)

# Graph may ask for a longer wait than the queue's visibility timeout; the command then goes back
# to the queue hidden for that long (its dequeue count starts again), at most this many times
# (GRAPH_MAX_DEFERRALS).
MAX_DEFERRALS = 10
BUSY_RECHECK_SECONDS = 5.0
# From the settings' defaults; the function app derives its own from its settings (``shared.bootstrap``).
DEFAULT_TIMING = push_timing(
    Settings.model_fields["graph_timeout_seconds"].default,
    Settings.model_fields["graph_max_inline_retry_seconds"].default,
)


class Outcome(StrEnum):
    UPSERTED = "upserted"
    DELETED = "deleted"
    ALREADY_ABSENT = "already-absent"
    SKIPPED_STALE = "skipped-stale"
    HELD = "held"
    DEFERRED = "deferred"
    PARKED = "parked"
    # Pushed, but a newer event was recorded meanwhile (the lease ended under the push): Graph may hold
    # this older state. Not a success; the ledger marks the item needsRepair (``Ledger.needs_repair``).
    LEASE_LOST = "lease-lost"


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
        self,
        registration_id: str,
        content: dict[str, Any],
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]: ...

    async def delete_content(
        self,
        registration_id: str,
        external_id: str,
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> bool: ...

    def for_tenant(self, tenant_id: str | None) -> GraphPort:
        """The same client asking for ``tenant_id``'s tokens (``None``: its own tenant)."""
        ...

    def with_budget(self, budget: WriteBudget | None) -> GraphPort:
        """The same client spending its writes from ``budget``."""
        ...


class LedgerPort(Protocol):
    def for_tenant(self, tenant_id: str | None) -> LedgerPort:
        """The ledger rows of ``tenant_id`` (``None``: this ledger's own tenant)."""
        ...

    def registration_enabled(self, registration_id: str, *, fresh: bool = False) -> bool: ...

    def last_push(self, registration_id: str, external_id: str) -> LedgerEntry | None:
        """The item's recorded event (``None``: nothing recorded), read without taking its lease."""
        ...

    def announce(
        self,
        registration_id: str,
        external_id: str,
        event_time: datetime,
        *,
        op: str = "upsert",
        source_event_id: str | None = None,
    ) -> bool:
        """Announce a command that goes back to the queue to wait, so older ones of the item skip
        their push (``shared.ledger.Superseded``)."""
        ...

    def pushing(
        self,
        registration_id: str,
        external_id: str,
        *,
        owner: str,
        timing: PushTiming,
        pushed_by: str,
        op: Literal["upsert", "delete"] = "upsert",
        event_time: datetime | None = None,
        source: str | None = None,
        source_event_id: str | None = None,
    ) -> AbstractAsyncContextManager[Push]:
        """Claim the item's lease (``StaleEvent``, ``ItemBusy``), yield the push's deadline, then record
        the event or release the lease (``LeaseLost`` when a newer event was recorded meanwhile)."""
        ...


class BudgetPort(WriteBudget, Protocol):
    """One registration's shared write budget (``shared.ratebudget.SharedWriteBudget``)."""

    def wait_seconds(self) -> float:
        """How long a write would wait now (a shared ``notBefore``, or a spent budget); synchronous."""
        ...


class BudgetsPort(Protocol):
    def for_registration(self, tenant_id: str | None, registration_id: str) -> BudgetPort: ...


CircuitEvent = Literal["success", "failure", "unused"]  # shared.circuit.Event


class CircuitPort(Protocol):
    """The shared Graph circuit breaker (``shared.circuit.CircuitBreaker``); synchronous storage calls."""

    def wait_seconds(self) -> float: ...

    def record(self, event: CircuitEvent) -> None: ...


@dataclass(frozen=True)
class WorkerPorts:
    """What the worker talks to. The storage calls are synchronous SDK calls run off the event loop."""

    graph: GraphPort
    queue: CommandQueue
    ledger: LedgerPort
    timing: PushTiming = DEFAULT_TIMING  # the push's deadline and the item's lease
    max_deferrals: int = MAX_DEFERRALS
    # A Retry-After up to this long is waited inside the invocation (GRAPH_MAX_INLINE_RETRY_SECONDS);
    # only a longer one sends the command back to the queue.
    max_inline_retry_seconds: float = 10.0
    circuit: CircuitPort | None = None  # None: no breaker (every command calls Graph)
    budgets: BudgetsPort | None = None  # the shared write budgets (``shared.ratebudget``); None: unlimited
    # Completes fetch commands from the LMS (``shared.fetchback``); None: a fetch command is parked.
    fetch: FetchPort | None = None

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
    # Once the circuit let this command through (perhaps as the half-open circuit's probe), every way
    # out tells the breaker exactly once what Graph did: "unused" when Graph was not called (skipped,
    # busy, budget, LMS trouble, a bug), "success" when Graph answered, even with a 4xx or a 429, and
    # "failure" for no answer or a 5xx. A probe that ended any other way unreported would hold the
    # circuit half-open for PROBE_SECONDS while every other command keeps coming back.
    said: CircuitEvent | None = None
    try:
        if not await _enabled(ports.ledger, command.registration_id):
            await asyncio.to_thread(ports.queue.hold, command.to_json())
            logger.info("held %s %s reg=%s message=%s correlation=%s (registration disabled)", *log_args)
            telemetry.COMMANDS_HELD.add(1)
            return Outcome.HELD
        if (waiting := await _circuit_wait(command, ports, log_args)) is not None:
            return waiting
        said = "unused"
        budget = ports.budgets.for_registration(command.tenant_id, command.registration_id) if ports.budgets else None
        if budget is not None and (waiting := await _budget_wait(command, budget, ports, log_args)) is not None:
            return waiting
        # Fetch-back before the lease: the LMS call must not hold the item. What is parked or retried
        # later is the fetch command itself, so a replay asks the LMS again.
        # The message id: a redelivery of this very message may take back the lease it left behind.
        owner = info.message_id or f"worker/{uuid.uuid4().hex[:8]}"
        try:
            target = await _completed(command, ports)
            async with ports.ledger.pushing(
                target.registration_id,
                target.external_id,
                owner=owner,
                timing=ports.timing,
                pushed_by="worker",
                op=target.op,
                event_time=target.event_time,
                source=target.source,
                source_event_id=target.source_event_id,
            ) as push:
                graph = ports.graph.with_budget(budget) if budget is not None else ports.graph
                outcome = await _push(target, graph, push.deadline)
                said = "success"
        except ItemBusy as busy:
            return await _wait_for_lease(command, busy, ports, log_args)
        except StaleEvent as stale:
            return _skipped(command, log_args, stale)
        except LeaseLost as lost:
            return _lease_lost(lost, log_args)
    except GraphTransientError as error:
        if error.code == RATE_BUDGET:  # not Graph failing: the shared budget said "later"
            return await _defer_for_budget(command, error.retry_after or 1.0, ports, log_args, error.message)
        if _graph_is_failing(error):
            if ports.circuit is not None:
                said = None  # told here, before the wait below reads the circuit
                await asyncio.to_thread(ports.circuit.record, "failure")
                if (waiting := await _circuit_wait(command, ports, log_args)) is not None:
                    return waiting  # the circuit opened: wait it out in the queue instead of spending attempts
                # Let through again, perhaps as the probe of a circuit another instance opened whose
                # cool-down is over: this invocation calls Graph no more, so that probe goes back.
                said = "unused"
        else:
            said = "success"  # a 429: Graph answered, with its own Retry-After
        return await _retry_or_defer(command, info, ports, log_args, error, "Graph")
    except GraphPermanentError as error:
        said = "success" if said is not None else None  # Graph answered: the item's problem, not Graph's
        return await _park(command, ports, log_args, error, error.message, f"http-{error.status}")
    except LmsTransientError as error:
        # The LMS's trouble, not Graph's: the circuit hears "unused" (a probe goes back).
        return await _retry_or_defer(command, info, ports, log_args, error, "LMS")
    except (LmsPermanentError, FetchError) as error:
        reason = f"lms-{error.code}" if isinstance(error, LmsError) else error.code
        return await _park(command, ports, log_args, error, str(error)[:MAX_ERROR_MESSAGE], reason)
    except Exception as error:
        return await _retry_or_park(command, info, ports, log_args, error)
    finally:
        if said is not None and ports.circuit is not None:
            await asyncio.to_thread(ports.circuit.record, said)
    telemetry.COMMANDS_APPLIED.add(1, {"vlsync.outcome": outcome.value})
    logger.info("%s %s reg=%s message=%s correlation=%s", outcome.value, *log_args[1:])
    return outcome


async def _retry_or_defer(
    command: ContentCommand,
    info: MessageInfo,
    ports: WorkerPorts,
    log_args: tuple[str, ...],
    error: GraphTransientError | LmsTransientError,
    who: str,
) -> Outcome:
    """A transient failure: retried through the queue (``_retry_or_park``), or, when ``who`` asked
    for a longer wait than the inline budget, sent back hidden for exactly that long (a deferral)."""
    wait = error.retry_after or 0.0
    if wait <= ports.max_inline_retry_seconds or command.deferrals >= ports.max_deferrals:
        return await _retry_or_park(command, info, ports, log_args, error)
    deferred = command.model_copy(update={"deferrals": command.deferrals + 1})
    await asyncio.to_thread(ports.queue.defer, deferred.to_json(), wait)
    logger.warning(
        "deferred %s %s reg=%s message=%s correlation=%s for %.0fs (%s Retry-After, deferral %d): %s",
        *log_args,
        wait,
        who,
        deferred.deferrals,
        error,
    )
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.deferred": True})
    return Outcome.DEFERRED


async def _park(
    command: ContentCommand,
    ports: WorkerPorts,
    log_args: tuple[str, ...],
    error: GraphPermanentError | LmsPermanentError | FetchError,
    message: str,
    reason: str,
) -> Outcome:
    """A permanent failure: parked at once, with what the operator needs to decide on a replay."""
    logger.error("parking %s %s reg=%s message=%s correlation=%s: %s", *log_args, error)
    parked = command.model_copy(
        update={
            "last_error": CommandError(
                kind="permanent",
                status=error.status,
                code=error.code,
                message=message,
                requestId=error.request_id,
                at=datetime.now(UTC),
            )
        }
    )
    await asyncio.to_thread(ports.queue.park, parked.to_json())
    telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": reason})
    return Outcome.PARKED


def _graph_is_failing(error: GraphTransientError) -> bool:
    """What the circuit counts: no answer (timeouts, lost connections, no token) or a 5xx. A 429 is
    Graph answering, with its own Retry-After, and is handled by deferral."""
    return error.status is None or error.status >= 500


async def _circuit_wait(command: ContentCommand, ports: WorkerPorts, log_args: tuple[str, ...]) -> Outcome | None:
    """With the circuit open, send the command back hidden for the rest of the cool-down, as a new
    message (no attempt spent, ``deferrals`` unchanged): an outage of any length drains nothing into
    poison. ``None``: call Graph now."""
    if ports.circuit is None:
        return None
    wait = await asyncio.to_thread(ports.circuit.wait_seconds)
    if wait <= 0:
        return None
    await asyncio.to_thread(ports.queue.defer, command.to_json(), wait)
    logger.info("waiting %s %s reg=%s message=%s correlation=%s: Graph circuit open, back in %.0fs", *log_args, wait)
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.circuit": True})
    return Outcome.DEFERRED


async def _budget_wait(
    command: ContentCommand, budget: BudgetPort, ports: WorkerPorts, log_args: tuple[str, ...]
) -> Outcome | None:
    """Before the lease: when a shared ``notBefore`` or the spent write budget would keep this write
    waiting longer than the inline budget, send the command back for that long. ``None``: go on (a
    shorter wait is spent inside the invocation, as a short ``Retry-After`` is)."""
    wait = await asyncio.to_thread(budget.wait_seconds)
    if wait <= ports.max_inline_retry_seconds:
        return None
    return await _defer_for_budget(command, wait, ports, log_args, "the write budget is spent or paused")


async def _defer_for_budget(
    command: ContentCommand, wait: float, ports: WorkerPorts, log_args: tuple[str, ...], why: str
) -> Outcome:
    """Hidden in the queue for ``wait``, as a new message: no attempt spent and ``deferrals`` unchanged,
    so a long throttle or a large backlog under a small budget drains nothing into poison. Announced
    first, so the item's older commands waiting with it cost no write of their own."""
    await _announce(command, ports)
    await asyncio.to_thread(ports.queue.defer, command.to_json(), wait)
    logger.info("waiting %s %s reg=%s message=%s correlation=%s: back in %.0fs (%s)", *log_args, wait, why)
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.budget": True})
    return Outcome.DEFERRED


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
    graph = error if isinstance(error, GraphError | LmsError) else None
    parked = command.model_copy(
        update={
            "last_error": CommandError(
                kind="transient",
                status=graph.status if graph else None,
                code=graph.code if graph else type(error).__name__,
                message=(graph.message if isinstance(graph, GraphError) else str(error))[:MAX_ERROR_MESSAGE],
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
    await _announce(command, ports)
    await asyncio.to_thread(ports.queue.defer, command.to_json(), delay)
    logger.info("busy %s %s reg=%s message=%s correlation=%s: back in %.0fs (%s)", *log_args, delay, busy)
    telemetry.COMMANDS_RETRIED.add(1, {"vlsync.busy": True})
    return Outcome.DEFERRED


async def _announce(command: ContentCommand, ports: WorkerPorts) -> None:
    """Coalescing: the command is about to wait in the queue; announce its event on the item's ledger
    row so the item's older commands skip their Graph write (``Superseded``), this one still being
    queued. Written before the command goes back, so it is never announced without being queued (a
    failed defer raises and the host redelivers the message). Only an optimisation: a storage error
    here costs the older commands their writes, never this command."""
    try:
        await asyncio.to_thread(
            partial(
                ports.ledger.announce,
                command.registration_id,
                command.external_id,
                command.event_time,
                op=command.op,
                source_event_id=command.source_event_id,
            )
        )
    except AzureError as exc:
        logger.warning(
            "could not announce %s %s correlation=%s (%s); older commands will push their own state",
            command.op,
            command.external_id,
            command.correlation_id,
            type(exc).__name__,
        )


def _skipped(command: ContentCommand, log_args: tuple[str, ...], stale: StaleEvent) -> Outcome:
    why = (
        "a newer event is announced and queued"
        if isinstance(stale, Superseded)
        else "the ledger holds it or a later one"
    )
    logger.info(
        "skipped %s %s reg=%s message=%s correlation=%s: event %s (%s)",
        *log_args,
        command.event_time.isoformat(),
        why,
    )
    telemetry.COMMANDS_SKIPPED_STALE.add(1)
    return Outcome.SKIPPED_STALE


def _lease_lost(lost: LeaseLost, log_args: tuple[str, ...]) -> Outcome:
    """Not raised: a redelivery would only be judged stale. The item's ledger row says what to repair."""
    logger.error("lease lost %s %s reg=%s message=%s correlation=%s: %s", *log_args, lost)
    telemetry.COMMANDS_APPLIED.add(1, {"vlsync.outcome": Outcome.LEASE_LOST.value})
    return Outcome.LEASE_LOST


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


async def _completed(command: ContentCommand, ports: WorkerPorts) -> ContentCommand:
    """The command to push: as queued, or (a fetch command) completed from the LMS."""
    if command.fetch is None:
        return command
    if ports.fetch is None:
        raise FetchError("fetchback-unconfigured", "this worker has no fetch-back port to complete a fetch command")
    try:
        return await ports.fetch.complete(command)
    except (LmsPermanentError, FetchError):
        # A late event whose course is gone (or no longer completes) is not a failure when the ledger
        # already holds this event or a newer one (a delete recorded first): judged by the ledger's
        # own order (``is_stale``), as the lease would judge it.
        known = await asyncio.to_thread(ports.ledger.last_push, command.registration_id, command.external_id)
        if is_stale(known, command.event_time, command.op, command.source_event_id):
            raise StaleEvent(f"the ledger holds this event of {command.external_id!r} or a later one") from None
        raise


async def _push(command: ContentCommand, graph: GraphPort, deadline: Deadline) -> Outcome:
    if command.op == "upsert":
        assert command.content is not None  # guaranteed by the model
        await graph.upsert_content(
            command.registration_id,
            command.content.to_graph(),
            correlation_id=command.correlation_id,
            deadline=deadline,
        )
        return Outcome.UPSERTED
    existed = await graph.delete_content(
        command.registration_id, command.external_id, correlation_id=command.correlation_id, deadline=deadline
    )
    return Outcome.DELETED if existed else Outcome.ALREADY_ABSENT
