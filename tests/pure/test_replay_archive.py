"""``replay archive``'s decisions without storage: every kind's trusted path derives from its archived
delivery the commands the intake derived; what is refused (duplicate, unknown source, redacted,
invalid) and why; the report, the limit, and the admin request. tests/storage runs it on Azurite."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import archive, intake
from shared.archive import MASK, ArchivedDelivery, ArchiveUnreadable
from shared.models import ContentCommand
from shared.problems import CONTENT_INCOMPLETE, CREDENTIAL_INVALID, SCHEMA_VIOLATION, SIGNATURE_MISSING, Problem
from shared.queue import QueueUnavailable, SentMessage
from shared.replay import ArchiveOutcome, ArchiveWindow, handle_archive, replay_archive
from shared.settings import Settings, source_secret
from shared.signatures import sign
from shared.sources import WebhookRequest, canvas
from tests.conftest import SECRET, TENANT_ID
from tests.payloads import canvas_keys, load, raw, thinkific_headers

MOODLE_TOKEN = "moodle-service-token-1"
THINKIFIC_KEY = "thinkific-api-key-1"
SHARED_KEY = "shared-query-key-1"
ACCOUNT = {"rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"}  # the sample Live Events' account
LANGUAGE = {"defaultLanguageTag": "en"}
SOURCES: dict[str, Any] = {
    "demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "ARCHIVE_DEMO_SECRET"},
    "canvas": {
        "kind": "canvas",
        **ACCOUNT,
        "registrationId": "reg-1",
        "jwksUrl": "http://127.0.0.1:9/jwks",
        "contentWebUrlTemplate": "https://canvas.example.com/courses/{id}",
        **LANGUAGE,
    },
    "moodle": {
        "kind": "moodle",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_MOODLE_TOKEN",
        "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
        **LANGUAGE,
    },
    "openedx": {
        "kind": "openedx",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_SHARED_KEY",
        "contentWebUrlTemplate": "https://lms.example.com/courses/{rawId}/about",
        **LANGUAGE,
    },
    "openedx-signed": {
        "kind": "openedx",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_DEMO_SECRET",
        "auth": {"scheme": "standard-webhooks"},
        "contentWebUrlTemplate": "https://lms.example.com/courses/{rawId}/about",
        **LANGUAGE,
    },
    "thinkific": {
        "kind": "thinkific",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_THINKIFIC_KEY",
        "contentWebUrlTemplate": "https://acme.thinkific.com/courses/{slug}",
        **LANGUAGE,
    },
    "docebo": {
        "kind": "docebo",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_SHARED_KEY",
        "contentWebUrlTemplate": "https://acme.docebosaas.com/learn/course/{id}",
        **LANGUAGE,
    },
    "eventgrid": {"kind": "eventgrid", "registrationId": "reg-1", "secretSetting": "ARCHIVE_SHARED_KEY"},
    "acme": {
        "kind": "mapped",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_DEMO_SECRET",
        "mapping": {
            "actions": {"academy.course.published": "upsert"},
            "externalId": {"path": "data.course.uid", "convert": "string"},
            "fields": {
                "title": "data.course.headline",
                "contentWebUrl": "data.course.link",
                "languageTag": {"path": "data.course.locale", "convert": "language"},
            },
        },
    },
    "hooks": {
        "kind": "mapped",
        "registrationId": "reg-1",
        "secretSetting": "ARCHIVE_DEMO_SECRET",
        "envelope": "standard-webhooks",
        "mapping": {
            "actions": {"course.updated": "upsert"},
            "externalId": {"path": "data.id", "convert": "string"},
            "fields": {"title": "data.title", "contentWebUrl": "data.url", "languageTag": "data.lang"},
        },
    },
}
SECRETS = {
    "ARCHIVE_DEMO_SECRET": SECRET,
    "ARCHIVE_MOODLE_TOKEN": MOODLE_TOKEN,
    "ARCHIVE_THINKIFIC_KEY": THINKIFIC_KEY,
    "ARCHIVE_SHARED_KEY": SHARED_KEY,
}
CE = "application/cloudevents+json"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    # The intake verifies Canvas's JWTs with the local key set; no network.
    monkeypatch.setattr(canvas, "KEYS", canvas_keys().cache())
    return Settings(sources_json=json.dumps(SOURCES), tenant_id=TENANT_ID)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Take every credential away: the secrets' settings, and Canvas's key set (any fetch fails)."""

    def unreachable(url: str) -> Any:
        raise AssertionError(f"a replay fetched the key set at {url}")

    def take() -> None:
        for name in SECRETS:
            monkeypatch.delenv(name)
        monkeypatch.setattr(canvas, "KEYS", canvas.JwksCache(unreachable))

    return take


