"""Normalisation shared by every platform adapter: one rule per kind of value.

LMS payloads disagree on everything a Graph ``learningContent`` is strict about: descriptions are
HTML, times come as epoch seconds, ``2024-09-02 10:00:00 -0800`` or Python's ``str(datetime)``,
durations as seconds or minutes, languages as ``fr_CA``. The adapters hand their findings over as
a :class:`CourseEvent` of raw values; the functions here turn each value into the one form Graph
accepts, or raise ``ValueError`` with a sentence saying what is wrong (the caller adds where).

Nothing here imports the settings, so the settings can use these rules to validate ``SOURCES``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import TypeAdapter, ValidationError

from shared.models import EdmDuration, parse_rfc3339

Action = Literal["upsert", "hidden", "delete"]
"""What an event means for the item: upsert it, hide it (hidden, unpublished), or delete it."""

REQUIRED_FIELDS = ("title", "contentWebUrl", "languageTag")


@dataclass(frozen=True)
class CourseEvent:
    """One platform event as an adapter read it, before normalisation.

    ``fields`` holds Graph property names with the platform's raw values (strings, numbers,
    datetimes, timedeltas); ``where`` says for each one (and for ``externalId``, ``sourceEventId``
    and ``time``) which JSON pointer of the request body it came from, so a rejection names it.
    """

    action: Action
    course_id: str
    event_id: str
    event_time: datetime | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    at: str = ""  # JSON pointer of the event in the body
    where: Mapping[str, str] = field(default_factory=dict)
    url_values: Mapping[str, str] = field(default_factory=dict)  # extra URL template values, e.g. slug


# -- HTML to plain text ----------------------------------------------------------------------------

# Elements whose content is never text a learner should read.
_SKIPPED = frozenset({"script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math", "head"})
# Elements that separate paragraphs (a blank line) and lines (a line break).
_PARAGRAPHS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dl", "figure", "footer", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hr", "main", "nav", "ol", "p", "pre", "section", "table", "ul",
    }
)  # fmt: skip
_LINES = frozenset({"br", "dd", "div", "dt", "figcaption", "li", "tr"})
# C0 and C1 controls and DEL, except the line feed that separates paragraphs.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities decoded by the standard library
        self.parts: list[str | int] = []  # text, or the line breaks owed before the next text
        self.skipping = 0
        self.breaks = 0
        self.markup = False  # any tag at all: then a raw newline is only white space, as in HTML

    def _block(self, tag: str) -> None:
        self.markup = True
        if tag == "br":
            self.breaks = min(self.breaks + 1, 2)
        elif tag in _PARAGRAPHS:
            self.breaks = 2
        elif tag in _LINES:
            self.breaks = max(self.breaks, 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
            self.markup = True
        else:
            self._block(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag != "br":
            self._block(tag)

    def handle_data(self, data: str) -> None:
        if self.skipping or (self.breaks and not data.strip()):
            return
        if self.breaks:
            self.parts.append(self.breaks)
            self.breaks = 0
        self.parts.append(data)

    def text(self) -> str:
        def piece(part: str | int) -> str:
            if isinstance(part, int):
                return "\n" * part
            return part.replace("\r", " ").replace("\n", " ") if self.markup else part

        return "".join(piece(p) for p in self.parts)


def plain_text(html: str) -> str:
    """Safe plain text of an HTML fragment: tags and scripts removed, entities decoded, paragraphs kept.

    The standard library's tolerant HTML parser reads it (no regular expressions over markup); what
    comes out is text, not markup, so ``&lt;b&gt;`` becomes the four characters ``<b>``.
    """
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    text = _CONTROLS.sub(" ", parser.text().replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def one_line(html: str) -> str:
    """Plain text on one line (titles, tags, names)."""
    return " ".join(plain_text(html).split())


# -- date-times ------------------------------------------------------------------------------------

# What LMSs send besides RFC 3339: a space instead of 'T', an offset without a colon and after a
# space (Canvas jobs: ``2019-11-05 07:38:00 -0800``), Python's str(datetime) (Open edX:
# ``2024-09-02 00:00:00+00:00``, or without an offset), any number of fraction digits.
_LMS_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"\s?(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?$"
)
MAX_EPOCH_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def parse_datetime(value: Any, *, naive_is_utc: bool = False) -> datetime:
    """An aware datetime from RFC 3339 or one of the LMS forms above.

    A value without an offset is refused unless ``naive_is_utc`` (a platform documented to send UTC).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            if not naive_is_utc:
                raise ValueError("must carry a time-zone offset")
            return value.replace(tzinfo=UTC)
        return value
    if not isinstance(value, str):
        raise ValueError("must be a date-time string")
    text = value.strip()
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    match = _LMS_DATETIME.match(text)
    if match is None:
        raise ValueError("must be a date-time such as 2024-09-02T10:00:00Z or 2024-09-02 10:00:00 -0800")
    tz = match["tz"]
    if tz is None and not naive_is_utc:
        raise ValueError("must carry a time-zone offset")
    offset = "+00:00" if tz is None or tz in "Zz" else (tz if ":" in tz else f"{tz[:3]}:{tz[3:]}")
    frac = f".{match['frac'][:6]}" if match["frac"] else ""
    try:
        return datetime.fromisoformat(f"{match['date']}T{match['time']}{frac}{offset}")
    except ValueError as exc:
        raise ValueError("is not a real date-time") from exc


