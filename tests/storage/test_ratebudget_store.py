"""The write budget is shared by every instance through Table storage (Azurite): four "instances"
(threads, each with its own table client, budget object and event loop) together stay under the rate."""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
import uuid

import pytest
from azure.data.tables import TableClient, TableServiceClient

from shared.graph import GraphTransientError
from shared.ratebudget import RATE_BUDGET, SLOT_VALIDITY_SECONDS, Policy, RateBudgets, SharedWriteBudget
from shared.settings import Settings
from tests.clocks import VirtualClock

TENANT = "0f0e0d0c-0000-4000-8000-000000000001"
INSTANCES = 4


def table(settings: Settings, name: str) -> TableClient:
    service = TableServiceClient.from_connection_string(settings.storage_connection_string or "")
    return service.get_table_client(name)


def most_in_any_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def run_instance(
    budget: SharedWriteBudget,
    until: float,
    sent: list[float],
    lock: threading.Lock,
    refusals: list[str],
    counts: list[int],
    index: int,
) -> None:
    """One instance: 8 concurrent pushes writing as fast as the budget lets them (``counts[index]``: its writes)."""

    async def push_loop() -> None:
        while time.time() < until:
            try:
                await budget.acquire(1, None)
            except GraphTransientError as error:
                refusals.append(error.code)
                await asyncio.sleep(0.1)
                continue
            stamp = time.time()
            with lock:
                sent.append(stamp)
                counts[index] += 1
            await budget.settled(202, None)

    async def main() -> None:
        await asyncio.gather(*(push_loop() for _ in range(8)))

    asyncio.run(main())


def test_four_instances_together_stay_under_the_rate(settings: Settings) -> None:
    name = f"budget{uuid.uuid4().hex[:10]}"
    policy = Policy(ceiling=40.0, burst=5)
    # Each instance its own table client and RateBudgets, as separate processes would have.
    budgets = [
        RateBudgets(table(settings, name), policy, home_tenant=TENANT, max_wait_seconds=2.0).for_registration(
            None, "reg-shared"
        )
        for _ in range(INSTANCES)
    ]
    sent: list[float] = []
    refusals: list[str] = []
    lock = threading.Lock()
    start = time.time()
    until = start + 4.0
    counts = [0] * INSTANCES
    threads = [
        threading.Thread(target=run_instance, args=(b, until, sent, lock, refusals, counts, i))
        for i, b in enumerate(budgets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(refusals) <= {RATE_BUDGET}  # only "later", never storage trouble
    elapsed = max(sent) - start
    # The bound at the table is C·W + b; a granted write may go up to SLOT_VALIDITY_SECONDS after its
    # time, which adds C x that much; one more for the thread that stamps a moment late.
    slack = policy.ceiling * SLOT_VALIDITY_SECONDS + 1
    for window in (0.25, 0.5, 1.0, 2.0, 4.0):
        assert most_in_any_window(sent, window) <= policy.bound(window) + slack, window
    # and the budget is used, not starved: counted, not timed (a loaded machine sends fewer, not more)
    assert all(counts), counts  # every instance took part
    assert len(sent) > policy.burst  # past the first burst: the shared row refilled and was shared
    print(f"\n{len(sent)} writes in {elapsed:.2f}s by {INSTANCES} instances: {len(sent) / elapsed:.1f}/s, ceiling 40/s")


def test_a_throttle_on_one_instance_pauses_the_others_and_cuts_the_shared_rate(settings: Settings) -> None:
    name = f"budget{uuid.uuid4().hex[:10]}"
    policy = Policy(ceiling=10.0, burst=1)
    clock = VirtualClock()  # one clock for the "instances": their waits are exact, whatever the load

    def instance() -> RateBudgets:
        return RateBudgets(
            table(settings, name), policy, home_tenant=TENANT, max_wait_seconds=1.0, clock=clock, sleep=clock.sleep
        )

    a, b = (instance().for_registration(TENANT.upper(), "reg-1") for _ in range(2))
    other_registration = instance().for_registration(None, "reg-2")

    async def scenario() -> None:
        await a.acquire(1, None)
        await a.settled(429, 3.0)
        assert b.wait_seconds() == pytest.approx(3.0)  # the other instance sees the pause
        assert other_registration.wait_seconds() == pytest.approx(3.0)  # notBefore is the tenant's
        with pytest.raises(GraphTransientError) as raised:
            await b.acquire(1, None)  # 3 s is longer than its 1 s inline budget
        assert raised.value.code == RATE_BUDGET
        assert raised.value.retry_after == pytest.approx(3.0)

    asyncio.run(scenario())
    rows = {e["RowKey"]: e for e in table(settings, name).query_entities(f"PartitionKey eq 'ratebudget:{TENANT}'")}
    assert rows["bucket:reg-1"]["rate"] == pytest.approx(5.0)  # halved, shared
    assert rows["notBefore"]["status"] == 429
    assert "bucket:reg-2" not in rows  # the rate is per registration

    clock.advance(3.1)  # past the pause

    async def after_the_pause() -> list[float]:
        stamps = []
        for _ in range(4):
            await b.acquire(1, None)
            stamps.append(clock())
        return stamps

    stamps = asyncio.run(after_the_pause())
    pause_end = rows["notBefore"]["notBefore"].timestamp()
    assert min(stamps) >= pause_end
    # Paced at the cut rate, 5/s: the fourth write is due 0.6 s after the pause (0.3 s at the old 10/s).
    assert stamps[-1] - pause_end >= 0.6 - 0.01
