"""Queue triggers against real Azure Storage (Azurite): encoding, metadata, retries, poison, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as MetadataQueueMessage
from azure.storage.queue import QueueClient

from local.devhost import DevHost
from shared.storage import StorageNotConfigured

from .conftest import b64, host_json, peek_all, wait_for

QueueFactory = Callable[[str], QueueClient]


def recording_app(records: list[Any], *, fail_until: int = 0, as_text: bool = False) -> func.FunctionApp:
    """A queue trigger on %Q% (connection ``Store``) recording each call; it fails while dequeue_count < fail_until."""
    app = func.FunctionApp()

    if as_text:

        @app.queue_trigger(arg_name="text", queue_name="%Q%", connection="Store")
        async def record_text(text: str) -> None:
            records.append(text)

        return app

    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="Store")
    def record(msg: func.QueueMessage) -> None:
        records.append((msg, time.monotonic(), threading.current_thread().name))
        if (msg.dequeue_count or 0) < fail_until:
            raise RuntimeError(f"attempt {msg.dequeue_count} fails")

    return app


def test_base64_message_arrives_decoded_with_metadata(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[Any] = []
    text = '{"event": "course.updated", "title": "Café secrets"}'
    with (
        caplog.at_level(logging.INFO, logger="local.devhost"),
        DevHost.start(recording_app(records), settings={**storage, "Q": queue_name}, host_json=host_json()) as host,
    ):
        sent = queue_client(queue_name).send_message(b64(text))
        host.wait_until_idle(timeout=10)

    assert len(records) == 1
    msg, _, thread = records[0]
    assert isinstance(msg, MetadataQueueMessage)
    assert msg.get_body() == text.encode()
    assert msg.id == sent.id
    assert msg.dequeue_count == 1
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - msg.insertion_time).total_seconds()) < 60
    assert msg.expiration_time > msg.insertion_time
    assert msg.time_next_visible > now + datetime.timedelta(minutes=5)  # leased while running
    assert msg.pop_receipt
    assert thread.startswith("devhost-fn")
    assert peek_all(queue_client(queue_name)) == []  # deleted on success
    assert peek_all(queue_client(queue_name + "-poison")) == []  # created, and empty

    messages = [r.getMessage() for r in caplog.records]
    executing = [m for m in messages if m.startswith("Executing 'Functions.record'")]
    assert len(executing) == 1
    assert sent.id in executing[0]
    assert "dequeue_count=1" in executing[0]
    assert not any("Café" in m or b64(text) in m for m in messages)  # bodies never logged


def test_message_encoding_none_passes_raw_text(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory
) -> None:
    records: list[Any] = []
    settings = {**storage, "Q": queue_name}
    with DevHost.start(
        recording_app(records, as_text=True), settings=settings, host_json=host_json(messageEncoding="none")
    ) as host:
        queue_client(queue_name).send_message('{"raw": "not base64!"}')
        host.wait_until_idle(timeout=10)
    assert records == ['{"raw": "not base64!"}']


def test_invalid_base64_goes_straight_to_poison_without_running_the_function(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[Any] = []
    with (
        caplog.at_level(logging.INFO, logger="local.devhost"),
        DevHost.start(recording_app(records), settings={**storage, "Q": queue_name}, host_json=host_json()) as host,
    ):
        sent = queue_client(queue_name).send_message('{"plain": "json"}')
        host.wait_until_idle(timeout=10)

    assert records == []
    assert peek_all(queue_client(queue_name)) == []
    assert peek_all(queue_client(queue_name + "-poison")) == ['{"plain": "json"}']  # same text, same encoding
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(sent.id in m and "not valid base64" in m for m in errors)


def test_failing_function_is_retried_after_visibility_timeout_then_poisoned(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory
) -> None:
    records: list[Any] = []
    options = host_json(maxDequeueCount=3, visibilityTimeout="00:00:01")
    with DevHost.start(
        recording_app(records, fail_until=99), settings={**storage, "Q": queue_name}, host_json=options
    ) as host:
        sent = queue_client(queue_name).send_message(b64("always fails"))
        host.wait_until_idle(timeout=15)

    assert [msg.dequeue_count for msg, _, _ in records] == [1, 2, 3]
    assert {msg.id for msg, _, _ in records} == {sent.id}
    times = [at for _, at, _ in records]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # hidden for visibilityTimeout after each failure
    assert peek_all(queue_client(queue_name)) == []
    assert peek_all(queue_client(queue_name + "-poison")) == [b64("always fails")]


def test_function_that_recovers_is_not_poisoned(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory
) -> None:
    records: list[Any] = []
    with DevHost.start(
        recording_app(records, fail_until=3), settings={**storage, "Q": queue_name}, host_json=host_json()
    ) as host:
        queue_client(queue_name).send_message(b64("third time lucky"))
        host.wait_until_idle(timeout=10)

    assert [msg.dequeue_count for msg, _, _ in records] == [1, 2, 3]
    assert peek_all(queue_client(queue_name)) == []
    assert peek_all(queue_client(queue_name + "-poison")) == []


@contextlib.contextmanager
def releasing(gate: threading.Event) -> Iterator[None]:
    """Open the gate however the block ends, so a failed assertion cannot leave threads blocked."""
    try:
        yield
    finally:
        gate.set()


def test_batch_size_and_new_batch_threshold_bound_concurrency(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory
) -> None:
    """batchSize=2, newBatchThreshold=1: two at first, a new batch only once one finishes, so at most 3."""
    lock = threading.Lock()
    running: set[str] = set()
    finished: list[str] = []
    releases = threading.Semaphore(0)
    release_all = threading.Event()
    peak = 0

    def wait_for_release() -> None:
        while not release_all.is_set() and not releases.acquire(timeout=0.01):
            pass

    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="Store")
    async def slow(msg: func.QueueMessage) -> None:
        nonlocal peak
        with lock:
            running.add(msg.id or "")
            peak = max(peak, len(running))
        await asyncio.to_thread(wait_for_release)
        with lock:
            running.discard(msg.id or "")
            finished.append(msg.id or "")

    client = queue_client(queue_name)
    # All queued before the host starts: a first poll that finds only one message would leave
    # in-flight (1) at the threshold and fetch again at once, so the batches would not be 2 then 1.
    client.create_queue()
    for n in range(8):
        client.send_message(b64(f"m{n}"))
    options = host_json(batchSize=2, newBatchThreshold=1)
    with DevHost.start(app, settings={**storage, "Q": queue_name}, host_json=options) as host, releasing(release_all):
        wait_for(lambda: len(running) == 2, message="the first batch")
        time.sleep(0.5)  # several polls: in-flight (2) is above the threshold (1), so no fetch
        assert len(running) == 2
        with pytest.raises(TimeoutError):
            host.wait_until_idle(timeout=0.2)

        releases.release()  # one finishes -> in-flight 1 <= threshold -> a batch of 2 more
        wait_for(lambda: len(running) == 3, message="the second batch")
        time.sleep(0.5)
        assert len(running) == 3
        assert len(finished) == 1

        release_all.set()
        host.wait_until_idle(timeout=10)

    assert len(finished) == 8
    assert peak == 3


def test_stop_lets_in_flight_invocations_finish(
    storage: dict[str, str], queue_name: str, queue_client: QueueFactory
) -> None:
    started, done = threading.Event(), threading.Event()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="Store")
    async def slow(msg: func.QueueMessage) -> None:
        started.set()
        await asyncio.sleep(0.5)
        done.set()

    host = DevHost.start(app, settings={**storage, "Q": queue_name}, host_json=host_json())
    try:
        queue_client(queue_name).send_message(b64("finish me"))
        assert started.wait(5)
    finally:
        host.stop()
    assert done.is_set()
    assert peek_all(queue_client(queue_name)) == []  # settled (deleted) before stop returned


def test_missing_connection_setting_fails_at_start(queue_name: str) -> None:
    with pytest.raises(StorageNotConfigured, match="set Store "):
        DevHost.start(recording_app([]), settings={"Q": queue_name}, host_json=host_json())
