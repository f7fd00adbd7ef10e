"""CloudEvents 1.0 over HTTP, the canonical event format: structured, batch and binary modes.

``type`` ending in ``.created``, ``.updated`` or ``.upserted`` means upsert, ``.deleted`` means
delete; ``data`` carries Graph ``learningContent`` properties; ``externalId`` comes from
``data.externalId``, else ``subject``. Deliveries are signed with Standard Webhooks.

Every failing field of every event is reported at once, located by a JSON pointer into the body
(binary-mode attributes by their ``ce-`` header), so a sender fixes a batch in one round trip.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import signatures
from shared.models import (
    MAX_EXTERNAL_ID_LENGTH,
    MIN_EVENT_TIME,
    ContentCommand,
    LearningContent,
    identifier,
    order_key,
    parse_rfc3339,
)
from shared.problems import (
    BAD_JSON,
    EMPTY_BATCH,
    SCHEMA_VIOLATION,
    SIGNATURE_INVALID,
    SIGNATURE_MISSING,
    UNSUPPORTED_MEDIA_TYPE,
    FieldError,
    Problem,
    json_pointer,
    lone_surrogates,
)
from shared.settings import SourceConfig
from shared.sources import Delivery, WebhookRequest

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
UPSERT_SUFFIXES = (".created", ".updated", ".upserted")
DELETE_SUFFIX = ".deleted"
MAX_BATCH_EVENTS = 1000
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# A sender's clock may run a little ahead; an event much further in the future would make every
# real event for the item look stale, so it is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_CONTEXT_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema")


def _is_json_media_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


class CloudEvent(BaseModel):
    """The context attributes we read; extension attributes are allowed and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = Field(default=None, min_length=1, max_length=MAX_EXTERNAL_ID_LENGTH)
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None

    @field_validator("id", "source", "type", "subject")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else identifier(value)

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rfc3339(value)
        return value

    @field_validator("datacontenttype")
    @classmethod
    def _json_data(cls, value: str | None) -> str | None:
        if value is not None and not _is_json_media_type(value.split(";", 1)[0].strip().lower()):
            raise ValueError("data must be JSON (application/json or a +json type)")
        return value

    @property
    def op(self) -> Literal["upsert", "delete"] | None:
        if self.type.endswith(UPSERT_SUFFIXES):
            return "upsert"
        if self.type.endswith(DELETE_SUFFIX):
            return "delete"
        return None