def from_epoch(value: Any, *, milliseconds: bool = False) -> datetime:
    """Epoch seconds (or milliseconds) as a number or a string of digits."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds since 1970")
    if isinstance(value, str) and re.fullmatch(r"\d{1,16}(\.\d{1,9})?", value.strip()):
        value = float(value.strip()) if "." in value else int(value.strip())
    if not isinstance(value, int | float):
        raise ValueError(f"must be a number of {'milli' if milliseconds else ''}seconds since 1970")
    seconds = value / 1000 if milliseconds else value
    if not 0 <= seconds <= MAX_EPOCH_SECONDS:
        raise ValueError("is out of range for a date-time")
    return datetime.fromtimestamp(seconds, tz=UTC)


def utc_z(moment: datetime) -> str:
    """``2024-09-02T18:00:00Z``: UTC with a 'Z', fraction only when there is one (Edm.DateTimeOffset)."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


# -- durations -------------------------------------------------------------------------------------

_EDM_DURATION: TypeAdapter[str] = TypeAdapter(EdmDuration)
DurationUnit = Literal["seconds", "minutes", "iso8601"]


def iso_duration(value: Any, unit: DurationUnit = "iso8601") -> str:
    """An ISO-8601 duration (``PT1H30M``) from seconds, minutes, a timedelta or an ISO-8601 string."""
    if isinstance(value, timedelta):
        return _format_duration(value)
    if unit == "iso8601":
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 duration such as PT20M or P1DT2H")
        try:
            return _EDM_DURATION.validate_python(value.strip())
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if isinstance(value, str) and re.fullmatch(r"\d{1,12}(\.\d{1,6})?", value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value > 10**10:
        raise ValueError(f"must be a non-negative number of {unit}")
    return _format_duration(timedelta(seconds=value * (60 if unit == "minutes" else 1)))


# "H:MM" or "H:MM:SS" (Open edX Studio's "Hours of Effort per Week" in its usual form).
_CLOCK = re.compile(r"^(?:(\d{1,3}):)?(\d{1,2}):(\d{2})$")


def clock_duration(value: str | None) -> timedelta | None:
    """A clock-style duration, ``H:MM`` or ``H:MM:SS``; ``None`` for anything else (free text such as
    "4 hours" is left out rather than guessed)."""
    match = _CLOCK.match((value or "").strip())
    if match is None:
        return None
    first, second, third = match.groups()
    if first is None:
        return timedelta(hours=int(second), minutes=int(third))
    return timedelta(hours=int(first), minutes=int(second), seconds=int(third))


def _format_duration(span: timedelta) -> str:
    if span < timedelta(0):
        raise ValueError("must not be negative")
    days = span.days
    seconds = span.seconds + span.microseconds / 1_000_000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((int(hours), "H"), (int(minutes), "M")) if n) + (
        f"{secs:.6f}".rstrip("0").rstrip(".") + "S" if secs else ""
    )
    if not days and not time:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


# -- URLs ------------------------------------------------------------------------------------------

_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f<>\"\\^`{|}]")


def absolute_url(value: Any) -> str:
    """An absolute http(s) URL, returned as given; anything else (relative, javascript:, spaces) is refused."""
    if not isinstance(value, str):
        raise ValueError("must be an absolute http(s) URL")
    text = value.strip()
    if _URL_FORBIDDEN.search(text):
        raise ValueError("must be an absolute http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("must be an absolute http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("must be an absolute http(s) URL")
    return text


# -- language tags ---------------------------------------------------------------------------------

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def language_tag(value: Any) -> str:
    """A BCP 47 tag from an LMS locale: ``fr_CA``/``fr_ca`` -> ``fr-CA``, ``zh_hant_tw`` -> ``zh-Hant-TW``."""
    if not isinstance(value, str) or not _LANGUAGE.match(value.strip().replace("_", "-")):
        raise ValueError("must be a language tag such as en-US (or a locale such as fr_CA)")
    primary, *subtags = value.strip().replace("_", "-").split("-")
    out = [primary.lower()]
    for subtag in subtags:
        if len(subtag) == 2 and subtag.isalpha():
            out.append(subtag.upper())  # region
        elif len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())  # script
        else:
            out.append(subtag.lower())
    return "-".join(out)


# -- contentWebUrl templates -----------------------------------------------------------------------

TEMPLATE_NAMES = {
    "id": "the platform's course id, percent-encoded (safe anywhere in a URL)",
    "rawId": "the platform's course id as is (e.g. an Open edX course key in a path)",
    "slug": "the course's URL slug, percent-encoded, where the platform sends one (Thinkific)",
}


def check_url_template(template: str) -> str:
    """Refuse a template that names an unknown placeholder or does not make an absolute http(s) URL."""
    allowed = ", ".join("{" + n + "}" for n in TEMPLATE_NAMES)
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and (name not in TEMPLATE_NAMES or spec or conversion):
            raise ValueError(f"placeholder {{{name}}} is not one of {allowed}")
    if not names:
        raise ValueError("must contain a placeholder such as {id}")
    absolute_url(template.format_map(dict.fromkeys(TEMPLATE_NAMES, "x")))
    return template


def render_url_template(template: str, course_id: str, extra: Mapping[str, str]) -> str | None:
    """The URL for one course, or None when the template needs a value this event does not carry."""
    values = {"id": quote(course_id, safe=""), "rawId": course_id}
    values.update({k: quote(v, safe="") for k, v in extra.items() if v})
    try:
        return template.format_map(values)
    except KeyError:
        return None
