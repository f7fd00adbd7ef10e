"""Azure Event Grid push delivery to this webhook, in the Event Grid or the CloudEvents 1.0 schema.

Handshakes, both answered without queueing anything:

- Event Grid schema: the first POST (``aeg-event-type: SubscriptionValidation``) carries a
  ``Microsoft.EventGrid.SubscriptionValidationEvent``; the answer is ``200 {"validationResponse":
  <data.validationCode>}`` (synchronous validation; 202 is not accepted by Event Grid).
- CloudEvents schema: an ``OPTIONS`` request with ``WebHook-Request-Origin`` (abuse protection);
  the answer is 200 with ``WebHook-Allowed-Origin`` when the origin is one the source allows
  (``allowedOrigins``, default ``eventgrid.azure.net``). :meth:`EventGridAdapter.preflight` decides.

Event Grid does not sign deliveries; the source's key travels in the endpoint URL's query
(default ``?key=``) or in a header set by the subscription's delivery properties (``auth``), and is
checked before anything else, the handshake included.

Without a ``mapping`` the events' ``data`` are Graph ``learningContent`` properties and the event
type's suffix decides (``.created``/``.updated``/``.upserted`` upsert, ``.deleted`` delete), exactly
as for the canonical CloudEvents source; with a ``mapping`` any data shape is read by it.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from shared.models import ContentCommand
from shared.problems import SCHEMA_VIOLATION, FieldError, Problem
from shared.settings import EventGridSource, SourceConfig
from shared.sources import Delivery, Reply, WebhookRequest
from shared.sources.cloudevents import BATCH, CloudEventsAdapter, load_json
from shared.sources.mapped import CLOUDEVENTS, cloudevent_documents, split_all
from shared.sources.mapping import Envelope, Located, Rule, map_events, split
from shared.sources.pipeline import check_key, commands

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
EVENT_GRID = Envelope(type=Rule(path="eventType"), id=Rule(path="id"), time=Rule(path="eventTime"))
# A validation code is a GUID; anything else is not echoed back.
_VALIDATION_CODE = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# Event Grid's field for each CloudEvents attribute, to point a rejection at the field sent.
_ATTRIBUTE_FIELDS = {"id": "id", "source": "topic", "type": "eventType", "time": "eventTime", "subject": "subject"}


class EventGridAdapter:
    kind = "eventgrid"
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        assert isinstance(source, EventGridSource)
        check_key(request, source.auth, secret)
        return Delivery("", None)

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        return Delivery("", None)  # the key establishes nothing about the delivery but its origin

    def preflight(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Reply:
        """The CloudEvents abuse-protection handshake (``OPTIONS``), after the source's key."""
        return abuse_protection(request, source, secret)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, EventGridSource)
        if source.schema_ == "cloudevents":
            if source.mapping is None:
                return CloudEventsAdapter().parse(request, source, delivery)
            located = split_all(cloudevent_documents(request), source.mapping)
            events, errors = map_events(located, source.mapping, CLOUDEVENTS, fallback_id=lambda _: None)
            return commands(events, request, source, delivery, errors)

        items = load_json(request.body)
        if not isinstance(items, list):
            raise Problem(
                SCHEMA_VIOLATION, "invalid delivery", [FieldError("must be an array of Event Grid events", "")]
            )
        validation_reply(items, request)
        if source.mapping is None:
            return _canonical(items, request, source, delivery)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise Problem(SCHEMA_VIOLATION, "invalid delivery", [FieldError("must be an object", f"/{index}")])
        located = [part for i, item in enumerate(items) for part in _split(item, source, (i,))]
        events, errors = map_events(located, source.mapping, EVENT_GRID, fallback_id=lambda _: None)
        return commands(events, request, source, delivery, errors)


def _split(item: Any, source: EventGridSource, at: tuple[str | int, ...]) -> list[Located]:
    assert source.mapping is not None
    return split(item, source.mapping, at) if source.mapping.events else [Located(item, at)]


def validation_reply(items: list[Any], request: WebhookRequest) -> None:
    """Raise the handshake's answer if this delivery is Event Grid's subscription validation."""
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("eventType") == VALIDATION_EVENT:
            data = item.get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not _VALIDATION_CODE.match(code):
                raise Problem(
                    SCHEMA_VIOLATION,
                    "invalid subscription validation event",
                    [FieldError("must be the validation code (a GUID)", f"/{index}/data/validationCode")],
                )
            raise Reply(200, {"validationResponse": code})
    if request.headers.get("aeg-event-type", "").lower() == "subscriptionvalidation":
        raise Problem(
            SCHEMA_VIOLATION,
            "a SubscriptionValidation delivery without its validation event",
            [FieldError(f"no {VALIDATION_EVENT} event", "")],
        )


def abuse_protection(request: WebhookRequest, source: SourceConfig, secret: str | None) -> Reply:
    """The answer to a CloudEvents webhook validation request (HTTP OPTIONS).

    The source's key is checked first (a Problem when it fails). Then 200 with
    ``WebHook-Allowed-Origin`` (and ``WebHook-Allowed-Rate: *``) for an allowed origin, 403 for
    another, 400 when the request names no origin (not an abuse-protection request).
    """
    assert isinstance(source, EventGridSource)
    check_key(request, source.auth, secret)
    origin = request.headers.get("webhook-request-origin", "").strip()
    if not origin:
        return Reply(400, {"detail": "an OPTIONS request here must carry WebHook-Request-Origin"})
    if origin.lower() not in {o.lower() for o in source.allowed_origins}:
        return Reply(403, {"detail": f"origin {origin!r} may not deliver to this source"})
    return Reply(200, None, {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"})


def _canonical(
    items: list[Any], request: WebhookRequest, source: EventGridSource, delivery: Delivery
) -> list[ContentCommand]:
    """Event Grid events whose data are Graph properties, read by the canonical CloudEvents rules."""
    converted: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            converted.append(item)  # the CloudEvents reader reports it at its index
            continue
        data = item.get("data")
        event = {
            "specversion": "1.0",
            "id": item.get("id"),
            "source": item.get("topic") or "eventgrid",
            # Event Grid's types are PascalCase by convention (Contoso.Course.Updated): the suffix rule ignores case.
            "type": item["eventType"].lower() if isinstance(item.get("eventType"), str) else item.get("eventType"),
            "time": item.get("eventTime"),
            "data": data,
        }
        # Event Grid's subject is often a path; it names the item only when data does not.
        if item.get("subject") is not None and not (isinstance(data, dict) and "externalId" in data):
            event["subject"] = item["subject"]
        converted.append({k: v for k, v in event.items() if v is not None})
    as_batch = replace(request, headers={**request.headers, "content-type": BATCH}, body=json.dumps(converted).encode())
    try:
        return CloudEventsAdapter().parse(as_batch, source, delivery)
    except Problem as problem:
        problem.errors = [_event_grid_pointer(e) for e in problem.errors]
        raise


def _event_grid_pointer(error: FieldError) -> FieldError:
    """``/0/type`` -> ``/0/eventType``: the pointer into what Event Grid sent."""
    if error.pointer is None:
        return error
    parts = error.pointer.split("/")
    if len(parts) == 3 and parts[2] in _ATTRIBUTE_FIELDS:
        parts[2] = _ATTRIBUTE_FIELDS[parts[2]]
    return FieldError(error.detail, "/".join(parts), error.header)
