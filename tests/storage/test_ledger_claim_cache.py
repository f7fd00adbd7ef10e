"""The ledger's known rows (issue 11, performance), against Azurite: a ``Ledger`` remembers each content
row as its own last read or write left it, so a claim on a row it wrote a moment ago is one conditional
write instead of a read and a write. The service still decides: a row another instance changed since
fails the write's etag condition, and the claim reads and judges it as it always did.

Requests are counted by the Table client's own pipeline (``raw_request_hook``, after its retry policy:
every HTTP request sent). Per claim on a row this instance knows: 2 requests before (GET + PATCH), 1
after (PATCH); per push through ``Ledger.pushing`` (claim + record): 3 before, 2 after."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, cast

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline import PipelineRequest
from azure.data.tables import TableClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from shared.ledger import (
    BatchEvent,
    ItemBusy,
    Ledger,
    LedgerConflict,
    LedgerEntry,
    PushTiming,
    announced_key,
    content_row_key,
    judge_claim,
    partition_key,
)
from shared.settings import Settings
from tests.conftest import TENANT_ID

T = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # event times
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # the clock leases are taken and judged on
LEASE = 50.0
TIMING = PushTiming(deadline_seconds=20.0, lease_seconds=LEASE)
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"
Op = Literal["upsert", "delete"]


def clock() -> datetime:
    return NOW


@dataclass
class Counted:
    """A TableClient whose every HTTP request is listed as its method (GET reads; POST creates; PATCH
    merges, conditional on an etag where the ledger says so)."""

    table: TableClient
    sent: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        taken = list(self.sent)
        self.sent.clear()
        return taken


def client(settings: Settings, name: str, **options: Any) -> TableClient:
    return TableClient.from_connection_string(settings.storage_connection_string or "", name, **options)


@pytest.fixture
def counted(settings: Settings) -> Counted:
    sent: list[str] = []

    def hook(request: PipelineRequest[Any]) -> None:
        sent.append(str(request.http_request.method))

    return Counted(client(settings, settings.ledger_table_name, raw_request_hook=hook), sent)


@pytest.fixture
def table(settings: Settings) -> TableClient:
    """The same table through a client of its own: another process's view of it."""
    return client(settings, settings.ledger_table_name)


def entry(external_id: str, at: datetime, op: Op = "upsert", pushed_at: datetime = NOW) -> LedgerEntry:
    return LedgerEntry("reg-1", external_id, op, at, pushed_at, "test", "demo", None)


def key(external_id: str, tenant: str = TENANT_ID) -> tuple[str, str]:
    return partition_key(tenant, "reg-1"), content_row_key(external_id)


def claim(ledger: Ledger, external_id: str, at: datetime, owner: str, op: str = "upsert") -> bool:
    return ledger.claim("reg-1", external_id, at, owner, LEASE, op=op, clock=clock)


async def push(ledger: Ledger, external_id: str, at: datetime, owner: str) -> None:
    async with ledger.pushing(
        "reg-1", external_id, owner=owner, timing=TIMING, pushed_by="test", event_time=at, source="demo"
    ):
        pass


# -- requests per claim ------------------------------------------------------------------------


async def test_a_claim_on_a_row_this_instance_pushed_is_one_request(counted: Counted, table: TableClient) -> None:
    ledger = Ledger(counted.table, tenant_id=TENANT_ID)
    cacheless = Ledger(counted.table, tenant_id=TENANT_ID, known_rows=0)  # the ledger before issue 11
    await push(ledger, "p-1", T, "m-1")
    await push(cacheless, "p-2", T, "m-1")
    counted.take()

    assert claim(cacheless, "p-2", T + timedelta(minutes=1), "m-2")
    assert counted.take() == ["GET", "PATCH"]
    assert claim(ledger, "p-1", T + timedelta(minutes=1), "m-2")
    assert counted.take() == ["PATCH"]  # the conditional write alone: no read
    lease = table.get_entity(*key("p-1"))
    assert (lease["leaseOwner"], lease["leaseUntil"]) == ("m-2", NOW + timedelta(seconds=LEASE))

    # A whole push (claim, then the record that ends the lease): 3 requests before, 2 now.
    ledger.release("reg-1", "p-1", "m-2")
    cacheless.release("reg-1", "p-2", "m-2")
    counted.take()
    await push(cacheless, "p-2", T + timedelta(minutes=2), "m-3")
    assert counted.take() == ["GET", "PATCH", "PATCH"]
    await push(ledger, "p-1", T + timedelta(minutes=2), "m-3")
    assert counted.take() == ["PATCH", "PATCH"]
    recorded = ledger.last_push("reg-1", "p-1")
    assert recorded is not None
    assert recorded.event_time == T + timedelta(minutes=2)
    assert table.get_entity(*key("p-1"))["leaseOwner"] == ""


