"""Graph learning types, as Microsoft's Graph metadata defines them, and the queue message.

The property names and Edm types come from ``local/graph_metadata/learning-schemas.v1.0.json``
(the v1.0 CSDL; beta has the same names); a contract test fails if these models drift from it.
Required properties follow the Graph docs (the CSDL marks them ``Nullable="false"``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

# ISO-8601 duration as Edm.Duration accepts it: PnDTnHnMnS with at least one component, and a 'T'
# only when a time part follows (so the docs' typo "PDT1H" is rejected, as Graph rejects it).
_DURATION = re.compile(
    r"^-?P(?=\d|T\d)(?:(?P<d>\d+)D)?(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
# RFC 3339 date-time with an explicit offset; Graph misreads offset-less values (docs issue #299).
# RFC 3339 allows any number of fraction digits and a lower-case 't'/'z'; Edm.DateTimeOffset takes
# at most 7 digits (100 ns ticks) and upper case.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.(\d+))?(?:[Zz]|[+-]\d{2}:\d{2})$")
EDM_FRACTION_DIGITS = 7
# Control characters (C0, DEL and C1) have no business in ids or URLs and break logs and OData keys.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Bidi formatting characters reorder how an id is shown ("Trojan Source"), so two different ids can
# look the same to an operator. Text fields may need them (Arabic, Hebrew); identifiers never do.
_BIDI_CONTROL = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Table storage cannot hold dates before 1601, and no LMS event predates this.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_EXTERNAL_ID_LENGTH = 512


def _duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError("must be an ISO-8601 duration such as PT20M or P1DT2H")
    return value


def parse_rfc3339(value: str, *, edm: bool = False) -> datetime:
    """An RFC 3339 date-time with an offset, as an aware datetime; ``ValueError`` says what is wrong.

    ``edm``: also as Edm.DateTimeOffset demands (upper-case 'T' and 'Z', at most 7 fraction digits).
    """
    match = _RFC3339.match(value)
    if match is None or (
        edm and (value[10] != "T" or value.endswith("z") or len(match.group(1) or "") > EDM_FRACTION_DIGITS)
    ):
        raise ValueError("must be an RFC 3339 date-time with a time-zone offset, e.g. 2026-01-31T12:00:00Z")
    seconds, _, rest = value.upper().replace("Z", "+00:00").partition(".")
    rest = re.sub(r"^\d+", lambda m: m.group()[:6], rest)  # Python parses at most microseconds
    try:
        return datetime.fromisoformat(f"{seconds}.{rest}" if rest else seconds)
    except ValueError as exc:
        raise ValueError("is not a real date-time") from exc


def _datetime_offset(value: str) -> str:
    parse_rfc3339(value, edm=True)
    return value


def no_control(value: str) -> str:
    """Reject control characters (the rule for ids, titles and every CloudEvents context attribute)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def identifier(value: str) -> str:
    """The rule for ids: no control characters and no bidi formatting characters."""
    if _BIDI_CONTROL.search(no_control(value)):
        raise ValueError("must not contain bidi formatting characters")
    return value


EdmDuration = Annotated[str, AfterValidator(_duration)]
EdmDateTimeOffset = Annotated[str, AfterValidator(_datetime_offset)]
EdmInt32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX, strict=True)]
NonEmptyString = Annotated[str, StringConstraints(min_length=1), AfterValidator(no_control)]
ExternalId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EXTERNAL_ID_LENGTH),
    AfterValidator(identifier),
]


class Level(StrEnum):
    """``graph.level``: member names are lower-case in the metadata (the beta docs capitalise them)."""

    beginner = "beginner"
    intermediate = "intermediate"
    advanced = "advanced"
    unknown_future_value = "unknownFutureValue"


