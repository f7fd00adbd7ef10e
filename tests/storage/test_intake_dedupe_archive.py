"""Dedupe and the raw event archive against real storage (Azurite): tables, queues and blobs."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from local.azurite import free_port
from shared import intake
from shared.archive import MASK, EventArchive, archived
from shared.dedupe import TableDeliveryDedupe
from shared.queue import QueueUnavailable, SentMessage, StorageCommandQueue
from shared.settings import Settings
from shared.sources import WebhookRequest
from tests import otel
from tests.conftest import SECRET
from tests.queues import peek_json
from tests.webhooks import content, event, signed


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    otel.install()


@pytest.fixture
def app(settings: Settings) -> Settings:
    """The test app with its own dedupe table and archive container."""
    suffix = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={"dedupe_table_name": f"deliveries{suffix}", "event_archive_container": f"archive-{suffix}"}
    )


def store(app: Settings) -> TableDeliveryDedupe:
    built = TableDeliveryDedupe.from_settings(app)
    assert built is not None
    return built


def kept(app: Settings) -> EventArchive:
    built = EventArchive.from_settings(app)
    assert built is not None
    return built


def queued(app: Settings) -> list[dict[str, Any]]:
    return peek_json(app.storage_connection_string or "", app.content_queue_name)


def receive(app: Settings, request: WebhookRequest, **ports: Any) -> intake.IntakeResponse:
    ports.setdefault("dedupe", lambda: store(app))
    ports.setdefault("archive", lambda: kept(app))
    return intake.receive(request, app, lambda: StorageCommandQueue.from_settings(app), **ports)


def delivery(external_id: str = "c-1", **kw: Any) -> WebhookRequest:
    raw, headers = signed(event("x.created", content(external_id)), SECRET, **kw)
    return intake.make_request("demo", headers, raw)


def dead_storage(app: Settings) -> Settings:
    """The same app, its storage on a port where nothing listens (refused at once, no waiting)."""
    port = free_port()
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    return app.model_copy(update={"storage_connection_string": connection})


def counter(name: str, **attributes: str) -> int:
    return otel.counter(name).get(tuple(sorted(attributes.items())), 0)


# -- dedupe ----------------------------------------------------------------------------------------


def test_a_redelivery_is_202_duplicate_and_queues_nothing(app: Settings) -> None:
    request = delivery()
    before = counter("vlsync.deliveries.duplicate", **{"vlsync.source": "demo"})
    first = receive(app, request)
    assert first.status == 202
    assert first.body["duplicate"] is False

    again = receive(app, replace(request, correlation_id="retry-1"))
    assert again.status == 202
    assert again.body["duplicate"] is True
    assert again.body["accepted"] == 0
    assert again.body["messageIds"] == first.body["messageIds"]
    assert again.body["originalCorrelationId"] == first.body["correlationId"]
    assert [m["externalId"] for m in queued(app)] == ["c-1"], "the redelivery queued nothing"
    assert counter("vlsync.deliveries.duplicate", **{"vlsync.source": "demo"}) == before + 1


def test_the_row_is_keyed_by_source_and_a_digest(app: Settings) -> None:
    response = receive(app, delivery())
    service = TableServiceClient.from_connection_string(app.storage_connection_string or "")
    [row] = list(service.get_table_client(app.dedupe_table_name).list_entities())
    assert row["PartitionKey"] == "demo"
    assert len(row["RowKey"]) == 64
    assert json.loads(row["messageIds"]) == response.body["messageIds"]
    assert row["messageCount"] == 1
    assert row["correlationId"] == response.body["correlationId"]


def test_an_entry_older_than_the_horizon_reads_as_absent(app: Settings) -> None:
    short = app.model_copy(update={"dedupe_horizon_hours": 1})
    request = delivery()
    assert receive(short, request).body["duplicate"] is False
    within = replace(request, received_at=request.received_at + timedelta(minutes=59))
    assert receive(short, within).body["duplicate"] is True
    # The horizon counts from the last redelivery (59 min): 61 min after the first is still within it.
    refreshed = replace(request, received_at=request.received_at + timedelta(minutes=61))
    assert receive(short, refreshed).body["duplicate"] is True
    expired = replace(request, received_at=request.received_at + timedelta(hours=3))
    assert receive(short, expired).body["duplicate"] is False
    assert len(queued(app)) == 2


def test_purge_deletes_only_expired_rows(app: Settings) -> None:
    dedupe = store(app)
    receive(app, delivery("c-1"))
    assert dedupe.purge(datetime.now(UTC)) == 0
    assert dedupe.purge(datetime.now(UTC) + timedelta(hours=73)) == 1
    assert receive(app, delivery("c-1")).body["duplicate"] is False, "a new delivery id"


def test_purge_streams_many_rows_over_partitions_in_transactions(app: Settings) -> None:
    """More rows than one transaction holds, in two partitions, one of them deleted behind purge's back."""
    from azure.data.tables import TableTransactionError

    from shared.dedupe import PURGE_CHUNK, SeenDelivery

    dedupe = store(app)
    old = datetime.now(UTC) - timedelta(hours=80)
    row = SeenDelivery(correlation_id="c", message_ids=("m",), accepted_at=old, seen_at=old)
    for index in range(PURGE_CHUNK + 30):
        dedupe.remember("lms-a", f"a{index:04d}", row)
    for index in range(12):
        dedupe.remember("lms-b", f"b{index:04d}", row)
    fresh = replace(row, seen_at=datetime.now(UTC), accepted_at=datetime.now(UTC))
    dedupe.remember("lms-b", "fresh", fresh)

    real_submit = dedupe._table.submit_transaction
    calls: list[int] = []

    def racing_submit(operations: Any, **kwargs: Any) -> Any:
        calls.append(len(operations))
        if len(calls) == 1:
            # Another purge deleted one row of this chunk first. Azure then fails the whole
            # transaction (ResourceNotFound); Azurite would accept it, so the failure is Azure's, raised here.
            dedupe._table.delete_entity("lms-a", "a0000")
            raise TableTransactionError(message="0:The specified resource does not exist.")
        return real_submit(operations, **kwargs)

    dedupe._table.submit_transaction = racing_submit  # type: ignore[method-assign]
    assert dedupe.purge() == PURGE_CHUNK + 30 + 12  # the failed chunk one by one, the missing row included
    assert calls == [PURGE_CHUNK, 30, 12]
    assert all(size <= PURGE_CHUNK for size in calls)
    left = [e["RowKey"] for e in dedupe._table.list_entities(select=["RowKey"])]
    assert left == ["fresh"]


