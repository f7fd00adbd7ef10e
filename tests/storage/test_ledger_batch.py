"""``Ledger.pushing_many``, the batch form of the one lease protocol (backfill, reconcile), against
Azurite: the same judgements as ``Ledger.pushing`` (stale, busy, own lease, record, release), with the
leases taken and the pushes recorded in entity-group transactions, and the single form's rules when a
transaction meets another writer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.ledger import (
    MAX_TRANSACTION_OPERATIONS,
    BatchEvent,
    ItemBusy,
    Ledger,
    LedgerEntry,
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
    return dict(table.get_entity(partition_key(TENANT_ID, "reg-1"), content_row_key(external_id)))


def events(*ids: str, at: datetime = T) -> list[BatchEvent]:
    return [BatchEvent(i, at) for i in ids]


async def test_fresh_items_are_claimed_pushed_and_recorded_together(ledger: Ledger, table: TableClient) -> None:
    ids = [f"n-{i}" for i in range(MAX_TRANSACTION_OPERATIONS)]
    async with ledger.pushing_many("reg-1", events(*ids), owner="bf/1", timing=TIMING, pushed_by="backfill") as batch:
        assert set(batch.pushes) == set(ids)
        assert row(table, "n-7")["leaseOwner"] == "bf/1"  # the lease is held while the push runs
        for external_id in ids[:-1]:
            batch.succeeded(external_id)
    assert batch.recorded == set(ids[:-1])
    last = ledger.last_push("reg-1", "n-0")
    assert last is not None
    assert (last.event_time, last.pushed_by) == (T, "backfill")
    assert row(table, "n-0")["leaseOwner"] == ""  # recorded and released in the same write
    assert ledger.last_push("reg-1", ids[-1]) is None  # not reported as pushed: released, not recorded
    assert row(table, ids[-1])["leaseOwner"] == ""


async def test_the_same_rules_as_the_single_form(ledger: Ledger, table: TableClient) -> None:
    assert ledger.record(LedgerEntry("reg-1", "newer", "upsert", T + timedelta(minutes=1), T, "worker"))
    assert ledger.record(LedgerEntry("reg-1", "older", "upsert", T - timedelta(minutes=1), T, "worker"))
    assert ledger.record(LedgerEntry("reg-1", "same", "upsert", T, T, "backfill"))
    assert ledger.claim("reg-1", "busy", T, "worker/9", 50.0)  # another owner's live lease

    async with ledger.pushing_many(
        "reg-1", events("newer", "older", "same", "busy", "fresh"), owner="bf/2", timing=TIMING, pushed_by="backfill"
    ) as batch:
        assert set(batch.pushes) == {"older", "fresh"}
        for external_id in batch.pushes:
            batch.succeeded(external_id)
    assert isinstance(batch.refused["newer"], StaleEvent)
    assert isinstance(batch.refused["same"], StaleEvent)  # the ledger holds this very event
    assert isinstance(batch.refused["busy"], ItemBusy)
    assert batch.recorded == {"older", "fresh"}
    older = ledger.last_push("reg-1", "older")
    assert older is not None
    assert older.event_time == T
    assert row(table, "busy")["leaseOwner"] == "worker/9"  # untouched


async def test_an_error_in_the_block_releases_every_lease(ledger: Ledger, table: TableClient) -> None:
    async def push_and_fail() -> None:
        async with ledger.pushing_many("reg-1", events("e-1", "e-2"), owner="bf/3", timing=TIMING, pushed_by="b") as b:
            b.succeeded("e-1")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await push_and_fail()
    assert row(table, "e-1")["leaseOwner"] == ""
    assert row(table, "e-2")["leaseOwner"] == ""
    assert ledger.last_push("reg-1", "e-1") is None


async def test_a_push_left_unanswered_keeps_its_lease(ledger: Ledger, table: TableClient) -> None:
    async with ledger.pushing_many("reg-1", events("u-1", "u-2"), owner="bf/4", timing=TIMING, pushed_by="b") as b:
        b.pushes["u-1"].deadline.unsettled = True  # Graph may still apply it
        b.succeeded("u-1")
        b.succeeded("u-2")
    assert b.recorded == {"u-1", "u-2"}
    assert row(table, "u-1")["leaseOwner"] == "bf/4"  # held until the request cannot land any more
    assert row(table, "u-2")["leaseOwner"] == ""


async def test_a_newer_event_recorded_under_the_batch_marks_the_item_for_repair(
    ledger: Ledger, table: TableClient
) -> None:
    async with ledger.pushing_many("reg-1", events("l-1", "l-2"), owner="bf/5", timing=TIMING, pushed_by="b") as b:
        # The lease ended under the push (a clock jump): a worker recorded a newer event meanwhile.
        assert ledger.record(LedgerEntry("reg-1", "l-1", "upsert", T + timedelta(hours=1), T, "worker"))
        b.succeeded("l-1")
        b.succeeded("l-2")
    assert b.recorded == {"l-2"}  # the transaction failed on l-1's row: each item judged on its own
    assert set(b.lost) == {"l-1"}
    assert [r["externalId"] for r in ledger.needs_repair("reg-1")] == ["l-1"]


async def test_a_batch_names_each_item_once_and_at_most_100(ledger: Ledger) -> None:
    async def push(batch: list[BatchEvent]) -> None:
        async with ledger.pushing_many("reg-1", batch, owner="o", timing=TIMING, pushed_by="b"):
            pass

    with pytest.raises(ValueError, match="once"):
        await push(events("d", "d"))
    with pytest.raises(ValueError, match="at most"):
        await push(events(*(f"m-{i}" for i in range(MAX_TRANSACTION_OPERATIONS + 1))))


async def test_a_batch_cancelled_while_claiming_leaves_no_lease(ledger: Ledger, table: TableClient) -> None:
    """Ctrl-C while the claim transaction runs in its thread: the claims it makes are given back."""
    entered = asyncio.Event()

    async def push() -> None:
        async with ledger.pushing_many("reg-1", events("c-1", "c-2"), owner="bf/6", timing=TIMING, pushed_by="b"):
            entered.set()

    task = asyncio.create_task(push())
    await asyncio.sleep(0)  # the claim is under way in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not entered.is_set()
    rows = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_key(TENANT_ID, "reg-1")}))
    assert all(r["leaseOwner"] == "" for r in rows)
    async with ledger.pushing_many("reg-1", events("c-1", "c-2"), owner="bf/7", timing=TIMING, pushed_by="b") as b:
        assert set(b.pushes) == {"c-1", "c-2"}  # nothing busy: the next run takes them at once