def delivered(source: str, body: Any, headers: dict[str, str] | None = None, **options: Any) -> WebhookRequest:
    content_type = options.pop("content_type", "application/json")
    return intake.make_request(source, {"content-type": content_type, **(headers or {})}, raw(body), **options)


def signed_by_sender(body: Any, **headers: str) -> dict[str, str]:
    return {**sign(raw(body), SECRET, webhook_id="msg_1", timestamp=int(time.time())), **headers}


def cloudevent(external_id: str = "c-1", **attributes: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-{external_id}",
        "source": "/lms",
        "type": "com.lms.course.updated",
        "time": "2026-01-15T10:00:00Z",
        "data": {
            "externalId": external_id,
            "title": "Intro to Widgets",
            "contentWebUrl": "https://lms.example/courses/1",
            "languageTag": "en-us",
        },
        **attributes,
    }


def authentic() -> dict[str, WebhookRequest]:
    """One delivery of every kind, as its platform sends it (credentials included)."""
    acme = load("mapped/acme_course_published")
    hook = {"type": "course.updated", "timestamp": "2026-01-15T10:00:00Z", "data": _hook_data()}
    edx = load("openedx/plugin_catalog_info_changed")
    thinkific = load("thinkific/product_updated")
    return {
        "cloudevents": delivered("demo", cloudevent(), signed_by_sender(cloudevent()), content_type=CE),
        "canvas": delivered(
            "canvas", canvas_keys().sign(load("canvas/course_created"), kid="2024-09"), content_type="application/jwt"
        ),
        "moodle": delivered("moodle", load("moodle/course_updated")),
        "openedx": delivered(
            "openedx", load("openedx/bus_catalog_info_changed"), query={"key": SHARED_KEY}, content_type=CE
        ),
        "openedx signed": delivered("openedx-signed", edx, signed_by_sender(edx)),
        "thinkific": delivered("thinkific", thinkific, thinkific_headers(thinkific, THINKIFIC_KEY)),
        "docebo": delivered("docebo", load("docebo/course_updated_grouped"), query={"key": SHARED_KEY}),
        "eventgrid": delivered(
            "eventgrid", load("eventgrid/course_events"), {"aeg-event-type": "Notification"}, query={"key": SHARED_KEY}
        ),
        "mapped": delivered("acme", acme, signed_by_sender(acme), content_type=CE),
        "mapped standard-webhooks": delivered("hooks", hook, signed_by_sender(hook)),
    }


def _hook_data() -> dict[str, Any]:
    return {"id": 7, "title": "Algebra", "url": "https://lms.example/c/7", "lang": "en-us"}


def archived_copy(request: WebhookRequest, settings: Settings, **options: Any) -> ArchivedDelivery:
    """The delivery as the intake archives it, read back from its JSON."""
    source = settings.sources()[request.source_name]
    record = archive.archived(request, source, source_secret(source), ["m-1"], **options)
    return ArchivedDelivery.model_validate_json(record.to_json())


def views(commands: Sequence[ContentCommand]) -> list[dict[str, Any]]:
    return [json.loads(c.to_json()) for c in commands]


# -- every kind's trusted path -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(authentic()))
def test_the_archive_gives_the_commands_the_intake_gave_without_any_credential(
    kind: str, settings: Settings, no_credentials: Callable[[], None]
) -> None:
    request = authentic()[kind]
    original = intake.decide(request, settings)
    assert original, "every sample holds a course event"
    record = archived_copy(request, settings)
    no_credentials()

    derived = intake.rederive(record, settings)
    assert (derived.outcome, derived.problem, derived.detail) == ("derived", None, None)
    assert views(derived.commands) == views(original)