def test_a_read_makes_the_row_known_and_the_bound_forgets_the_oldest(counted: Counted) -> None:
    ledger = Ledger(counted.table, tenant_id=TENANT_ID, known_rows=2)
    other = Ledger(counted.table, tenant_id=TENANT_ID, known_rows=0)
    for external_id in ("a", "b", "c"):
        assert other.record(entry(external_id, T))
    assert ledger.last_push("reg-1", "a") is not None  # a read: "a" known
    counted.take()
    assert claim(ledger, "a", T + timedelta(minutes=1), "m-1")
    assert counted.take() == ["PATCH"]
    for external_id in ("b", "c"):  # two more rows known: "a", the least recently used, is forgotten
        assert ledger.last_push("reg-1", external_id) is not None
    counted.take()
    assert claim(ledger, "b", T + timedelta(minutes=1), "m-1")
    assert counted.take() == ["PATCH"]
    assert ledger.record(entry("a", T + timedelta(minutes=1)), "m-1")
    assert counted.take() == ["GET", "PATCH"]


async def test_a_batch_push_leaves_its_rows_known(counted: Counted) -> None:
    ledger = Ledger(counted.table, tenant_id=TENANT_ID)
    ids = ["n-1", "n-2"]
    async with ledger.pushing_many(
        "reg-1", [BatchEvent(i, T) for i in ids], owner="bf/1", timing=TIMING, pushed_by="backfill"
    ) as batch:
        for external_id in ids:
            batch.succeeded(external_id)
    assert batch.recorded == set(ids)
    counted.take()
    assert claim(ledger, "n-2", T + timedelta(minutes=1), "m-1")
    assert counted.take() == ["PATCH"]


def test_tenant_views_share_the_known_rows(counted: Counted) -> None:
    home = Ledger(counted.table, tenant_id=TENANT_ID)
    assert home.last_push("reg-1", "v-1") is None  # the table made before the view, which inherits that
    other = home.for_tenant(OTHER_TENANT)
    assert other._known is home._known  # one LRU bound for the whole table's rows
    assert other.record(entry("v-1", T))
    counted.take()
    assert claim(home.for_tenant(OTHER_TENANT), "v-1", T + timedelta(minutes=1), "m-1")
    assert counted.take() == ["PATCH"]
    assert claim(home, "v-1", T, "m-1")  # the home tenant's row of the same item is another row
    assert counted.take() == ["GET", "POST"]


# -- the service still decides ---------------------------------------------------------------------


def test_a_row_another_instance_changed_is_read_and_judged_again(counted: Counted, table: TableClient) -> None:
    mine = Ledger(counted.table, tenant_id=TENANT_ID)
    theirs = Ledger(table, tenant_id=TENANT_ID)  # another process on the same table
    assert mine.record(entry("x", T))
    assert theirs.record(entry("x", T + timedelta(minutes=2)))
    counted.take()

    # The known row would let T+1 through; its etag fails (412), and the row as read refuses it.
    assert not claim(mine, "x", T + timedelta(minutes=1), "m-1")
    assert counted.take() == ["PATCH", "GET"]
    assert table.get_entity(*key("x")).get("leaseOwner", "") == ""  # nothing taken
    # A newer event goes ahead, on the row as just read.
    assert claim(mine, "x", T + timedelta(minutes=3), "m-1")
    assert counted.take() == ["PATCH"]
    assert table.get_entity(*key("x"))["leaseOwner"] == "m-1"