class GraphModel(BaseModel):
    """Strict like Graph: unknown properties are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    def to_graph(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LearningContent(GraphModel):
    """``microsoft.graph.learningContent`` as the upsert body (no read-only ``id``)."""

    external_id: ExternalId = Field(alias="externalId")
    title: NonEmptyString
    content_web_url: NonEmptyString = Field(alias="contentWebUrl")
    language_tag: NonEmptyString = Field(alias="languageTag")
    description: str | None = None
    thumbnail_web_url: str | None = Field(default=None, alias="thumbnailWebUrl")
    source_name: str | None = Field(default=None, alias="sourceName")
    format: str | None = None
    level: Level | None = None
    duration: EdmDuration | None = None
    number_of_pages: EdmInt32 | None = Field(default=None, alias="numberOfPages")
    contributors: list[str] | None = None
    additional_tags: list[str] | None = Field(default=None, alias="additionalTags")
    skill_tags: list[str] | None = Field(default=None, alias="skillTags")
    created_date_time: EdmDateTimeOffset | None = Field(default=None, alias="createdDateTime")
    last_modified_date_time: EdmDateTimeOffset | None = Field(default=None, alias="lastModifiedDateTime")
    is_active: bool | None = Field(default=None, alias="isActive")
    is_premium: bool | None = Field(default=None, alias="isPremium")
    is_searchable: bool | None = Field(default=None, alias="isSearchable")

    def to_upsert(self) -> dict[str, Any]:
        """The upsert body: every property the product manages, absent ones made explicit (``upsert_body``)."""
        return upsert_body(self.to_graph())

    @field_validator("level", mode="before")
    @classmethod
    def _level_is_string(cls, value: object) -> object:
        # strict mode would accept a Level instance only; JSON gives strings.
        if isinstance(value, str):
            try:
                return Level(value)
            except ValueError:
                allowed = ", ".join(m.value for m in Level)
                raise ValueError(f"must be one of {allowed}") from None
        return value


# learningcontent-update.md says the PATCH "replaces" the metadata; its property-table include says
# properties left out "maintain their previous values". A body that names every managed property
# gives the same item under both readings: scalars as null, collections as [], and the three
# booleans as their documented defaults (resources/learningcontent.md), because null is not what a
# fresh create stores for them and Viva's handling of a null isActive is undocumented.
_DOCUMENTED_DEFAULTS: dict[str, bool] = {"isActive": True, "isPremium": False, "isSearchable": True}


def _absent_values() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in LearningContent.model_fields.items():
        if not field.is_required():
            graph_name = field.alias or name
            collection = "list[" in str(field.annotation)
            values[graph_name] = _DOCUMENTED_DEFAULTS.get(graph_name, [] if collection else None)
    return values


ABSENT_VALUES: dict[str, Any] = _absent_values()


def upsert_body(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` (Graph's property names) with every managed property present: the one upsert body."""
    return {**ABSENT_VALUES, **content}


class LearningProvider(GraphModel):
    """``microsoft.graph.learningProvider`` as a create body (``id`` is server-generated)."""

    display_name: NonEmptyString = Field(alias="displayName")
    square_logo_web_url_for_dark_theme: NonEmptyString = Field(alias="squareLogoWebUrlForDarkTheme")
    long_logo_web_url_for_dark_theme: NonEmptyString = Field(alias="longLogoWebUrlForDarkTheme")
    square_logo_web_url_for_light_theme: NonEmptyString = Field(alias="squareLogoWebUrlForLightTheme")
    long_logo_web_url_for_light_theme: NonEmptyString = Field(alias="longLogoWebUrlForLightTheme")
    login_web_url: str | None = Field(default=None, alias="loginWebUrl")
    is_course_activity_sync_enabled: bool | None = Field(default=None, alias="isCourseActivitySyncEnabled")


