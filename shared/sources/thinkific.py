"""Thinkific webhooks: ``product.created|updated|deleted`` and ``course.created|updated|deleted``.

``X-Thinkific-Hmac-Sha256`` is the hex HMAC-SHA256 of the raw body keyed with the site's API key
(or the app's client secret); several keys may be configured, space-separated, while rotating.
There is no timestamp, so no freshness check: the envelope's ``id`` travels as ``sourceEventId``
for a later dedupe.

Envelope: ``{id, resource, action, tenant_id, created_at, timestamp, payload}``. The payload's fields
(``id``, ``name``, ``description`` HTML, ``card_image_url``, ``slug``, ``status``, ``hidden``,
``created_at``; a product's ``productable_id``/``productable_type``) follow the Admin API schema and
are not confirmed for webhooks. A product wrapping a course is keyed by the course's id
(``productable_id``), so both event families name one item; products of other types are ignored.
``status: "draft"`` or ``hidden: true`` hides the course.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

from shared.models import ContentCommand
from shared.problems import SCHEMA_VIOLATION, SIGNATURE_INVALID, SIGNATURE_MISSING, FieldError, Problem
from shared.settings import SourceConfig, ThinkificSource
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import load_json
from shared.sources.mapping import to_bool
from shared.sources.normalize import Action, CourseEvent, parse_datetime
from shared.sources.pipeline import commands, secret_values

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-thinkific-hmac-sha256"
TOPICS = {f"{r}.{a}" for r in ("product", "course") for a in ("created", "updated", "deleted")}
# A product ``status`` that keeps the course out of the catalog; the one Thinkific visibility rule, for
# webhooks and Admin API answers alike (``shared.lms.thinkific``).
HIDDEN_STATUSES = frozenset({"draft", "hidden", "unpublished"})
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def status_hides(status: object) -> bool:
    """Whether a product ``status`` hides the course (``HIDDEN_STATUSES``, any case)."""
    return isinstance(status, str) and status.lower() in HIDDEN_STATUSES


def sign(body: bytes, key: str) -> str:
    """The header value Thinkific sends for ``body``."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class ThinkificAdapter:
    kind = "thinkific"
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        given = request.headers.get(SIGNATURE_HEADER, "").strip()
        if not given:
            raise Problem(SIGNATURE_MISSING, "the X-Thinkific-Hmac-Sha256 header is missing")
        keys = secret_values(secret)
        if not _HEX.match(given):
            raise Problem(SIGNATURE_INVALID, "X-Thinkific-Hmac-Sha256 must be 64 hex digits")
        matched = False
        for key in keys:
            expected = hmac.new(key, request.body, hashlib.sha256).hexdigest()
            matched |= hmac.compare_digest(given.lower(), expected)
        if not matched:
            raise Problem(SIGNATURE_INVALID, "X-Thinkific-Hmac-Sha256 does not match the body and the source's key")
        return Delivery(given.lower(), None)

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        # The HMAC was the delivery's id; it is masked in the archive and no command carries it.
        return Delivery("", None)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, ThinkificSource)
        event = course_event(load_json(request.body))
        return [] if event is None else commands([event], request, source, delivery)


def _invalid(errors: list[FieldError]) -> Problem:
    return Problem(SCHEMA_VIOLATION, f"{len(errors)} invalid field(s)", errors)


def _id(value: Any) -> str | None:
    return None if isinstance(value, bool) or not isinstance(value, str | int) or value == "" else str(value)


def course_event(document: Any) -> CourseEvent | None:
    if not isinstance(document, dict):
        raise _invalid([FieldError("must be an object", "")])
    topic = f"{document.get('resource')}.{document.get('action')}"
    if topic not in TOPICS:
        logger.info("thinkific topic %r ignored (not a product or course event)", topic)
        return None
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise _invalid([FieldError("must be an object", "/payload")])
    resource = document["resource"]
    kind = payload.get("productable_type")
    if resource == "product" and kind is not None and kind != "Course":
        logger.info("thinkific product of type %r ignored (not a course)", kind)
        return None
    errors = []
    id_at = "/payload/id"
    if resource == "product" and _id(payload.get("productable_id")) is not None:
        id_at = "/payload/productable_id"
    course_id = _id(payload.get(id_at.rsplit("/", 1)[1]))
    if course_id is None:
        errors.append(FieldError("the course id must be a string or an integer", id_at))
    event_id = _id(document.get("id"))
    if event_id is None:
        errors.append(FieldError("the event id must be a string or an integer", "/id"))
    raw_time = document.get("timestamp") or document.get("created_at")
    time_at = "/timestamp" if document.get("timestamp") else "/created_at"
    event_time = None
    if raw_time is not None:
        try:
            event_time = parse_datetime(raw_time)
        except ValueError as exc:
            errors.append(FieldError(f"time {exc}", time_at))

    action: Action = "delete" if document["action"] == "deleted" else "upsert"
    if action == "upsert":
        if status_hides(payload.get("status")):
            action = "hidden"
        if payload.get("hidden") is not None:
            try:
                action = "hidden" if to_bool(payload["hidden"]) else action
            except ValueError:
                errors.append(FieldError("hidden must be true or false", "/payload/hidden"))
    if errors:
        raise _invalid(errors)
    fields: dict[str, Any] = {}
    where = {"externalId": id_at, "time": time_at, "sourceEventId": "/id"}
    for graph, key in (
        ("title", "name"),
        ("description", "description"),
        ("thumbnailWebUrl", "card_image_url"),
        ("createdDateTime", "created_at"),
    ):
        if payload.get(key) not in (None, ""):
            fields[graph], where[graph] = payload[key], f"/payload/{key}"
    slug = payload.get("slug")
    assert course_id is not None
    assert event_id is not None
    return CourseEvent(
        action=action,
        course_id=course_id,
        event_id=event_id,
        event_time=event_time,
        fields=fields,
        at="/payload",
        where=where,
        url_values={"slug": slug} if isinstance(slug, str) and slug else {},
    )