def _pydantic_errors(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a property of microsoft.graph.learningContent"
        elif err["type"] == "missing":
            msg = "is required"
        out.append(FieldError(detail=msg, pointer=json_pointer(prefix + loc)))
    return out


class CloudEventsAdapter:
    """Adapter for senders that speak CloudEvents and sign with Standard Webhooks."""

    kind = "cloudevents"
    body_credentials: frozenset[str] = frozenset()

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        verified = signatures.verify(request.body, request.headers, secret)
        return Delivery(delivery_id=verified.webhook_id, sent_at=datetime.fromtimestamp(verified.timestamp, tz=UTC))

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        return trusted_webhook(request)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        events = self._events(request)
        commands: list[ContentCommand] = []
        errors: list[FieldError] = []
        for raw, prefix, header_mode in events:
            try:
                commands.append(self._command(raw, prefix, header_mode, request, source, delivery))
            except Problem as problem:
                errors.extend(problem.errors)
        if errors:
            noun = "event" if len(events) == 1 else "events"
            raise Problem(SCHEMA_VIOLATION, f"{len(errors)} invalid field(s) in {len(events)} {noun}", errors)
        return coalesce(commands)

    # -- reading the three modes ---------------------------------------------------------------

    def _events(self, request: WebhookRequest) -> list[tuple[dict[str, Any], tuple[str | int, ...], bool]]:
        """Return ``(event dict, pointer prefix, attributes-from-headers)`` for each event."""
        media = request.media_type
        binary = "ce-specversion" in request.headers
        if media == BATCH:
            body = _load_json(request.body)
            if not isinstance(body, list):
                raise Problem(
                    SCHEMA_VIOLATION, "a batch is a JSON array of events", [FieldError("must be an array", "")]
                )
            if not body:
                raise Problem(EMPTY_BATCH, "the batch holds no events")
            if len(body) > MAX_BATCH_EVENTS:
                raise Problem(SCHEMA_VIOLATION, f"a batch holds at most {MAX_BATCH_EVENTS} events",
                              [FieldError(f"holds {len(body)} events", "")])  # fmt: skip
            return [(_as_event(item, (i,)), (i,), False) for i, item in enumerate(body)]
        if media == STRUCTURED or (media == "application/json" and not binary):
            body = _load_json(request.body)
            return [(_as_event(body, ()), (), False)]
        if binary:
            if not _is_json_media_type(media):
                raise Problem(UNSUPPORTED_MEDIA_TYPE, f"binary-mode data must be JSON, not {media or 'unspecified'}")
            event: dict[str, Any] = {}
            bad_headers: list[FieldError] = []
            for name, value in request.headers.items():
                if name.startswith("ce-") and len(name) > 3:
                    try:  # the HTTP binding percent-encodes attribute values (spaces, quotes, non-ASCII)
                        event[name[3:]] = unquote(value, errors="strict")
                    except UnicodeDecodeError:
                        bad_headers.append(FieldError("is not percent-encoded UTF-8", header=name))
            if bad_headers:
                raise Problem(SCHEMA_VIOLATION, "invalid event", bad_headers)
            event["datacontenttype"] = media
            event["data"] = _load_json(request.body) if request.body.strip() else None
            return [(event, (), True)]
        raise Problem(
            UNSUPPORTED_MEDIA_TYPE,
            f"content type {media or 'unspecified'!r} is not a CloudEvents mode; send {STRUCTURED}, {BATCH}, "
            "or JSON data with ce-* headers",
        )

    # -- one event -----------------------------------------------------------------------------

    def _command(
        self,
        raw: dict[str, Any],
        prefix: tuple[str | int, ...],
        header_mode: bool,
        request: WebhookRequest,
        source: SourceConfig,
        delivery: Delivery,
    ) -> ContentCommand:
        def where(attr: str) -> FieldError:
            return FieldError("", header=f"ce-{attr}") if header_mode else FieldError("", json_pointer((*prefix, attr)))

        data_prefix: tuple[str | int, ...] = () if header_mode else (*prefix, "data")
        errors: list[FieldError] = []
        for name in raw:
            if name not in _CONTEXT_ATTRIBUTES and name != "data" and not _EXTENSION_NAME.match(name):
                loc = where(name)
                errors.append(FieldError("is not a valid CloudEvents attribute name", loc.pointer, loc.header))
        try:
            event = CloudEvent.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                attr = str(err["loc"][0])
                loc = where(attr)
                msg = "is required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
                if attr == "specversion" and err["type"] != "missing":
                    msg = "must be '1.0'"
                errors.append(FieldError(msg, loc.pointer, loc.header))
            raise Problem(SCHEMA_VIOLATION, "invalid event", errors) from None
        if errors:
            raise Problem(SCHEMA_VIOLATION, "invalid event", errors)

        op = event.op
        if op is None:
            loc = where("type")
            detail = f"type {event.type!r} must end in .created, .updated, .upserted or .deleted"
            raise Problem(SCHEMA_VIOLATION, "invalid event", [FieldError(detail, loc.pointer, loc.header)])

        data = event.data
        if data is None and op == "delete":
            data = {}
        if not isinstance(data, dict):
            _raise_field("must be a JSON object of learningContent properties", json_pointer(data_prefix))

        external_id: Any = data.get("externalId", event.subject)
        if external_id is None:
            _raise_field("is required (or set the event's subject)", json_pointer((*data_prefix, "externalId")))
        if event.subject is not None and "externalId" in data and data["externalId"] != event.subject:
            _raise_field("differs from the event's subject", json_pointer((*data_prefix, "externalId")))

        content: LearningContent | None = None
        if op == "upsert":
            try:
                # Graph's property names only: the models' Python names are not part of the format.
                content = LearningContent.model_validate(
                    {**data, "externalId": external_id}, by_alias=True, by_name=False
                )
            except ValidationError as exc:
                raise Problem(SCHEMA_VIOLATION, "invalid event", _pydantic_errors(exc, data_prefix)) from None
            external_id = content.external_id
        elif not isinstance(external_id, str) or not external_id:
            _raise_field("must be a non-empty string", json_pointer((*data_prefix, "externalId")))

        event_time = parse_rfc3339(event.time) if event.time else (delivery.sent_at or request.received_at)
        time_problem = event_time_problem(event_time, request.received_at)
        if time_problem is not None:
            loc = where("time")
            raise Problem(SCHEMA_VIOLATION, "invalid event", [FieldError(time_problem, loc.pointer, loc.header)])
        try:
            return ContentCommand(
                op=op,
                tenantId=source.tenant_id,
                registrationId=source.registration_id,
                externalId=external_id,
                content=content,
                source=request.source_name,
                sourceEventId=event.id,
                eventTime=event_time,
                correlationId=request.correlation_id,
            )
        except ValidationError as exc:
            raise Problem(SCHEMA_VIOLATION, "invalid event", _pydantic_errors(exc, data_prefix)) from None


def trusted_webhook(request: WebhookRequest) -> Delivery:
    """What Standard Webhooks verification establishes (``webhook-id``, ``webhook-timestamp`` as the
    time sent), read from an archived delivery whose signature is masked and whose timestamp is old."""
    webhook_id = request.headers.get("webhook-id", "").strip()
    raw_ts = request.headers.get("webhook-timestamp", "").strip()
    if not webhook_id or not raw_ts:
        raise Problem(SIGNATURE_MISSING, "the archived delivery has no webhook-id or webhook-timestamp")
    if not re.fullmatch(r"[0-9]{1,12}", raw_ts):
        raise Problem(SIGNATURE_INVALID, "webhook-timestamp must be integer Unix seconds")
    return Delivery(delivery_id=webhook_id, sent_at=datetime.fromtimestamp(int(raw_ts), tz=UTC))


def event_time_problem(moment: datetime, received_at: datetime) -> str | None:
    """What makes an event time unusable for ordering (too old to store, or in the future), or None."""
    if moment < MIN_EVENT_TIME:
        return f"must not be before {MIN_EVENT_TIME:%Y-%m-%d}"
    if moment > received_at + MAX_CLOCK_SKEW:
        return "is more than 5 minutes in the future"
    return None


def coalesce(commands: list[ContentCommand]) -> list[ContentCommand]:
    """Keep one command per item of a batch: the newest by the ledger's own total order
    (``shared.models.order_key``: time, then a delete over an upsert, then the event id), the later
    one of the batch only when even that ties (the same event twice).

    Queue workers run a batch's messages concurrently, so two commands for one item (say updated, then
    deleted, in the same second) must not race each other; and the one kept must be the one the ledger
    would let win, or a batch ``[delete t, upsert t]`` would lose the delete at the intake.
    """
    latest: dict[tuple[str, str], int] = {}
    for index, command in enumerate(commands):
        key = (command.registration_id, command.external_id)
        kept = latest.get(key)
        if kept is None or _order(command) >= _order(commands[kept]):
            latest[key] = index
    return [commands[i] for i in sorted(latest.values())]


def _order(command: ContentCommand) -> tuple[datetime, int, str]:
    return order_key(command.event_time, command.op, command.source_event_id)


def _raise_field(detail: str, pointer: str) -> NoReturn:
    raise Problem(SCHEMA_VIOLATION, "invalid event", [FieldError(detail, pointer)])


def _load_json(body: bytes) -> Any:
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Problem(BAD_JSON, f"the body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise Problem(BAD_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise Problem(BAD_JSON, "the body nests too deeply") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise Problem(BAD_JSON, str(exc)[:200]) from None
    broken = lone_surrogates(document)
    if broken:
        errors = [FieldError("is not valid Unicode (a lone surrogate escape)", pointer) for pointer in broken[:20]]
        raise Problem(SCHEMA_VIOLATION, f"{len(broken)} string(s) hold a lone surrogate", errors)
    return document


def _as_event(item: Any, prefix: tuple[str | int, ...]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise Problem(
            SCHEMA_VIOLATION, "an event is a JSON object", [FieldError("must be an object", json_pointer(prefix))]
        )
    return item


# Shared with the platform adapters (shared/sources/*): one JSON reading rule, one reader of the three modes.
load_json = _load_json


def read_events(request: WebhookRequest) -> list[tuple[dict[str, Any], tuple[str | int, ...], bool]]:
    """``(event, pointer prefix, attributes-from-headers)`` for each event of any of the three modes."""
    return CloudEventsAdapter()._events(request)
