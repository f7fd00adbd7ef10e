"""Declarative mappings: a new LMS with webhooks is onboarded by configuration alone.

A source's ``mapping`` says, per Graph ``learningContent`` property, where its value is in an event
(a JMESPath expression, or an RFC 6901 JSON pointer when it starts with ``/``) and which converter
reads it; which event types mean upsert, hidden or delete; and optionally which status values mean
active, hidden or deleted. docs/sources.md documents the shape with a worked example.

JMESPath (``jmespath``, the AWS CLI's and boto's query language, specified and stable) reads any
JSON shape with one small, side-effect-free language; a pointer covers the simple cases and keys
that hold dots. Expressions are compiled when ``SOURCES`` is read, so a typo fails at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.models import LearningContent, parse_rfc3339
from shared.problems import SCHEMA_VIOLATION, FieldError, Problem, json_pointer
from shared.sources.normalize import (
    Action,
    CourseEvent,
    absolute_url,
    from_epoch,
    iso_duration,
    language_tag,
    parse_datetime,
    plain_text,
)

MISSING: Any = object()

Converter = Literal[
    "text",
    "html",
    "string",
    "int",
    "bool",
    "list",
    "duration-seconds",
    "duration-minutes",
    "duration-iso8601",
    "epoch-seconds",
    "epoch-milliseconds",
    "rfc3339",
    "datetime",
    "datetime-naive-utc",
    "language",
    "language-or-default",
    "url",
]
Status = Literal["active", "hidden", "deleted"]
# Graph's property names that a mapping may fill (externalId has its own rule).
GRAPH_FIELDS = frozenset((f.alias or n) for n, f in LearningContent.model_fields.items()) - {"externalId"}


def _pointer_tokens(pointer: str) -> list[str]:
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    if re.search(r"~(?![01])", pointer):
        raise ValueError(f"JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


@lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    return jmespath.compile(expression)


def check_expression(expression: str) -> str:
    """A JSON pointer (``/a/b``, ``""`` for the whole event) or a JMESPath expression that compiles."""
    if expression == "" or expression.startswith("/"):
        _pointer_tokens(expression)
        return expression
    try:
        _compiled(expression)
    except JMESPathError as exc:
        raise ValueError(f"{expression!r} is not a JMESPath expression: {str(exc).splitlines()[0]}") from None
    return expression


def evaluate(expression: str, document: Any) -> Any:
    """The value at ``expression`` in ``document``; ``MISSING`` for absent or null."""
    if expression == "" or expression.startswith("/"):
        value = document
        for token in _pointer_tokens(expression):
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                return MISSING
    else:
        try:
            value = _compiled(expression).search(document)
        except JMESPathError as exc:  # e.g. sort_by over mixed types: the sender's data, not a crash
            raise ValueError(f"cannot be read with {expression!r}: {exc}") from None
    return MISSING if value is None else value


_SIMPLE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$")


def pointer_of(expression: str) -> str | None:
    """The JSON pointer a simple path reads (``a.b[0]`` -> ``/a/b/0``); None for other expressions."""
    if expression == "" or expression.startswith("/"):
        return expression
    if not _SIMPLE_PATH.match(expression):
        return None
    return "".join("/" + t for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+", expression))


# -- converters ------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string")
    return str(value).strip()


def _string_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string or an integer")
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,10}", value.strip()):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def to_bool(value: Any) -> bool:
    """true/false as JSON, 1/0, or the strings LMSs use (``"0"``, ``"True"``, ``"yes"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be true or false")


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise ValueError("must be a list of strings or a comma-separated string")


def _language_or_default(value: Any) -> Any:
    try:
        return language_tag(value)
    except ValueError:
        return MISSING  # the source's defaultLanguageTag applies


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return parse_rfc3339(value)


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "html": lambda v: plain_text(_text(v)),
    "string": _string_id,
    "int": _int,
    "bool": to_bool,
    "list": _list,
    "duration-seconds": lambda v: iso_duration(v, "seconds"),
    "duration-minutes": lambda v: iso_duration(v, "minutes"),
    "duration-iso8601": lambda v: iso_duration(v, "iso8601"),
    "epoch-seconds": from_epoch,
    "epoch-milliseconds": lambda v: from_epoch(v, milliseconds=True),
    "rfc3339": _rfc3339,
    "datetime": parse_datetime,
    "datetime-naive-utc": lambda v: parse_datetime(v, naive_is_utc=True),
    "language": language_tag,
    "language-or-default": _language_or_default,
    "url": absolute_url,
}


# -- the mapping's shape (part of a source's entry in SOURCES) -------------------------------------


