"""``replay archive`` on real storage (Azurite): deliveries of several kinds go through the real intake,
which queues their commands and archives them; the replay reads the archive's blobs and queues the
same commands again (same sourceEventId, eventTime, content), without any of the sources' credentials."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import intake
from shared.archive import EventArchive
from shared.dedupe import TableDeliveryDedupe
from shared.queue import StorageCommandQueue
from shared.replay import ArchiveReport, ArchiveWindow, replay_archive
from shared.settings import Settings
from shared.signatures import sign
from shared.sources import WebhookRequest, canvas
from tests.conftest import SECRET
from tests.payloads import canvas_keys, load, raw, thinkific_headers
from tests.queues import peek_json, peek_messages
from tests.webhooks import content, event, signed

MOODLE_TOKEN = "moodle-service-token-1"
THINKIFIC_KEY = "thinkific-api-key-1"
GRID_KEY = "grid-query-key-0123456789"
LANGUAGE = {"defaultLanguageTag": "en"}
SOURCES = {
    "demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "TEST_WEBHOOK_SECRET"},
    "moodle": {
        "kind": "moodle",
        "registrationId": "reg-1",
        "secretSetting": "REPLAY_MOODLE_TOKEN",
        "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
        **LANGUAGE,
    },
    "thinkific": {
        "kind": "thinkific",
        "registrationId": "reg-2",
        "secretSetting": "REPLAY_THINKIFIC_KEY",
        "contentWebUrlTemplate": "https://acme.thinkific.com/courses/{slug}",
        **LANGUAGE,
    },
    "canvas": {
        "kind": "canvas",
        "rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs",
        "registrationId": "reg-1",
        "jwksUrl": "http://127.0.0.1:9/jwks",
        "contentWebUrlTemplate": "https://canvas.example.com/courses/{id}",
        **LANGUAGE,
    },
    "grid": {"kind": "eventgrid", "registrationId": "reg-3", "secretSetting": "REPLAY_GRID_KEY"},
}
SECRETS = {
    "REPLAY_MOODLE_TOKEN": MOODLE_TOKEN,
    "REPLAY_THINKIFIC_KEY": THINKIFIC_KEY,
    "REPLAY_GRID_KEY": GRID_KEY,
    "TEST_WEBHOOK_SECRET": SECRET,
}


@pytest.fixture
def app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test app with five sources of four kinds, its own dedupe table and archive container."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(canvas, "KEYS", canvas_keys().cache())  # the intake verifies with the local key set
    suffix = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={
            "sources_json": json.dumps(SOURCES),
            "dedupe_table_name": f"deliveries{suffix}",
            "event_archive_container": f"archive-{suffix}",
        }
    )


def replay_queue(app: Settings) -> Settings:
    """The same app with a work queue of its own, so the replay's messages are told from the intake's."""
    return app.model_copy(update={"content_queue_name": f"replay-{uuid.uuid4().hex[:10]}"})


def take_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a replay must do without: every source's secret and Canvas's key set."""

    def unreachable(url: str) -> Any:
        raise AssertionError(f"the replay fetched the key set at {url}")

    for name in SECRETS:
        monkeypatch.delenv(name)
    monkeypatch.setattr(canvas, "KEYS", canvas.JwksCache(unreachable))


def receive(app: Settings, request: WebhookRequest) -> intake.IntakeResponse:
    response = intake.receive(
        request,
        app,
        lambda: StorageCommandQueue.from_settings(app),
        dedupe=lambda: TableDeliveryDedupe.from_settings(app),
        archive=lambda: EventArchive.from_settings(app),
    )
    assert response.status == 202, response.body
    return response


def queued(app: Settings) -> list[dict[str, Any]]:
    return peek_json(app.storage_connection_string or "", app.content_queue_name)


def without_trace(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commands as the ledger compares them: the trace context is the replay's own."""
    return sorted(
        ({k: v for k, v in m.items() if k != "traceContext"} for m in messages),
        key=lambda m: (m["source"], m["externalId"]),
    )


def deliveries() -> list[WebhookRequest]:
    """Four kinds, five commands: a CloudEvent (Standard Webhooks), Moodle (its token in the body),
    Thinkific (an HMAC header), Canvas (an RS256 JWT), Event Grid (a key in the URL; two events)."""
    ce_body, ce_headers = signed(event("com.lms.course.updated", content("ce-1", title="From CloudEvents")), SECRET)
    thinkific = load("thinkific/product_updated")
    return [
        intake.make_request("demo", ce_headers, ce_body),
        intake.make_request("moodle", {"content-type": "application/json"}, raw(load("moodle/course_updated"))),
        intake.make_request(
            "thinkific",
            {"content-type": "application/json", **thinkific_headers(thinkific, THINKIFIC_KEY)},
            raw(thinkific),
        ),
        intake.make_request(
            "canvas",
            {"content-type": "application/jwt"},
            canvas_keys().sign(load("canvas/course_created"), kid="2024-09"),
        ),
        intake.make_request(
            "grid",
            {"content-type": "application/json", "aeg-event-type": "Notification"},
            raw(load("eventgrid/course_events")),
            {"key": GRID_KEY},
        ),
    ]


def window(requests: list[WebhookRequest]) -> ArchiveWindow:
    return ArchiveWindow(
        min(r.received_at for r in requests) - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1)
    )