def test_another_owners_live_lease_is_busy_and_a_known_busy_row_is_read_again(
    counted: Counted, table: TableClient
) -> None:
    mine = Ledger(counted.table, tenant_id=TENANT_ID)
    theirs = Ledger(table, tenant_id=TENANT_ID)
    assert mine.record(entry("y", T))  # known: no lease
    assert claim(theirs, "y", T + timedelta(minutes=1), "worker-b")
    with pytest.raises(ItemBusy) as busy:
        claim(mine, "y", T + timedelta(minutes=2), "m-1")
    assert busy.value.until == NOW + timedelta(seconds=LEASE)

    # Now the known row (as read) says busy, but the other owner lets go: only a read may refuse.
    theirs.release("reg-1", "y", "worker-b")
    counted.take()
    assert claim(mine, "y", T + timedelta(minutes=2), "m-1")
    assert counted.take() == ["GET", "PATCH"]


def test_a_row_deleted_behind_the_known_row_is_created_again(counted: Counted, table: TableClient) -> None:
    mine = Ledger(counted.table, tenant_id=TENANT_ID)
    assert mine.record(entry("z", T))
    table.delete_entity(*key("z"))
    counted.take()
    assert claim(mine, "z", T + timedelta(minutes=1), "m-1")  # 404 on the known row's etag: read, then create
    assert counted.take() == ["PATCH", "GET", "POST"]


def test_only_a_read_refuses(counted: Counted, table: TableClient) -> None:
    """A known row's judgement that writes nothing (stale, not announced, not the owner's lease) is made
    again on a read: here the row was deleted behind it, so the read lets each write through."""
    mine = Ledger(counted.table, tenant_id=TENANT_ID)
    theirs = Ledger(table, tenant_id=TENANT_ID)
    later = T + timedelta(minutes=5)
    for external_id in ("s-claim", "s-record", "s-announce"):
        assert mine.record(entry(external_id, later))
        table.delete_entity(*key(external_id))
    counted.take()
    assert claim(mine, "s-claim", T, "m-1")
    assert mine.record(entry("s-record", T))
    assert mine.announce("reg-1", "s-announce", T)
    assert counted.take() == ["GET", "POST"] * 3

    # The same message (owner) claimed through another instance: this one knows the row without a lease.
    assert mine.last_push("reg-1", "s-record") is not None
    assert claim(theirs, "s-record", later, "m-1")
    mine.release("reg-1", "s-record", "m-1")
    assert table.get_entity(*key("s-record"))["leaseOwner"] == ""


def test_a_deleted_table_still_raises(counted: Counted, table: TableClient) -> None:
    """A 404 after a read (the table gone) is the caller's error, as before the known rows."""
    mine = Ledger(counted.table, tenant_id=TENANT_ID)
    assert mine.record(entry("gone", T))
    counted.table.delete_table()
    with pytest.raises(ResourceNotFoundError):
        claim(mine, "gone", T + timedelta(minutes=1), "m-1")


# -- the known row is the row as read -------------------------------------------------------------


def shown(entity: dict[str, Any]) -> dict[str, Any]:
    """Properties with each datetime's exact printed form (tz included), so a value equal only as an
    instant, or to another precision, would differ."""
    return {k: (v.isoformat(), v.tzinfo is UTC) if isinstance(v, datetime) else v for k, v in entity.items()}


def verdict(entity: dict[str, Any] | None, at: datetime, owner: str, op: str = "upsert") -> object:
    try:
        claimed = judge_claim(entity, "k", at, owner, op, None, NOW)
    except ItemBusy as busy:
        return ("busy", busy.until)
    return (claimed.stale, claimed.superseded, claimed.inherited_until)


