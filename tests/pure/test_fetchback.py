"""Fetch-back without the network: the command model (old messages still parse), intake turning thin
events into fetch commands, the completion rules, and the fetcher's retries and setup errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.fetchback import FetchError, LmsFetcher
from shared.graph import Deadline
from shared.lms import ApiSecret, LmsCourse, LmsPermanentError, LmsTransientError
from shared.models import ContentCommand, FetchRef
from shared.problems import Problem
from shared.settings import LmsSource, SourceConfig, api_secret, parse_sources
from shared.sources import adapter_for
from shared.sources.normalize import one_line
from shared.sources.pipeline import CompletionError, complete
from tests.payloads import canvas_keys, load, request, thinkific_headers

TOKEN = "moodle-service-token-1"
THINKIFIC_KEY = "thinkific-api-key-1"
CANVAS_ACCOUNT = "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"
API: dict[str, dict[str, Any]] = {
    "canvas": {"apiBaseUrl": "https://oxana.instructure.com", "apiSecretSetting": "CANVAS_API_TOKEN"},
    "moodle": {"apiBaseUrl": "https://moodle.example.com", "apiSecretSetting": "MOODLE_WS_TOKEN"},
    "openedx": {"apiBaseUrl": "https://lms.example.com", "apiSecretSetting": "OPENEDX_SECRET", "apiClientId": "vlsync"},
    "thinkific": {
        "apiBaseUrl": "https://api.thinkific.com",
        "apiSecretSetting": "THINKIFIC_KEY",
        "apiSubdomain": "acme",
    },
}
BASE: dict[str, dict[str, Any]] = {
    "canvas": {"rootAccountUuid": CANVAS_ACCOUNT, "acceptUnsigned": True},
    "moodle": {"secretSetting": "MOODLE_TOKEN"},
    "openedx": {"secretSetting": "OPENEDX_KEY"},
    "thinkific": {"secretSetting": "THINKIFIC_HMAC_KEY"},
}


def source(kind: str, *, api: bool = True, **options: Any) -> LmsSource:
    api_options: dict[str, Any] = API[kind] if api else {}
    base: dict[str, Any] = BASE[kind]
    entry = {"kind": kind, "registrationId": "reg-1", **base, **api_options, **options}
    parsed = parse_sources(json.dumps({kind: entry}))[kind]
    assert isinstance(parsed, LmsSource)
    return parsed


def deliver(kind: str, body: Any, src: LmsSource) -> list[ContentCommand]:
    headers, query, secret = {}, {}, None
    if kind == "thinkific":
        headers, secret = thinkific_headers(body, THINKIFIC_KEY), THINKIFIC_KEY
    elif kind == "moodle":
        secret = TOKEN
    elif kind == "openedx":
        query, secret = {"key": "edx-key"}, "edx-key"
    req = request(body, source=kind, headers=headers, query=query)
    adapter = adapter_for(kind)
    return adapter.parse(req, src, adapter.authenticate(req, src, secret))


THIN_EVENTS = {
    "canvas": "canvas/course_created",
    "moodle": "moodle/course_updated",
    "openedx": "openedx/plugin_catalog_info_changed",
    "thinkific": "thinkific/product_updated",
}
COURSE_IDS = {
    "canvas": "21070000000000056",
    "moodle": "7",
    "openedx": "course-v1:edX+DemoX+Demo_Course",
    "thinkific": "123",
}


# -- the command model -------------------------------------------------------------------------------

OLD_MESSAGE = {
    "v": 1,
    "op": "upsert",
    "registrationId": "reg-1",
    "externalId": "c-1",
    "content": {"externalId": "c-1", "title": "T", "contentWebUrl": "https://x.example/c", "languageTag": "en"},
    "source": "demo",
    "sourceEventId": "e-1",
    "eventTime": "2026-01-01T00:00:00Z",
    "correlationId": "corr",
}


def test_a_message_queued_before_fetch_back_still_parses() -> None:
    command = ContentCommand.model_validate_json(json.dumps(OLD_MESSAGE))
    assert command.fetch is None
    assert command.content is not None
    assert "fetch" not in json.loads(command.to_json())


def test_a_fetch_command_round_trips() -> None:
    message = {**OLD_MESSAGE, "content": None, "fetch": {"kind": "moodle", "courseId": "7", "hidden": True}}
    del message["content"]
    command = ContentCommand.model_validate_json(json.dumps(message))
    assert command.fetch == FetchRef(kind="moodle", courseId="7", hidden=True)
    assert ContentCommand.model_validate_json(command.to_json()) == command


@pytest.mark.parametrize(
    "change",
    [
        {"fetch": {"kind": "moodle", "courseId": "7"}},  # content and fetch
        {"content": None},  # neither
        {"op": "delete", "content": None, "fetch": {"kind": "moodle", "courseId": "7"}},  # a delete fetches nothing
        {"content": None, "fetch": {"kind": "docebo", "courseId": "7"}},  # not a fetch-back platform
        {"content": None, "fetch": {"kind": "moodle", "courseId": "7", "extra": 1}},
    ],
)
def test_malformed_fetch_commands_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ContentCommand.model_validate({**OLD_MESSAGE, **change})


# -- intake: thin events become fetch commands ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(THIN_EVENTS))
def test_a_thin_upsert_from_a_fetch_back_source_is_a_fetch_command(kind: str) -> None:
    # No contentWebUrlTemplate and no defaultLanguageTag: the LMS will fill them, so no 422 now.
    [command] = deliver(kind, load(THIN_EVENTS[kind]), source(kind, externalIdPrefix="lms-"))
    assert command.op == "upsert"
    assert command.content is None
    assert command.fetch is not None
    assert (command.fetch.kind, command.fetch.course_id) == (kind, COURSE_IDS[kind])
    assert command.external_id == "lms-" + COURSE_IDS[kind]
    assert command.fetch.fields["title"]  # the event's own name travels as a fallback
    assert command.correlation_id == "corr-1"
    assert command.source == kind


@pytest.mark.parametrize("kind", ["canvas", "moodle", "openedx"])
def test_without_api_base_url_a_thin_event_is_still_content_incomplete(kind: str) -> None:
    with pytest.raises(Problem) as info:
        deliver(kind, load(THIN_EVENTS[kind]), source(kind, api=False))
    assert info.value.kind.slug == "content-incomplete"


def test_without_api_base_url_nothing_changes_for_a_complete_event() -> None:
    src = source(
        "thinkific",
        api=False,
        contentWebUrlTemplate="https://acme.thinkific.com/courses/{slug}",
        defaultLanguageTag="en",
    )
    [command] = deliver("thinkific", load(THIN_EVENTS["thinkific"]), src)
    assert command.fetch is None
    assert command.content is not None


def test_a_hidden_event_is_a_fetch_marked_hidden_or_a_delete_per_hidden_as() -> None:
    event = load("moodle/course_updated")
    event["other"]["updatedfields"]["visible"] = "0"
    [command] = deliver("moodle", event, source("moodle"))
    assert command.fetch is not None
    assert command.fetch.hidden
    assert "isActive" not in command.fetch.fields
    [deleted] = deliver("moodle", event, source("moodle", hiddenAs="delete"))
    assert deleted.op == "delete"
    assert deleted.fetch is None


def test_deletes_stay_deletes() -> None:
    [command] = deliver("moodle", load("moodle/course_deleted"), source("moodle"))
    assert command.op == "delete"
    assert command.fetch is None
    assert command.content is None


def test_a_fetch_command_fits_the_queue_and_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    [command] = deliver("moodle", load("moodle/course_updated"), source("moodle"))
    text = command.to_json()
    assert TOKEN not in text
    assert "MOODLE_WS_TOKEN" not in text
    assert len(text) < 4096


# -- completion rules --------------------------------------------------------------------------------


def fetch(**kw: Any) -> FetchRef:
    return FetchRef.model_validate({"kind": "moodle", "courseId": "7", **kw})


def test_the_lms_answer_wins_over_the_event_and_is_normalised() -> None:
    ref = fetch(fields={"title": "Old name", "description": "from the event", "languageTag": "de"})
    content = complete(
        source("moodle"),
        "m-7",
        ref,
        {"title": "New <b>name</b>", "languageTag": "fr_ca", "createdDateTime": datetime(2024, 9, 1, 16, tzinfo=UTC)},
        default_url="https://moodle.example.com/course/view.php?id=7",
    )
    assert content is not None
    assert content.to_graph() == {
        "externalId": "m-7",
        "title": "New name",
        "description": "from the event",
        "languageTag": "fr-CA",
        "contentWebUrl": "https://moodle.example.com/course/view.php?id=7",
        "createdDateTime": "2024-09-01T16:00:00Z",
    }


def test_the_template_beats_the_lms_address_and_the_default_language_fills_in() -> None:
    src = source("moodle", contentWebUrlTemplate="https://learn.example.com/c/{id}", defaultLanguageTag="en-GB")
    content = complete(src, "7", fetch(), {"title": "T"}, default_url="https://moodle.example.com/course/view.php?id=7")
    assert content is not None
    assert (content.content_web_url, content.language_tag) == ("https://learn.example.com/c/7", "en-GB")


def test_hidden_applies_when_the_lms_is_silent_and_the_lms_wins_when_it_speaks() -> None:
    base = {"title": "T", "languageTag": "en", "contentWebUrl": "https://x.example/7"}
    silent = complete(source("moodle"), "7", fetch(hidden=True), base)
    assert silent is not None
    assert silent.is_active is False
    spoke = complete(source("moodle"), "7", fetch(hidden=True), {**base, "isActive": True})
    assert spoke is not None
    assert spoke.is_active is True
    assert complete(source("moodle", hiddenAs="delete"), "7", fetch(), {**base, "isActive": False}) is None


def test_a_required_field_nothing_fills_is_content_incomplete() -> None:
    with pytest.raises(CompletionError) as info:
        complete(source("moodle"), "7", fetch(), {"title": "T"}, default_url="https://moodle.example.com/c")
    assert info.value.code == "content-incomplete"
    assert "languageTag" in str(info.value)


def test_a_value_the_rules_refuse_is_content_invalid() -> None:
    with pytest.raises(CompletionError) as info:
        complete(source("moodle"), "7", fetch(), {"title": "T", "thumbnailWebUrl": "javascript:alert(1)"})
    assert info.value.code == "content-invalid"
    assert "thumbnailWebUrl" in str(info.value)


# -- the fetcher -------------------------------------------------------------------------------------


class ScriptedClient:
    lms = "Moodle"

    def __init__(self, answers: list[LmsCourse | Exception]) -> None:
        self.answers = answers
        self.calls = 0

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


COURSE = LmsCourse(
    fields={"title": "Linear algebra", "languageTag": "fr_ca", "isActive": True},
    default_url="https://moodle.example.com/course/view.php?id=7",
)


def fetch_command(**fetch_fields: Any) -> ContentCommand:
    message = {
        **OLD_MESSAGE,
        "externalId": "7",
        "source": "moodle",
        "fetch": {"kind": "moodle", "courseId": "7", **fetch_fields},
    }
    del message["content"]
    return ContentCommand.model_validate(message)


class Harness:
    def __init__(
        self,
        answers: list[LmsCourse | Exception],
        *,
        secret: str | None = "tok",  # noqa: S107 - a test double's value
        budget: float = 10.0,
        **src: Any,
    ) -> None:
        self.client = ScriptedClient(answers)
        self.sleeps: list[float] = []
        self.secret = secret
        self.built: list[ApiSecret] = []
        self.sources: dict[str, SourceConfig] = {"moodle": source("moodle", **src)}

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        def factory(http: Any, src: SourceConfig, secret: ApiSecret, timeout: float) -> ScriptedClient:
            self.built.append(secret)
            return self.client

        self.fetcher = LmsFetcher(
            None,  # type: ignore[arg-type]  # the scripted client never uses it
            lambda: self.sources,
            secret=lambda s: self.secret,
            max_inline_retry_seconds=budget,
            sleep=sleep,
            factory=factory,
        )


async def test_a_fetch_command_becomes_an_upsert_with_content() -> None:
    harness = Harness([COURSE])
    done = await harness.fetcher.complete(fetch_command(fields={"description": "from the event"}))
    assert done.fetch is None
    assert done.op == "upsert"
    assert done.content is not None
    assert done.content.to_graph() == {
        "externalId": "7",
        "title": "Linear algebra",
        "description": "from the event",
        "languageTag": "fr-CA",
        "contentWebUrl": "https://moodle.example.com/course/view.php?id=7",
        "isActive": True,
    }
    assert harness.built == [ApiSecret("tok", "MOODLE_WS_TOKEN")]


async def test_a_deleted_course_becomes_a_delete() -> None:
    done = await Harness([LmsCourse(deleted=True)]).fetcher.complete(fetch_command())
    assert (done.op, done.fetch, done.content) == ("delete", None, None)


async def test_transient_failures_are_retried_inline_within_the_budget() -> None:
    harness = Harness(
        [
            LmsTransientError("Moodle", 503, "http-503", "busy"),
            LmsTransientError("Moodle", 429, "throttled", "slow", retry_after=3),
            COURSE,
        ]
    )
    done = await harness.fetcher.complete(fetch_command())
    assert done.content is not None
    assert harness.client.calls == 3
    assert harness.sleeps == [1.0, 3.0]


async def test_a_retry_after_beyond_the_budget_is_raised_at_once() -> None:
    harness = Harness([LmsTransientError("Moodle", 429, "throttled", "slow", retry_after=60), COURSE], budget=10)
    with pytest.raises(LmsTransientError) as info:
        await harness.fetcher.complete(fetch_command())
    assert info.value.retry_after == 60
    assert harness.client.calls == 1
    assert not harness.sleeps


async def test_three_transient_failures_are_raised() -> None:
    harness = Harness([LmsTransientError("Moodle", 503, "http-503", "busy")] * 3)
    with pytest.raises(LmsTransientError):
        await harness.fetcher.complete(fetch_command())
    assert harness.client.calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    harness = Harness([LmsPermanentError("Moodle", 404, "not-found", "course 7 does not exist in Moodle"), COURSE])
    with pytest.raises(LmsPermanentError):
        await harness.fetcher.complete(fetch_command())
    assert harness.client.calls == 1


@pytest.mark.parametrize("secret", [None, ""])
async def test_a_missing_secret_names_its_setting(secret: str | None) -> None:
    harness = Harness([COURSE], secret=secret)
    with pytest.raises(FetchError) as info:
        await harness.fetcher.complete(fetch_command())
    assert info.value.code == "fetchback-unconfigured"
    assert "MOODLE_WS_TOKEN" in info.value.message
    assert harness.client.calls == 0


async def test_a_source_gone_or_without_api_is_a_fetch_error() -> None:
    harness = Harness([COURSE])
    harness.sources = {}
    with pytest.raises(FetchError, match="no longer in SOURCES"):
        await harness.fetcher.complete(fetch_command())
    harness.sources = {"moodle": source("moodle", api=False)}
    with pytest.raises(FetchError, match="apiBaseUrl"):
        await harness.fetcher.complete(fetch_command())


async def test_incomplete_lms_content_is_a_fetch_error_with_its_code() -> None:
    harness = Harness([LmsCourse(fields={"title": "T"}, default_url="https://m.example/7")])
    with pytest.raises(FetchError) as info:
        await harness.fetcher.complete(fetch_command())
    assert info.value.code == "content-incomplete"
    assert "Moodle course 7" in info.value.message


async def test_the_client_is_reused_until_the_secret_rotates() -> None:
    harness = Harness([COURSE, COURSE, COURSE])
    await harness.fetcher.complete(fetch_command())
    await harness.fetcher.complete(fetch_command())
    assert len(harness.built) == 1
    harness.secret = "rotated"
    await harness.fetcher.complete(fetch_command())
    assert [s.value for s in harness.built] == ["tok", "rotated"]


def test_canvas_signed_event_from_a_fetch_back_source_is_a_fetch_command() -> None:
    keys = canvas_keys()
    src = source("canvas", acceptUnsigned=False)
    body = keys.sign(load("canvas/course_created"))
    req = request(body, source="canvas", content_type="application/jwt")
    adapter = adapter_for("canvas")
    adapter.keys = keys.cache()  # type: ignore[attr-defined]
    [command] = adapter.parse(req, src, adapter.authenticate(req, src, None))
    assert command.fetch is not None
    assert command.fetch.course_id == "21070000000000056"


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("moodle", {"apiBaseUrl": "ftp://moodle.example.com"}, r"apiBaseUrl: must be an absolute http\(s\) URL"),
        ("moodle", {"apiBaseUrl": "https://moodle.example.com?x=1"}, "without a query"),
        ("moodle", {"apiSecretSetting": None}, "apiBaseUrl needs apiSecretSetting"),
        ("moodle", {"apiSecretSetting": "not a name"}, "apiSecretSetting"),
        ("openedx", {"apiClientId": None}, "apiBaseUrl needs apiClientId"),
        ("openedx", {"apiTokenUrl": "/oauth2/access_token"}, "apiTokenUrl: must be an absolute"),
        ("thinkific", {"apiSubdomain": None}, "apiBaseUrl needs apiSubdomain"),
        ("thinkific", {"apiSubdomain": "acme.evil.example"}, "apiSubdomain"),
    ],
)
def test_fetch_back_settings_are_validated_at_start_up(kind: str, change: dict[str, Any], message: str) -> None:
    entry = {"kind": kind, "registrationId": "reg-1", **BASE[kind], **API[kind], **change}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        parse_sources(json.dumps({kind: entry}))


@pytest.mark.parametrize("option", ["apiSecretSetting", "apiClientId", "apiSubdomain"])
def test_fetch_back_companions_need_api_base_url(option: str) -> None:
    kind = {"apiSecretSetting": "moodle", "apiClientId": "openedx", "apiSubdomain": "thinkific"}[option]
    entry = {"kind": kind, "registrationId": "reg-1", **BASE[kind], option: "XSETTING"}
    with pytest.raises(ValueError, match="only used with apiBaseUrl"):
        parse_sources(json.dumps({kind: entry}))


def test_fetch_back_is_not_offered_to_other_kinds() -> None:
    entry = {"kind": "docebo", "registrationId": "r", "secretSetting": "S", "apiBaseUrl": "https://x.example"}
    with pytest.raises(ValueError, match="apiBaseUrl: Extra inputs"):
        parse_sources(json.dumps({"d": entry}))


def test_the_api_secret_is_read_at_call_time_and_an_unresolved_reference_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = source("moodle")
    monkeypatch.setenv("MOODLE_WS_TOKEN", " tok-1 ")
    assert api_secret(src) == "tok-1"
    monkeypatch.setenv("MOODLE_WS_TOKEN", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x)")
    assert api_secret(src) is None
    monkeypatch.delenv("MOODLE_WS_TOKEN")
    assert api_secret(src) is None
    assert api_secret(source("moodle", api=False)) is None


_TITLE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda t: one_line(t) != ""
)


@given(event_title=_TITLE, lms_title=st.one_of(st.none(), _TITLE))
def test_property_the_lms_title_wins_and_the_event_title_is_the_fallback(
    event_title: str, lms_title: str | None
) -> None:
    ref = FetchRef(kind="moodle", courseId="7", fields={"title": one_line(event_title)})
    lms = {"languageTag": "en", "contentWebUrl": "https://m.example/7"} | ({"title": lms_title} if lms_title else {})
    content = complete(MOODLE, "7", ref, lms)
    assert content is not None
    assert content.title == (one_line(lms_title) if lms_title else one_line(event_title))


MOODLE = source("moodle")
