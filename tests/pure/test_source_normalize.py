"""The normalisation every platform adapter shares: text, date-times, durations, URLs, languages."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models import LearningContent, parse_rfc3339
from shared.sources.normalize import (
    absolute_url,
    check_url_template,
    from_epoch,
    iso_duration,
    language_tag,
    one_line,
    parse_datetime,
    plain_text,
    render_url_template,
    utc_z,
)

# No example database in the work tree, and no per-example deadline (a slow CI machine is no failure).
quiet = settings(database=None, deadline=None)

# -- HTML to plain text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Vectors, <b>matrices</b> &amp; maps.</p>", "Vectors, matrices & maps."),
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<ul><li>x</li><li>y</li></ul>", "x\ny"),
        ("<script>alert(1)</script>Safe", "Safe"),
        ("<style>p{color:red}</style><p>Styled</p>", "Styled"),
        ("<SCRIPT type='text/javascript'>evil()</SCRIPT>ok", "ok"),
        ("<script>never closed", ""),
        ("&lt;b&gt;not a tag&lt;/b&gt;", "<b>not a tag</b>"),
        ("Week&nbsp;1 &#8211; intro &eacute;t&eacute;", "Week 1 – intro été"),
        ("<!-- a comment -->text<?php echo 1; ?>", "text"),
        ("plain text, no markup", "plain text, no markup"),
        ("a < b and c > d", "a < b and c > d"),
        ("  lots   of\t\tspace  ", "lots of space"),
        ("<div>unclosed <b>bold", "unclosed bold"),
        ("bell\x07 and nul\x00 and c1\x85", "bell and nul and c1"),
        ("<p>\u0645\u0631\u062d\u0628\u0627</p>", "\u0645\u0631\u062d\u0628\u0627"),
        ("<p>wrapped\nsource line</p>\n<p>next</p>", "wrapped source line\n\nnext"),  # HTML: a newline is a space
        ("plain\nlines\n\n\n\nkept", "plain\nlines\n\nkept"),  # no markup: the sender's lines stay
    ],
)
def test_plain_text(html: str, text: str) -> None:
    assert plain_text(html) == text


def test_one_line_joins_paragraphs() -> None:
    assert one_line("<h1>Linear</h1>\n<p>Algebra</p>") == "Linear Algebra"


@quiet
@given(st.text())
def test_plain_text_never_keeps_script_content_or_controls(noise: str) -> None:
    out = plain_text(f"<p>{noise}</p><script>SECRET_{noise}</script>")
    assert "SECRET_" not in out or "SECRET_" in plain_text(f"<p>{noise}</p>")
    assert not any(ord(c) < 32 and c != "\n" for c in out)
    assert not any(0x7F <= ord(c) <= 0x9F for c in out)
    assert out == out.strip()


# -- date-times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "utc"),
    [
        ("2024-09-02 10:00:00 -0800", "2024-09-02T18:00:00Z"),  # Canvas jobs
        ("2019-11-05 07:38:00 -0800", "2019-11-05T15:38:00Z"),
        ("2024-09-02 00:00:00+00:00", "2024-09-02T00:00:00Z"),  # Open edX str(datetime)
        ("2024-09-02T13:38:00.218Z", "2024-09-02T13:38:00.218Z"),
        ("2024-09-02T10:00:00.1234567Z", "2024-09-02T10:00:00.123456Z"),  # Event Grid's 7 digits
        ("2024-09-02T12:00:00+02:00", "2024-09-02T10:00:00Z"),
        ("2024-09-02 10:00:00+0530", "2024-09-02T04:30:00Z"),
    ],
)
def test_lms_datetimes_become_utc_z(raw: str, utc: str) -> None:
    assert utc_z(parse_datetime(raw)) == utc


def test_naive_datetimes_need_a_platform_that_writes_utc() -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_datetime("2023-01-31 20:24:32.598387")
    assert utc_z(parse_datetime("2023-01-31 20:24:32.598387", naive_is_utc=True)) == "2023-01-31T20:24:32.598387Z"


@pytest.mark.parametrize("raw", ["yesterday", "2024-13-01 00:00:00Z", "2024-09-02", 1725292800, None])
def test_bad_datetimes_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="date-time"):
        parse_datetime(raw)


@pytest.mark.parametrize(
    ("value", "ms", "utc"),
    [
        (1725292800, False, "2024-09-02T16:00:00Z"),
        ("1725292800", False, "2024-09-02T16:00:00Z"),
        (1725264000000, True, "2024-09-02T08:00:00Z"),
        (1725292800.5, False, "2024-09-02T16:00:00.5Z"),
    ],
)
def test_epoch_times(value: object, ms: bool, utc: str) -> None:
    assert utc_z(from_epoch(value, milliseconds=ms)) == utc


@pytest.mark.parametrize("value", [-1, True, "soon", 10**14, None])
def test_bad_epoch_times(value: object) -> None:
    with pytest.raises(ValueError, match=r"seconds since 1970|out of range"):
        from_epoch(value)


@quiet
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)))
def test_utc_z_round_trips_through_rfc3339(moment: datetime) -> None:
    text = utc_z(moment)
    assert text.endswith("Z")
    assert parse_rfc3339(text, edm=True) == moment


@quiet
@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(9998, 1, 1)), st.integers(-12 * 60, 14 * 60))
def test_any_offset_form_means_the_same_instant(local: datetime, minutes: int) -> None:
    zone = timezone(timedelta(minutes=minutes))
    aware = local.replace(microsecond=0, tzinfo=zone)
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    canvas_form = f"{aware:%Y-%m-%d %H:%M:%S} {sign}{hh:02d}{mm:02d}"
    python_form = str(aware)
    assert parse_datetime(canvas_form) == aware
    assert parse_datetime(python_form) == aware


# -- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "iso"),
    [
        (95, "minutes", "PT1H35M"),
        ("45", "minutes", "PT45M"),
        (3600, "seconds", "PT1H"),
        (90061, "seconds", "P1DT1H1M1S"),
        (0, "seconds", "PT0S"),
        (1.5, "seconds", "PT1.5S"),
        ("PT45M", "iso8601", "PT45M"),
        ("P1DT2H", "iso8601", "P1DT2H"),
        (timedelta(hours=2, minutes=5), "iso8601", "PT2H5M"),
    ],
)
def test_durations_become_iso8601(value: object, unit: str, iso: str) -> None:
    assert iso_duration(value, unit) == iso  # type: ignore[arg-type]
    LearningContent(externalId="x", title="t", contentWebUrl="https://x", languageTag="en", duration=iso)


@pytest.mark.parametrize(
    ("value", "unit"), [(-5, "seconds"), ("PDT1H", "iso8601"), ("P1M", "iso8601"), (True, "minutes"), ("1h", "seconds")]
)
def test_bad_durations_are_refused(value: object, unit: str) -> None:
    with pytest.raises(ValueError, match=r"duration|non-negative"):
        iso_duration(value, unit)  # type: ignore[arg-type]


@quiet
@given(st.integers(min_value=0, max_value=10**8))
def test_seconds_round_trip(seconds: int) -> None:
    iso = iso_duration(seconds, "seconds")
    LearningContent(externalId="x", title="t", contentWebUrl="https://x", languageTag="en", duration=iso)
    import re

    parts = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", iso)
    assert parts is not None
    d, h, m, s = (int(p or 0) for p in parts.groups())
    assert ((d * 24 + h) * 60 + m) * 60 + s == seconds


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://lms.example.com/c/1", "http://lms.example.com:8080/c?id=1", "HTTPS://LMS.EXAMPLE.COM/x"]
)
def test_absolute_urls_pass_unchanged(url: str) -> None:
    assert absolute_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "/course/view.php?id=7",
        "//cdn.example.com/x.png",
        "javascript:alert(1)",
        "ftp://files.example.com/x",
        "https://",
        "https://lms.example.com/a b",
        "https://lms.example.com/\x00",
        "https://lms.example.com:99999/",
        "data:text/html,<b>x</b>",
        42,
    ],
)
def test_other_urls_are_refused(url: object) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        absolute_url(url)


# -- language tags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("fr_CA", "fr-CA"),
        ("fr_ca", "fr-CA"),
        ("en", "en"),
        ("EN-us", "en-US"),
        ("zh_hant_tw", "zh-Hant-TW"),
        ("pt_br", "pt-BR"),
        ("es-419", "es-419"),
    ],
)
def test_language_tags(raw: str, tag: str) -> None:
    assert language_tag(raw) == tag


@pytest.mark.parametrize("raw", ["english", "", "e", "fr CA", "fr_CA!", 7])
def test_bad_language_tags(raw: object) -> None:
    with pytest.raises(ValueError, match="language tag"):
        language_tag(raw)


@quiet
@given(st.from_regex(r"[a-zA-Z]{2,3}([_-][a-zA-Z0-9]{1,8}){0,3}", fullmatch=True))
def test_language_tag_is_idempotent(raw: str) -> None:
    tag = language_tag(raw)
    assert language_tag(tag) == tag
    assert "_" not in tag


# -- URL templates ---------------------------------------------------------------------------------


def test_url_template_encodes_the_id_or_keeps_it_raw() -> None:
    key = "course-v1:edX+DemoX+Demo Course"
    assert render_url_template("https://lms.example.com/c?id={id}", key, {}) == (
        "https://lms.example.com/c?id=course-v1%3AedX%2BDemoX%2BDemo%20Course"
    )
    assert render_url_template("https://lms.example.com/courses/{rawId}/about", "edX/DemoX/Demo", {}) == (
        "https://lms.example.com/courses/edX/DemoX/Demo/about"
    )
    assert render_url_template("https://t.example.com/courses/{slug}", "1", {"slug": "a b"}) == (
        "https://t.example.com/courses/a%20b"
    )
    assert render_url_template("https://t.example.com/courses/{slug}", "1", {}) is None


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("https://lms.example.com/course", "placeholder"),
        ("https://lms.example.com/{course}", "not one of"),
        ("https://lms.example.com/{id!r}", "not one of"),
        ("/course/view.php?id={id}", "absolute"),
        ("https://lms.example.com/{id", "'}'"),
    ],
)
def test_bad_url_templates(template: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_url_template(template)


@quiet
@given(st.text(alphabet=string.printable, min_size=1, max_size=40))
def test_encoded_id_always_makes_a_valid_url(course_id: str) -> None:
    url = render_url_template("https://lms.example.com/course/view.php?id={id}", course_id, {})
    assert url is not None
    assert absolute_url(url) == url