def test_a_failed_enqueue_does_not_remember_the_delivery(app: Settings) -> None:
    class DownOnce:
        def send_all(self, texts: Any) -> list[SentMessage]:
            raise QueueUnavailable("queue storage is down")

        def withdraw(self, sent: Any) -> int:
            raise AssertionError("nothing was sent")

    request = delivery()
    failed = intake.receive(request, app, DownOnce, dedupe=lambda: store(app), archive=lambda: kept(app))
    assert failed.status == 503
    assert store(app).seen("demo", _key(app, request), request.received_at) is None
    assert (
        list(kept(app).list(request.received_at - timedelta(hours=1), request.received_at + timedelta(hours=1))) == []
    )

    retry = receive(app, request)
    assert retry.status == 202
    assert retry.body["duplicate"] is False
    assert len(queued(app)) == 1


def _key(app: Settings, request: WebhookRequest) -> str:
    return intake.decide_delivery(request, app).delivery_key


def test_a_dedupe_table_outage_accepts_the_delivery(app: Settings) -> None:
    down = dead_storage(app)
    request = delivery()
    before = counter("vlsync.dedupe.degraded", **{"vlsync.source": "demo", "vlsync.step": "claim"})
    for _ in range(2):
        response = receive(app, request, dedupe=lambda: store(down))
        assert response.status == 202
        assert response.body["duplicate"] is False
    assert len(queued(app)) == 2, "without its table the redelivery is queued again; the ledger skips it"
    assert counter("vlsync.dedupe.degraded", **{"vlsync.source": "demo", "vlsync.step": "claim"}) == before + 2