class CommandError(BaseModel):
    """Why a command was parked: enough to decide on a replay without reading logs."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["permanent", "transient", "malformed"]
    status: int | None = None
    code: str | None = None
    message: str
    request_id: str | None = Field(default=None, alias="requestId")
    at: AwareDatetime
    attempts: int | None = Field(default=None, ge=1, description="Deliveries tried before it was parked")


# An Entra tenant id (directory id): a GUID, as Entra issues them and tokens carry them in ``tid``;
# lower-cased so that one tenant has one spelling in ledger keys.
TENANT_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TenantId = Annotated[str, StringConstraints(pattern=TENANT_ID_PATTERN), AfterValidator(str.lower)]


class FetchRef(BaseModel):
    """What the worker needs to complete a thin upsert from the LMS's API (fetch-back).

    Queued instead of ``content`` when the source has an ``apiBaseUrl``: the intake stays fast (no LMS
    call), and the worker fetches the course before it takes the item's lease (``shared.fetchback``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["canvas", "moodle", "openedx", "thinkific"] = Field(description="The LMS platform to ask")
    course_id: ExternalId = Field(alias="courseId", description="The platform's own course id (no externalIdPrefix)")
    hidden: bool = Field(
        default=False, description="The event said hidden or unpublished (used when the LMS says nothing)"
    )
    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Graph properties the event carried, already normalised; the LMS's answer wins over them",
    )
    url_values: dict[str, str] = Field(
        default_factory=dict, alias="urlValues", description="Extra contentWebUrlTemplate values (e.g. slug)"
    )


class ContentCommand(BaseModel):
    """One queue message: upsert or delete one learningContent of one registration.

    Versioned (``v``) so that a worker can refuse what it does not understand instead of guessing. An
    upsert carries either its ``content`` or, from a fetch-back source, a ``fetch`` reference that the
    worker completes from the LMS; messages queued before fetch-back existed parse as before.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    v: Literal[1] = 1
    op: Literal["upsert", "delete"]
    tenant_id: TenantId | None = Field(
        default=None,
        alias="tenantId",
        description="The Entra tenant of the registration, named by the source's settings, never by the payload. "
        "Absent only in messages queued before tenants were recorded: they belong to the deployment's own tenant.",
    )
    registration_id: NonEmptyString = Field(alias="registrationId")
    external_id: ExternalId = Field(alias="externalId")
    content: LearningContent | None = None
    fetch: FetchRef | None = Field(default=None, description="Instead of content: complete it from the LMS's API")
    source: NonEmptyString
    source_event_id: NonEmptyString = Field(alias="sourceEventId")
    event_time: AwareDatetime = Field(alias="eventTime")
    correlation_id: NonEmptyString = Field(alias="correlationId")
    trace_context: dict[str, str] | None = Field(default=None, alias="traceContext")
    deferrals: int = Field(default=0, ge=0, description="How often Graph's Retry-After sent it back to the queue")
    last_error: CommandError | None = Field(default=None, alias="lastError")

    @field_validator("event_time")
    @classmethod
    def _storable(cls, value: datetime) -> datetime:
        if value < MIN_EVENT_TIME:
            raise ValueError(f"must not be before {MIN_EVENT_TIME:%Y-%m-%d}")
        return value

    def model_post_init(self, __context: Any) -> None:
        if self.op == "upsert" and (self.content is None) == (self.fetch is None):
            raise ValueError("an upsert carries either its content or a fetch reference")
        if self.op == "delete" and self.fetch is not None:
            raise ValueError("a delete carries no fetch reference")
        if self.content is not None and self.content.external_id != self.external_id:
            raise ValueError("content.externalId differs from externalId")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def order_key(event_time: datetime, op: str, source_event_id: str | None) -> tuple[datetime, int, str]:
    """The total order of an item's events: event time; at equal times a delete after an upsert (a
    redelivered upsert must not bring back what a delete of the same second removed); then the
    source's event id, so two different events of one second are ordered the same way everywhere.
    The ledger judges staleness by it, and intake keeps a batch's newest command per item by it."""
    return (event_time, 1 if op == "delete" else 0, source_event_id or "")
