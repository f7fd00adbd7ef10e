"""Dedupe keys, the intake's order around its dedupe and archive ports, and what the archive keeps.

No storage: the ports are in-memory fakes here (tests/storage runs them against Azurite).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import archive, dedupe, intake
from shared.archive import MASK, ArchivedDelivery
from shared.dedupe import SeenDelivery, delivery_key
from shared.problems import Problem
from shared.queue import QueueUnavailable, SentMessage
from shared.settings import Settings, parse_sources
from shared.signatures import sign
from shared.sources import Delivery
from tests.conftest import SECRET
from tests.webhooks import content, event, signed

SOURCES = {
    "demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "PURE_DEDUPE_SECRET"},
    "grid": {
        "kind": "eventgrid",
        "registrationId": "reg-2",
        "secretSetting": "PURE_GRID_KEY",
        "auth": {"scheme": "header-key", "name": "x-shared"},
    },
    "moodle": {
        "kind": "moodle",
        "registrationId": "reg-3",
        "secretSetting": "PURE_MOODLE_TOKEN",
        "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
        "defaultLanguageTag": "en-us",
    },
    "edx": {"kind": "openedx", "registrationId": "reg-4", "secretSetting": "PURE_EDX_KEY"},
}
GRID_KEY = "grid-key-0123456789"
MOODLE_TOKEN = "moodletoken0123456789abcdef"
EDX_KEY = "edx-query-key-0123456789"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PURE_DEDUPE_SECRET", SECRET)
    monkeypatch.setenv("PURE_GRID_KEY", GRID_KEY)
    monkeypatch.setenv("PURE_MOODLE_TOKEN", MOODLE_TOKEN)
    monkeypatch.setenv("PURE_EDX_KEY", EDX_KEY)
    return Settings(sources_json=json.dumps(SOURCES), tenant_id="00000000-0000-0000-0000-00000000a11c")


class FakeQueue:
    """Messages by id; ``sent`` is what stays queued (withdrawn messages leave it)."""

    def __init__(self, fail: int = 0, delay: float = 0.0, keep: bool = False) -> None:
        self.messages: dict[str, str] = {}
        self.fail = fail
        self.delay = delay
        self.keep = keep  # a worker received every message at once: a withdrawal fails
        self.withdrawn: list[str] = []
        self._next = 0

    @property
    def sent(self) -> list[str]:
        return list(self.messages.values())

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]:
        time.sleep(self.delay)  # only the concurrency test sets it: the second delivery must arrive meanwhile
        if self.fail:
            self.fail -= 1
            raise QueueUnavailable("storage is down")
        sent = []
        for text in texts:
            message_id, self._next = f"m-{self._next}", self._next + 1
            self.messages[message_id] = text
            sent.append(SentMessage(message_id, f"receipt-{message_id}"))
        return sent

    def withdraw(self, sent: Sequence[SentMessage]) -> int:
        if self.keep:
            return 0
        for message in sent:
            assert message.pop_receipt == f"receipt-{message.message_id}"
            del self.messages[message.message_id]
            self.withdrawn.append(message.message_id)
        return len(sent)

    def park(self, text: str) -> str:
        raise AssertionError("the intake never parks")

    hold = park

    def defer(self, text: str, delay_seconds: float) -> str:
        raise AssertionError("the intake never defers")


class MemoryDedupe:
    def __init__(self, horizon: timedelta = timedelta(hours=72)) -> None:
        self.rows: dict[tuple[str, str], SeenDelivery] = {}
        self.horizon = horizon
        self.calls: list[str] = []

    def claim(self, source: str, key: str, delivery: SeenDelivery) -> SeenDelivery | None:
        self.calls.append("claim")
        row = self.rows.get((source, key))
        if row is not None and delivery.seen_at - row.seen_at <= self.horizon:
            self.rows[(source, key)] = replace(row, seen_at=delivery.seen_at)
            return replace(row, seen_at=delivery.seen_at)
        self.rows[(source, key)] = delivery
        return None


class BrokenDedupe:
    def claim(self, source: str, key: str, delivery: SeenDelivery) -> SeenDelivery | None:
        raise ConnectionError("table storage unreachable")


class MemoryArchive:
    def __init__(self) -> None:
        self.records: list[ArchivedDelivery] = []

    def put(self, delivery: ArchivedDelivery) -> str:
        self.records.append(delivery)
        return delivery.blob_name


class BrokenArchive:
    def put(self, delivery: ArchivedDelivery) -> str:
        raise OSError("blob storage unreachable")


def receive(
    settings: Settings,
    request: Any,
    queue: FakeQueue,
    store: Any = None,
    kept: Any = None,
) -> intake.IntakeResponse:
    dedupe_factory: Callable[[], Any] | None = (lambda: store) if store is not None else None
    archive_factory: Callable[[], Any] | None = (lambda: kept) if kept is not None else None
    return intake.receive(request, settings, lambda: queue, dedupe=dedupe_factory, archive=archive_factory)


def delivery(body: Any = None, **kw: Any) -> tuple[bytes, dict[str, str]]:
    return signed(body if body is not None else event("x.created", content("c-1")), SECRET, **kw)


# -- the key -------------------------------------------------------------------------------------


def test_the_key_is_the_delivery_id_and_the_body() -> None:
    raw, headers = delivery()
    request = intake.make_request("demo", headers, raw)
    key = delivery_key(request, Delivery("msg_1", None))
    assert key == delivery_key(replace(request, correlation_id="other"), Delivery("msg_1", None))
    assert key != delivery_key(request, Delivery("msg_2", None)), "another id is another delivery"
    assert key != delivery_key(replace(request, body=raw + b" "), Delivery("msg_1", None)), "same id, other bytes"
    assert key != delivery_key(request, Delivery("", None))
    assert len(key) == 64
    assert int(key, 16) >= 0


# -- the intake's order ----------------------------------------------------------------------------


def test_a_redelivery_is_202_duplicate_with_the_original_ids_and_queues_nothing(settings: Settings) -> None:
    queue, store = FakeQueue(), MemoryDedupe()
    raw, headers = delivery(event("x.created", content("c-1")))
    first = receive(settings, intake.make_request("demo", headers, raw), queue, store)
    assert first.status == 202
    assert first.body["duplicate"] is False
    assert len(queue.sent) == 1

    again = receive(settings, intake.make_request("demo", headers, raw), queue, store)
    assert again.status == 202
    assert again.body["duplicate"] is True
    assert again.body["accepted"] == 0
    assert again.body["messageIds"] == first.body["messageIds"]
    assert again.body["originalCorrelationId"] == first.body["correlationId"]
    assert len(queue.sent) == 1, "a duplicate keeps nothing queued"
    assert queue.withdrawn == ["m-1"], "its commands were queued, then withdrawn"
    assert store.calls == ["claim", "claim"], "one dedupe call per delivery"


def test_a_duplicate_whose_withdrawal_fails_is_still_answered_as_one(settings: Settings) -> None:
    """A worker received the copy before the withdrawal: it stays, and the worker's ledger skips it."""
    queue, store = FakeQueue(keep=True), MemoryDedupe()
    raw, headers = delivery()
    receive(settings, intake.make_request("demo", headers, raw), queue, store)
    again = receive(settings, intake.make_request("demo", headers, raw), queue, store)
    assert again.body["duplicate"] is True
    assert again.body["messageIds"] == ["m-0"]
    assert len(queue.sent) == 2


