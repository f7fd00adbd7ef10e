"""The raw event archive in segments (EVENT_ARCHIVE_FLUSH_SECONDS > 0) against Azurite: one NDJSON blob
per source and hour, written when due by time or by size, read by ``list`` together with the
per-delivery ``.json`` blobs; failures, the buffer's cap, many threads, ``close`` and the exit flush."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared import archive
from shared.archive import ArchivedDelivery, ArchiveUnreadable, EventArchive
from shared.settings import Settings
from tests import otel
from tests.conftest import REPO

T = TypeVar("T")
T0 = datetime(2026, 2, 1, 10, 59, 58, tzinfo=UTC)
SEGMENT_NAME = re.compile(r"^(?P<hour>[a-z-]+/\d{4}/\d\d/\d\d/\d\d)/(?P<stamp>\d{8}T\d{12}Z)-[0-9a-f]{32}\.ndjson$")


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    otel.install()


@pytest.fixture
def container(settings: Settings) -> ContainerClient:
    """A container of its own (not created: the archive creates it on its first write)."""
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string or "")
    return service.get_container_client(f"segments-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Exceptions that escaped a thread (the flusher must never let one out)."""
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    return escaped


class Clock:
    """An injected monotonic clock: time passes only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(source: str, at: datetime, correlation: str, body: str = "{}") -> ArchivedDelivery:
    return ArchivedDelivery(source=source, receivedAt=at, correlationId=correlation, body=body, messageIds=["m-1"])


def blob_names(container: ContainerClient) -> list[str]:
    return sorted(blob.name for blob in container.list_blobs()) if container.exists() else []


def segments(container: ContainerClient) -> dict[str, list[dict[str, Any]]]:
    """Every segment blob: its name and its lines' documents."""
    out = {}
    for name in blob_names(container):
        if name.endswith(".ndjson"):
            text = container.download_blob(name).readall().decode()
            assert text.endswith("\n")
            out[name] = [json.loads(line) for line in text.splitlines()]
    return out


def parts(name: str) -> dict[str, str]:
    """A segment name's hour prefix and time stamp."""
    match = SEGMENT_NAME.fullmatch(name)
    assert match, name
    return match.groupdict()


def failed(source: str) -> int:
    return otel.counter("vlsync.archive.failed").get((("vlsync.source", source),), 0)