def test_dedupe_off_is_no_table_at_all(app: Settings) -> None:
    assert TableDeliveryDedupe.from_settings(app.model_copy(update={"dedupe_horizon_hours": 0})) is None
    assert EventArchive.from_settings(app.model_copy(update={"event_archive_retention_days": 0})) is None


def test_a_byte_identical_event_grid_redelivery_is_a_duplicate(app: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Event Grid sends no delivery id: the body (the same events, the same ids) is the key."""
    monkeypatch.setenv("GRID_KEY", "grid-key-0123456789")
    grid = app.model_copy(
        update={
            "sources_json": json.dumps(
                {"grid": {"kind": "eventgrid", "registrationId": "reg-g", "secretSetting": "GRID_KEY"}}
            )
        }
    )

    def post(external_id: str) -> intake.IntakeResponse:
        body = [
            {
                "id": f"evt-{external_id}",
                "topic": "/lms",
                "subject": external_id,
                "eventType": "com.lms.course.created",
                "eventTime": "2026-01-15T10:00:00Z",
                "dataVersion": "1",
                "data": content(external_id),
            }
        ]
        raw = json.dumps(body).encode()
        request = intake.make_request("grid", {"content-type": "application/json"}, raw, {"key": "grid-key-0123456789"})
        return receive(grid, request)

    assert post("g-1").body["duplicate"] is False
    assert post("g-1").body["duplicate"] is True
    assert post("g-2").body["duplicate"] is False
    assert sorted(m["externalId"] for m in queued(grid)) == ["g-1", "g-2"]


# -- the archive -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flush_seconds", [0.0, 1.0], ids=["one-blob-per-delivery", "segments"])
def test_the_archived_blob_holds_the_delivery_without_its_secrets(app: Settings, flush_seconds: float) -> None:
    app = app.model_copy(update={"event_archive_flush_seconds": flush_seconds})
    raw, headers = signed(
        event("x.created", content("c-9")), SECRET, extra_headers={"x-correlation-id": "corr-archive-1"}
    )
    signature = headers["webhook-signature"]
    secret_headers = {
        "Authorization": "Bearer top-secret-bearer-token",
        "x-functions-key": "top-secret-function-key",
        "Cookie": "session=top-secret-cookie",
        "x-original-url": "/api/webhooks/demo?code=top-secret-code",
    }
    request = intake.make_request("demo", {**headers, **secret_headers}, raw, {"code": "top-secret-code", "a": "1"})
    response = receive(app, request)
    assert response.status == 202
    at = request.received_at
    # Segments: list() first writes what this process buffered for the container (the intake's archive).
    [listed] = kept(app).list(at, at + timedelta(microseconds=1))
    assert listed.correlation_id == "corr-archive-1"

    service = BlobServiceClient.from_connection_string(app.storage_connection_string or "")
    container = service.get_container_client(app.event_archive_container)
    [blob] = list(container.list_blobs())
    stem = f"demo/{at:%Y/%m/%d/%H}/{at:%Y%m%dT%H%M%S%f}Z-"
    if flush_seconds == 0:
        assert blob.name == f"{stem}corr-archive-1.json"
    else:
        assert re.fullmatch(re.escape(stem) + r"[0-9a-f]{32}\.ndjson", blob.name), blob.name
    text = container.download_blob(blob.name).readall().decode()
    assert text.count("\n") == (flush_seconds > 0), "a segment: one line per delivery"
    for value in (
        signature,
        "top-secret-bearer-token",
        "top-secret-function-key",
        "top-secret-cookie",
        "top-secret-code",
    ):
        assert value not in text, value
    document = json.loads(text)
    assert document["v"] == 1
    assert document["source"] == "demo"
    assert document["receivedAt"] == at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert document["correlationId"] == "corr-archive-1"
    assert document["messageIds"] == response.body["messageIds"]
    assert document["duplicate"] is False
    assert document["body"] == raw.decode()
    assert document["bodyEncoding"] == "utf-8"
    assert document["query"] == {"code": MASK, "a": "1"}
    assert document["headers"]["authorization"] == MASK
    assert document["headers"]["webhook-signature"] == MASK
    assert document["headers"]["webhook-id"] == headers["webhook-id"]
    assert all(name == name.lower() for name in document["headers"])


@pytest.mark.parametrize("flush_seconds", [0.0, 1.0], ids=["one-blob-per-delivery", "segments"])
def test_list_reads_a_window_by_source_and_hour(app: Settings, flush_seconds: float) -> None:
    archive = kept(app.model_copy(update={"event_archive_flush_seconds": flush_seconds}))
    base = datetime(2026, 2, 1, 22, 59, 59, tzinfo=UTC)
    for source, minutes in (("demo", 0), ("demo", 1), ("other", 2), ("demo", 120)):
        request = intake.make_request(source, {"x-correlation-id": f"{source}-{minutes}"}, b"{}")
        archive.put(archived(replace(request, received_at=base + timedelta(minutes=minutes)), None, None, []))

    window = list(archive.list(base, base + timedelta(minutes=60)))
    assert [(d.source, d.correlation_id) for d in window] == [
        ("demo", "demo-0"),
        ("demo", "demo-1"),
        ("other", "other-2"),
    ]
    assert [d.correlation_id for d in archive.list(base, base + timedelta(hours=3), source="demo")] == [
        "demo-0",
        "demo-1",
        "demo-120",
    ]
    assert list(archive.list(base + timedelta(seconds=1), base + timedelta(seconds=30))) == []
    assert [d.correlation_id for d in archive.list(base + timedelta(minutes=1), base + timedelta(minutes=2))] == [
        "demo-1"
    ]


def test_a_duplicate_is_archived_too_marked_as_one(app: Settings) -> None:
    request = delivery()
    first = receive(app, request)
    receive(app, replace(request, correlation_id="retry-2"))
    window = list(kept(app).list(request.received_at - timedelta(hours=1), request.received_at + timedelta(hours=1)))
    assert [(d.correlation_id, d.duplicate, d.message_ids) for d in window] == [
        (request.correlation_id, False, first.body["messageIds"]),
        ("retry-2", True, first.body["messageIds"]),
    ]


def test_an_archive_outage_still_answers_202(app: Settings) -> None:
    down = dead_storage(app.model_copy(update={"event_archive_flush_seconds": 0}))  # written while the sender waits
    before = counter("vlsync.archive.failed", **{"vlsync.source": "demo"})
    response = receive(app, delivery(), archive=lambda: kept(down))
    assert response.status == 202
    assert [m["externalId"] for m in queued(app)] == ["c-1"]
    assert counter("vlsync.archive.failed", **{"vlsync.source": "demo"}) == before + 1


def test_an_archive_outage_in_segments_is_counted_when_the_segment_fails(app: Settings) -> None:
    """The default: the sender does not wait for the archive; the background write fails (after the
    blob client's retry) and counts the delivery."""
    down = dead_storage(app)
    assert down.event_archive_flush_seconds > 0
    before = counter("vlsync.archive.failed", **{"vlsync.source": "demo"})
    response = receive(app, delivery(), archive=lambda: kept(down))
    assert response.status == 202
    assert [m["externalId"] for m in queued(app)] == ["c-1"]
    deadline = time.monotonic() + 30  # flush_seconds, then a refused connection and one retry
    while counter("vlsync.archive.failed", **{"vlsync.source": "demo"}) == before:
        assert time.monotonic() < deadline, "the failed segment was never counted"
        time.sleep(0.05)
    assert counter("vlsync.archive.failed", **{"vlsync.source": "demo"}) == before + 1