def test_a_redelivery_moves_the_horizon(settings: Settings) -> None:
    queue, store = FakeQueue(), MemoryDedupe(horizon=timedelta(hours=72))
    raw, headers = delivery()
    request = intake.make_request("demo", headers, raw)
    receive(settings, request, queue, store)
    for hours in (60, 120):  # 120 h after the first, but 60 h after the last redelivery
        later = replace(request, received_at=request.received_at + timedelta(hours=hours))
        assert receive(settings, later, queue, store).body["duplicate"] is True
    assert len(queue.sent) == 1


def test_the_same_id_with_another_body_is_not_a_duplicate(settings: Settings) -> None:
    queue, store = FakeQueue(), MemoryDedupe()
    raw, headers = delivery(event("x.created", content("c-1")))
    receive(settings, intake.make_request("demo", headers, raw), queue, store)
    other = json.dumps(event("x.created", content("c-2"))).encode()
    same_id = sign(other, SECRET, webhook_id=headers["webhook-id"], timestamp=int(time.time()))
    response = receive(settings, intake.make_request("demo", {**headers, **same_id}, other), queue, store)
    assert response.body["duplicate"] is False
    assert len(queue.sent) == 2


def test_the_id_is_remembered_only_after_the_enqueue_succeeded(settings: Settings) -> None:
    queue, store = FakeQueue(fail=1), MemoryDedupe()
    raw, headers = delivery()
    failed = receive(settings, intake.make_request("demo", headers, raw), queue, store)
    assert failed.status == 503
    assert store.rows == {}
    assert store.calls == [], "the enqueue failed first: nothing remembered"

    retry = receive(settings, intake.make_request("demo", headers, raw), queue, store)
    assert retry.status == 202
    assert retry.body["duplicate"] is False
    assert len(queue.sent) == 1
    assert store.calls == ["claim"]


def test_a_dedupe_outage_accepts_the_delivery(settings: Settings) -> None:
    queue = FakeQueue()
    raw, headers = delivery()
    for _ in range(2):
        response = receive(settings, intake.make_request("demo", headers, raw), queue, BrokenDedupe())
        assert response.status == 202
        assert response.body["duplicate"] is False
    assert len(queue.sent) == 2, "without the table a redelivery is queued again (the ledger skips it)"


