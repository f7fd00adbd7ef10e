"""Webhook intake: authenticate, parse, validate, enqueue; all or nothing.

Order matters: the source is looked up and the body size checked before any work, the signature is
checked before the body is parsed (unauthenticated input is never interpreted), and every command
is encoded and measured before the first one is enqueued.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanKind

from shared import sources, telemetry
from shared.models import ContentCommand
from shared.problems import (
    BODY_TOO_LARGE,
    COMMAND_TOO_LARGE,
    PROBLEM_CONTENT_TYPE,
    QUEUE_UNAVAILABLE,
    SOURCE_MISCONFIGURED,
    UNKNOWN_SOURCE,
    Problem,
)
from shared.queue import MAX_MESSAGE_BYTES, CommandQueue, QueueUnavailable, encoded_size
from shared.settings import Settings, SourceConfig, SourcesError, source_secret
from shared.sources import Reply, WebhookRequest, adapter_for

logger = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUEUE_RETRY_AFTER_SECONDS = 30
# Below the 64 KiB queue limit by enough for a parked copy's lastError (its message is capped at 1 KiB).
MAX_COMMAND_BYTES = MAX_MESSAGE_BYTES - 4 * 1024


@dataclass(frozen=True)
class IntakeResponse:
    status: int
    body: dict[str, Any]
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def correlation_id(headers: Mapping[str, str]) -> str:
    """Keep the sender's correlation id when it is safe to log and forward, else make one."""
    given = headers.get(CORRELATION_HEADER, "")
    return given if _CORRELATION.fullmatch(given) else str(uuid.uuid4())


def make_request(
    source_name: str, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
) -> WebhookRequest:
    lowered = {k.lower(): v for k, v in headers.items()}
    return WebhookRequest(
        source_name=source_name,
        headers=lowered,
        body=body,
        correlation_id=correlation_id(lowered),
        received_at=datetime.now(UTC),
        query=dict(query or {}),
    )


def _source(request: WebhookRequest, settings: Settings) -> SourceConfig:
    try:
        sources = settings.sources()
    except SourcesError as exc:
        logger.error("SOURCES setting is invalid: %s", exc)
        raise Problem(SOURCE_MISCONFIGURED, "the SOURCES setting is invalid; see the function logs") from None
    source = sources.get(request.source_name)
    if source is None:
        raise Problem(UNKNOWN_SOURCE, f"no webhook source named {request.source_name!r} is configured")
    return source


def decide(request: WebhookRequest, settings: Settings) -> list[ContentCommand]:
    """Everything up to the enqueue, without I/O: returns the commands or raises a Problem (or a Reply
    where the platform's protocol demands an answer of its own, e.g. Event Grid's validation)."""
    source = _source(request, settings)
    if len(request.body) > settings.webhook_max_body_bytes:
        raise Problem(
            BODY_TOO_LARGE, f"the body is {len(request.body)} bytes; the limit is {settings.webhook_max_body_bytes}"
        )
    adapter = adapter_for(source.kind)
    delivery = adapter.authenticate(request, source, source_secret(source))
    return adapter.parse(request, source, delivery)


def encode_all(commands: list[ContentCommand]) -> list[str]:
    texts = [c.to_json() for c in commands]
    for command, text in zip(commands, texts, strict=True):
        size = encoded_size(text)
        if size > MAX_COMMAND_BYTES:
            raise Problem(
                COMMAND_TOO_LARGE,
                f"the command for externalId {command.external_id!r} needs {size} bytes in the queue; "
                f"the limit is {MAX_COMMAND_BYTES} (shorten its description or tags)",
            )
    return texts


def receive(request: WebhookRequest, settings: Settings, queue: Callable[[], CommandQueue]) -> IntakeResponse:
    """Handle one delivery: 202 with the message ids, or a problem response with nothing enqueued."""
    instance = f"/api/webhooks/{request.source_name}"
    with telemetry.tracer.start_as_current_span(
        "webhook receive",
        kind=SpanKind.SERVER,
        attributes={"vlsync.source": request.source_name, "vlsync.correlation_id": request.correlation_id},
    ) as span:
        response = _receive(request, settings, queue, instance)
        span.set_attribute("http.response.status_code", response.status)
        return response


def _receive(
    request: WebhookRequest, settings: Settings, queue: Callable[[], CommandQueue], instance: str
) -> IntakeResponse:
    try:
        trace_context = telemetry.inject()
        commands = [c.model_copy(update={"trace_context": trace_context or None}) for c in decide(request, settings)]
        texts = encode_all(commands)
        try:
            ids = queue().send_all(texts)
        except QueueUnavailable as exc:
            logger.error("queue unavailable correlation=%s: %s", request.correlation_id, exc)
            raise Problem(
                QUEUE_UNAVAILABLE,
                "the event could not be queued; nothing was accepted, retry later",
                headers={"Retry-After": str(QUEUE_RETRY_AFTER_SECONDS)},
            ) from None
    except Problem as problem:
        return _rejected(request, problem, instance)
    except Reply as reply:
        return _replied(request, reply)
    logger.info(
        "accepted %d command(s) source=%s correlation=%s", len(ids), request.source_name, request.correlation_id
    )
    telemetry.EVENTS_ACCEPTED.add(len(ids), {"vlsync.source": request.source_name})
    return IntakeResponse(
        status=202,
        body={"accepted": len(ids), "messageIds": ids, "correlationId": request.correlation_id},
        headers={CORRELATION_HEADER: request.correlation_id},
    )


def preflight(request: WebhookRequest, settings: Settings) -> IntakeResponse:
    """``OPTIONS /api/webhooks/{source}``: the source's platform decides (CloudEvents abuse
    protection for Event Grid); other platforms answer 405."""
    try:
        source = _source(request, settings)
        reply = sources.preflight(request, source, source_secret(source))
    except Problem as problem:
        return _rejected(request, problem, f"/api/webhooks/{request.source_name}")
    return _replied(request, reply)


def _rejected(request: WebhookRequest, problem: Problem, instance: str) -> IntakeResponse:
    logger.warning(
        "rejected webhook source=%s problem=%s correlation=%s detail=%s",
        request.source_name,
        problem.kind.slug,
        request.correlation_id,
        problem.detail,
    )
    telemetry.EVENTS_REJECTED.add(1, {"vlsync.source": request.source_name, "vlsync.problem": problem.kind.slug})
    return IntakeResponse(
        status=problem.kind.status,
        body=problem.body(instance=instance, correlation_id=request.correlation_id),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={CORRELATION_HEADER: request.correlation_id, **problem.headers},
    )


def _replied(request: WebhookRequest, reply: Reply) -> IntakeResponse:
    logger.info(
        "answered source=%s status=%d correlation=%s", request.source_name, reply.status, request.correlation_id
    )
    return IntakeResponse(
        status=reply.status,
        body=reply.body or {},
        headers={CORRELATION_HEADER: request.correlation_id, **reply.headers},
    )
