"""Webhook intake: authenticate, parse, validate, enqueue; all or nothing.

Order matters: the source is looked up and the body size checked before any work, the signature is
checked before the body is parsed (unauthenticated input is never interpreted), and every command
is encoded and measured before the first one is enqueued. Then, around the enqueue, two ports that
never reject a valid delivery: the dedupe table (``shared.dedupe``: a redelivery gets 202 with
``"duplicate": true`` and keeps nothing queued; the delivery is remembered only after its enqueue
succeeded) and the raw event archive (``shared.archive``: every accepted delivery, best-effort).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry.trace import SpanKind

from shared import archive, dedupe, sources, telemetry
from shared.archive import ArchivedDelivery, DeliveryArchive
from shared.dedupe import DeliveryDedupe, SeenDelivery
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
from shared.queue import MAX_MESSAGE_BYTES, CommandQueue, QueueUnavailable, SentMessage, encoded_size, message_ids
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


@dataclass(frozen=True)
class Decision:
    """What :func:`decide_delivery` established: the source, the commands and the dedupe key."""

    source: SourceConfig
    commands: list[ContentCommand]
    delivery_key: str  # shared.dedupe.delivery_key: the adapter's delivery id and the body's digest


def decide_delivery(request: WebhookRequest, settings: Settings) -> Decision:
    """Everything up to the enqueue, without I/O: the commands, or a Problem (or a Reply where the
    platform's protocol demands an answer of its own, e.g. Event Grid's validation)."""
    source = _source(request, settings)
    if len(request.body) > settings.webhook_max_body_bytes:
        raise Problem(
            BODY_TOO_LARGE, f"the body is {len(request.body)} bytes; the limit is {settings.webhook_max_body_bytes}"
        )
    adapter = adapter_for(source.kind)
    delivery = adapter.authenticate(request, source, source_secret(source))
    commands = adapter.parse(request, source, delivery)
    return Decision(source, commands, dedupe.delivery_key(request, delivery))


def decide(request: WebhookRequest, settings: Settings) -> list[ContentCommand]:
    """The commands of a delivery (:func:`decide_delivery`), or a Problem or a Reply."""
    return decide_delivery(request, settings).commands


RederiveOutcome = Literal["derived", "duplicate", "unknown-source", "redacted", "invalid"]


@dataclass(frozen=True)
class Rederived:
    """What :func:`rederive` made of one archived delivery."""

    outcome: RederiveOutcome
    commands: list[ContentCommand] = field(default_factory=list)
    problem: str | None = None  # the problem's title, for ``invalid``
    detail: str | None = None


def rederive(delivery: ArchivedDelivery, settings: Settings) -> Rederived:
    """The commands of an archived delivery, derived again by today's sources and normalisers.

    The delivery was authenticated when it was accepted, and the archive masks its credential, so
    the adapter's ``trusted`` path stands in for ``authenticate``; everything after it is the intake's
    (``parse``, ``encode_all``). Refused, each with its outcome and nothing derived:

    - ``duplicate``: a redelivery the intake answered as a duplicate (its first delivery is archived too);
    - ``unknown-source``: its source is no longer configured;
    - ``redacted``: the archive masked something the content is read from (:func:`redaction`);
    - ``invalid``: today's rules refuse it (the problem's title and detail), e.g. a source whose
      options changed since; a Problem, never raised.

    A delivery that holds no course event (or a handshake such as Event Grid's validation) is
    ``derived`` with no commands. An invalid ``SOURCES`` setting raises ``SourcesError``.
    """
    if delivery.duplicate:
        return Rederived("duplicate", detail="a redelivery; its first delivery is archived and replayed")
    source = settings.sources().get(delivery.source)
    if source is None:
        return Rederived("unknown-source", detail=f"no webhook source named {delivery.source!r} is configured")
    adapter = adapter_for(source.kind)
    masked = redaction(delivery, adapter.body_credentials)
    if masked is not None:
        return Rederived("redacted", detail=masked)
    try:
        request = delivery.to_request()
    except ValueError as exc:  # a base64 body that does not decode: not what the archive wrote
        return Rederived("invalid", problem="Unreadable archived body", detail=str(exc))
    try:
        commands = adapter.parse(request, source, adapter.trusted(request, source))
        encode_all(commands)
    except Problem as problem:
        return Rederived("invalid", problem=problem.kind.title, detail=problem.detail)
    except Reply:
        return Rederived("derived", detail="a handshake: nothing to queue")
    return Rederived("derived", commands)


def redaction(delivery: ArchivedDelivery, credentials: frozenset[str]) -> str | None:
    """Why an archived body no longer holds the content received, or None when it does.

    ``bodyRedacted`` says the archive masked something in the body. What was masked is where the
    mask stands: top-level JSON members masked whole, which are harmless when the source's kind
    reads them as credentials only (``credentials``, the adapter's ``body_credentials``: Moodle's
    ``token``); any other mask (a member the kind may read, or the source's secret found inside
    the content) means the content changed, so nothing is derived from it.
    """
    if not delivery.body_redacted:
        return None
    if delivery.body_encoding != "utf-8":
        return "the source's secret was masked in a body that is not UTF-8 text"
    try:
        document = json.loads(delivery.body)
    except (ValueError, RecursionError):
        document = None
    members = [name for name, value in document.items() if value == archive.MASK] if isinstance(document, dict) else []
    read = sorted(name for name in members if name not in credentials)
    if read:
        return f"the body's {', '.join(read)} member(s) were masked, and this kind of source may read them"
    if delivery.body.count(archive.MASK) > len(members):
        return "the source's secret was masked inside the body's content"
    return None


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


DedupeFactory = Callable[[], DeliveryDedupe | None]
ArchiveFactory = Callable[[], DeliveryArchive | None]


def receive(
    request: WebhookRequest,
    settings: Settings,
    queue: Callable[[], CommandQueue],
    *,
    dedupe: DedupeFactory | None = None,
    archive: ArchiveFactory | None = None,
) -> IntakeResponse:
    """Handle one delivery: 202 with the message ids (or ``"duplicate": true``), or a problem response
    with nothing enqueued. ``dedupe`` and ``archive`` give the ports (None, or a factory returning
    None: that step is off); neither can turn a valid delivery into an error."""
    instance = f"/api/webhooks/{request.source_name}"
    with telemetry.tracer.start_as_current_span(
        "webhook receive",
        kind=SpanKind.SERVER,
        attributes={"vlsync.source": request.source_name, "vlsync.correlation_id": request.correlation_id},
    ) as span:
        response = _receive(request, settings, queue, instance, dedupe, archive)
        span.set_attribute("http.response.status_code", response.status)
        if response.status == 202:
            span.set_attribute("vlsync.duplicate", bool(response.body.get("duplicate")))
        return response


def _receive(
    request: WebhookRequest,
    settings: Settings,
    queue: Callable[[], CommandQueue],
    instance: str,
    dedupe_port: DedupeFactory | None,
    archive_port: ArchiveFactory | None,
) -> IntakeResponse:
    try:
        decision = decide_delivery(request, settings)
        trace_context = telemetry.inject()
        commands = [c.model_copy(update={"trace_context": trace_context or None}) for c in decision.commands]
        texts = encode_all(commands)
        # A delivery without commands queues nothing, so there is nothing to guard against repeating.
        store = _port(dedupe_port, "dedupe", request, lambda: _degraded(request, "open")) if commands else None
        if store is None:
            ids, earlier = message_ids(_enqueue(request, queue(), texts)), None
        else:
            ids, earlier = _enqueue_once(request, queue(), texts, store, decision.delivery_key)
    except Problem as problem:
        return _rejected(request, problem, instance)
    except Reply as reply:
        return _replied(request, reply)
    if earlier is not None:
        response = _duplicate(request, earlier)
        _archive(request, decision.source, archive_port, list(earlier.message_ids or ()), duplicate=True)
        return response
    logger.info(
        "accepted %d command(s) source=%s correlation=%s", len(ids), request.source_name, request.correlation_id
    )
    telemetry.EVENTS_ACCEPTED.add(len(ids), {"vlsync.source": request.source_name})
    _archive(request, decision.source, archive_port, ids, duplicate=False)
    return IntakeResponse(
        status=202,
        body={"accepted": len(ids), "messageIds": ids, "correlationId": request.correlation_id, "duplicate": False},
        headers={CORRELATION_HEADER: request.correlation_id},
    )


def _enqueue(request: WebhookRequest, queue: CommandQueue, texts: list[str]) -> list[SentMessage]:
    try:
        return queue.send_all(texts)
    except QueueUnavailable as exc:
        logger.error("queue unavailable correlation=%s: %s", request.correlation_id, exc)
        raise Problem(
            QUEUE_UNAVAILABLE,
            "the event could not be queued; nothing was accepted, retry later",
            headers={"Retry-After": str(QUEUE_RETRY_AFTER_SECONDS)},
        ) from None


def _enqueue_once(
    request: WebhookRequest, queue: CommandQueue, texts: list[str], store: DeliveryDedupe, key: str
) -> tuple[list[str], SeenDelivery | None]:
    """Enqueue, then claim the key: a new delivery costs one insert, and is remembered only once its
    commands are queued, so a failed enqueue (a Problem) lets the sender's retry through. A redelivery
    finds the key taken and its commands are withdrawn again (``shared.dedupe``). One instance runs the
    steps for one key at a time (``dedupe.IN_FLIGHT``)."""
    source = request.source_name
    with dedupe.IN_FLIGHT.hold(f"{source}\n{key}"):
        sent = _enqueue(request, queue, texts)
        ids = message_ids(sent)
        seen = SeenDelivery(request.correlation_id, tuple(ids), request.received_at, request.received_at)
        earlier = _best_effort("claim", request, lambda: store.claim(source, key, seen))
        if earlier is None:
            return ids, None
        queue.withdraw(sent)  # logs what it could not take back: the worker's ledger skips that copy
        return [], earlier


def _best_effort(step: str, request: WebhookRequest, call: Callable[[], Any]) -> Any:
    """A dedupe table failure never rejects a valid delivery: log, count, and go on without it."""
    try:
        return call()
    except Exception:  # any failure of an optional port: storage down, refused, throttled, misconfigured
        logger.exception(
            "dedupe %s failed; accepting without it source=%s correlation=%s",
            step,
            request.source_name,
            request.correlation_id,
        )
        _degraded(request, step)
        return None


def _degraded(request: WebhookRequest, step: str) -> None:
    dedupe.DEGRADED.add(1, {"vlsync.source": request.source_name, "vlsync.step": step})


def _port(factory: Callable[[], Any] | None, name: str, request: WebhookRequest, failed: Callable[[], None]) -> Any:
    """The port a factory builds (None: off); a factory that fails counts as that port failing."""
    if factory is None:
        return None
    try:
        return factory()
    except Exception:  # e.g. StorageNotConfigured: the port is unusable, the delivery is not
        logger.exception("%s unavailable source=%s correlation=%s", name, request.source_name, request.correlation_id)
        failed()
        return None


def _duplicate(request: WebhookRequest, earlier: SeenDelivery) -> IntakeResponse:
    logger.info(
        "duplicate delivery source=%s correlation=%s first accepted correlation=%s at=%s",
        request.source_name,
        request.correlation_id,
        earlier.correlation_id,
        earlier.accepted_at.isoformat(),
    )
    dedupe.DUPLICATES.add(1, {"vlsync.source": request.source_name})
    body: dict[str, Any] = {
        "accepted": 0,
        "duplicate": True,
        "correlationId": request.correlation_id,
        "originalCorrelationId": earlier.correlation_id,
    }
    if earlier.message_ids is not None:
        body["messageIds"] = list(earlier.message_ids)
    return IntakeResponse(status=202, body=body, headers={CORRELATION_HEADER: request.correlation_id})


def _archive(
    request: WebhookRequest,
    source: SourceConfig,
    factory: ArchiveFactory | None,
    message_ids: Sequence[str],
    *,
    duplicate: bool,
) -> None:
    """Best-effort: the commands are already queued, so a failure here is logged and counted only."""
    port = _port(factory, "archive", request, lambda: _archive_failed(request))
    if port is None:
        return
    try:
        record = archive.archived(request, source, source_secret(source), message_ids, duplicate=duplicate)
        port.put(record)
    except Exception:  # the archive is best-effort by design; see shared/archive.py
        logger.exception(
            "archive failed; the delivery is accepted source=%s correlation=%s",
            request.source_name,
            request.correlation_id,
        )
        _archive_failed(request)


def _archive_failed(request: WebhookRequest) -> None:
    archive.FAILED.add(1, {"vlsync.source": request.source_name})


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
