"""``Ledger.pushing``, the one lease protocol of every writer (issue 9, points 2 and 6), against Azurite:
claim (ledger exceptions only), yield the push's deadline, release on error, record on success; a lease
is never ended while a request of the push may still land; a push that finds a newer event recorded
after it is not a success, and the item is marked for repair."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableClient

from shared.graph import GraphTransientError
from shared.ledger import (
    BusyWait,
    ItemBusy,
    LeaseLost,
    Ledger,
    LedgerConflict,
    LedgerEntry,
    Push,
    PushTiming,
    StaleEvent,
    content_row_key,
    partition_key,
    table_service,
)
from shared.settings import Settings
from tests.conftest import TENANT_ID

T = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TIMING = PushTiming(deadline_seconds=20.0, lease_seconds=50.0)


@pytest.fixture
def table(settings: Settings) -> TableClient:
    return table_service(settings).get_table_client(settings.ledger_table_name)


@pytest.fixture
def ledger(table: TableClient, settings: Settings) -> Ledger:
    return Ledger(table, tenant_id=settings.home_tenant())


def row(table: TableClient, external_id: str) -> dict[str, Any]:
    """The raw row, lease columns included."""
    return dict(table.get_entity(partition_key(TENANT_ID, "reg-1"), content_row_key(external_id)))


def pushing(
    ledger: Ledger, external_id: str, owner: str, at: datetime = T, *, busy: BusyWait | None = None
) -> AbstractAsyncContextManager[Push]:
    return ledger.pushing(
        "reg-1",
        external_id,
        owner=owner,
        timing=TIMING,
        pushed_by="test",
        op="upsert",
        event_time=at,
        source="demo",
        source_event_id=f"e-{owner}",
        busy=busy,
    )


async def test_a_push_claims_yields_its_deadline_and_records(ledger: Ledger, table: TableClient) -> None:
    before, started = datetime.now(UTC), time.monotonic()
    async with pushing(ledger, "p-1", "m-1") as push:
        assert push.owner == "m-1"
        assert push.deadline.at <= time.monotonic() + TIMING.deadline_seconds
        assert push.deadline.at >= started + TIMING.deadline_seconds - 5  # a Table round trip or two
        lease = row(table, "p-1")
        assert lease["leaseOwner"] == "m-1"
        # The deadline started before the claim, so the lease ends at least the margin after it.
        assert lease["leaseUntil"] >= before + timedelta(seconds=TIMING.lease_seconds)
    entry = ledger.last_push("reg-1", "p-1")
    assert entry is not None
    assert (entry.event_time, entry.pushed_by, entry.source_event_id) == (T, "test", "e-m-1")
    assert row(table, "p-1")["leaseOwner"] == ""  # the record ended the lease


async def test_a_stale_event_is_a_ledger_exception_and_nothing_runs(ledger: Ledger) -> None:
    async with pushing(ledger, "p-2", "m-new", T + timedelta(hours=1)):
        pass
    ran = False
    with pytest.raises(StaleEvent):
        async with pushing(ledger, "p-2", "m-old", T):
            ran = True
    assert not ran


async def test_another_owners_live_lease_is_busy_and_can_be_waited_for(ledger: Ledger) -> None:
    assert ledger.claim("reg-1", "p-3", T, "worker-x", lease_seconds=60)
    with pytest.raises(ItemBusy) as busy:
        async with pushing(ledger, "p-3", "m-2"):
            raise AssertionError("pushed under another owner's lease")
    assert busy.value.until is not None

    waits: list[float] = []

    async def release_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        ledger.release("reg-1", "p-3", "worker-x")

    async with pushing(ledger, "p-3", "m-2", busy=BusyWait(3, 0.5, release_while_waiting)):
        pass
    assert waits == [0.5]


async def test_a_failed_push_releases_the_lease(ledger: Ledger, table: TableClient) -> None:
    with pytest.raises(GraphTransientError):
        async with pushing(ledger, "p-4", "m-1"):
            raise GraphTransientError(429, "tooMany", "throttled")  # an answer: nothing is in flight
    assert row(table, "p-4")["leaseOwner"] == ""
    async with pushing(ledger, "p-4", "m-other"):  # another message need not wait
        pass


async def abandoned_push(ledger: Ledger, external_id: str, owner: str) -> None:
    async with pushing(ledger, external_id, owner) as push:
        push.deadline.unsettled = True  # as GraphClient notes a request that got no answer
        raise GraphTransientError(None, "Timeout", "no answer")


def lease_ends_in(table: TableClient, external_id: str) -> float:
    return float((row(table, external_id)["leaseUntil"] - datetime.now(UTC)).total_seconds())


async def test_a_request_that_may_still_land_keeps_the_lease_for_the_margin(ledger: Ledger, table: TableClient) -> None:
    with pytest.raises(GraphTransientError):
        await abandoned_push(ledger, "p-5", "m-1")
    assert row(table, "p-5")["leaseOwner"] == "m-1"
    # Held for the margin from the push's end, not for the whole lease from its claim.
    assert TIMING.margin_seconds - 5 < lease_ends_in(table, "p-5") <= TIMING.margin_seconds
    # A newer event of another message must wait: the abandoned request could land after its push.
    with pytest.raises(ItemBusy):
        async with pushing(ledger, "p-5", "m-newer", T + timedelta(hours=1)):
            raise AssertionError("pushed while an older request may still land")
    held_until = row(table, "p-5")["leaseUntil"]
    # The message's own redelivery takes its lease back, pushes, records, and leaves the lease to end
    # when the first attempt's request can no longer land: not sooner, and not a whole lease later.
    async with pushing(ledger, "p-5", "m-1"):
        assert lease_ends_in(table, "p-5") > TIMING.lease_seconds - 5  # its own push is covered
    assert ledger.last_push("reg-1", "p-5") is not None
    assert row(table, "p-5")["leaseOwner"] == "m-1"
    assert row(table, "p-5")["leaseUntil"] == held_until


async def test_a_success_after_an_abandoned_attempt_keeps_the_lease_for_the_margin(
    ledger: Ledger, table: TableClient
) -> None:
    async with pushing(ledger, "p-6", "m-1") as push:
        push.deadline.unsettled = True  # a first attempt timed out, the retry succeeded
    entry = ledger.last_push("reg-1", "p-6")
    assert entry is not None
    assert entry.event_time == T
    assert row(table, "p-6")["leaseOwner"] == "m-1"
    assert TIMING.margin_seconds - 5 < lease_ends_in(table, "p-6") <= TIMING.margin_seconds


async def test_a_lease_whose_requests_can_no_longer_land_is_released_on_retake(
    ledger: Ledger, table: TableClient
) -> None:
    # An earlier attempt of m-1 left its lease, which has ended by now (another owner would take it too).
    assert ledger.claim("reg-1", "p-10", T, "m-1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    async with pushing(ledger, "p-10", "m-1"):
        pass
    assert row(table, "p-10")["leaseOwner"] == ""


async def test_a_newer_event_recorded_during_the_push_is_lease_lost_and_marked(ledger: Ledger) -> None:
    newer = LedgerEntry("reg-1", "p-7", "delete", T + timedelta(hours=1), datetime.now(UTC), "worker", "demo", "e-new")
    with pytest.raises(LeaseLost):
        async with pushing(ledger, "p-7", "m-old", T):
            ledger.record(newer)  # as a newer push does once the older's lease has ended
    last = ledger.last_push("reg-1", "p-7")
    assert last is not None
    assert last.source_event_id == "e-new"  # the ledger keeps the newest event
    [marked] = ledger.needs_repair("reg-1")
    assert marked["externalId"] == "p-7"
    assert marked["lastPush"].source_event_id == "e-new"
    assert marked["stale"]["sourceEventId"] == "e-m-old"
    assert marked["stale"]["eventTime"] == T
    # A later recorded push decides the item's state, so it clears the mark.
    async with pushing(ledger, "p-7", "m-latest", T + timedelta(hours=2)):
        pass
    assert ledger.needs_repair("reg-1") == []


async def test_a_change_that_is_no_event_records_nothing_and_releases(ledger: Ledger, table: TableClient) -> None:
    async with pushing(ledger, "p-8", "m-1"):
        pass
    async with ledger.pushing("reg-1", "p-8", owner="cli/x", timing=TIMING, pushed_by="cli") as push:
        assert row(table, "p-8")["leaseOwner"] == "cli/x"
        assert push.deadline.remaining() > 0
    assert row(table, "p-8")["leaseOwner"] == ""
    last = ledger.last_push("reg-1", "p-8")
    assert last is not None
    assert last.pushed_by == "test"  # unchanged


def test_a_record_that_keeps_losing_races_raises(
    ledger: Ledger, table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.record(LedgerEntry("reg-1", "p-9", "upsert", T, T, "test"))

    def always_modified(*args: object, **kwargs: object) -> None:
        raise ResourceModifiedError("etag")

    monkeypatch.setattr(table, "update_entity", always_modified)
    with pytest.raises(LedgerConflict):  # not False, which means "a newer event is recorded"
        ledger.record(LedgerEntry("reg-1", "p-9", "upsert", T + timedelta(hours=1), T, "test"))
