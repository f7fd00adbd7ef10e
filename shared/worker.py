"""The worker: apply one queued content command to Microsoft Graph.

Delivery is at least once, so every step is safe to repeat: the upsert is a PATCH that creates or
replaces, and a delete that finds nothing has reached its goal. Failures are sorted three ways:
transient ones are raised so the queue redelivers the message (the host moves it to the poison queue
after ``maxDequeueCount``); permanent ones are parked in the poison queue at once with their reason;
malformed messages are parked unread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared import telemetry
from shared.graph import GraphClient, GraphPermanentError
from shared.models import CommandError, ContentCommand

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    UPSERTED = "upserted"
    DELETED = "deleted"
    ALREADY_ABSENT = "already-absent"
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


Park = Callable[[str], str]


async def _park(park: Park, text: str) -> None:
    # The queue SDK is synchronous; keep the event loop free while it talks to storage.
    await asyncio.to_thread(park, text)


async def process(body: bytes, info: MessageInfo, graph: GraphClient, park: Park) -> Outcome:
    """Apply one message. Returns the outcome, or raises to have the message redelivered."""
    try:
        command = ContentCommand.model_validate_json(body)
    except ValidationError as exc:
        logger.error(
            "parking malformed message %s: %s",
            info.message_id,
            "; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)[:5]),
        )
        await _park(park, body.decode("utf-8", errors="replace"))
        telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": "malformed"})
        return Outcome.PARKED

    with telemetry.tracer.start_as_current_span(
        f"content {command.op}",
        context=telemetry.extract(command.trace_context),
        kind=SpanKind.CONSUMER,
        attributes={
            "vlsync.external_id": command.external_id,
            "vlsync.registration_id": command.registration_id,
            "vlsync.correlation_id": command.correlation_id,
            "messaging.message.id": info.message_id,
            "vlsync.dequeue_count": info.dequeue_count,
        },
    ) as span:
        outcome = await _apply(command, info, graph, park)
        span.set_attribute("vlsync.outcome", outcome.value)
        return outcome


async def _apply(command: ContentCommand, info: MessageInfo, graph: GraphClient, park: Park) -> Outcome:
    log_args = (command.op, command.external_id, command.registration_id, info.message_id, command.correlation_id)
    try:
        if command.op == "upsert":
            assert command.content is not None  # guaranteed by the model
            await graph.upsert_content(
                command.registration_id, command.content.to_graph(), correlation_id=command.correlation_id
            )
            outcome = Outcome.UPSERTED
        else:
            existed = await graph.delete_content(
                command.registration_id, command.external_id, correlation_id=command.correlation_id
            )
            outcome = Outcome.DELETED if existed else Outcome.ALREADY_ABSENT
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
        await _park(park, parked.to_json())
        telemetry.COMMANDS_PARKED.add(1, {"vlsync.reason": f"http-{error.status}"})
        return Outcome.PARKED
    except Exception as error:
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
        raise
    telemetry.COMMANDS_APPLIED.add(1, {"vlsync.outcome": outcome.value})
    logger.info("%s %s reg=%s message=%s correlation=%s", outcome.value, *log_args[1:])
    return outcome
