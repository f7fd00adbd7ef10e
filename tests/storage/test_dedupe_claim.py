"""``TableDeliveryDedupe.claim`` against Azurite: one insert for a new delivery, the earlier one for a
redelivery, an expired row taken over, and exactly one winner when two instances claim at once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.dedupe import SeenDelivery, TableDeliveryDedupe
from shared.settings import Settings

HORIZON = timedelta(hours=72)


class CountingTable:
    """The real table client, counting the requests made through it."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._table, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def table(settings: Settings) -> TableClient:
    client = TableClient.from_connection_string(
        settings.storage_connection_string or "", f"claims{uuid.uuid4().hex[:10]}"
    )
    client.create_table()
    return client


def accepted(at: datetime, correlation: str = "first") -> SeenDelivery:
    return SeenDelivery(correlation, (f"m-{correlation}",), at, at)


def test_a_new_delivery_costs_one_insert(table: TableClient) -> None:
    counting = CountingTable(table)
    dedupe = TableDeliveryDedupe(counting, HORIZON)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    assert dedupe.claim("demo", "k1", accepted(now)) is None
    assert counting.calls == ["create_entity"]
    row = table.get_entity("demo", "k1")
    assert row["correlationId"] == "first"
    assert row["messageIds"] == '["m-first"]'


def test_a_redelivery_gets_the_earlier_delivery_and_moves_its_horizon(table: TableClient) -> None:
    dedupe = TableDeliveryDedupe(table, HORIZON)
    first = datetime.now(UTC) - timedelta(hours=70)
    assert dedupe.claim("demo", "k1", accepted(first)) is None
    later = first + timedelta(hours=70)
    earlier = dedupe.claim("demo", "k1", accepted(later, "retry"))
    assert earlier is not None
    assert earlier.correlation_id == "first"
    assert earlier.message_ids == ("m-first",)
    assert earlier.seen_at == later
    row = table.get_entity("demo", "k1")
    assert row["correlationId"] == "first", "the redelivery is not remembered in the first's place"
    assert abs(row["seenAt"] - later) < timedelta(milliseconds=1)
    # 140 h after the first, 70 h after the redelivery: still within the horizon
    assert dedupe.claim("demo", "k1", accepted(later + timedelta(hours=70), "again")) is not None


def test_an_expired_row_is_taken_over(table: TableClient) -> None:
    dedupe = TableDeliveryDedupe(table, HORIZON)
    old = datetime.now(UTC) - timedelta(hours=100)
    assert dedupe.claim("demo", "k1", accepted(old, "old")) is None
    now = datetime.now(UTC)
    assert dedupe.claim("demo", "k1", accepted(now, "new")) is None
    assert table.get_entity("demo", "k1")["correlationId"] == "new"


def test_the_table_is_made_on_the_first_claim(settings: Settings) -> None:
    client = TableClient.from_connection_string(
        settings.storage_connection_string or "", f"fresh{uuid.uuid4().hex[:10]}"
    )
    dedupe = TableDeliveryDedupe(client, HORIZON)
    assert dedupe.claim("demo", "k1", accepted(datetime.now(UTC))) is None
    assert client.get_entity("demo", "k1")["correlationId"] == "first"


def race(dedupes: list[TableDeliveryDedupe], key: str) -> list[SeenDelivery | None]:
    """Both instances claim ``key`` at the same moment; what each got back."""
    start = threading.Barrier(len(dedupes))
    results: list[SeenDelivery | None] = [None] * len(dedupes)

    def claim(index: int) -> None:
        start.wait()
        results[index] = dedupes[index].claim("demo", key, accepted(datetime.now(UTC), f"i{index}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(dedupes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


@pytest.mark.parametrize("expired", [False, True])
def test_two_instances_claiming_at_once_have_exactly_one_winner(
    table: TableClient, settings: Settings, expired: bool
) -> None:
    """Two instances (two table clients), eight rounds of simultaneous claims of one key."""
    other = TableClient.from_connection_string(settings.storage_connection_string or "", table.table_name)
    dedupes = [TableDeliveryDedupe(table, HORIZON), TableDeliveryDedupe(other, HORIZON)]
    for attempt in range(8):
        key = f"race-{attempt}"
        if expired:  # both find an expired row and race to take it over (the ETag decides)
            dedupes[0].claim("demo", key, accepted(datetime.now(UTC) - timedelta(days=9)))
        results = race(dedupes, key)
        winners = [i for i, result in enumerate(results) if result is None]
        assert len(winners) == 1, results
        loser = results[1 - winners[0]]
        assert loser is not None
        assert loser.correlation_id == f"i{winners[0]}"
        assert table.get_entity("demo", key)["correlationId"] == f"i{winners[0]}"


def test_an_insert_whose_answer_was_lost_is_still_this_deliverys(table: TableClient) -> None:
    """The insert landed, its answer did not, the SDK sent it again: 409 on the row it wrote itself.
    That is no redelivery: its commands must stay queued. Also for a delivery of more ids than a row keeps."""
    now = datetime.now(UTC)
    many = SeenDelivery("big", tuple(f"{uuid.uuid4()}" for _ in range(1000)), now, now)
    for key, delivery in (("k1", accepted(now)), ("k2", many)):
        lost_answer = LosingFirstAnswer(table)
        assert TableDeliveryDedupe(lost_answer, HORIZON).claim("demo", key, delivery) is None  # type: ignore[arg-type]
        assert lost_answer.lost == ["create_entity"]
        assert table.get_entity("demo", key)["correlationId"] == delivery.correlation_id
    # the same delivery claimed again (a true redelivery: another claim) is a duplicate
    assert TableDeliveryDedupe(table, HORIZON).claim("demo", "k2", many) is not None


class LosingFirstAnswer(CountingTable):
    """The first create lands, but its caller sees the SDK's retry answered 409 (the answer was lost)."""

    def __init__(self, table: TableClient) -> None:
        super().__init__(table)
        self.lost: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = super().__getattr__(name)
        if name != "create_entity" or self.lost:
            return method

        def landed_then_conflict(*args: Any, **kwargs: Any) -> Any:
            method(*args, **kwargs)
            self.lost.append(name)
            return method(*args, **kwargs)  # the retry: ResourceExistsError on its own row

        return landed_then_conflict
