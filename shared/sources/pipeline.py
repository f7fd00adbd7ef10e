"""The steps every platform adapter shares: checking a shared key, and turning course events into
content commands by the normalisation rules (``shared.sources.normalize``) and the source's options.

An adapter reads its platform's envelope into :class:`CourseEvent` values; :func:`commands` does the
rest the same way for all of them: externalId prefix, hidden -> isActive=false or delete, safe plain
text, UTC date-times, ISO-8601 durations, absolute URLs, the default language, the URL template,
and the required Graph fields (a thin event that cannot fill them is refused with
``content-incomplete``, naming each missing field and what would fill it). A source with fetch-back
(``apiBaseUrl``) queues its upserts as fetch commands instead, and :func:`complete` applies the same
rules to the LMS's answer in the worker.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from shared.models import ContentCommand, FetchRef, LearningContent
from shared.problems import (
    CONTENT_INCOMPLETE,
    CREDENTIAL_INVALID,
    CREDENTIAL_MISSING,
    SCHEMA_VIOLATION,
    SOURCE_MISCONFIGURED,
    FieldError,
    Problem,
)
from shared.settings import KeyAuth, LmsSource, fetch_back
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import coalesce, event_time_problem
from shared.sources.mapping import to_bool
from shared.sources.normalize import (
    REQUIRED_FIELDS,
    CourseEvent,
    absolute_url,
    iso_duration,
    language_tag,
    one_line,
    parse_datetime,
    plain_text,
    render_url_template,
    utc_z,
)

# -- shared keys -----------------------------------------------------------------------------------


def secret_values(secret: str | None) -> list[bytes]:
    """The source's secret(s): several, space-separated, while one is being rotated."""
    if not secret:
        raise Problem(SOURCE_MISCONFIGURED, "the source has no secret configured")
    return [candidate.encode("utf-8") for candidate in secret.split()]


def matches_any(given: bytes, candidates: list[bytes]) -> bool:
    """Constant-time comparison against every candidate (no early exit that would time the match)."""
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(given, candidate)
    return matched


def check_key(request: WebhookRequest, auth: KeyAuth, secret: str | None) -> None:
    """The source's key in the named query parameter or header, compared in constant time."""
    if auth.scheme == "query-key":
        given, place = request.query.get(auth.name, ""), f"query parameter {auth.name!r}"
    else:
        given, place = request.headers.get(auth.name.lower(), ""), f"header {auth.name!r}"
    if not given:
        raise Problem(CREDENTIAL_MISSING, f"the {place} holding the source's key is missing")
    if not matches_any(given.encode("utf-8", "surrogatepass"), secret_values(secret)):
        raise Problem(CREDENTIAL_INVALID, f"the {place} does not hold the source's key")


# -- course events to commands ---------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return [text for text in (one_line(v) for v in value) if text]