def eventually(check: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll until the check gives a true value (the background thread's write); fails after timeout."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting for the archive's background write"
        time.sleep(0.02)
    return value


def ids(deliveries: Iterator[ArchivedDelivery]) -> list[str]:
    return [delivery.correlation_id for delivery in deliveries]


def test_segments_are_one_blob_per_source_and_hour_listed_in_order_with_per_delivery_blobs(
    container: ContainerClient,
) -> None:
    segmented = EventArchive(container, flush_seconds=1, monotonic=Clock(), background=False)
    legacy = EventArchive(container)  # flush_seconds 0: one .json blob per delivery, as before
    # Put out of receipt order, across two hours (10:59 and 11:00) and two sources.
    puts = [
        record("demo", T0 + timedelta(seconds=1.5), "demo-c"),
        record("demo", T0, "demo-a"),
        record("demo", T0 + timedelta(seconds=3), "demo-e"),
        record("other", T0 - timedelta(minutes=29), "other-a"),
    ]
    for delivery in puts:
        assert segmented.put(delivery) is None
    assert blob_names(container) == [], "put only buffers"
    legacy_names = [
        legacy.put(record("demo", T0 + timedelta(seconds=1), "demo-b")),
        legacy.put(record("other", T0 + timedelta(minutes=15), "other-b")),
    ]
    assert segmented.flush() == 4

    written = segments(container)
    assert len(written) == 3
    by_hour = {parts(name)["hour"]: name for name in written}
    assert set(by_hour) == {"demo/2026/02/01/10", "demo/2026/02/01/11", "other/2026/02/01/10"}
    ten = by_hour["demo/2026/02/01/10"]
    assert parts(ten)["stamp"] == "20260201T105958000000Z", "named by its earliest record"
    assert [line["correlationId"] for line in written[ten]] == ["demo-a", "demo-c"], "receipt order"
    assert written[ten][0] == json.loads(puts[1].to_json()), "each line is the per-delivery blob's document"
    assert [line["correlationId"] for line in written[by_hour["demo/2026/02/01/11"]]] == ["demo-e"]
    assert set(blob_names(container)) == set(written) | {name for name in legacy_names if name}

    everything = segmented.list(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert ids(everything) == ["other-a", "demo-a", "demo-b", "demo-c", "demo-e", "other-b"]
    assert ids(legacy.list(T0 - timedelta(hours=1), T0 + timedelta(hours=1), source="demo")) == [
        "demo-a",
        "demo-b",
        "demo-c",
        "demo-e",
    ]
    # The 10:00 segment starts before this window and holds one record inside it: filtered per record.
    assert ids(legacy.list(T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))) == ["demo-b", "demo-c"]
    assert ids(legacy.list(T0 + timedelta(seconds=1.5), T0 + timedelta(seconds=1.5001))) == ["demo-c"]
    assert ids(legacy.list(T0 + timedelta(seconds=4), T0 + timedelta(minutes=10))) == []


def test_segments_whose_times_interleave_are_merged_in_receipt_order(container: ContainerClient) -> None:
    """Two hosts each write a segment of the same source and hour, their records interleaved."""
    hosts = [EventArchive(container, flush_seconds=1, monotonic=Clock(), background=False) for _ in range(2)]
    for second in range(6):
        hosts[second % 2].put(record("demo", T0 - timedelta(minutes=10) + timedelta(seconds=second), f"r{second}"))
    assert [host.flush() for host in hosts] == [3, 3]
    assert len(segments(container)) == 2
    assert ids(hosts[0].list(T0 - timedelta(hours=1), T0)) == [f"r{n}" for n in range(6)]


def test_the_buffer_is_written_flush_seconds_after_its_first_record(container: ContainerClient) -> None:
    clock = Clock()
    segmented = EventArchive(container, flush_seconds=1.0, monotonic=clock, background=False)
    segmented.put(record("demo", T0, "first"))
    clock.now += 0.5
    segmented.put(record("demo", T0 + timedelta(seconds=1), "second"))
    clock.now += 0.499
    assert segmented.flush_if_due() == 0
    assert blob_names(container) == []
    clock.now += 0.001  # one second after the first record, half a second after the second
    assert segmented.flush_if_due() == 2
    assert segmented.flush_if_due() == 0, "nothing left"
    assert len(segments(container)) == 1

    segmented.put(record("demo", T0 + timedelta(seconds=2), "third"))  # the clock starts again
    clock.now += 0.9
    assert segmented.flush_if_due() == 0
    clock.now += 0.1
    assert segmented.flush_if_due() == 1


def test_the_buffer_is_written_when_it_holds_a_segment_s_worth(container: ContainerClient) -> None:
    line = len(record("demo", T0, "r0").to_json())
    by_count = EventArchive(container, flush_seconds=60, segment_records=3, monotonic=Clock(), background=False)
    for n in range(2):
        by_count.put(record("demo", T0 + timedelta(seconds=n), f"r{n}"))
    assert by_count.flush_if_due() == 0
    by_count.put(record("demo", T0 + timedelta(seconds=2), "r2"))
    assert by_count.flush_if_due() == 3

    # Two records and a half per segment by size: five records make three segments of 2, 2 and 1.
    by_size = EventArchive(
        container, flush_seconds=60, segment_bytes=line * 5 // 2, monotonic=Clock(), background=False
    )
    for n in range(5):
        by_size.put(record("size", T0 + timedelta(seconds=n), f"s{n}"))
    assert by_size.flush_if_due() == 5, "two records and more reach the size: due"
    sizes = sorted(len(lines) for name, lines in segments(container).items() if name.startswith("size/"))
    assert sizes == [1, 2, 2]
    assert ids(by_size.list(T0, T0 + timedelta(minutes=1), source="size")) == [f"s{n}" for n in range(5)]


def test_the_thread_writes_a_full_buffer_without_waiting_for_the_time(
    container: ContainerClient, thread_errors: list[Any]
) -> None:
    segmented = EventArchive(container, flush_seconds=60, segment_records=3)
    for n in range(3):
        segmented.put(record("demo", T0 - timedelta(seconds=n), f"r{2 - n}"))
    [lines] = eventually(lambda: list(segments(container).values()))
    assert [line["correlationId"] for line in lines] == ["r0", "r1", "r2"]
    assert thread_errors == []


def test_the_thread_writes_once_flush_seconds_have_passed(container: ContainerClient) -> None:
    segmented = EventArchive(container, flush_seconds=0.05)
    segmented.put(record("demo", T0, "timed"))
    [lines] = eventually(lambda: list(segments(container).values()))
    assert [line["correlationId"] for line in lines] == ["timed"]


def test_a_failed_segment_is_counted_and_logged_once_with_its_correlation_ids(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_upload = container.upload_blob

    def upload(name: str, data: Any, **kwargs: Any) -> Any:
        if name.startswith("seg-down/"):  # a refusal of this one write, after the blob client's own retry
            raise HttpResponseError("the request is not authorized for this blob")
        return real_upload(name, data, **kwargs)

    monkeypatch.setattr(container, "upload_blob", upload)
    segmented = EventArchive(container, flush_seconds=1, monotonic=Clock(), background=False)
    before = failed("seg-down")
    for n in range(2):
        segmented.put(record("seg-down", T0 + timedelta(seconds=n), f"lost-{n}", body="body-must-not-be-logged"))
    segmented.put(record("seg-up", T0, "kept"))
    with caplog.at_level(logging.ERROR, logger="shared.archive"):
        assert segmented.flush() == 1, "the other source's segment is written"
    assert failed("seg-down") == before + 2
    [logged] = caplog.records
    assert "2 record(s) not archived" in logged.getMessage()
    assert "lost-0,lost-1" in logged.getMessage()
    assert "body-must-not-be-logged" not in logged.getMessage()
    assert ids(segmented.list(T0, T0 + timedelta(minutes=1))) == ["kept"]


def test_a_segment_already_written_counts_as_written_and_any_other_409_as_failed(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK retries an upload whose answer was lost; the retry's 409 BlobAlreadyExists means the first
    try landed. Other 409s (a container being deleted) are refusals and must be counted, not taken as done."""
    real_upload = container.upload_blob

    def upload(name: str, data: Any, **kwargs: Any) -> Any:
        if name.startswith("seg-twice/"):
            real_upload(name, data, **kwargs)  # the first try landed; its answer was lost
            return real_upload(name, data, **kwargs)  # the retry: 409 BlobAlreadyExists
        if name.startswith("seg-refused/"):
            refused = ResourceExistsError("The specified container is being deleted.")
            refused.error_code = "ContainerBeingDeleted"
            raise refused
        return real_upload(name, data, **kwargs)

    monkeypatch.setattr(container, "upload_blob", upload)
    segmented = EventArchive(container, flush_seconds=1, monotonic=Clock(), background=False)
    before = failed("seg-refused"), failed("seg-twice")
    segmented.put(record("seg-twice", T0, "landed"))
    segmented.put(record("seg-refused", T0, "refused"))
    assert segmented.flush() == 1
    assert (failed("seg-refused"), failed("seg-twice")) == (before[0] + 1, before[1])
    assert ids(segmented.list(T0, T0 + timedelta(minutes=1))) == ["landed"]


def test_storage_that_does_not_answer_fails_the_rest_of_the_batch_without_trying(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each write to unreachable storage hangs for its timeouts: one is tried, the rest counted as failed."""
    tried: list[str] = []

    def upload(name: str, data: Any, **kwargs: Any) -> Any:
        tried.append(name)
        raise ServiceRequestError("storage unreachable")

    monkeypatch.setattr(container, "upload_blob", upload)
    segmented = EventArchive(container, flush_seconds=1, monotonic=Clock(), background=False)
    before = {source: failed(source) for source in ("gone-a", "gone-b", "gone-c")}
    for n, source in enumerate(["gone-a", "gone-b", "gone-b", "gone-c"]):
        segmented.put(record(source, T0 + timedelta(seconds=n), f"c-{n}"))
    with caplog.at_level(logging.ERROR, logger="shared.archive"):
        assert segmented.flush() == 0
    assert len(tried) == 1, "one segment tried, two given up"
    assert {source: failed(source) - before[source] for source in before} == {"gone-a": 1, "gone-b": 2, "gone-c": 1}
    assert "3 more record(s)" in caplog.records[-1].getMessage()


def test_the_thread_survives_a_failed_write(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch, thread_errors: list[Any]
) -> None:
    down = threading.Event()
    down.set()
    real_upload = container.upload_blob

    def upload(name: str, data: Any, **kwargs: Any) -> Any:
        if down.is_set():
            raise ServiceRequestError("storage unreachable")
        return real_upload(name, data, **kwargs)

    monkeypatch.setattr(container, "upload_blob", upload)
    segmented = EventArchive(container, flush_seconds=0.01)
    before = failed("seg-thread")
    segmented.put(record("seg-thread", T0, "while-down"))
    eventually(lambda: failed("seg-thread") == before + 1)
    down.clear()
    segmented.put(record("seg-thread", T0 + timedelta(seconds=1), "after"))
    [lines] = eventually(lambda: list(segments(container).values()))
    assert [line["correlationId"] for line in lines] == ["after"]
    assert thread_errors == []


def test_the_buffer_keeps_the_newest_records_beyond_its_cap(
    container: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(record("seg-cap", T0, "r0").to_json())
    capped = EventArchive(container, flush_seconds=1, buffer_records=3, monotonic=Clock(), background=False)
    before = failed("seg-cap")
    for n in range(5):
        capped.put(record("seg-cap", T0 + timedelta(seconds=n), f"r{n}"))
    assert failed("seg-cap") == before + 2, "counted when dropped"
    with caplog.at_level(logging.ERROR, logger="shared.archive"):
        assert capped.flush() == 3
    [logged] = caplog.records
    assert "2 oldest record(s) dropped" in logged.getMessage()
    assert "r0,r1" in logged.getMessage()
    assert ids(capped.list(T0, T0 + timedelta(minutes=1))) == ["r2", "r3", "r4"]

    by_bytes = EventArchive(container, flush_seconds=1, buffer_bytes=line * 2, monotonic=Clock(), background=False)
    big_before = failed("seg-big")
    by_bytes.put(record("seg-big", T0, "small"))
    by_bytes.put(record("seg-big", T0 + timedelta(seconds=1), "big", body="x" * line * 3))
    assert failed("seg-big") == big_before + 1, "the older record made room"
    assert by_bytes.flush() == 1, "a record larger than the cap alone is kept"
    assert ids(by_bytes.list(T0, T0 + timedelta(minutes=1), source="seg-big")) == ["big"]


def test_puts_from_many_threads_lose_nothing(container: ContainerClient, thread_errors: list[Any]) -> None:
    segmented = EventArchive(container, flush_seconds=0.01, segment_records=64)
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)

    def put_many(worker: int) -> None:
        start.wait()
        for n in range(per_thread):
            at = T0 - timedelta(minutes=30) + timedelta(milliseconds=(n * threads + worker) * 1500)
            segmented.put(record(f"seg-many-{worker % 2}", at, f"w{worker}-{n:03d}"))

    workers = [threading.Thread(target=put_many, args=(worker,)) for worker in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    segmented.close()

    listed = list(segmented.list(T0 - timedelta(hours=1), T0 + timedelta(hours=1)))
    assert len(listed) == threads * per_thread
    assert {d.correlation_id for d in listed} == {f"w{w}-{n:03d}" for w in range(threads) for n in range(per_thread)}
    assert [d.received_at for d in listed] == sorted(d.received_at for d in listed)
    assert {d.received_at.hour for d in listed} == {10, 11}
    assert failed("seg-many-0") == failed("seg-many-1") == 0
    assert thread_errors == []


def test_flush_seconds_zero_writes_one_json_blob_in_put(container: ContainerClient, settings: Settings) -> None:
    direct = EventArchive(container)
    delivery = record("demo", T0, "direct")
    assert direct.put(delivery) == "demo/2026/02/01/10/20260201T105958000000Z-direct.json"
    assert blob_names(container) == ["demo/2026/02/01/10/20260201T105958000000Z-direct.json"]
    assert container.download_blob(blob_names(container)[0]).readall() == delivery.to_json()

    app = settings.model_copy(update={"event_archive_container": container.container_name})
    at_once = EventArchive.from_settings(app.model_copy(update={"event_archive_flush_seconds": 0}))
    buffered = EventArchive.from_settings(app)  # the default: segments every second
    assert at_once is not None
    assert buffered is not None
    assert at_once.put(record("demo", T0, "settings-zero")) is not None
    assert buffered.put(record("demo", T0, "settings-default")) is None
    assert ids(at_once.list(T0, T0 + timedelta(seconds=1))) == ["direct", "settings-default", "settings-zero"]


def test_close_writes_the_buffer_and_later_puts_at_once(container: ContainerClient) -> None:
    segmented = EventArchive(container, flush_seconds=60)
    segmented.put(record("demo", T0, "buffered"))
    assert blob_names(container) == []
    assert segmented.close() == 1
    assert len(segments(container)) == 1
    assert segmented.put(record("demo", T0 + timedelta(seconds=1), "late")) is not None, "written at once"
    assert ids(segmented.list(T0, T0 + timedelta(minutes=1))) == ["buffered", "late"]


def test_list_first_writes_what_this_process_buffered_for_the_container(
    container: ContainerClient, settings: Settings
) -> None:
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string or "")
    elsewhere = EventArchive(
        service.get_container_client(f"elsewhere-{uuid.uuid4().hex[:10]}"),
        flush_seconds=60,
        monotonic=Clock(),
        background=False,
    )
    intake_side = EventArchive(container, flush_seconds=60, monotonic=Clock(), background=False)
    intake_side.put(record("demo", T0, "same-container"))
    elsewhere.put(record("demo", T0, "other-container"))
    reader = EventArchive(container)  # another instance, as the replay builds its own
    assert ids(reader.list(T0, T0 + timedelta(seconds=1))) == ["same-container"]
    assert elsewhere.flush() == 1, "another container's buffer is left to its own flush"


def test_a_segment_line_that_is_not_an_archived_delivery_stops_list(container: ContainerClient) -> None:
    EventArchive(container).put(record("demo", T0, "valid"))
    good = record("demo", T0, "in-segment").to_json().decode()
    name = "demo/2026/02/01/10/20260201T105958000000Z-0123456789abcdef0123456789abcdef.ndjson"
    container.upload_blob(name, f'{good}\n{{"v": 1, "source": "demo"}}\n'.encode())
    with pytest.raises(ArchiveUnreadable, match=re.escape(f"{name} line 2: ")):
        list(EventArchive(container).list(T0, T0 + timedelta(seconds=1)))


def test_a_stopping_process_writes_what_it_buffered(container: ContainerClient, settings: Settings) -> None:
    """The atexit flush: the process ends long before its flush_seconds (60) are up."""
    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from azure.storage.blob import BlobServiceClient\n"
        "from shared.archive import ArchivedDelivery, EventArchive\n"
        "container = BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client(sys.argv[2])\n"
        "archive = EventArchive(container, flush_seconds=60)\n"
        "delivery = ArchivedDelivery(source='demo', receivedAt=datetime(2026, 2, 1, 10, tzinfo=UTC), "
        "correlationId='at-exit')\n"
        "print(archive.put(delivery))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, settings.storage_connection_string or "", container.container_name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None", "buffered, not written in put"
    reader = EventArchive(container)
    assert ids(reader.list(T0.replace(minute=0, second=0), T0)) == ["at-exit"]


def test_the_exit_flush_writes_every_live_archive(container: ContainerClient) -> None:
    segmented = EventArchive(container, flush_seconds=60, monotonic=Clock(), background=False)
    segmented.put(record("demo", T0, "exit-flush"))
    archive.flush_all()
    assert len(segments(container)) == 1
