"""The steps every platform adapter shares: checking a shared key, and turning course events into
content commands by the normalisation rules (``shared.sources.normalize``) and the source's options.

An adapter reads its platform's envelope into :class:`CourseEvent` values; :func:`commands` does the
rest the same way for all of them: externalId prefix, hidden -> isActive=false or delete, safe plain
text, UTC date-times, ISO-8601 durations, absolute URLs, the default language, the URL template,
and the required Graph fields (a thin event that cannot fill them is refused with
``content-incomplete``, naming each missing field and what would fill it). A source with fetch-back
(``apiBaseUrl``) queues its upserts as fetch commands instead, and :func:`complete` applies the same
rules to the LMS's answer in the worker: both go through :func:`normalise`, :func:`visibility` and
:func:`build_content`, the one owner of each step.
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


@dataclass(frozen=True)
class FieldProblem:
    """A value the rules refuse: ``field`` is where it is located (a Graph property, or ``externalId``
    for what the source's settings built), ``message`` says what is wrong, naming the property."""

    field: str
    message: str


def normalise(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
    """Every raw value by its property's rule (``NORMALISERS``); empty values are left out."""
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name, value in raw.items():
        try:
            normalised = NORMALISERS[name](value)
        except ValueError as exc:
            problems.append(FieldProblem(name, f"{name} {exc}"))
            continue
        if normalised not in ("", [], None):
            values[name] = normalised
    return values, problems


def visibility(fields: dict[str, Any], hidden: bool, source: LmsSource) -> Literal["upsert", "delete"]:
    """The hidden rule: a hidden item (``hidden``, or ``isActive`` false) is deleted when the source
    says ``hiddenAs: delete``, else kept with ``isActive: false`` (set in ``fields``)."""
    if not hidden and fields.get("isActive") is not False:
        return "upsert"
    if source.hidden_as == "delete":
        return "delete"
    fields["isActive"] = False
    return "upsert"


@dataclass(frozen=True)
class Built:
    """An upsert's ``content``, or why there is none: values refused (``wrong``) and required
    properties nothing fills (``missing``)."""

    content: LearningContent | None
    wrong: list[FieldProblem]
    missing: list[str]


def build_content(
    fields: Mapping[str, Any],
    source: LmsSource,
    *,
    course_id: str,
    url_values: Mapping[str, str],
    external_id: str,
    failed: frozenset[str] = frozenset(),
    default_url: str | None = None,
) -> Built:
    """The fill and check steps of an upsert, for the intake and fetch-back alike: the URL template
    (when nothing gave a URL), then ``default_url`` (the course page an LMS's address implies), the
    default language, the required properties, and the model's own checks. ``fields`` are normalised;
    ``failed`` names properties already refused (not filled, not reported missing, no content built)."""
    values = dict(fields)
    refused = set(failed)
    wrong: list[FieldProblem] = []
    template = source.content_web_url_template
    if "contentWebUrl" not in values and "contentWebUrl" not in refused and template:
        url = render_url_template(template, course_id, url_values)
        if url is not None:
            try:
                values["contentWebUrl"] = absolute_url(url)
            except ValueError as exc:
                wrong.append(FieldProblem("externalId", f"contentWebUrl built from contentWebUrlTemplate {exc}"))
                refused.add("contentWebUrl")
    if "contentWebUrl" not in values and "contentWebUrl" not in refused and default_url:
        values["contentWebUrl"] = default_url
    if "languageTag" not in values and "languageTag" not in refused and source.default_language_tag:
        values["languageTag"] = source.default_language_tag
    missing = [name for name in REQUIRED_FIELDS if name not in values and name not in refused]
    if refused or missing:
        return Built(None, wrong, missing)
    try:
        content = LearningContent.model_validate({**values, "externalId": external_id}, by_alias=True, by_name=False)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else ""
            wrong.append(FieldProblem(name, f"{name} {err['msg'].removeprefix('Value error, ')}"))
        return Built(None, wrong, [])
    return Built(content, [], [])


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

    def located(problem: FieldProblem) -> FieldError:
        return FieldError(problem.message, at(problem.field if problem.field in event.fields else "externalId"))

    errors_before = len(wrong)
    content_fields, refused = normalise(event.fields)
    wrong.extend(located(problem) for problem in refused)

    hidden = event.action == "hidden" or (event.action == "upsert" and content_fields.get("isActive") is False)
    op: Literal["upsert", "delete"] = "delete"
    if event.action != "delete":
        op = visibility(content_fields, hidden, source)

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
            hidden=hidden,
            fields={k: v for k, v in content_fields.items() if k != "isActive"},
            urlValues=dict(event.url_values),
        )
    elif op == "upsert":
        built = build_content(
            content_fields,
            source,
            course_id=event.course_id,
            url_values=event.url_values,
            external_id=external_id,
            failed=frozenset(problem.field for problem in refused),
        )
        wrong.extend(located(problem) for problem in built.wrong)
        missing.extend(FieldError(f"{name} is required: {_FILL_HINTS[name]}", at(name)) for name in built.missing)
        if built.content is None:
            return None
        content = built.content
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
    fetched, refused = normalise(lms_fields)
    if refused:
        raise CompletionError("content-invalid", [problem.message for problem in refused])
    fields: dict[str, Any] = {**fetch.fields, **fetched}
    # The LMS's own visibility wins; one that says nothing leaves the event's hidden flag in force.
    hidden = fields.get("isActive") is False or ("isActive" not in fields and fetch.hidden)
    if visibility(fields, hidden, source) == "delete":
        return None
    built = build_content(
        fields,
        source,
        course_id=fetch.course_id,
        url_values=fetch.url_values,
        external_id=external_id,
        default_url=default_url,
    )
    if built.wrong:
        raise CompletionError("content-invalid", [problem.message for problem in built.wrong])
    if built.missing:
        hints = {**_FILL_HINTS, "title": "neither the event nor the LMS gives the course a name"}
        raise CompletionError(
            "content-incomplete",
            [
                f"{name} is required: {hints[name].replace('the event carries', 'the LMS gives')}"
                for name in built.missing
            ],
        )
    assert built.content is not None  # no problem and nothing missing: built
    return built.content