@pytest.mark.parametrize("kind", sorted(authentic()))
def test_an_archived_delivery_cannot_authenticate_so_trusted_is_the_only_way_back(
    kind: str, settings: Settings
) -> None:
    record = archived_copy(authentic()[kind], settings)
    if kind == "canvas":  # the JWT is the body and it is kept whole; its age is what a replay meets
        record = record.model_copy(update={"body": canvas_keys().sign(load("canvas/course_created"), exp=1).decode()})
    with pytest.raises(Problem) as refused:
        intake.decide(record.to_request(), settings)
    assert refused.value.kind.status in (401, 422)
    assert intake.rederive(record, settings).outcome == "derived"


def test_canvas_trusts_an_expired_token_signed_by_a_key_no_longer_published(settings: Settings) -> None:
    retired = canvas_keys().sign(load("canvas/course_created"), kid="2024-08", exp=int(time.time()) - 86400, iat=1)
    record = archived_copy(delivered("canvas", retired, content_type="application/jwt"), settings)
    record = record.model_copy(update={"headers": {**record.headers, "x-anything": "1"}})
    [command] = intake.rederive(record, settings).commands
    assert command.external_id == "21070000000000056"


def test_canvas_still_checks_the_account_and_unsigned_events(settings: Settings) -> None:
    body = load("canvas/course_created")
    body["metadata"]["root_account_uuid"] = "another-customers-account"
    record = archived_copy(delivered("canvas", canvas_keys().sign(body), content_type="application/jwt"), settings)
    refused = intake.rederive(record, settings)
    assert (refused.outcome, refused.problem) == ("invalid", CREDENTIAL_INVALID.title)
    assert "root_account_uuid" in (refused.detail or "")

    unsigned = archived_copy(delivered("canvas", load("canvas/course_created")), settings)
    refused = intake.rederive(unsigned, settings)
    assert (refused.outcome, refused.problem) == ("invalid", SIGNATURE_MISSING.title)


def test_standard_webhooks_trust_the_id_and_timestamp_and_the_timestamp_dates_a_timeless_event(
    settings: Settings,
) -> None:
    event = cloudevent()
    del event["time"]
    sent = int(datetime(2026, 2, 1, 9, tzinfo=UTC).timestamp())
    headers = sign(raw(event), SECRET, webhook_id="msg_old", timestamp=sent)
    request = replace(
        delivered("demo", event, headers, content_type=CE), received_at=datetime(2026, 2, 1, 9, 0, 5, tzinfo=UTC)
    )
    record = archived_copy(request, settings)
    assert record.headers["webhook-signature"] == MASK
    [command] = intake.rederive(record, settings).commands
    assert command.event_time == datetime(2026, 2, 1, 9, tzinfo=UTC)  # not the receipt, not now

    without_id = record.model_copy(update={"headers": {k: v for k, v in record.headers.items() if k != "webhook-id"}})
    refused = intake.rederive(without_id, settings)
    assert (refused.outcome, refused.problem) == ("invalid", SIGNATURE_MISSING.title)


def test_an_event_grid_handshake_gives_nothing(settings: Settings) -> None:
    request = delivered(
        "eventgrid",
        load("eventgrid/subscription_validation"),
        {"aeg-event-type": "SubscriptionValidation"},
        query={"key": SHARED_KEY},
    )
    record = archived_copy(request, settings)
    derived = intake.rederive(record, settings)
    assert (derived.outcome, derived.commands) == ("derived", [])
    window = ArchiveWindow(record.received_at, record.received_at + timedelta(seconds=1))
    queue = MemoryQueue()
    report = replay_archive(MemoryArchive([record]), queue, settings, window, queue_name="q")
    assert [item.outcome for item in report.items] == [ArchiveOutcome.NO_COMMANDS]
    assert (report.counts()["noCommands"], report.counts()["enqueued"], queue.sent) == (1, 0, [])