class Rule(BaseModel):
    """Where one value is (``path``) or what it always is (``value``), and how to read it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    value: str | int | float | bool | None = None
    convert: Converter | None = None

    @field_validator("path")
    @classmethod
    def _compiles(cls, path: str | None) -> str | None:
        return None if path is None else check_expression(path)

    @model_validator(mode="after")
    def _path_or_value(self) -> Rule:
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of 'path' or 'value'")
        return self


def _rule(value: Any) -> Any:
    """A bare string is shorthand for ``{"path": <string>}``."""
    return {"path": value} if isinstance(value, str) else value


class StatusRule(BaseModel):
    """Which status values mean active, hidden (unpublished, draft) or deleted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    values: dict[str, Status] = Field(min_length=1)
    default: Status | None = None

    @field_validator("path")
    @classmethod
    def _compiles(cls, path: str) -> str:
        return check_expression(path)


class MappingSpec(BaseModel):
    """How the events of a source become course events. Unlisted event types are ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    events: str | None = Field(
        default=None, description="Where a body lists several events; each inherits the body's other properties"
    )
    type: Rule | None = None
    id: Rule | None = None
    time: Rule | None = None
    actions: dict[str, Action] = Field(min_length=1, description="event type -> upsert, hidden or delete; '*' = any")
    external_id: Rule = Field(alias="externalId")
    status: StatusRule | None = None
    fields: dict[str, Rule] = Field(default_factory=dict)

    @field_validator("type", "id", "time", "external_id", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _rule(value)

    @field_validator("fields", mode="before")
    @classmethod
    def _field_shorthand(cls, value: Any) -> Any:
        return {k: _rule(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("events")
    @classmethod
    def _events_compile(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)

    @field_validator("fields")
    @classmethod
    def _graph_fields(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        unknown = sorted(set(value) - GRAPH_FIELDS)
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} is not a learningContent property; use {', '.join(sorted(GRAPH_FIELDS))}"
            )
        return value


# -- applying a mapping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What an envelope provides when the mapping leaves it out: where the type, id and time are."""

    type: Rule
    id: Rule | None
    time: Rule | None


@dataclass(frozen=True)
class Located:
    """One event document and where it sits in the request body."""

    document: Any
    at: tuple[str | int, ...]
    envelope_keys: frozenset[str] = frozenset()  # keys inherited from the enclosing body (at the root)
    data_only: bool = False  # a binary-mode CloudEvent: the body is its data, the attributes are headers


def split(body: Any, spec: MappingSpec, at: tuple[str | int, ...] = ()) -> list[Located]:
    """The events of one body: the body itself, or each item the ``events`` expression finds (one
    object counts as a list of one). Each item inherits the body's properties it does not have."""
    if spec.events is None:
        return [Located(body, at)]
    pointer = pointer_of(spec.events)
    try:
        found = evaluate(spec.events, body)
    except ValueError as exc:
        raise Problem(
            SCHEMA_VIOLATION, "invalid event", [FieldError(f"events {exc}", _join(at, pointer or ""))]
        ) from None
    base = (*at, *_tokens(pointer)) if pointer is not None else None
    if found is MISSING:
        items: list[tuple[Any, tuple[str | int, ...]]] = []
    elif isinstance(found, dict):
        items = [(found, base if base is not None else at)]
    elif isinstance(found, list):
        items = [(item, (*base, i) if base is not None else at) for i, item in enumerate(found)]
    else:
        items = [(found, at)]
    if not all(isinstance(item, dict) for item, _ in items):
        detail = f"{spec.events!r} must give an object or a list of objects"
        raise Problem(SCHEMA_VIOLATION, "invalid event", [FieldError(detail, _join(at, pointer or ""))])
    inherited = dict(body) if isinstance(body, dict) else {}
    return [Located({**inherited, **item}, item_at, frozenset(set(inherited) - set(item))) for item, item_at in items]


def _tokens(pointer: str | None) -> tuple[str, ...]:
    return tuple(_pointer_tokens(pointer)) if pointer else ()


def _join(at: tuple[str | int, ...], pointer: str) -> str:
    return json_pointer(at) + pointer


