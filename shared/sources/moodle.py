"""Moodle through the local_webhooks plugin: core ``course_created``, ``course_updated``, ``course_deleted``.

The plugin POSTs an event's ``get_data()`` (``eventname``, ``objectid``, ``courseid``, ``other``,
``timecreated`` in epoch seconds; ids often as strings) plus ``host``, ``token`` and ``extra``. The
service's token is the only credential and it travels in the body, so authentication has to decode
the JSON first; the token is compared in constant time. No HMAC, no timestamp, no retries.

``other.fullname`` names the course; an update lists what changed in ``other.updatedfields``
(``visible: "0"`` hides the course, ``summary`` is HTML, ``lang`` a Moodle locale like ``fr_ca``).
There is no URL in the event: ``contentWebUrlTemplate`` builds it
(``https://moodle.example.com/course/view.php?id={id}``).
"""

from __future__ import annotations

import logging
from typing import Any

from shared.models import ContentCommand
from shared.problems import CREDENTIAL_INVALID, CREDENTIAL_MISSING, SCHEMA_VIOLATION, FieldError, Problem
from shared.settings import MoodleSource, SourceConfig
from shared.sources import Delivery, VerifiedDocument, WebhookRequest
from shared.sources.cloudevents import load_json
from shared.sources.mapping import to_bool
from shared.sources.normalize import Action, CourseEvent, from_epoch
from shared.sources.pipeline import commands, matches_any, secret_values

logger = logging.getLogger(__name__)

CREATED = "\\core\\event\\course_created"
UPDATED = "\\core\\event\\course_updated"
DELETED = "\\core\\event\\course_deleted"


class MoodleAdapter:
    kind = "moodle"
    # The service's token is the body's only credential and no part of the course.
    body_credentials: frozenset[str] = frozenset({"token"})

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        assert isinstance(source, MoodleSource)
        document = load_json(request.body)
        token = document.get("token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise Problem(CREDENTIAL_MISSING, "the body carries no 'token' (set the service's Token in Moodle)")
        if not matches_any(token.encode("utf-8", "surrogatepass"), secret_values(secret)):
            raise Problem(CREDENTIAL_INVALID, "the body's 'token' is not the source's token")
        return _delivery(document)

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        assert isinstance(source, MoodleSource)
        return _delivery(load_json(request.body))

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, MoodleSource)
        assert isinstance(delivery, VerifiedDocument)
        event = course_event(delivery.document)
        return [] if event is None else commands([event], request, source, delivery)


def _delivery(document: Any) -> VerifiedDocument:
    if not isinstance(document, dict):
        raise _invalid("a Moodle event is a JSON object", "")
    delivery_id = f"{document.get('eventname')}:{document.get('objectid')}:{document.get('timecreated')}"
    return VerifiedDocument(delivery_id, None, document)


def _invalid(detail: str, pointer: str) -> Problem:
    return Problem(SCHEMA_VIOLATION, "invalid Moodle event", [FieldError(detail, pointer)])


def course_event(document: dict[str, Any]) -> CourseEvent | None:
    name = document.get("eventname")
    if name not in (CREATED, UPDATED, DELETED):
        logger.info("moodle event %r ignored (not a course catalog event)", name)
        return None
    id_at = "/objectid" if document.get("objectid") not in (None, "") else "/courseid"
    course_id = document.get(id_at[1:])
    if isinstance(course_id, bool) or not isinstance(course_id, str | int) or course_id == "":
        raise _invalid("the course id (objectid or courseid) must be a string or an integer", id_at)
    try:
        event_time = from_epoch(document.get("timecreated"))
    except ValueError as exc:
        raise _invalid(f"timecreated {exc}", "/timecreated") from None
    other = document.get("other")
    other = other if isinstance(other, dict) else {}
    changed = other.get("updatedfields")
    changed = changed if isinstance(changed, dict) else {}

    action: Action = "delete" if name == DELETED else "upsert"
    fields: dict[str, Any] = {}
    where = {"externalId": id_at, "time": "/timecreated", "sourceEventId": "/eventname"}
    if action == "upsert":
        if "visible" in changed:
            try:
                action = "upsert" if to_bool(changed["visible"]) else "hidden"
            except ValueError:
                raise _invalid("visible must be 0 or 1", "/other/updatedfields/visible") from None
        for graph, key in (("title", "fullname"), ("description", "summary"), ("languageTag", "lang")):
            if changed.get(key) not in (None, ""):
                fields[graph], where[graph] = changed[key], f"/other/updatedfields/{key}"
            elif graph == "title" and other.get(key) not in (None, ""):
                fields[graph], where[graph] = other[key], f"/other/{key}"
        fields["lastModifiedDateTime"], where["lastModifiedDateTime"] = event_time, "/timecreated"
        if name == CREATED:
            fields["createdDateTime"], where["createdDateTime"] = event_time, "/timecreated"
    return CourseEvent(
        action=action,
        course_id=str(course_id),
        event_id=f"{name}:{course_id}:{document.get('timecreated')}",
        event_time=event_time,
        fields=fields,
        at="",
        where=where,
    )
