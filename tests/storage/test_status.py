"""Status and health read from real storage (Azurite): queue depths, the oldest waiting command, last
success per source from the ledger, last failure per source from the poison queue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueServiceClient

from shared import status
from shared.ledger import Ledger, LedgerEntry
from shared.models import CommandError
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from tests.storage.test_replay_poison import command as parked


def command(external_id: str, source: str, parked_at: datetime | None = None) -> str:
    error = None if parked_at is None else CommandError(kind="permanent", status=400, message="no", at=parked_at)
    return parked(external_id, source, None, lastError=error).to_json()


@pytest.fixture
def queue(settings: Settings) -> StorageCommandQueue:
    return StorageCommandQueue.from_settings(settings)


@pytest.fixture
def table(settings: Settings) -> TableClient:
    return status.ledger_table(settings)


def push(settings: Settings, external_id: str, source: str, pushed_at: datetime) -> None:
    entry = LedgerEntry("reg-1", external_id, "upsert", pushed_at, pushed_at, "worker", source, "evt")
    assert Ledger.from_settings(settings).record(entry)


def test_nothing_created_yet_is_up_and_empty(queue: StorageCommandQueue, table: TableClient) -> None:
    report = status.collect(queue, table, ["lms-a"])
    view = report.view()
    assert view["status"] == "up"
    assert {role: q["approximateCount"] for role, q in view["queues"].items()} == {"work": 0, "poison": 0, "held": 0}
    assert view["ledgerScan"] == {"windowHours": 24, "rowsRead": 0, "complete": True}
    assert view["sources"] == [
        {
            "source": "lms-a",
            "configured": True,
            "lastSuccess": None,
            "lastFailure": None,
            "lastFailureKind": None,
            "parkedSeen": 0,
        }
    ]


def test_the_report_reads_depths_ages_successes_and_failures(
    queue: StorageCommandQueue, table: TableClient, settings: Settings
) -> None:
    now = datetime.now(UTC)
    queue.send_all([command("w-1", "lms-a"), command("w-2", "lms-a")])
    queue.hold(command("h-1", "lms-a"))
    failed_at = now - timedelta(minutes=3)
    queue.park(command("p-1", "lms-b", parked_at=now - timedelta(minutes=9)))
    queue.park(command("p-2", "lms-b", parked_at=failed_at))
    queue.park("not json")
    push(settings, "s-1", "lms-a", now - timedelta(hours=2))
    push(settings, "s-2", "lms-a", now - timedelta(minutes=10))
    push(settings, "s-3", "lms-c", now - timedelta(hours=30))  # outside the 24-hour window

    view = status.collect(queue, table, ["lms-a", "lms-b", "lms-c"]).view()
    assert view["status"] == "degraded"
    assert view["reasons"] == [f"3 parked command(s) in {settings.poison_queue_name}"]
    queues = view["queues"]
    assert {role: q["approximateCount"] for role, q in queues.items()} == {"work": 2, "poison": 3, "held": 1}
    assert queues["work"]["name"] == settings.content_queue_name
    assert 0 <= queues["work"]["oldestAgeSeconds"] < 60
    by_source = {s["source"]: s for s in view["sources"]}
    assert datetime.fromisoformat(by_source["lms-a"]["lastSuccess"]) == pytest.approx(
        now - timedelta(minutes=10), abs=timedelta(seconds=1)
    )
    assert by_source["lms-a"]["lastFailure"] is None
    assert datetime.fromisoformat(by_source["lms-b"]["lastFailure"]) == failed_at
    assert (by_source["lms-b"]["lastFailureKind"], by_source["lms-b"]["parkedSeen"]) == ("permanent", 2)
    assert by_source["lms-c"]["lastSuccess"] is None
    assert view["ledgerScan"]["rowsRead"] == 2
    assert view["poisonScan"] == {"peeked": 3, "approximateCount": 3, "complete": True}
    assert view["circuit"] == "closed"  # no circuit row yet: closed (shared.circuit)


def test_the_ledger_scan_is_bounded_and_says_so(table: TableClient, settings: Settings) -> None:
    now = datetime.now(UTC)
    for index in range(3):
        push(settings, f"b-{index}", "lms-a", now - timedelta(minutes=index))
    bounded = status.last_pushes(table, now, max_pages=2, page_size=1)
    assert (bounded.rows_read, bounded.complete) == (2, False)
    whole = status.last_pushes(table, now, max_pages=3, page_size=1)
    assert (whole.rows_read, whole.complete, whole.last_success["lms-a"]) == (3, True, now)


def test_health_is_up_then_degraded_by_poison_or_backlog(queue: StorageCommandQueue) -> None:
    queue.ensure_queues()
    assert dict(status.health(queue, max_age=0).body) == {"status": "up"}
    queue.send_all([command("w-1", "lms-a")])
    assert dict(status.health(queue, max_age=0).body) == {"status": "up"}
    # The same queue seen 20 minutes later: the command has waited too long.
    later = status.health(queue, now=lambda: datetime.now(UTC) + timedelta(minutes=20), max_age=0)
    assert (later.status, dict(later.body)) == (200, {"status": "degraded"})
    queue.park(command("p-1", "lms-a", parked_at=datetime.now(UTC)))
    parked = status.health(queue, max_age=0)
    assert (parked.status, dict(parked.body)) == (200, {"status": "degraded"})


def test_unreachable_storage_is_down(settings: Settings) -> None:
    connection = settings.storage_connection_string or ""
    # Nothing listens on port 9 (discard): the queue service cannot be reached; no retries to wait out.
    unreachable = re.sub(r"QueueEndpoint=[^;]+", "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1", connection)
    service = QueueServiceClient.from_connection_string(unreachable, retry_total=0)
    queue = StorageCommandQueue(service, "work", "work-poison", "work-held")
    answer = status.health(queue, max_age=0)
    assert (answer.status, dict(answer.body)) == (503, {"status": "down"})


def test_an_open_circuit_makes_health_degraded(queue: StorageCommandQueue, table: TableClient) -> None:
    """Commands waiting for Graph are a degraded state the operator must see (issue 9 point 11)."""
    from shared.circuit import FAILURES_TO_OPEN, CircuitBreaker, TableCircuitStore

    breaker = CircuitBreaker(TableCircuitStore(table), cache_seconds=0)
    for _ in range(FAILURES_TO_OPEN):
        breaker.record("failure")
    report = status.collect(queue, table, ["lms-a"])
    assert (report.status, report.circuit) == ("degraded", "open")
    assert any("circuit is open until" in reason for reason in report.reasons)


def test_items_needing_repair_are_listed_and_degrade_health(
    queue: StorageCommandQueue, table: TableClient, settings: Settings
) -> None:
    """A lost lease (issue 9 point 2) leaves Graph maybe holding an older state: the operator must see it."""
    from shared.ledger import Ledger, LedgerEntry

    ledger = Ledger.from_settings(settings)
    now = datetime.now(UTC)
    ledger.record(LedgerEntry("reg-r", "item-r", "upsert", now, now, "worker", "lms-a", "e-new"))
    assert status.collect(queue, table, ["lms-a"]).needs_repair == []
    ledger.mark_repair(
        LedgerEntry("reg-r", "item-r", "upsert", now - timedelta(minutes=1), now, "worker", "lms-a", "e-old")
    )
    report = status.collect(queue, table, ["lms-a"])
    assert report.status == "degraded"
    assert report.view()["needsRepair"] == [
        {"tenantId": settings.home_tenant(), "registrationId": "reg-r", "externalId": "item-r"}
    ]
    assert any("need repair" in reason for reason in report.reasons)