# -- what is refused -------------------------------------------------------------------------------


def test_moodles_masked_token_leaves_the_content_whole(settings: Settings) -> None:
    record = archived_copy(authentic()["moodle"], settings)
    assert record.body_redacted is True
    assert json.loads(record.body)["token"] == MASK
    assert intake.redaction(record, frozenset({"token"})) is None
    assert intake.rederive(record, settings).outcome == "derived"


def test_a_secret_masked_inside_the_content_refuses_the_delivery(settings: Settings) -> None:
    body = load("moodle/course_updated")
    body["other"]["updatedfields"]["summary"] = f"<p>Ask for {MOODLE_TOKEN} at the desk</p>"
    request = delivered("moodle", body)
    assert intake.decide(request, settings)[0].content is not None  # accepted when it arrived
    record = archived_copy(request, settings)
    refused = intake.rederive(record, settings)
    assert refused.outcome == "redacted"
    assert refused.detail == "the source's secret was masked inside the body's content"


def test_a_masked_member_that_a_mapping_may_read_refuses_the_delivery(settings: Settings) -> None:
    hook = {
        "type": "course.updated",
        "timestamp": "2026-01-15T10:00:00Z",
        "token": "sender-token",
        "data": _hook_data(),
    }
    request = delivered("hooks", hook, signed_by_sender(hook))
    record = archived_copy(request, settings)
    assert json.loads(record.body)["token"] == MASK
    refused = intake.rederive(record, settings)
    assert refused.outcome == "redacted"
    assert "token" in (refused.detail or "")


def test_a_redacted_body_that_is_not_text_is_refused() -> None:
    at = datetime(2026, 2, 1, tzinfo=UTC)
    record = ArchivedDelivery(
        source="moodle",
        receivedAt=at,
        correlationId="c-1",
        body=base64.b64encode(b"\xff[redacted]").decode(),
        bodyEncoding="base64",
        bodyRedacted=True,
    )
    assert intake.redaction(record, frozenset({"token"})) == (
        "the source's secret was masked in a body that is not UTF-8 text"
    )


def test_duplicates_unknown_sources_and_what_todays_rules_refuse(settings: Settings) -> None:
    request = authentic()["moodle"]
    duplicate = archived_copy(request, settings, duplicate=True)
    assert intake.rederive(duplicate, settings).outcome == "duplicate"

    gone = settings.model_copy(update={"sources_json": json.dumps({k: v for k, v in SOURCES.items() if k != "moodle"})})
    assert intake.rederive(archived_copy(request, settings), gone).outcome == "unknown-source"

    changed = dict(SOURCES, moodle={k: v for k, v in SOURCES["moodle"].items() if k != "contentWebUrlTemplate"})
    today = settings.model_copy(update={"sources_json": json.dumps(changed)})
    refused = intake.rederive(archived_copy(request, settings), today)
    assert refused.outcome == "invalid"
    assert refused.problem == CONTENT_INCOMPLETE.title
    assert refused.commands == []


# -- the report ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 27, 10, tzinfo=UTC)


@dataclass
class MemoryArchive:
    deliveries: list[ArchivedDelivery]
    unreadable_after: int | None = None

    def list(self, since: datetime, until: datetime, source: str | None = None) -> Iterator[ArchivedDelivery]:
        for index, delivery in enumerate(sorted(self.deliveries, key=lambda d: d.received_at)):
            if self.unreadable_after is not None and index >= self.unreadable_after:
                raise ArchiveUnreadable("demo/2026/11/27/10/x.json: 1 invalid field(s)")
            if since <= delivery.received_at < until and source in (None, delivery.source):
                yield delivery


@dataclass
class MemoryQueue:
    sent: list[str] = field(default_factory=list)
    down: bool = False

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]:
        if self.down:
            raise QueueUnavailable("queue storage is down")
        start = len(self.sent)
        self.sent.extend(texts)
        return [SentMessage(f"m-{start + i}", f"pop-{start + i}") for i in range(len(texts))]