def replay(app: Settings, span: ArchiveWindow, **options: Any) -> ArchiveReport:
    archive = EventArchive.from_settings(app)
    assert archive is not None
    queue = StorageCommandQueue.from_settings(app)
    return replay_archive(archive, queue, app, span, queue_name=app.content_queue_name, **options)


def test_the_replay_queues_what_the_intake_queued_without_the_sources_credentials(
    app: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = deliveries()
    accepted = sum(receive(app, request).body["accepted"] for request in requests)
    original = queued(app)
    assert len(original) == accepted == 6
    take_credentials(monkeypatch)

    again = replay_queue(app)
    report = replay(again, window(requests))
    assert report.counts() == {
        "read": 5,
        "derived": 5,
        "noCommands": 0,
        "duplicate": 0,
        "unknownSource": 0,
        "redacted": 0,
        "invalid": 0,
        "enqueued": 6,
    }
    replayed = queued(again)
    assert without_trace(replayed) == without_trace(original)
    assert {m["source"] for m in replayed} == {"demo", "moodle", "thinkific", "canvas", "grid"}
    assert sorted(c["messageId"] for c in report.view()["commands"]) == sorted(_ids(again))
    assert len(queued(app)) == 6, "the intake's queue is untouched"


def _ids(app: Settings) -> list[str]:
    return [m.id for m in peek_messages(app.storage_connection_string or "", app.content_queue_name)]


def test_a_dry_run_lists_the_commands_and_enqueues_nothing(app: Settings) -> None:
    requests = deliveries()[:3]
    for request in requests:
        receive(app, request)
    again = replay_queue(app)
    report = replay(again, window(requests), dry_run=True)
    assert queued(again) == []
    listed = report.view()["commands"]
    assert sorted(
        (c["source"], c["op"], c["externalId"], c["eventTime"], c["sourceEventId"]) for c in listed
    ) == sorted((m["source"], m["op"], m["externalId"], _iso(m["eventTime"]), m["sourceEventId"]) for m in queued(app))
    assert all("messageId" not in c for c in listed)


def _iso(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()


def test_a_redelivery_is_archived_as_a_duplicate_and_skipped(app: Settings) -> None:
    first = deliveries()[1]  # Moodle: its delivery id is the event's name, object and time
    receive(app, first)
    redelivery = replace(first, correlation_id="moodle-retry", received_at=datetime.now(UTC))
    assert receive(app, redelivery).body["duplicate"] is True
    again = replay_queue(app)
    report = replay(again, window([first]))
    assert (report.counts()["read"], report.counts()["duplicate"], report.counts()["enqueued"]) == (2, 1, 1)
    [command] = queued(again)
    assert command["correlationId"] == first.correlation_id


def test_a_source_no_longer_configured_is_counted_and_skipped(app: Settings) -> None:
    requests = deliveries()[:2]
    for request in requests:
        receive(app, request)
    today = replay_queue(app)
    today = today.model_copy(update={"sources_json": json.dumps({k: v for k, v in SOURCES.items() if k != "demo"})})
    report = replay(today, window(requests))
    assert (report.counts()["unknownSource"], report.counts()["enqueued"]) == (1, 1)
    assert [r["source"] for r in report.view()["refused"]] == ["demo"]
    assert [m["source"] for m in queued(today)] == ["moodle"]


def test_one_source_of_the_window_and_safe_to_run_twice(app: Settings) -> None:
    requests = deliveries()
    for request in requests:
        receive(app, request)
    again = replay_queue(app)
    for run in (1, 2):
        report = replay(again, replace(window(requests), source="grid"))
        assert report.counts()["read"] == 1, run
    # Twice the same two commands: the worker's ledger skips the second copy by its sourceEventId.
    assert sorted(m["externalId"] for m in queued(again)) == ["eg-101", "eg-101", "eg-102", "eg-102"]


def test_a_window_before_the_deliveries_reads_nothing(app: Settings) -> None:
    requests = deliveries()[:1]
    receive(app, requests[0])
    earlier = ArchiveWindow(requests[0].received_at - timedelta(hours=2), requests[0].received_at - timedelta(hours=1))
    report = replay(replay_queue(app), earlier)
    assert report.counts()["read"] == 0


def test_standard_webhooks_deliveries_keep_their_sent_time(app: Settings) -> None:
    """An event without ``time`` is dated by its ``webhook-timestamp``; the replay reads the same one."""
    body = event("com.lms.course.updated", content("no-time"))
    del body["time"]
    sent_at = int(time.time()) - 30
    raw_body = json.dumps(body).encode()
    headers = {
        **sign(raw_body, SECRET, webhook_id="msg_no_time", timestamp=sent_at),
        "content-type": "application/cloudevents+json",
    }
    request = intake.make_request("demo", headers, raw_body)
    receive(app, request)
    again = replay_queue(app)
    replay(again, window([request]))
    [original], [replayed] = queued(app), queued(again)
    assert replayed["eventTime"] == original["eventTime"]
    assert datetime.fromisoformat(replayed["eventTime"].replace("Z", "+00:00")).timestamp() == sent_at
