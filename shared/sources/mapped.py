"""A generic mapped source: any LMS that signs with Standard Webhooks, its data read by a mapping.

``envelope: "cloudevents"``: the body is a CloudEvent in any of the three HTTP modes (structured,
batch, binary) whose ``data`` has the LMS's own shape; the type, id and time are the CloudEvent's.
``envelope: "standard-webhooks"``: the body is the LMS's JSON, by the Standard Webhooks
convention ``{"type", "timestamp", "data"}`` unless the mapping says otherwise; the id is the
delivery's ``webhook-id`` (``#<n>`` appended per event when a body lists several).

The mapping (``shared.sources.mapping``) says where each Graph property is; docs/sources.md shows
a complete fictional LMS onboarded by configuration alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared import signatures
from shared.models import ContentCommand
from shared.settings import MappedSource, SourceConfig
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import load_json, read_events, trusted_webhook
from shared.sources.mapping import Envelope, Located, MappingSpec, Rule, map_events, split
from shared.sources.pipeline import commands

CLOUDEVENTS = Envelope(type=Rule(path="type"), id=Rule(path="id"), time=Rule(path="time", convert="rfc3339"))
STANDARD_WEBHOOKS = Envelope(type=Rule(path="type"), id=None, time=Rule(path="timestamp", convert="rfc3339"))


def cloudevent_documents(request: WebhookRequest) -> list[Located]:
    """Each CloudEvent of a delivery (attributes and ``data``) as one document to map."""
    return [Located(raw, prefix, data_only=header_mode) for raw, prefix, header_mode in read_events(request)]


def split_all(documents: list[Located], mapping: MappingSpec) -> list[Located]:
    """Each document's events (``mapping.events``), or the documents themselves."""
    if mapping.events is None:
        return documents
    return [part for doc in documents for part in split(doc.document, mapping, doc.at)]


class MappedAdapter:
    kind = "mapped"
    # A mapping may read any member, so none of them is known to be only a credential.
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        verified = signatures.verify(request.body, request.headers, secret)
        return Delivery(verified.webhook_id, datetime.fromtimestamp(verified.timestamp, tz=UTC))

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        return trusted_webhook(request)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, MappedSource)
        if source.envelope == "cloudevents":
            located = split_all(cloudevent_documents(request), source.mapping)
            envelope = CLOUDEVENTS
        else:
            located = split(load_json(request.body), source.mapping)
            envelope = STANDARD_WEBHOOKS
        several = len(located) > 1
        events, errors = map_events(
            located,
            source.mapping,
            envelope,
            fallback_id=lambda i: f"{delivery.delivery_id}#{i}" if several else delivery.delivery_id,
        )
        return commands(events, request, source, delivery, errors)