def test_a_dedupe_port_that_cannot_be_built_accepts_the_delivery(settings: Settings) -> None:
    def unconfigured() -> Any:
        raise ValueError("no table connection")

    queue = FakeQueue()
    raw, headers = delivery()
    response = intake.receive(intake.make_request("demo", headers, raw), settings, lambda: queue, dedupe=unconfigured)
    assert response.status == 202
    assert len(queue.sent) == 1


def test_an_expired_entry_reads_as_absent(settings: Settings) -> None:
    queue, store = FakeQueue(), MemoryDedupe(horizon=timedelta(hours=72))
    raw, headers = delivery()
    request = intake.make_request("demo", headers, raw)
    receive(settings, request, queue, store)
    later = replace(request, received_at=request.received_at + timedelta(hours=73))
    assert receive(settings, later, queue, store).body["duplicate"] is False
    assert len(queue.sent) == 2


def test_rejected_deliveries_touch_neither_port(settings: Settings) -> None:
    queue, store, kept = FakeQueue(), MemoryDedupe(), MemoryArchive()
    raw, headers = delivery()
    response = receive(settings, intake.make_request("demo", headers, raw + b" "), queue, store, kept)
    assert response.status == 401
    assert store.calls == []
    assert kept.records == []


def test_two_identical_deliveries_at_once_on_one_instance_queue_once(settings: Settings) -> None:
    queue, store = FakeQueue(delay=0.3), MemoryDedupe()
    raw, headers = delivery()
    responses: list[intake.IntakeResponse] = []

    def post() -> None:
        responses.append(receive(settings, intake.make_request("demo", headers, raw), queue, store))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(r.body["duplicate"] for r in responses) == [False, True]
    assert len(queue.sent) == 1
    assert len(dedupe.IN_FLIGHT) == 0, "no lock is left behind"


def test_deliveries_without_commands_skip_dedupe(settings: Settings) -> None:
    """A Moodle event that is not a course event is accepted with nothing to queue: nothing to guard."""
    queue, store = FakeQueue(), MemoryDedupe()
    body = json.dumps({"eventname": "\\core\\event\\user_created", "token": MOODLE_TOKEN}).encode()
    response = receive(
        settings, intake.make_request("moodle", {"content-type": "application/json"}, body), queue, store
    )
    assert response.status == 202
    assert response.body["accepted"] == 0
    assert store.calls == []


# -- the archive -----------------------------------------------------------------------------------


def test_every_accepted_delivery_is_archived_with_its_ids_duplicates_marked(settings: Settings) -> None:
    queue, store, kept = FakeQueue(), MemoryDedupe(), MemoryArchive()
    raw, headers = delivery(extra_headers={"x-correlation-id": "corr-1"})
    first = receive(settings, intake.make_request("demo", headers, raw), queue, store, kept)
    receive(settings, intake.make_request("demo", headers, raw), queue, store, kept)
    original, duplicate = kept.records
    assert original.message_ids == first.body["messageIds"]
    assert original.duplicate is False
    assert duplicate.duplicate is True
    assert duplicate.message_ids == first.body["messageIds"]
    assert original.raw_body() == raw
    assert original.body_redacted is False
    assert original.correlation_id == "corr-1"


def test_an_archive_outage_still_accepts(settings: Settings) -> None:
    queue = FakeQueue()
    raw, headers = delivery()
    response = receive(settings, intake.make_request("demo", headers, raw), queue, kept=BrokenArchive())
    assert response.status == 202
    assert len(queue.sent) == 1


def test_the_archive_drops_every_credential(settings: Settings) -> None:
    """Every secret-bearing header, query parameter and body member; the source's own key anywhere."""
    raw, headers = delivery()
    signature = headers["webhook-signature"]
    secrets = {
        "authorization": "Bearer eyJhbGciOiJub25lIn0.secret-bearer",
        "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
        "cookie": "session=cookie-secret",
        "x-functions-key": "function-key-secret",
        "x-ms-client-principal": "principal-secret",
        "aeg-sas-key": "sas-key-secret",
        "aeg-sas-token": "sas-token-secret",
        "x-thinkific-hmac-sha256": "f" * 64,
        "x-hub-signature-256": "sha256=hub-secret",
        "x-api-key": "api-key-secret",
        "x-original-url": "/api/webhooks/demo?code=url-code-secret&sig=url-sig-secret&keep=1",
    }
    query = {"code": "query-code-secret", "api_key": "query-api-secret", "keep": "yes"}
    request = intake.make_request("demo", {**headers, **secrets}, raw, query)
    record = archive.archived(request, parse_sources(json.dumps(SOURCES))["demo"], SECRET, ["m-1"])
    text = record.to_json().decode()
    for value in [signature, *secrets.values(), "query-code-secret", "query-api-secret"]:
        assert value not in text, value
    for value in ("url-code-secret", "url-sig-secret", "cookie-secret", "eyJhbGciOiJub25lIn0"):
        assert value not in text
    assert record.headers["webhook-signature"] == MASK
    assert record.headers["authorization"] == MASK
    assert record.headers["x-original-url"] == "/api/webhooks/demo?code=[redacted]&sig=[redacted]&keep=1"
    assert record.query == {"code": MASK, "api_key": MASK, "keep": "yes"}
    # What a replay needs stays: the envelope's ids, the content type, the body itself.
    assert record.headers["webhook-id"] == headers["webhook-id"]
    assert record.headers["content-type"] == "application/cloudevents+json"
    assert record.raw_body() == raw


