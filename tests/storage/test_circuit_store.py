"""The circuit breaker's state is shared by every instance through Table storage (Azurite)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableServiceClient

from shared.circuit import FAILURES_TO_OPEN, FIRST_COOLDOWN, PROBE_RECHECK, Circuit, CircuitBreaker, TableCircuitStore
from shared.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def breakers(settings: Settings, clock: Clock, n: int = 2) -> list[CircuitBreaker]:
    service = TableServiceClient.from_connection_string(settings.storage_connection_string or "")
    table = service.get_table_client(f"circuit{uuid.uuid4().hex[:10]}")
    store = TableCircuitStore(table)
    # cache 0: every call reads the row, as two instances several seconds apart would
    return [CircuitBreaker(store, clock=clock, cache_seconds=0) for _ in range(n)]


def test_failures_on_two_instances_open_one_shared_circuit(settings: Settings) -> None:
    clock = Clock()
    a, b = breakers(settings, clock)
    assert a.wait_seconds() == b.wait_seconds() == 0.0
    for i in range(FAILURES_TO_OPEN):
        (a if i % 2 else b).record("failure")
    assert a.view()["state"] == b.view()["state"] == "open"
    assert b.wait_seconds() == FIRST_COOLDOWN.total_seconds()  # both instances hold their commands

    clock.now += FIRST_COOLDOWN
    assert a.wait_seconds() == 0.0  # a is the probe
    assert b.wait_seconds() == PROBE_RECHECK.total_seconds()  # b looks again soon: the probe answers in seconds
    a.record("success")
    assert b.wait_seconds() == 0.0
    assert b.view() == {"state": "closed", "until": None, "failures": 0}


def test_a_failed_probe_doubles_the_cool_down(settings: Settings) -> None:
    clock = Clock()
    [a] = breakers(settings, clock, 1)
    for _ in range(FAILURES_TO_OPEN):
        a.record("failure")
    clock.now += FIRST_COOLDOWN
    assert a.wait_seconds() == 0.0
    a.record("failure")
    assert a.wait_seconds() == 2 * FIRST_COOLDOWN.total_seconds()
    clock.now += timedelta(seconds=1)
    assert a.wait_seconds() == 2 * FIRST_COOLDOWN.total_seconds() - 1


class BrokenStore:
    def read(self) -> tuple[Circuit, str | None]:
        raise ServiceRequestError("storage down")

    def write(self, circuit: Circuit, etag: str | None) -> bool:
        raise ServiceRequestError("storage down")


def test_unreadable_state_lets_commands_through() -> None:
    breaker = CircuitBreaker(BrokenStore())
    assert breaker.wait_seconds() == 0.0
    breaker.record("failure")  # logged, not raised