def at(request: WebhookRequest, minutes: int) -> WebhookRequest:
    return replace(request, received_at=T0 + timedelta(minutes=minutes), correlation_id=f"corr-{minutes}")


def mixed(settings: Settings) -> MemoryArchive:
    """Five deliveries: two derived (one of two commands), a duplicate, an unknown source, an invalid one."""
    kinds = authentic()
    ghost = at(kinds["cloudevents"], 3)
    broken = load("moodle/course_updated")
    broken["timecreated"] = "yesterday"
    return MemoryArchive(
        [
            archived_copy(at(kinds["moodle"], 0), settings),
            archived_copy(at(kinds["eventgrid"], 1), settings),
            archived_copy(at(kinds["moodle"], 2), settings, duplicate=True),
            archived_copy(ghost, settings).model_copy(update={"source": "retired"}),
            archived_copy(at(delivered("moodle", broken), 4), settings),
        ]
    )


WINDOW = ArchiveWindow(T0, T0 + timedelta(hours=1))


def test_the_report_counts_every_delivery_once_and_lists_the_commands(settings: Settings) -> None:
    queue = MemoryQueue()
    report = replay_archive(mixed(settings), queue, settings, WINDOW, queue_name="content-commands")
    assert report.counts() == {
        "read": 5,
        "derived": 2,
        "noCommands": 0,
        "duplicate": 1,
        "unknownSource": 1,
        "redacted": 0,
        "invalid": 1,
        "enqueued": 3,
    }
    sent = [ContentCommand.model_validate_json(text) for text in queue.sent]
    assert [(c.op, c.external_id) for c in sent] == [("upsert", "7"), ("upsert", "eg-101"), ("delete", "eg-102")]
    view = report.view()
    assert view["complete"] is True
    assert view["nextSince"] is None
    assert [c["messageId"] for c in view["commands"]] == ["m-0", "m-1", "m-2"]
    assert view["commands"][0] == {
        "op": "upsert",
        "externalId": "7",
        "registrationId": "reg-1",
        "tenantId": TENANT_ID,
        "eventTime": "2024-09-02T16:00:00+00:00",
        "sourceEventId": "\\core\\event\\course_updated:7:1725292800",
        "source": "moodle",
        "correlationId": "corr-0",
        "receivedAt": T0.isoformat(),
        "messageId": "m-0",
    }
    assert [(r["outcome"], r["source"], r["problem"]) for r in view["refused"]] == [
        ("unknownSource", "retired", None),
        ("invalid", "moodle", SCHEMA_VIOLATION.title),
    ]


def test_a_dry_run_lists_what_it_would_enqueue_and_sends_nothing(settings: Settings) -> None:
    queue = MemoryQueue()
    report = replay_archive(mixed(settings), queue, settings, WINDOW, queue_name="q", dry_run=True)
    assert queue.sent == []
    assert report.counts()["enqueued"] == 3
    view = report.view()
    assert view["dryRun"] is True
    assert [c["externalId"] for c in view["commands"]] == ["7", "eg-101", "eg-102"]
    assert all("messageId" not in c for c in view["commands"])


def test_the_limit_stops_at_a_delivery_and_says_where_to_go_on(settings: Settings) -> None:
    archived = mixed(settings)
    first = replay_archive(archived, MemoryQueue(), settings, WINDOW, queue_name="q", limit=2)
    assert (first.counts()["read"], first.complete, first.next_since) == (2, False, T0 + timedelta(minutes=2))
    rest = replay_archive(
        archived, MemoryQueue(), settings, ArchiveWindow(T0 + timedelta(minutes=2), WINDOW.until), queue_name="q"
    )
    assert (rest.counts()["read"], rest.complete) == (3, True)
    assert first.view()["nextSince"] == (T0 + timedelta(minutes=2)).isoformat()


def test_the_window_must_be_aware_and_ordered() -> None:
    with pytest.raises(ValueError, match="before"):
        ArchiveWindow(T0, T0)
    with pytest.raises(ValueError, match="time zone"):
        ArchiveWindow(datetime(2026, 1, 1), T0)


