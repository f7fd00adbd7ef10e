"""Open edX ``COURSE_CATALOG_INFO_CHANGED`` (``org.openedx.content_authoring.course.catalog_info.changed.v1``).

Two forms arrive:

- the openedx-webhooks plugin (aulasneo): ``{"openedx_events.content_authoring.data.CourseCatalogData":
  {...}, "event_metadata": {"id", "event_type", "time", ...}}``, its datetimes written by ``str()``
  (``2024-09-02 00:00:00+00:00``, older versions without an offset: UTC);
- the event bus as a CloudEvent (structured, batch or binary mode) whose data is
  ``{"catalog_info": {...}}``, as the Kafka bus carries it with ``ce_*`` headers.

``CourseCatalogData`` has ``course_key`` (``course-v1:Org+Num+Run``; legacy ``Org/Num/Run``),
``name``, ``schedule_data`` and ``hidden`` (true hides the course). Nothing else: no description,
language or URL (``contentWebUrlTemplate`` with ``{rawId}`` builds the about page's URL). No
course-deleted catalog event is known. The plugin signs nothing, so the source authenticates with a
key in the URL (default ``?key=``), a header key, or Standard Webhooks from a signing bridge.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from shared import signatures
from shared.models import ContentCommand
from shared.problems import SCHEMA_VIOLATION, FieldError, Problem, json_pointer
from shared.settings import KeyAuth, OpenEdxSource, SourceConfig
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import BATCH, STRUCTURED, load_json, read_events, trusted_webhook
from shared.sources.mapping import to_bool
from shared.sources.normalize import Action, CourseEvent, parse_datetime
from shared.sources.pipeline import check_key, commands

logger = logging.getLogger(__name__)

CATALOG_CHANGED = "org.openedx.content_authoring.course.catalog_info.changed.v1"
PLUGIN_DATA_KEY = "openedx_events.content_authoring.data.CourseCatalogData"


class OpenEdxAdapter:
    kind = "openedx"
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        assert isinstance(source, OpenEdxSource)
        if isinstance(source.auth, KeyAuth):
            check_key(request, source.auth, secret)
            return Delivery("", None)
        verified = signatures.verify(request.body, request.headers, secret)
        return Delivery(verified.webhook_id, datetime.fromtimestamp(verified.timestamp, tz=UTC))

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        assert isinstance(source, OpenEdxSource)
        return Delivery("", None) if isinstance(source.auth, KeyAuth) else trusted_webhook(request)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, OpenEdxSource)
        is_cloudevent = "ce-specversion" in request.headers or request.media_type in (STRUCTURED, BATCH)
        events = _from_cloudevents(request) if is_cloudevent else _from_plugin(load_json(request.body))
        return commands(events, request, source, delivery)


def _invalid(errors: list[FieldError]) -> Problem:
    return Problem(SCHEMA_VIOLATION, f"{len(errors)} invalid field(s)", errors)


def _from_plugin(document: Any) -> list[CourseEvent]:
    if not isinstance(document, dict):
        raise _invalid([FieldError("must be an object", "")])
    metadata = document.get("event_metadata")
    if not isinstance(metadata, dict):
        raise _invalid([FieldError("must be an object", "/event_metadata")])
    if metadata.get("event_type") != CATALOG_CHANGED:
        logger.info("open edx event %r ignored (not COURSE_CATALOG_INFO_CHANGED)", metadata.get("event_type"))
        return []
    key = (
        PLUGIN_DATA_KEY
        if PLUGIN_DATA_KEY in document
        else next((k for k in document if isinstance(k, str) and k.endswith(".CourseCatalogData")), PLUGIN_DATA_KEY)
    )
    meta_at = ("event_metadata",)
    return [_catalog_event(document.get(key), (key,), metadata, meta_at)]


def _from_cloudevents(request: WebhookRequest) -> list[CourseEvent]:
    out = []
    for raw, prefix, header_mode in read_events(request):
        if raw.get("type") != CATALOG_CHANGED:
            logger.info("open edx event %r ignored (not COURSE_CATALOG_INFO_CHANGED)", raw.get("type"))
            continue
        data = raw.get("data")
        data_at: tuple[str | int, ...] = () if header_mode else (*prefix, "data")
        if not isinstance(data, dict):
            raise _invalid([FieldError("must be an object with 'catalog_info'", json_pointer(data_at))])
        out.append(_catalog_event(data.get("catalog_info"), (*data_at, "catalog_info"), raw, prefix))
    return out


def _catalog_event(
    catalog: Any, at: tuple[str | int, ...], attributes: dict[str, Any], attributes_at: tuple[str | int, ...]
) -> CourseEvent:
    """``attributes`` (the plugin's event_metadata, or the CloudEvent at ``attributes_at``) give id and time."""
    event_id, raw_time = attributes.get("id"), attributes.get("time")
    id_at, time_at = (*attributes_at, "id"), (*attributes_at, "time")
    errors: list[FieldError] = []
    if not isinstance(catalog, dict):
        raise _invalid([FieldError("must be a CourseCatalogData object", json_pointer(at))])
    course_key = catalog.get("course_key")
    if not isinstance(course_key, str) or not course_key:
        errors.append(FieldError("course_key must be a course key string", json_pointer((*at, "course_key"))))
    if not isinstance(event_id, str) or not event_id:
        errors.append(FieldError("the event id must be a string", json_pointer(id_at)))
    event_time = None
    if raw_time is not None:
        try:
            # Open edX writes UTC; the plugin's str(datetime) may lack the offset.
            event_time = parse_datetime(raw_time, naive_is_utc=True)
        except ValueError as exc:
            errors.append(FieldError(f"time {exc}", json_pointer(time_at)))
    action: Action = "upsert"
    if catalog.get("hidden") is not None:
        try:
            action = "hidden" if to_bool(catalog["hidden"]) else "upsert"
        except ValueError:
            errors.append(FieldError("hidden must be true or false", json_pointer((*at, "hidden"))))
    if errors:
        raise _invalid(errors)
    fields: dict[str, Any] = {}
    where = {"externalId": json_pointer((*at, "course_key")), "time": json_pointer(time_at)}
    where["sourceEventId"] = json_pointer(id_at)
    if catalog.get("name") not in (None, ""):
        fields["title"], where["title"] = catalog["name"], json_pointer((*at, "name"))
    assert isinstance(course_key, str)
    assert isinstance(event_id, str)
    return CourseEvent(
        action=action,
        course_id=course_key,
        event_id=event_id,
        event_time=event_time,
        fields=fields,
        at=json_pointer(at),
        where=where,
    )