def _number(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be text")
    return str(value)


def _datetime(value: Any) -> str:
    return utc_z(parse_datetime(value))


def _duration(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("is a bare number; map it with the duration-seconds or duration-minutes converter")
    return iso_duration(value)


# One rule per Graph property: what any platform's raw value becomes.
NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "title": lambda v: one_line(_text(v)),
    "description": lambda v: plain_text(_text(v)),
    "contentWebUrl": absolute_url,
    "thumbnailWebUrl": absolute_url,
    "languageTag": language_tag,
    "sourceName": lambda v: one_line(_text(v)),
    "format": lambda v: one_line(_text(v)),
    "level": lambda v: one_line(_text(v)).lower(),
    "duration": _duration,
    "numberOfPages": _number,
    "contributors": _strings,
    "additionalTags": _strings,
    "skillTags": _strings,
    "createdDateTime": _datetime,
    "lastModifiedDateTime": _datetime,
    "isActive": to_bool,
    "isPremium": to_bool,
    "isSearchable": to_bool,
}

_FILL_HINTS = {
    "title": "the event carries no course name",
    "contentWebUrl": "the event carries no course URL; set contentWebUrlTemplate on the source, e.g. "
    "https://lms.example.com/course/view.php?id={id} (a {slug} template needs an event that carries a slug)",
    "languageTag": "the event carries no language; set defaultLanguageTag on the source",
}


def commands(
    events: Sequence[CourseEvent],
    request: WebhookRequest,
    source: LmsSource,
    delivery: Delivery,
    errors: Sequence[FieldError] = (),
) -> list[ContentCommand]:
    """Every event of a delivery as a command; every failing field of every event reported at once.

    Values that are wrong are a ``schema-violation`` (400); an upsert whose required fields nothing
    can fill is ``content-incomplete`` (422), so the operator sees it is the source's setup (or a
    source without fetch-back, ``apiBaseUrl``) and not a malformed delivery. ``errors`` are failures an earlier step
    (a mapping) found in the same delivery.
    """
    out: list[ContentCommand] = []
    wrong: list[FieldError] = list(errors)
    missing: list[FieldError] = []
    for event in events:
        command = _command(event, request, source, delivery, wrong, missing)
        if command is not None:
            out.append(command)
    if wrong:
        raise Problem(SCHEMA_VIOLATION, f"{len(wrong)} invalid field(s)", wrong)
    if missing:
        raise Problem(
            CONTENT_INCOMPLETE,
            f"{len(missing)} required learningContent field(s) cannot be filled from the event(s); "
            "see docs/sources.md (thin events)",
            missing,
        )
    return coalesce(out)


def _command(
    event: CourseEvent,
    request: WebhookRequest,
    source: LmsSource,
    delivery: Delivery,
    wrong: list[FieldError],
    missing: list[FieldError],
) -> ContentCommand | None:
    def at(name: str) -> str:
        return event.where.get(name, event.at)

    errors_before, missing_before = len(wrong), len(missing)
    failed: set[str] = set()
    content_fields: dict[str, Any] = {}
    for name, raw in event.fields.items():
        try:
            value = NORMALISERS[name](raw)
        except ValueError as exc:
            wrong.append(FieldError(f"{name} {exc}", at(name)))
            failed.add(name)
            continue
        if value not in ("", [], None):
            content_fields[name] = value

    action = event.action
    if action == "upsert" and content_fields.get("isActive") is False:
        action = "hidden"
    op: Literal["upsert", "delete"] = "upsert"
    if action == "delete" or (action == "hidden" and source.hidden_as == "delete"):
        op = "delete"
    elif action == "hidden":
        content_fields["isActive"] = False

    external_id = source.external_id_prefix + event.course_id
    event_time = event.event_time or delivery.sent_at or request.received_at
    time_problem = event_time_problem(event_time, request.received_at)
    if time_problem is not None:
        wrong.append(FieldError(f"the event time {time_problem}", at("time")))
        return None

    content: LearningContent | None = None
    fetch: FetchRef | None = None
    if op == "upsert" and fetch_back(source):
        # Fetch-back: the worker completes the item from the LMS's API, so nothing is required yet.
        if len(wrong) > errors_before:
            return None
        fetch = FetchRef(
            kind=source.kind,  # type: ignore[arg-type]  # fetch_back() holds only for the four LMS kinds
            courseId=event.course_id,
            hidden=action == "hidden",
            fields={k: v for k, v in content_fields.items() if k != "isActive"},
            urlValues=dict(event.url_values),
        )
    elif op == "upsert":
        template = source.content_web_url_template
        if "contentWebUrl" not in content_fields and "contentWebUrl" not in failed and template:
            url = render_url_template(template, event.course_id, event.url_values)
            if url is not None:
                try:
                    content_fields["contentWebUrl"] = absolute_url(url)
                except ValueError as exc:
                    wrong.append(FieldError(f"contentWebUrl built from contentWebUrlTemplate {exc}", at("externalId")))
                    failed.add("contentWebUrl")
        if "languageTag" not in content_fields and "languageTag" not in failed and source.default_language_tag:
            content_fields["languageTag"] = source.default_language_tag
        for name in REQUIRED_FIELDS:
            if name not in content_fields and name not in failed:
                missing.append(FieldError(f"{name} is required: {_FILL_HINTS[name]}", at(name)))
        if len(wrong) > errors_before or len(missing) > missing_before:
            return None
        try:
            content = LearningContent.model_validate(
                {**content_fields, "externalId": external_id}, by_alias=True, by_name=False
            )
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                name = str(err["loc"][0]) if err["loc"] else ""
                where = at(name if name in event.fields else "externalId")
                wrong.append(FieldError(f"{name} {err['msg'].removeprefix('Value error, ')}", where))
            return None
    if len(wrong) > errors_before:
        return None
    try:
        return ContentCommand(
            op=op,
            tenantId=source.tenant_id,
            registrationId=source.registration_id,
            externalId=external_id,
            content=content,
            fetch=fetch,
            source=request.source_name,
            sourceEventId=event.event_id,
            eventTime=event_time,
            correlationId=request.correlation_id,
        )
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else ""
            where = at("sourceEventId" if name == "sourceEventId" else "externalId")
            wrong.append(FieldError(f"{name} {err['msg'].removeprefix('Value error, ')}", where))
        return None


# -- completing a fetch-back command (the worker, ``shared.fetchback``) -----------------------------


@dataclass
class CompletionError(ValueError):
    """The course as the LMS describes it still cannot be a learningContent: ``content-incomplete``
    (a required field nothing fills) or ``content-invalid`` (a value the rules refuse)."""

    code: Literal["content-incomplete", "content-invalid"]
    errors: list[str]

    def __str__(self) -> str:
        return "; ".join(self.errors)


def complete(
    source: LmsSource,
    external_id: str,
    fetch: FetchRef,
    lms_fields: Mapping[str, Any],
    *,
    default_url: str | None = None,
) -> LearningContent | None:
    """The item a fetch command becomes, by the intake's own rules: the LMS's raw values normalised
    (they win over the event's, which were normalised at intake), then the source's options
    (hidden -> isActive=false or delete, contentWebUrlTemplate, defaultLanguageTag) and the required
    fields. ``external_id`` is the command's (with the prefix it was queued with). ``default_url`` is
    the course page the LMS's address implies, used when neither the LMS, the event nor the template
    gives one. None: the item is to be deleted (hidden, ``hiddenAs: delete``).
    """
    fields: dict[str, Any] = dict(fetch.fields)
    wrong: list[str] = []
    for name, raw in lms_fields.items():
        try:
            value = NORMALISERS[name](raw)
        except ValueError as exc:
            wrong.append(f"{name} {exc}")
            continue
        if value not in ("", [], None):
            fields[name] = value
    if wrong:
        raise CompletionError("content-invalid", wrong)
    if "isActive" not in fields and fetch.hidden:
        fields["isActive"] = False
    if fields.get("isActive") is False and source.hidden_as == "delete":
        return None
    template = source.content_web_url_template
    if "contentWebUrl" not in fields and template:
        url = render_url_template(template, fetch.course_id, fetch.url_values)
        if url is not None:
            try:
                fields["contentWebUrl"] = absolute_url(url)
            except ValueError as exc:
                raise CompletionError(
                    "content-invalid", [f"contentWebUrl built from contentWebUrlTemplate {exc}"]
                ) from None
    if "contentWebUrl" not in fields and default_url:
        fields["contentWebUrl"] = default_url
    if "languageTag" not in fields and source.default_language_tag:
        fields["languageTag"] = source.default_language_tag
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        hints = {**_FILL_HINTS, "title": "neither the event nor the LMS gives the course a name"}
        raise CompletionError(
            "content-incomplete",
            [f"{name} is required: {hints[name].replace('the event carries', 'the LMS gives')}" for name in missing],
        )
    try:
        return LearningContent.model_validate({**fields, "externalId": external_id}, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise CompletionError(
            "content-invalid",
            [
                f"{'.'.join(map(str, e['loc']))} {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors(include_url=False)
            ],
        ) from None
