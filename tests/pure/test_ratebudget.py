"""The write budget's rule on its own (issue 11 point 3): the bucket never grants more than
``C·W + b`` in any window of W seconds, whatever the history of reservations, throttles and
successes, and nothing is reserved before a ``notBefore``."""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.graph import Deadline, GraphTransientError
from shared.ratebudget import (
    DEFAULT_BURST,
    DRAFT_BLOCK_LIMIT,
    DRAFT_BLOCK_SECONDS,
    DRAFT_RATE_PER_SECOND,
    RATE_BUDGET,
    SLOT_VALIDITY_SECONDS,
    Bucket,
    Policy,
    RateBudgets,
    SharedWriteBudget,
    grown,
    reserve,
    throttled,
)
from shared.settings import Settings
from tests.conftest import TENANT_ID

EPSILON = 1e-6


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` inside one closed window of ``window`` seconds."""
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def test_the_draft_figures_combine_into_a_rate_that_keeps_the_block_limit() -> None:
    policy = Policy.from_figures(DRAFT_RATE_PER_SECOND, DEFAULT_BURST, DRAFT_BLOCK_LIMIT, DRAFT_BLOCK_SECONDS)
    assert policy.ceiling == pytest.approx(0.8)  # (500 - 20) / 600, under the 1/s figure
    assert policy.bound(DRAFT_BLOCK_SECONDS) == pytest.approx(DRAFT_BLOCK_LIMIT)
    strict = Policy.from_figures(DRAFT_RATE_PER_SECOND, 1, DRAFT_BLOCK_LIMIT, DRAFT_BLOCK_SECONDS)
    assert strict.ceiling == pytest.approx(499 / 600)
    assert Policy.from_figures(100.0, 20).ceiling == 100.0  # no block limit: the rate alone
    with pytest.raises(ValueError, match="must exceed the burst"):
        Policy.from_figures(1.0, 20, 20)


def test_an_idle_bucket_lets_a_burst_go_then_paces_at_the_rate() -> None:
    policy = Policy(ceiling=2.0, burst=5)
    bucket, times = reserve(Bucket(), 8, now=100.0, horizon=10.0, policy=policy)
    assert times[:5] == [100.0] * 5
    assert times[5:] == pytest.approx([100.5, 101.0, 101.5])
    _, none = reserve(bucket, 1, now=100.0, horizon=1.0, policy=policy)
    assert none == []  # the next is due at 102.0, beyond the horizon: nothing reserved


def test_a_throttle_pauses_halves_once_per_episode_and_restarts_empty() -> None:
    policy = Policy(ceiling=10.0, burst=10)
    paused = throttled(Bucket(), now=50.0, retry_after=30.0, policy=policy)
    assert (paused.not_before, paused.current_rate(policy)) == (80.0, 5.0)
    again = throttled(paused, now=51.0, retry_after=2.0, policy=policy)  # in flight before the pause
    assert (again.not_before, again.current_rate(policy)) == (80.0, 5.0)
    _, early = reserve(again, 1, now=79.0, horizon=0.5, policy=policy)
    assert early == []
    _, times = reserve(again, 3, now=80.0, horizon=5.0, policy=policy)
    assert times == pytest.approx([80.0, 80.2, 80.4])  # no burst into the pause's end, at the cut rate
    later = throttled(again, now=90.0, retry_after=None, policy=policy)  # a new episode: cut again
    assert later.current_rate(policy) == 2.5
    assert later.not_before == 95.0  # no Retry-After: the fallback pause


def test_successes_raise_the_rate_additively_to_the_ceiling_only() -> None:
    policy = Policy(ceiling=10.0, burst=1)
    cut = throttled(Bucket(), 0.0, 1.0, policy)
    assert grown(cut, 5, policy).current_rate(policy) == pytest.approx(5.0 + 5 * 0.2)
    assert grown(cut, 1000, policy).current_rate(policy) == 10.0
    floor = Bucket(rate=0.0001)
    assert floor.current_rate(policy) == policy.floor


steps = st.lists(
    st.tuples(
        st.floats(0, 30),  # seconds since the previous step
        st.sampled_from(["single", "batch", "throttle", "success"]),
        st.integers(1, 25),  # writes wanted, or successes
        st.one_of(st.none(), st.floats(0, 60)),  # Retry-After of a throttle
        st.floats(0, 20),  # horizon
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.05, 50),
    st.integers(1, 25),
    steps,
    st.sampled_from([0.5, 1.0, 7.0, 60.0, 600.0]),
)
def test_no_window_ever_gets_more_than_the_rate_allows(
    ceiling: float, burst: int, history: list[tuple[float, str, int, float | None, float]], window: float
) -> None:
    policy = Policy(ceiling=ceiling, burst=burst)
    bucket, now, sent, batch_overshoot = Bucket(), 1000.0, [], 0
    for dt, kind, n, retry_after, horizon in history:
        now += dt
        if kind == "single":
            paused_until = bucket.not_before
            bucket, times = reserve(bucket, n, now, horizon, policy)
            assert all(t >= paused_until - EPSILON and t >= now and t <= now + horizon + EPSILON for t in times)
            sent += times
        elif kind == "batch":
            paused_until = bucket.not_before
            bucket, times = reserve(bucket, n, now, horizon, policy, together=True)
            assert times == [] or (len(times) == n and len(set(times)) == 1 and times[0] >= paused_until - EPSILON)
            batch_overshoot = max(batch_overshoot, n - burst) if times else batch_overshoot
            sent += times
        elif kind == "throttle":
            bucket = throttled(bucket, now, retry_after, policy)
        else:
            bucket = grown(bucket, n, policy)
    # A batch larger than the burst is the one documented excess (it goes when its last write is due).
    assert most_in_any_window(sent, window) <= policy.bound(window) + batch_overshoot + EPSILON


@settings(max_examples=200, deadline=None)
@given(st.floats(0.1, 10), st.floats(0, 120), st.lists(st.floats(0, 5), max_size=30))
def test_nothing_is_reserved_before_a_not_before(ceiling: float, retry_after: float, gaps: list[float]) -> None:
    policy = Policy(ceiling=ceiling, burst=20)
    bucket = throttled(Bucket(), 0.0, retry_after, policy)
    now = 0.0
    for gap in gaps:
        now += gap
        bucket, times = reserve(bucket, 3, now, 1000.0, policy)
        assert all(t >= retry_after for t in times)


# -- one instance's acquire, with a fake store and clock -------------------------------------------


class MemoryStore:
    def __init__(self) -> None:
        self.bucket, self.version, self.round_trips = Bucket(), 0, 0

    def read(self) -> tuple[Bucket, str | None]:
        self.round_trips += 1
        return self.bucket, str(self.version) if self.version else None

    def write(self, bucket: Bucket, etag: str | None) -> bool:
        if etag != (str(self.version) if self.version else None):
            return False
        self.bucket, self.version = bucket, self.version + 1
        return True

    def pause(self, until: float, status: int | None) -> None:
        self.bucket = Bucket(self.bucket.tat, self.bucket.rate, max(self.bucket.not_before, until))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_acquire_waits_within_its_budget_and_raises_beyond_it() -> None:
    clock, store = Clock(), MemoryStore()
    budget = SharedWriteBudget(
        store, Policy(ceiling=1.0, burst=2), max_wait_seconds=3.0, clock=clock, sleep=clock.sleep
    )

    async def run() -> None:
        await budget.acquire(1, None)
        await budget.acquire(1, None)  # the burst: no wait
        assert clock.now == 1000.0
        await budget.acquire(1, None)
        assert clock.now == 1001.0  # paced at 1/s
        await budget.settled(429, 30.0)
        with pytest.raises(GraphTransientError) as raised:
            await budget.acquire(1, None)
        assert raised.value.code == RATE_BUDGET
        assert raised.value.retry_after == pytest.approx(30.0)
        assert budget.wait_seconds() == pytest.approx(30.0)
        clock.now += 30.0
        await budget.acquire(1, Deadline.after(60.0, clock))
        assert clock.now == 1031.0

    asyncio.run(run())


def test_a_high_rate_grants_several_writes_per_round_trip_and_drops_stale_ones() -> None:
    clock, store = Clock(), MemoryStore()
    budget = SharedWriteBudget(
        store, Policy(ceiling=100.0, burst=1), max_wait_seconds=3.0, clock=clock, sleep=clock.sleep
    )

    async def run() -> None:
        for _ in range(20):
            await budget.acquire(1, None)
        assert store.round_trips <= 2  # 25 writes are due within a quarter second: one grant
        clock.now += SLOT_VALIDITY_SECONDS + 1
        before = store.round_trips
        await budget.acquire(1, None)  # what was left of the grant has expired: a fresh round trip
        assert store.round_trips == before + 1

    asyncio.run(run())


def test_batches_draw_on_granted_slots_and_keep_the_bound() -> None:
    """At a high rate a round trip grants the slots of the next batches too; the writes they carry,
    stamped at their send times, still keep every window's bound (plus the slots' validity)."""
    clock, store = Clock(), MemoryStore()
    policy = Policy(ceiling=400.0, burst=20)
    budget = SharedWriteBudget(store, policy, max_wait_seconds=3.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def run() -> None:
        for _ in range(50):
            await budget.acquire(20, None)
            sent.extend([clock.now] * 20)

    asyncio.run(run())
    assert len(sent) == 1000
    assert store.round_trips <= 25, store.round_trips  # 50 batches, a grant of 100 slots each trip
    slack = policy.ceiling * SLOT_VALIDITY_SECONDS
    for window in (0.05, 0.25, 1.0, 2.5):
        most = max(sum(1 for t in sent if start <= t < start + window) for start in sent)
        assert most <= policy.bound(window) + slack, window


def test_a_batch_waits_for_all_its_writes_or_is_raised() -> None:
    clock, store = Clock(), MemoryStore()
    budget = SharedWriteBudget(
        store, Policy(ceiling=1.0, burst=20), max_wait_seconds=5.0, clock=clock, sleep=clock.sleep
    )

    async def run() -> None:
        await budget.acquire(20, None)  # a full batch fits the burst
        assert clock.now == 1000.0
        with pytest.raises(GraphTransientError) as raised:
            await budget.acquire(20, None)  # the next needs 20 s of accrual
        assert raised.value.retry_after == pytest.approx(20.0)
        clock.now += 20.0
        await budget.acquire(20, None)
        assert clock.now == pytest.approx(1020.0, abs=1.0)

    asyncio.run(run())


# -- settings -------------------------------------------------------------------------------------


def budget_settings(**values: Any) -> Settings:
    return Settings(storage_connection_string="UseDevelopmentStorage=true", tenant_id=TENANT_ID, **values)


def test_the_settings_default_to_the_draft_and_zero_turns_the_budget_off() -> None:
    budgets = RateBudgets.from_settings(budget_settings())
    assert budgets is not None
    assert budgets.policy == Policy(ceiling=pytest.approx(0.8), burst=20)  # type: ignore[arg-type]
    one = budgets.for_registration(None, "reg-1")
    assert one is budgets.for_registration(TENANT_ID.upper(), "reg-1")  # one per tenant and registration
    assert one is not budgets.for_registration(None, "reg-2")
    assert one.max_wait_seconds == 10.0  # GRAPH_MAX_INLINE_RETRY_SECONDS
    assert RateBudgets.from_settings(budget_settings(graph_write_rate_per_second=0)) is None
    fast = RateBudgets.from_settings(budget_settings(graph_write_rate_per_second=1000, graph_write_block_limit=0))
    assert fast is not None
    assert fast.policy.ceiling == 1000


def test_a_block_limit_at_or_under_the_burst_is_refused() -> None:
    with pytest.raises(ValidationError, match="GRAPH_WRITE_BLOCK_LIMIT"):
        budget_settings(graph_write_block_limit=20, graph_write_burst=20)
    assert budget_settings(graph_write_block_limit=20, graph_write_rate_per_second=0).graph_write_block_limit == 20


def test_a_batch_larger_than_the_burst_goes_and_is_charged_in_full() -> None:
    """With GRAPH_WRITE_BURST=1 a $batch of 20 must not wait for ever for a bucket that cannot hold it."""
    clock, store = Clock(), MemoryStore()
    budget = SharedWriteBudget(
        store, Policy(ceiling=1.0, burst=1), max_wait_seconds=5.0, clock=clock, sleep=clock.sleep
    )

    async def run() -> None:
        await budget.acquire(20, None)
        assert clock.now == 1000.0
        with pytest.raises(GraphTransientError) as raised:
            await budget.acquire(1, None)  # the batch's other 19 writes are paid for first
        assert raised.value.retry_after == pytest.approx(20.0)
        clock.now += 20.0
        await budget.acquire(20, None)
        assert clock.now == 1020.0

    asyncio.run(run())