def test_the_known_row_is_exactly_the_row_as_read(counted: Counted, table: TableClient) -> None:
    """After each kind of write (create, merge, record, announce, hold, release), in a zone other than
    UTC and to the microsecond: the same properties, the same etag and the same judgements as a read."""
    ledger = Ledger(counted.table, tenant_id=TENANT_ID)
    at = datetime(2026, 11, 27, 11, 0, 0, 123457, tzinfo=timezone(timedelta(hours=2)))
    minute = timedelta(minutes=1)
    steps: list[Callable[[], object]] = [
        lambda: ledger.announce("reg-1", "k", at - minute, op="delete", source_event_id="ev-9"),
        lambda: claim(ledger, "k", at, "m-1"),
        lambda: ledger.hold("reg-1", "k", "m-1", NOW + timedelta(seconds=7, microseconds=999999)),
        lambda: ledger.record(entry("k", at, pushed_at=at + timedelta(microseconds=1)), "m-1"),
        lambda: ledger.announce("reg-1", "k", at + 2 * minute),
        lambda: claim(ledger, "k", at + 2 * minute, "m-2"),
        lambda: ledger.release("reg-1", "k", "m-2"),
    ]
    for step in steps:
        step()
        known = ledger._known.get(key("k"))
        read = table.get_entity(*key("k"))
        assert known is not None
        assert known.etag == read.metadata["etag"]
        assert known.entity == dict(read)
        assert shown(known.entity) == shown(dict(read))
        assert announced_key(known.entity) == announced_key(read)
        if "pushedAt" in read:
            assert LedgerEntry.from_entity(known.entity) == LedgerEntry.from_entity(read)
        for event in (at - minute, at, at + minute, at + 2 * minute, at + 3 * minute):
            for owner in ("m-1", "m-2"):
                assert verdict(known.entity, event, owner) == verdict(read, event, owner)


# -- interleavings: two cached instances decide as two cache-less ones ------------------------------

Step = tuple[int, str, int, str, str, bool]  # instance, action, event minute, owner, op, the clock moves on
steps_strategy = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from(["claim", "record", "announce", "release"]),
        st.integers(0, 3),
        st.sampled_from(["o-1", "o-2"]),
        st.sampled_from(["upsert", "delete"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def act(ledger: Ledger, external_id: str, step: Step, now: Clock) -> object:
    """One step's decision: claimed / stale / busy, recorded or not, announced or not."""
    _, action, minute, owner, op, _ = step
    at = T + timedelta(minutes=minute)
    if action == "claim":
        try:
            return ledger.claim("reg-1", external_id, at, owner, LEASE, op=op, clock=now)
        except ItemBusy as busy:
            return ("busy", busy.until)
    if action == "record":
        try:
            return ledger.record(LedgerEntry("reg-1", external_id, cast(Op, op), at, now(), "test"), owner)
        except LedgerConflict:
            return "conflict"
    if action == "announce":
        return ledger.announce("reg-1", external_id, at, op=op)
    ledger.release("reg-1", external_id, owner)
    return None


def row_of(table: TableClient, external_id: str) -> dict[str, Any] | None:
    try:
        return dict(table.get_entity(*key(external_id)))
    except ResourceNotFoundError:
        return None


@pytest.fixture
def tables(settings: Settings) -> tuple[TableClient, TableClient]:
    cached, plain = client(settings, settings.ledger_table_name), client(settings, settings.ledger_table_name + "plain")
    for table in (cached, plain):
        table.create_table()
    return cached, plain


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps_strategy)
def test_two_instances_with_known_rows_decide_as_without(
    tables: tuple[TableClient, TableClient], steps: list[Step]
) -> None:
    """The same steps on one row by two instances with known rows (one table) and by two without
    (another table, the oracle): every decision and the row after it are the same, and a known row
    whose etag is the row's is exactly the row as read."""
    cached_table, plain_table = tables
    cached = [Ledger(cached_table, tenant_id=TENANT_ID) for _ in range(2)]
    plain = [Ledger(plain_table, tenant_id=TENANT_ID, known_rows=0) for _ in range(2)]
    external_id = f"h-{uuid.uuid4().hex}"
    now = Clock()
    for step in steps:
        if step[5]:
            now.now += timedelta(seconds=LEASE / 2)  # two moves end a lease
        assert act(cached[step[0]], external_id, step, now) == act(plain[step[0]], external_id, step, now), step
        row = row_of(cached_table, external_id)
        assert row == row_of(plain_table, external_id)
        for ledger in cached:
            known = ledger._known.get(key(external_id))
            read = cached_table.get_entity(*key(external_id)) if row is not None else None
            if known is not None and read is not None and known.etag == read.metadata["etag"]:
                assert shown(known.entity) == shown(dict(read))