# -- POST /api/ops/replay/archive ----------------------------------------------------------------------


def post(body: Any, settings: Settings, archived: MemoryArchive | None, queue: MemoryQueue | None = None) -> Any:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return handle_archive(raw_body, settings, lambda: archived, lambda: queue or MemoryQueue())


WINDOW_BODY = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}


def test_the_admin_function_answers_the_report(settings: Settings) -> None:
    queue = MemoryQueue()
    answer = post({**WINDOW_BODY, "source": "moodle", "limit": 10}, settings, mixed(settings), queue)
    assert answer.status == 200
    assert answer.body["counts"]["read"] == 3
    assert answer.body["counts"]["enqueued"] == 1
    assert answer.body["window"] == {**WINDOW_BODY, "source": "moodle"}
    assert answer.body["queue"] == settings.content_queue_name
    assert len(queue.sent) == 1
    dry = post({**WINDOW_BODY, "dryRun": True}, settings, mixed(settings), queue)
    assert dry.body["dryRun"] is True
    assert len(queue.sent) == 1


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"until": WINDOW_BODY["until"]}, "/since"),
        ({**WINDOW_BODY, "since": "2026-11-27T10:00:00"}, "/since"),
        ({**WINDOW_BODY, "limit": 0}, "/limit"),
        ({**WINDOW_BODY, "externalId": "c-1"}, "/externalId"),
        ({**WINDOW_BODY, "dryRun": "yes"}, "/dryRun"),
    ],
)
def test_a_body_that_is_not_a_window_is_a_400(settings: Settings, body: dict[str, Any], pointer: str) -> None:
    queue = MemoryQueue()
    answer = post(body, settings, mixed(settings), queue)
    assert answer.status == 400
    assert answer.content_type == "application/problem+json"
    assert pointer in [e["pointer"] for e in answer.body["errors"]]
    assert queue.sent == []


def test_the_admin_functions_other_answers(settings: Settings) -> None:
    backwards = {"since": WINDOW_BODY["until"], "until": WINDOW_BODY["since"]}
    assert post(backwards, settings, mixed(settings)).status == 400
    assert post(b"[]", settings, mixed(settings)).status == 400
    assert post(b"{", settings, mixed(settings)).status == 400
    off = post(WINDOW_BODY, settings, None)
    assert (off.status, off.body["detail"]) == (409, "the event archive is off (EVENT_ARCHIVE_RETENTION_DAYS is 0)")
    assert post(WINDOW_BODY, settings, mixed(settings), MemoryQueue(down=True)).status == 503
    unreadable = mixed(settings)
    unreadable.unreadable_after = 1
    answer = post(WINDOW_BODY, settings, unreadable)
    assert answer.status == 500
    assert "demo/2026/11/27/10/x.json" in answer.body["detail"]
    broken = settings.model_copy(update={"sources_json": "{not json"})
    assert post(WINDOW_BODY, broken, mixed(settings)).status == 500


# -- EVENT_ARCHIVE_FLUSH_SECONDS (the archive's segments; tests/storage/test_archive_segments.py writes them) --


def test_the_flush_setting_is_a_second_by_default_and_at_most_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.delenv("EVENT_ARCHIVE_FLUSH_SECONDS", raising=False)
    assert Settings().event_archive_flush_seconds == 1.0
    for value, seconds in (("0", 0.0), ("0.25", 0.25), ("60", 60.0)):
        monkeypatch.setenv("EVENT_ARCHIVE_FLUSH_SECONDS", value)
        assert Settings().event_archive_flush_seconds == seconds
    for refused in ("-0.5", "60.5", "soon"):
        monkeypatch.setenv("EVENT_ARCHIVE_FLUSH_SECONDS", refused)
        with pytest.raises(ValidationError, match="EVENT_ARCHIVE_FLUSH_SECONDS"):
            Settings()


def test_an_archive_refuses_a_negative_flush_time() -> None:
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string("UseDevelopmentStorage=true", "event-archive")
    with pytest.raises(ValueError, match="flush_seconds"):
        archive.EventArchive(container, flush_seconds=-1)