def map_event(
    located: Located,
    spec: MappingSpec,
    envelope: Envelope,
    *,
    fallback_id: str | None,
    errors: list[FieldError],
) -> CourseEvent | None:
    """One event through the mapping; None when its type is not one the mapping acts on, or when
    it has no type, externalId or id. Failing values are appended to ``errors`` and left out."""
    doc = located.document

    def where(rule: Rule) -> str:
        if rule.path is None:
            return _join(located.at, "")
        pointer = pointer_of(rule.path)
        if pointer is None:
            return _join(located.at, "")
        if located.data_only:  # only data is in the body: /data/x is /x, an attribute is a header
            return pointer[len("/data") :] if pointer == "/data" or pointer.startswith("/data/") else ""
        first = _pointer_tokens(pointer)[:1]
        root: tuple[str | int, ...] = () if first and first[0] in located.envelope_keys else located.at
        return _join(root, pointer)

    def read(rule: Rule, label: str) -> Any:
        try:
            raw = rule.value if rule.path is None else evaluate(rule.path, doc)
            if raw is MISSING or rule.convert is None:
                return raw
            return CONVERTERS[rule.convert](raw)
        except ValueError as exc:
            errors.append(FieldError(f"{label} {exc}", where(rule)))
            return MISSING

    type_rule = spec.type or envelope.type
    event_type = read(type_rule, "type")
    if event_type is MISSING:
        errors.append(FieldError("the event type is missing", where(type_rule)))
        return None
    action = spec.actions.get(str(event_type), spec.actions.get("*"))
    if action is None:
        return None

    course_id = read(spec.external_id, "externalId")
    course_ok = _is_id(course_id)
    if course_id is MISSING:
        errors.append(FieldError("externalId is required", where(spec.external_id)))
    elif not course_ok:
        errors.append(FieldError("externalId must be a string or an integer", where(spec.external_id)))

    id_rule = spec.id or envelope.id
    event_id = read(id_rule, "id") if id_rule is not None else MISSING
    if event_id is MISSING:
        event_id = fallback_id
    id_ok = _is_id(event_id)
    if not id_ok:
        detail = "the event id is missing" if event_id is None else "the event id must be a string or an integer"
        errors.append(FieldError(detail, where(id_rule) if id_rule else _join(located.at, "")))

    time_rule = spec.time or envelope.time
    event_time = read(time_rule, "time") if time_rule is not None else MISSING
    if event_time is not MISSING and not isinstance(event_time, datetime):
        try:
            event_time = parse_datetime(event_time)
        except ValueError as exc:
            assert time_rule is not None
            errors.append(FieldError(f"time {exc}", where(time_rule)))
            event_time = MISSING

    if spec.status is not None and action == "upsert":
        status_rule = Rule(path=spec.status.path)
        raw_status = read(status_rule, "status")
        key = str(raw_status).lower() if isinstance(raw_status, bool) else str(raw_status)
        status = spec.status.default if raw_status is MISSING else spec.status.values.get(key, spec.status.default)
        if status is None:
            known = ", ".join(sorted(spec.status.values))
            errors.append(FieldError(f"status {key!r} is not one of the mapped values ({known})", where(status_rule)))
        elif status != "active":
            action = "delete" if status == "deleted" else "hidden"

    fields: dict[str, Any] = {}
    locations: dict[str, str] = {}
    for name, rule in spec.fields.items():
        value = read(rule, name)
        if value is not MISSING:
            fields[name] = value
            locations[name] = where(rule)

    if not (course_ok and id_ok):
        return None
    locations.update(externalId=where(spec.external_id), time=where(time_rule) if time_rule else "")
    if id_rule is not None:
        locations["sourceEventId"] = where(id_rule)
    return CourseEvent(
        action=action,
        course_id=str(course_id),
        event_id=str(event_id),
        event_time=None if event_time is MISSING else event_time,
        fields=fields,
        at=_join(located.at, ""),
        where=locations,
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def map_events(
    located: list[Located], spec: MappingSpec, envelope: Envelope, *, fallback_id: Callable[[int], str | None]
) -> tuple[list[CourseEvent], list[FieldError]]:
    """Every event of a delivery through the mapping, and every value that failed on the way.

    The failures go on to ``pipeline.commands``, which adds its own, so a sender sees every
    failing field of every event at once. Items of one body that share the body's id (a grouped
    delivery) get ``#<index>`` appended, so each event keeps an id of its own.
    """
    errors: list[FieldError] = []
    events = []
    id_rule = spec.id or envelope.id
    for index, item in enumerate(located):
        event = map_event(item, spec, envelope, fallback_id=fallback_id(index), errors=errors)
        if event is None:
            continue
        if len(located) > 1 and id_rule is not None and _inherited(id_rule, item):
            event = replace(event, event_id=f"{event.event_id}#{index}")
        events.append(event)
    return events, errors


def _inherited(rule: Rule, located: Located) -> bool:
    pointer = pointer_of(rule.path) if rule.path is not None else None
    first = _pointer_tokens(pointer)[:1] if pointer else []
    return bool(first) and first[0] in located.envelope_keys
