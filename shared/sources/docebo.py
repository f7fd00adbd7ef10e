"""Docebo course webhooks: ``course.created``, ``course.updated``, ``course.deleted``.

UNCONFIRMED: the event names, the course payload's fields and the name of the list a grouped
delivery carries are not in Docebo's public documentation as far as it could be read (see
docs/sources.md). What is confirmed: every delivery has ``message_id``, ``webhook_id``,
``original_domain``, ``event`` and ``fired_by_batch_action``, and events of one type may be grouped,
up to 25 per delivery. This adapter is therefore a built-in *mapping* (``DOCEBO``): a single
``payload`` object or a ``payloads`` list, ``course_id``, ``name``, ``description``, ``language``
and ``*_date`` fields. When a real payload differs, set the source's ``mapping`` and nothing else
changes.

No signature scheme is documented: the source's key travels in the URL's query (default ``?key=``)
or in a header (``auth``).
"""

from __future__ import annotations

from typing import Any

from shared.models import ContentCommand
from shared.settings import DoceboSource, SourceConfig
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import load_json
from shared.sources.mapping import Envelope, MappingSpec, Rule, map_events, split
from shared.sources.pipeline import check_key, commands

DOCEBO = MappingSpec.model_validate(
    {
        "type": "event",
        "id": "message_id",
        "actions": {"course.created": "upsert", "course.updated": "upsert", "course.deleted": "delete"},
        "externalId": {"path": "course_id", "convert": "string"},
        "fields": {
            "title": "name",
            "description": {"path": "description", "convert": "html"},
            "languageTag": {"path": "language", "convert": "language-or-default"},
            "createdDateTime": {"path": "creation_date", "convert": "datetime-naive-utc"},
            "lastModifiedDateTime": {"path": "update_date", "convert": "datetime-naive-utc"},
        },
    }
)
ENVELOPE = Envelope(type=Rule(path="event"), id=Rule(path="message_id"), time=None)


def builtin_mapping(body: Any) -> MappingSpec:
    """The built-in mapping, reading the grouped list when the body has one."""
    grouped = isinstance(body, dict) and isinstance(body.get("payloads"), list)
    return DOCEBO.model_copy(update={"events": "payloads" if grouped else "payload"})


class DoceboAdapter:
    kind = "docebo"
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        assert isinstance(source, DoceboSource)
        check_key(request, source.auth, secret)
        return Delivery("", None)

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        return Delivery("", None)  # the key establishes nothing about the delivery but its origin

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, DoceboSource)
        body = load_json(request.body)
        mapping = source.mapping or builtin_mapping(body)
        events, errors = map_events(split(body, mapping), mapping, ENVELOPE, fallback_id=lambda _: None)
        return commands(events, request, source, delivery, errors)
