"""The worker's decisions with real parts: Graph emulator, identity endpoint and Azurite poison queue."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared.graph import GraphClient, GraphTransientError
from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import QueueUnavailable, StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.conftest import READ_ONLY_CLIENT_ID
from tests.graph.conftest import GraphSide, make_graph
from tests.queues import peek_messages, peek_texts
from tests.webhooks import content

INFO = MessageInfo(message_id="m-1", dequeue_count=1)


def ports(graph: GraphClient, queue: StorageCommandQueue, ledger: Ledger) -> WorkerPorts:
    return WorkerPorts(graph=graph, queue=queue, ledger=ledger)


def poison(settings: Settings) -> list[str]:
    return peek_texts(settings.storage_connection_string or "", settings.poison_queue_name)


def command(op: str, external_id: str, registration_id: str, *, at: datetime | None = None, **data: Any) -> bytes:
    return (
        ContentCommand(
            op=op,  # type: ignore[arg-type]
            registrationId=registration_id,
            externalId=external_id,
            content=content(external_id, **data) if op == "upsert" else None,  # type: ignore[arg-type]
            source="demo",
            sourceEventId="evt-1",
            eventTime=at or datetime(2026, 11, 27, tzinfo=UTC),
            correlationId="corr-w",
        )
        .to_json()
        .encode()
    )


async def test_upsert_then_delete_then_repeat(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    assert (
        await process(command("upsert", "w-1", reg, level="beginner"), INFO, ports(graph, queue, ledger))
        is Outcome.UPSERTED
    )
    assert graph_side.get_content("w-1").json()["level"] == "beginner"
    # At-least-once delivery: the same event again (same id, time and op) is skipped, not pushed again.
    assert (
        await process(command("upsert", "w-1", reg, level="beginner"), INFO, ports(graph, queue, ledger))
        is Outcome.SKIPPED_STALE
    )
    # A delete of the same second is ordered after the upsert, so it applies; its repeat is skipped.
    assert await process(command("delete", "w-1", reg), INFO, ports(graph, queue, ledger)) is Outcome.DELETED
    assert await process(command("delete", "w-1", reg), INFO, ports(graph, queue, ledger)) is Outcome.SKIPPED_STALE
    assert graph_side.get_content("w-1").status_code == 404
    assert poison(settings) == []


async def test_unknown_registration_is_parked_with_reason(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    body = command("upsert", "w-2", "no-such-registration")
    assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.PARKED
    [parked] = poison(settings)
    doc = json.loads(parked)
    assert doc["externalId"] == "w-2"
    assert doc["lastError"]["kind"] == "permanent"
    assert doc["lastError"]["status"] == 400
    assert doc["lastError"]["requestId"]


async def test_missing_permission_403_is_parked_at_once(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http, client_id=READ_ONLY_CLIENT_ID, as_app=False)
    body = command("upsert", "w-3", graph_side.registration_id)
    assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.PARKED
    [parked] = poison(settings)
    assert json.loads(parked)["lastError"]["status"] == 403


async def test_malformed_message_is_parked_unchanged(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    for body in (b"not json", b'{"v": 2, "op": "upsert"}', b'{"v":1,"op":"upsert","registrationId":"r"}'):
        assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.PARKED
    assert poison(settings) == ["not json", '{"v": 2, "op": "upsert"}', '{"v":1,"op":"upsert","registrationId":"r"}']


async def test_long_retry_after_defers_the_command_for_that_long(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 120}])
    body = command("upsert", "w-4", graph_side.registration_id)
    assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.DEFERRED
    assert poison(settings) == []
    main = (settings.storage_connection_string or "", settings.content_queue_name)
    assert peek_messages(*main) == []  # hidden for Graph's Retry-After
    # The deferred copy counts its deferral; once they are used up, the error goes to the queue's retries.
    exhausted = WorkerPorts(graph=graph, queue=queue, ledger=ledger,
                            max_deferrals=0)  # fmt: skip
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 120}])
    with pytest.raises(GraphTransientError):
        await process(body, INFO, exhausted)
    # The redelivery succeeds once Graph is healthy again.
    assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED


async def test_parking_failure_is_raised_not_swallowed(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)

    class PoisonQueueDown(StorageCommandQueue):
        def park(self, text: str) -> str:
            raise QueueUnavailable("poison queue down")

    queue.__class__ = PoisonQueueDown  # the real queue, but parking fails
    broken = WorkerPorts(graph=graph, queue=queue, ledger=ledger)
    with pytest.raises(QueueUnavailable):
        await process(command("upsert", "w-5", "no-such-registration"), INFO, broken)


async def test_older_event_never_overwrites_a_newer_one(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    newer = command("upsert", "w-6", reg, title="Newer", at=datetime(2026, 11, 27, 12, tzinfo=UTC))
    older = command("upsert", "w-6", reg, title="Older", at=datetime(2026, 11, 27, 11, tzinfo=UTC))
    older_delete = command("delete", "w-6", reg, at=datetime(2026, 11, 27, 11, 30, tzinfo=UTC))
    assert await process(newer, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED
    assert await process(older, INFO, ports(graph, queue, ledger)) is Outcome.SKIPPED_STALE
    assert await process(older_delete, INFO, ports(graph, queue, ledger)) is Outcome.SKIPPED_STALE
    assert graph_side.get_content("w-6").json()["title"] == "Newer"
    # The same event again (a redelivery) is skipped: Graph already has it.
    assert await process(newer, INFO, ports(graph, queue, ledger)) is Outcome.SKIPPED_STALE


async def test_ledger_records_what_was_pushed_and_when(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    before = datetime.now(UTC)
    await process(command("upsert", "O'Brien/#1", graph_side.registration_id), INFO, ports(graph, queue, ledger))
    entry = ledger.last_push(graph_side.registration_id, "O'Brien/#1")
    assert entry is not None
    assert entry.op == "upsert"
    assert entry.pushed_by == "worker"
    assert entry.pushed_at >= before.replace(microsecond=0)
    assert entry.source_event_id == "evt-1"


async def test_disabled_registration_holds_commands_until_enabled(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    ledger.set_registration_enabled(reg, False)
    assert await process(command("upsert", "w-7", reg), INFO, ports(graph, queue, ledger)) is Outcome.HELD
    assert await process(command("upsert", "w-8", "other-reg"), INFO, ports(graph, queue, ledger)) is not Outcome.HELD
    assert graph_side.get_content("w-7").status_code == 404
    # The other registration went on to Graph (which refused it: unknown registration).
    assert json.loads(poison(settings)[0])["registrationId"] == "other-reg"

    ledger.set_registration_enabled(reg, True)
    moved = queue.release_held(lambda text: json.loads(text)["registrationId"] == reg)
    assert moved == 1
    main = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.content_queue_name)
    [released] = [base64.b64decode(m.content) for m in main.receive_messages()]
    assert await process(released, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED
    assert graph_side.get_content("w-7").status_code == 200


@pytest.mark.parametrize("newer_first", [False, True])
async def test_concurrent_commands_for_one_item_are_serialised(
    graph_side: GraphSide,
    http: httpx.AsyncClient,
    queue: StorageCommandQueue,
    ledger: Ledger,
    settings: Settings,
    newer_first: bool,
) -> None:
    import asyncio

    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    newer = command("upsert", "w-race", reg, title="Newer", at=datetime(2026, 11, 27, 12, tzinfo=UTC))
    older = command("upsert", "w-race", reg, title="Older", at=datetime(2026, 11, 27, 11, tzinfo=UTC))
    first, second = (newer, older) if newer_first else (older, newer)
    graph_side.script_faults([{"latencyMs": 1500}])  # the first push is slow: the second overlaps it
    slow = asyncio.create_task(process(first, MessageInfo("m-first", 1), ports(graph, queue, ledger)))
    await asyncio.sleep(0.5)
    # Busy: back to the queue as a new message, hidden for a few seconds, without spending an attempt.
    second_info = MessageInfo("m-second", 5, max_dequeue_count=5)  # even on the final attempt
    assert await process(second, second_info, ports(graph, queue, ledger)) is Outcome.DEFERRED
    main = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.content_queue_name)
    assert main.get_queue_properties().approximate_message_count == 1  # the deferred copy...
    assert peek_messages(settings.storage_connection_string or "", settings.content_queue_name) == []  # hidden
    assert poison(settings) == []
    assert await slow is Outcome.UPSERTED
    retried = await process(second, MessageInfo("m-second-again", 1), ports(graph, queue, ledger))
    assert retried is (Outcome.SKIPPED_STALE if newer_first else Outcome.UPSERTED)
    assert graph_side.get_content("w-race").json()["title"] == "Newer"


async def test_failed_push_releases_the_lease(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    body = command("upsert", "w-lease", graph_side.registration_id)
    graph_side.script_faults([{"status": 503}] * 3)  # answers: nothing of this push is left in flight
    with pytest.raises(GraphTransientError):
        await process(body, INFO, ports(graph, queue, ledger))
    # The retry, even as another message (a replayed copy), is not blocked by the failed attempt's lease.
    assert await process(body, MessageInfo("m-copy", 1), ports(graph, queue, ledger)) is Outcome.UPSERTED


async def test_a_push_that_may_still_land_keeps_the_lease_but_its_redelivery_retakes_it(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    body = command("upsert", "w-drop", reg)
    # Dropped after sending: Graph may have the PATCH and apply it later, so the lease is kept to its end.
    graph_side.script_faults([{"drop": True}] * 3)
    with pytest.raises(GraphTransientError):
        await process(body, INFO, ports(graph, queue, ledger))
    # Another message finds the item busy. (An older event here: a newer one would be announced as it
    # goes back to wait, and the redelivery below would then skip its push for it: coalescing.)
    other = command("upsert", "w-drop", reg, title="Other", at=datetime(2026, 11, 26, tzinfo=UTC))
    assert await process(other, MessageInfo("m-other", 1), ports(graph, queue, ledger)) is Outcome.DEFERRED
    # The message's own redelivery (same message id) takes its lease back and pushes the same event.
    assert await process(body, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED


async def test_enable_is_seen_at_once_despite_the_state_cache(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    cached = Ledger.from_settings(settings.model_copy(update={"registration_state_cache_seconds": 300}))
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    cached.set_registration_enabled(reg, False)
    assert cached.registration_enabled(reg) is False  # now cached as disabled for 5 minutes
    Ledger.from_settings(settings).set_registration_enabled(reg, True)  # another process enables it
    assert await process(command("upsert", "w-fresh", reg), INFO, ports(graph, queue, cached)) is Outcome.UPSERTED


async def test_cli_pushes_take_the_same_per_item_lease(
    graph_side: GraphSide, http: httpx.AsyncClient, ledger: Ledger
) -> None:
    import time
    from datetime import timedelta

    from vlsync import operations

    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    # A worker holds the item's lease for about 1.5 s: the CLI waits for it, then pushes.
    assert ledger.claim(reg, "cli-1", datetime.now(UTC), "worker-x", lease_seconds=1.5)
    started = time.monotonic()
    outcome = await operations.upsert_all(graph, reg, [content("cli-1")], concurrency=1, ledger=ledger)
    assert [d["externalId"] for d in outcome.done] == ["cli-1"]
    assert time.monotonic() - started >= 1.0
    entry = ledger.last_push(reg, "cli-1")
    assert entry is not None
    assert entry.pushed_by == "cli"

    # An LMS event stamped a little ahead of now (allowed clock skew) is not overwritten by the CLI.
    future = datetime.now(UTC) + timedelta(minutes=3)
    assert ledger.claim(reg, "cli-2", future, "worker-y", lease_seconds=60)
    from shared.ledger import LedgerEntry

    ledger.record(LedgerEntry(reg, "cli-2", "upsert", future, datetime.now(UTC), "worker"), "worker-y")
    outcome = await operations.upsert_all(graph, reg, [content("cli-2")], concurrency=1, ledger=ledger)
    assert outcome.done == []
    assert outcome.failed[0]["code"] == "Stale"


async def test_a_description_the_lms_removed_disappears_in_graph(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    """The emulator's default is the merge reading (absent properties keep their values): only a body
    with every managed property, absent ones as null or [], clears what the LMS removed."""
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    first = command(
        "upsert", "w-clear", reg, description="old", contributors=["Ada"], at=datetime(2026, 12, 1, tzinfo=UTC)
    )
    second = command("upsert", "w-clear", reg, at=datetime(2026, 12, 2, tzinfo=UTC))
    assert await process(first, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED
    assert await process(second, INFO, ports(graph, queue, ledger)) is Outcome.UPSERTED
    stored = graph_side.get_content("w-clear").json()
    assert stored["description"] is None
    assert stored["contributors"] == []