def test_the_archive_drops_the_sources_own_key_header_and_parameter(settings: Settings) -> None:
    grid = parse_sources(json.dumps(SOURCES))["grid"]
    body = b'[{"id": "e-1", "eventType": "x.created", "data": {"note": "grid-key-0123456789 in data"}}]'
    request = intake.make_request("grid", {"x-shared": GRID_KEY, "content-type": "application/json"}, body)
    record = archive.archived(request, grid, GRID_KEY, [])
    assert GRID_KEY not in record.to_json().decode()
    assert record.headers["x-shared"] == MASK  # not a credential by its name: by the source's auth
    assert record.body_redacted is True

    edx = parse_sources(json.dumps(SOURCES))["edx"]  # openedx: the key is ?key= by default
    request = intake.make_request("edx", {"content-type": "application/json"}, b"{}", {"key": EDX_KEY, "k": "v"})
    record = archive.archived(request, edx, EDX_KEY, [])
    assert record.query == {"key": MASK, "k": "v"}


def test_the_archive_masks_moodles_body_token(settings: Settings) -> None:
    moodle = parse_sources(json.dumps(SOURCES))["moodle"]
    body = json.dumps({"eventname": "\\core\\event\\course_updated", "objectid": "7", "token": MOODLE_TOKEN}).encode()
    request = intake.make_request("moodle", {"content-type": "application/json"}, body)
    record = archive.archived(request, moodle, MOODLE_TOKEN, ["m-1"])
    assert MOODLE_TOKEN not in record.to_json().decode()
    assert json.loads(record.body) == {"eventname": "\\core\\event\\course_updated", "objectid": "7", "token": MASK}
    assert record.body_redacted is True
    # A token shorter than the scrub's minimum is still masked by its member name.
    record = archive.archived(request, moodle, None, [])
    assert MOODLE_TOKEN not in record.to_json().decode()


def test_a_body_that_is_not_utf8_is_archived_as_base64() -> None:
    body = b"\xff\xfe not utf-8"
    request = intake.make_request("demo", {"content-type": "application/json"}, body)
    record = archive.archived(request, None, None, [])
    assert record.body_encoding == "base64"
    assert record.body == base64.b64encode(body).decode()
    assert ArchivedDelivery.model_validate_json(record.to_json()).raw_body() == body


def test_the_blob_name_and_the_document() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    request = replace(intake.make_request("demo", {"x-correlation-id": "c-9"}, b"{}"), received_at=at)
    record = archive.archived(request, None, None, ["m-1", "m-2"])
    assert record.blob_name == "demo/2026/03/04/05/20260304T050607000089Z-c-9.json"
    document = json.loads(record.to_json())
    assert document == {
        "v": 1,
        "source": "demo",
        "receivedAt": "2026-03-04T05:06:07.000089Z",
        "correlationId": "c-9",
        "headers": {"x-correlation-id": "c-9"},
        "query": {},
        "body": "{}",
        "bodyEncoding": "utf-8",
        "bodyRedacted": False,
        "messageIds": ["m-1", "m-2"],
        "duplicate": False,
    }
    back = ArchivedDelivery.model_validate(document).to_request()
    assert (back.source_name, back.received_at, back.body, back.correlation_id) == ("demo", at, b"{}", "c-9")


def test_an_archived_delivery_is_decided_again_by_the_intake(settings: Settings) -> None:
    """What `vlsync replay archive` will do: the archived request gives the same commands."""
    raw, headers = delivery(event("x.created", content("c-7")))
    request = intake.make_request("demo", headers, raw)
    record = archive.archived(request, parse_sources(json.dumps(SOURCES))["demo"], SECRET, ["m-1"])
    with pytest.raises(Problem) as refused:  # the signature is not archived: a replay must trust the archive
        intake.decide(record.to_request(), settings)
    assert refused.value.kind.slug == "signature-invalid"
    assert [c.external_id for c in intake.decide(request, settings)] == ["c-7"]
