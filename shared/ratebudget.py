"""The Graph write-rate budget (issue 11 point 3): one token bucket per tenant and registration, shared
by every instance through the ledger table, adapting below a configured ceiling.

Why: Microsoft publishes no Viva Learning limit. The only figure found is in an unpublished draft of
the ISV guide (microsoftgraph/microsoft-graph-docs PR 17789, closed without publishing): content sync
is limited to "1 request per second. Block limit: 500 requests in 10 mins", scope not stated. It is
**unverified**; the defaults follow it so a Flex app that scales out does not turn into a 429 storm.
Graph counts each request inside a ``$batch`` on its own (``concepts/json-batching.md``), so a batch
of n writes costs n here.

The rule, in one place:

* **Bucket.** A token bucket of rate ``r`` and capacity ``b`` (burst) lets through at most ``r·W + b``
  writes in any window of ``W`` seconds. It is kept as GCRA's "theoretical arrival time" (``tat``, the
  virtual-scheduling form of the same bucket, ITU-T I.371): a reservation of one write at ``now`` is
  due at ``max(now, tat - τ)`` with ``τ = (b - 1) / C``, and moves ``tat`` on by ``1 / r``. Because
  every ``r`` stays at or under the ceiling ``C``, the bound ``C·W + b`` holds whatever the rate did.
* **The two figures combined.** The draft gives a per-second rate R and a block limit L per S seconds.
  Both are read as limits over sliding windows that must both hold, so the ceiling is
  ``C = min(R, (L - b) / S)``: over any S seconds at most ``C·S + b ≤ L`` writes (the block limit,
  exactly), and on average never more than R per second. With the defaults (R 1/s, L 500 per 600 s,
  b 20) C is 0.8/s. The burst is 20, Graph's ``$batch`` maximum, so one full batch conforms; a window
  shorter than ~100 s may therefore see up to 20 writes at once, which the draft's "1 request per
  second" may or may not tolerate (unverified): if Graph refuses, the cut below and ``notBefore`` take
  over, and ``GRAPH_WRITE_BURST=1`` gives the strict reading (C = 499/600 /s).
* **Adaptive (AIMD).** The rate starts at the ceiling. A 429 or 503 halves it (once per throttling
  episode: answers to requests already in flight when the pause began do not cut again), down to a
  floor; each successful write adds ``C / 50`` back, up to the ceiling.
* **notBefore.** A 429 or 503 also writes the tenant's ``notBefore`` (now + ``Retry-After``): no
  instance reserves a write before it, and the worker sends commands back to the queue for that long
  without spending an attempt.
* **Grants.** An instance reserves more than one write per table round trip when the rate is high
  (the writes due within ``GRANT_SECONDS``), so a high budget does not cost a table write per request;
  a granted write not sent within ``SLOT_VALIDITY_SECONDS`` of its time is dropped, never sent late.

``reserve``, ``throttled`` and ``grown`` are the whole rule, pure and tested on their own (hypothesis);
``TableBudgetStore`` keeps the rows, ``SharedWriteBudget`` adds the clock, the local grants and the
``shared.graph.WriteBudget`` interface, and ``RateBudgets`` hands out one per tenant and registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared import storage
from shared.graph import MIN_ATTEMPT_SECONDS, Deadline, GraphTransientError
from shared.settings import Settings
from shared.tables import write_if_unchanged

logger = logging.getLogger(__name__)

RATE_BUDGET = "RateBudget"  # the GraphTransientError code of a write the budget does not let go in time
THROTTLED = frozenset({429, 503})  # Graph's "slow down" answers (the Viva error tables give both)

# The draft's figures (unverified, see the module doc): the settings' defaults.
DRAFT_RATE_PER_SECOND = 1.0
DRAFT_BLOCK_LIMIT = 500
DRAFT_BLOCK_SECONDS = 600.0
# One full $batch (Graph's limit is 20 requests per batch, concepts/json-batching.md) may go at once.
DEFAULT_BURST = 20

# AIMD. Halving is TCP's multiplicative decrease; the additive step C/50 brings a halved rate back to
# the ceiling after 25 successful writes, so if Graph's real limit sits below the ceiling the budget
# meets one 429 per 25 to 50 writes (2 to 4 %, under the 5 % target) instead of a storm.
DECREASE = 0.5
INCREASE_FRACTION = 1 / 50
# Five halvings at most: below C/32 the notBefore pauses (Graph's own Retry-After) do the holding.
FLOOR_FRACTION = 1 / 32
# A 429 or 503 without a Retry-After (header or body hint) pauses the tenant this long: the middle of
# the Graph client's 1-2-4-8 s back-off ladder.
FALLBACK_PAUSE_SECONDS = 5.0

# Grants: one table round trip (a query and a conditional update, ~10 ms) reserves every write due
# within the next quarter second, at most MAX_GRANT. At the draft's 0.8/s that is one write per round
# trip (a write every 1.25 s: nothing to save); at 80/s about 20, so four instances make some 16 round
# trips a second instead of 80. A granted write must be sent within SLOT_VALIDITY_SECONDS of its time
# or it is dropped, so unspent grants add at most C x 0.25 writes to any window's bound.
GRANT_SECONDS = 0.25
MAX_GRANT = 50
SLOT_VALIDITY_SECONDS = 0.25
# How stale the worker's pre-push look at notBefore may be: a pause is seconds to minutes long.
VIEW_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class Policy:
    """The bucket's numbers, derived from the settings (``Policy.from_figures``)."""

    ceiling: float  # C: writes per second, the most the adaptive rate may reach
    burst: int = DEFAULT_BURST  # b: writes that may go at once after an idle spell

    @classmethod
    def from_figures(
        cls, rate_per_second: float, burst: int, block_limit: int = 0, block_seconds: float = DRAFT_BLOCK_SECONDS
    ) -> Policy:
        """C = min(R, (L - b) / S): every window of S seconds then holds at most L writes (see module doc).
        ``block_limit`` 0: no block limit."""
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a write budget needs a rate above 0 and a burst of at least 1")
        ceiling = rate_per_second
        if block_limit:
            if block_limit <= burst:
                raise ValueError(f"the block limit ({block_limit}) must exceed the burst ({burst})")
            ceiling = min(ceiling, (block_limit - burst) / block_seconds)
        return cls(ceiling, burst)

    @property
    def tolerance(self) -> float:
        """GCRA's τ: how far ahead of ``tat`` a write may go, so that ``b`` go at once after idling."""
        return (self.burst - 1) / self.ceiling

    @property
    def floor(self) -> float:
        return self.ceiling * FLOOR_FRACTION

    @property
    def increase(self) -> float:
        return self.ceiling * INCREASE_FRACTION

    def bound(self, window: float) -> float:
        """The most writes the shared bucket grants in any ``window`` seconds."""
        return self.ceiling * window + self.burst


@dataclass(frozen=True)
class Bucket:
    """One (tenant, registration)'s shared state; times are epoch seconds (the instances' UTC clocks)."""

    tat: float = 0.0  # GCRA's theoretical arrival time
    rate: float | None = None  # the adaptive rate; None: the ceiling
    not_before: float = 0.0  # the tenant's pause (its own row): nothing is reserved before it

    def current_rate(self, policy: Policy) -> float:
        rate = policy.ceiling if self.rate is None else self.rate
        return min(policy.ceiling, max(policy.floor, rate))


def next_due(bucket: Bucket, now: float, policy: Policy) -> float:
    """When the next single write could go (``now`` or later)."""
    return max(now, bucket.not_before, bucket.tat - policy.tolerance)


def reserve(
    bucket: Bucket, want: int, now: float, horizon: float, policy: Policy, *, together: bool = False
) -> tuple[Bucket, list[float]]:
    """Reserve up to ``want`` writes due no later than ``now + horizon``: their send times, in order.

    ``together``: all ``want`` or none, sent at once at the returned time (a ``$batch``). Up to the
    burst, that is when the bucket holds ``want`` tokens: a legal take of a token bucket. A larger batch
    goes when ``burst`` of its writes are due and is charged in full (the next writes wait for the rest),
    so it can exceed a window's bound by ``want - burst``, never wait for ever on a bucket that cannot
    hold it; a caller keeps the bound exact by sizing batches to the burst.
    """
    tat, rate = bucket.tat, bucket.current_rate(policy)
    start = max(now, bucket.not_before)
    times: list[float] = []
    for _ in range(want):
        at = max(start, tat - policy.tolerance)
        if at > now + horizon and not together:
            break
        times.append(at)
        tat = max(tat, at) + 1 / rate
    if together:
        if not times or (send := times[min(want, policy.burst) - 1]) > now + horizon:
            return bucket, []
        return replace(bucket, tat=tat), [send] * want
    return replace(bucket, tat=tat), times


def throttled(bucket: Bucket, now: float, retry_after: float | None, policy: Policy) -> Bucket:
    """After a 429 or 503: pause until ``now + Retry-After`` and, once per episode, halve the rate.

    An answer that comes while a pause is already in force was sent before it began: it extends the
    pause if it asks for longer, but does not cut again (ten refused requests in flight are one signal).
    The bucket restarts empty at the pause's end, so the instances do not all burst into it.
    """
    pause = FALLBACK_PAUSE_SECONDS if retry_after is None else max(0.0, retry_after)
    not_before = max(bucket.not_before, now + pause)
    rate = bucket.current_rate(policy)
    if now >= bucket.not_before:
        rate = max(policy.floor, rate * DECREASE)
    return Bucket(tat=max(bucket.tat, not_before + policy.tolerance), rate=rate, not_before=not_before)


def grown(bucket: Bucket, successes: int, policy: Policy) -> Bucket:
    """After ``successes`` writes Graph accepted: the rate grows by ``C/50`` each, up to the ceiling."""
    if successes <= 0:
        return bucket
    rate = min(policy.ceiling, bucket.current_rate(policy) + successes * policy.increase)
    return replace(bucket, rate=None if rate >= policy.ceiling else rate)


# -- storage ---------------------------------------------------------------------------------------


class BudgetStore(Protocol):
    def read(self) -> tuple[Bucket, str | None]:
        """The bucket (with the tenant's notBefore) and the bucket row's ETag (``None``: no row yet)."""
        ...

    def write(self, bucket: Bucket, etag: str | None) -> bool:
        """Write the bucket row if still at ``etag``; ``False`` when another instance moved first."""
        ...

    def pause(self, until: float, status: int | None) -> None:
        """Extend the tenant's notBefore to ``until`` (never shortens it)."""
        ...


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


class TableBudgetStore:
    """The budget's rows in the ledger table: partition ``ratebudget:<tenant>`` (one per tenant, so no
    hot partition across tenants), row ``notBefore`` (the tenant's pause) and row ``bucket:<registration>``.
    The ``:`` keeps the ledger's legacy-row adoption away from them (``Ledger.adopt_legacy_rows``)."""

    NOT_BEFORE_ROW = "notBefore"

    def __init__(self, table: TableClient, tenant_id: str, registration_id: str) -> None:
        self._table = table
        self.partition = f"ratebudget:{tenant_id.lower()}"
        self.row = "bucket:" + _row_safe(registration_id)
        self._ensured = False

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ensured = True

    def read(self) -> tuple[Bucket, str | None]:
        rows: dict[str, Any] = {}
        try:  # one query for both rows: a round trip, not two
            for entity in self._table.query_entities(
                "PartitionKey eq @pk and ( RowKey eq @nb or RowKey eq @row )",  # spaces: the SDK splits on them
                parameters={"pk": self.partition, "nb": self.NOT_BEFORE_ROW, "row": self.row},
            ):
                rows[str(entity["RowKey"])] = entity
        except ResourceNotFoundError:  # no table yet: an untouched budget
            return Bucket(), None
        paused: dict[str, Any] = rows.get(self.NOT_BEFORE_ROW) or {}
        row = rows.get(self.row)
        if row is None:
            return Bucket(not_before=_epoch(paused.get("notBefore"))), None
        rate = row.get("rate")
        bucket = Bucket(
            tat=float(row.get("tat", 0.0)),
            rate=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
            not_before=_epoch(paused.get("notBefore")),
        )
        return bucket, str(row.metadata["etag"])

    def write(self, bucket: Bucket, etag: str | None) -> bool:
        self._ensure()
        entity = {
            "PartitionKey": self.partition,
            "RowKey": self.row,
            "tat": float(bucket.tat),
            "rate": bucket.rate or 0.0,
        }
        return write_if_unchanged(self._table, entity, etag)

    def pause(self, until: float, status: int | None) -> None:
        self._ensure()
        wanted = datetime.fromtimestamp(until, UTC)
        for _ in range(5):
            try:
                row = self._table.get_entity(self.partition, self.NOT_BEFORE_ROW)
            except ResourceNotFoundError:
                row = None
            if row is not None and _epoch(row.get("notBefore")) >= until:
                return  # another instance already paused as long or longer
            entity = {
                "PartitionKey": self.partition,
                "RowKey": self.NOT_BEFORE_ROW,
                "notBefore": wanted,
                "status": status or 0,
                "setAt": datetime.now(UTC),
            }
            try:
                if row is None:
                    self._table.create_entity(entity)
                else:
                    self._table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=row.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another instance wrote meanwhile: compare again


def _row_safe(value: str) -> str:
    """Table keys refuse ``/ \\ # ?`` and control characters; such an id is keyed by its hash."""
    if value and not any(c in "/\\#?" or ord(c) < 32 or 127 <= ord(c) < 160 for c in value) and len(value) < 200:
        return value
    return "h-" + hashlib.sha256(value.encode("utf-8")).hexdigest()


# -- one instance's view ---------------------------------------------------------------------------


class SharedWriteBudget:
    """``shared.graph.WriteBudget`` for one tenant and registration, shared through ``store``.

    Storage trouble never stops pushes for good: ``acquire`` raises a transient ``RateBudget`` error
    (the command waits in the queue and is tried again) rather than writing unbudgeted.
    """

    def __init__(
        self,
        store: BudgetStore,
        policy: Policy,
        *,
        max_wait_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``max_wait_seconds``: the longest wait ``acquire`` spends in the invocation (the worker's
        GRAPH_MAX_INLINE_RETRY_SECONDS); a longer one is raised so the queue carries it."""
        self.policy = policy
        self.max_wait_seconds = max_wait_seconds
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[float] = deque()  # send times of single writes reserved and not yet spent
        self._successes = 0  # reported to the shared rate with the next round trip
        self._seen: tuple[float, Bucket] | None = None  # (when read, what) for wait_seconds
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    @property
    def burst(self) -> int:
        """The largest ``$batch`` that keeps the bound exact (a caller sizes its batches to it)."""
        return self.policy.burst

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:  # one per event loop: a host that restarts its loop gets a fresh one
            self._locks = {loop: (lock := asyncio.Lock())}
        return lock

    def wait_seconds(self) -> float:
        """How long a write would wait now (notBefore, or the bucket's next due time), from a view at most
        ``VIEW_CACHE_SECONDS`` old; reserves nothing. Synchronous (storage), for the worker's pre-check."""
        now = self._clock()
        if self._seen is None or now - self._seen[0] >= VIEW_CACHE_SECONDS:
            try:
                bucket, _ = self._store.read()
            except AzureError as exc:
                logger.warning("write budget unreadable (%s); the push will find out", exc)
                return 0.0
            self._seen = (now, bucket)
        if self._grants and self._grants[-1] + SLOT_VALIDITY_SECONDS >= now:
            return 0.0
        return max(0.0, next_due(self._seen[1], now, self.policy) - now)

    async def acquire(self, cost: int, deadline: Deadline | None) -> None:
        if cost <= 0:
            return
        async with self._lock():
            now = self._clock()
            horizon = self.max_wait_seconds
            if deadline is not None:
                horizon = min(horizon, deadline.remaining() - MIN_ATTEMPT_SECONDS)
            granted = self._from_grants(now, cost)
            if granted is not None:
                at = granted
            else:
                # The local state changes here, on the event loop; the thread only talks to storage.
                successes, self._successes = self._successes, 0
                try:
                    at, grants, seen = await asyncio.to_thread(
                        self._round_trip, cost, now, max(0.0, horizon), successes
                    )
                except GraphTransientError:
                    self._successes += successes  # not reported: keep them for the next round trip
                    raise
                self._seen = (now, seen)
                self._grants.extend(grants)
        wait = at - self._clock()
        if wait > 0:
            await self._sleep(wait)

    def _from_grants(self, now: float, cost: int) -> float | None:
        """The send time of ``cost`` writes from slots already reserved (``None``: a round trip is
        needed). A batch takes ``cost`` slots and goes at the last of them, so only slots that all stay
        valid until then: the earliest may not be sent more than SLOT_VALIDITY_SECONDS late."""
        while self._grants and self._grants[0] + SLOT_VALIDITY_SECONDS < now:
            self._grants.popleft()  # not sent in time: dropped, never sent late
        if len(self._grants) < cost or self._grants[cost - 1] > self._grants[0] + SLOT_VALIDITY_SECONDS:
            return None
        taken = [self._grants.popleft() for _ in range(cost)]
        return taken[-1]

    def _round_trip(self, cost: int, now: float, horizon: float, successes: int) -> tuple[float, list[float], Bucket]:
        """Reserve in the shared row (reporting ``successes``): the send time of this write (or batch),
        more single writes due within ``GRANT_SECONDS`` (the grant), and the bucket as written. Raises
        ``RateBudget`` when nothing is due within ``horizon``."""
        try:
            for _ in range(8):
                bucket, etag = self._store.read()
                bucket = grown(bucket, successes, self.policy)
                # Beyond this write (or batch), a grant of single slots due soon after it, as many as the
                # current rate fills in GRANT_SECONDS: the next writes of this instance, batches
                # included (``_from_grants``), then cost no round trip.
                want = min(MAX_GRANT, math.floor(bucket.current_rate(self.policy) * GRANT_SECONDS))
                after, times = reserve(bucket, cost, now, horizon, self.policy, together=cost > 1)
                if not times:
                    # When it would be due, were there no horizon (a batch: when its last write is).
                    _, due = reserve(bucket, cost, now, math.inf, self.policy, together=cost > 1)
                    raise self._too_long(max(due[0] - now, 0.0), bucket.not_before > now)
                at = max(times)
                extra: list[float] = []
                if want > cost:
                    after, extra = reserve(after, want - cost, now, at - now + GRANT_SECONDS, self.policy)
                if self._store.write(after, etag):
                    return at, extra, after
                # another instance moved first: read again
            raise self._too_long(1.0, False)
        except AzureError as exc:
            raise GraphTransientError(
                None, RATE_BUDGET, f"write budget unavailable ({type(exc).__name__}); not writing unbudgeted"
            ) from exc

    def _too_long(self, wait: float, paused: bool) -> GraphTransientError:
        why = "Graph asked every instance to pause (notBefore)" if paused else "the shared write budget is spent"
        return GraphTransientError(None, RATE_BUDGET, f"{why}: next write in {wait:.1f}s", retry_after=max(1.0, wait))

    async def settled(self, status: int | None, retry_after: float | None) -> None:
        if status is None:
            return  # no answer: the circuit breaker's business, not the rate's
        if status not in THROTTLED:
            if 200 <= status < 300:
                self._successes += 1
            return
        self._grants.clear()  # granted writes must not go into the pause
        try:
            seen = await asyncio.to_thread(self._throttled, status, retry_after)
            if seen is not None:
                self._seen = (self._clock(), seen)
        except AzureError as exc:
            logger.warning("write budget: the %s pause was not shared (%s)", status, exc)

    def _throttled(self, status: int, retry_after: float | None) -> Bucket | None:
        now = self._clock()
        for _ in range(8):
            bucket, etag = self._store.read()
            after = throttled(bucket, now, retry_after, self.policy)
            self._store.pause(after.not_before, status)
            if self._store.write(after, etag):
                logger.warning(
                    "graph answered %s: writes paused for %.1fs, rate %.3f/s (ceiling %.3f/s)",
                    status,
                    after.not_before - now,
                    after.current_rate(self.policy),
                    self.policy.ceiling,
                )
                return after
        return None  # eight instances moved first: theirs is the word (their 429s paused the tenant too)


class RateBudgets:
    """One ``SharedWriteBudget`` per (tenant, registration), kept for the life of the process."""

    def __init__(
        self,
        table: TableClient,
        policy: Policy,
        *,
        home_tenant: str,
        max_wait_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self._table = table
        self._home = home_tenant
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[tuple[str, str], SharedWriteBudget] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, max_wait_seconds: float | None = None) -> RateBudgets | None:
        """The budgets the settings describe, in the ledger table; ``None`` when GRAPH_WRITE_RATE_PER_SECOND
        is 0. ``max_wait_seconds``: the longest wait inside a call (default GRAPH_MAX_INLINE_RETRY_SECONDS;
        a batch tool that has no queue to wait in may give more)."""
        if settings.graph_write_rate_per_second <= 0:
            return None
        policy = Policy.from_figures(
            settings.graph_write_rate_per_second,
            settings.graph_write_burst,
            settings.graph_write_block_limit,
            settings.graph_write_block_seconds,
        )
        table = storage.open_client(TableServiceClient, settings.storage("table")).get_table_client(
            settings.ledger_table_name
        )
        wait = settings.graph_max_inline_retry_seconds if max_wait_seconds is None else max_wait_seconds
        return cls(table, policy, home_tenant=settings.home_tenant(), max_wait_seconds=wait)

    def for_registration(self, tenant_id: str | None, registration_id: str) -> SharedWriteBudget:
        key = ((tenant_id or self._home).lower(), registration_id)
        found = self._budgets.get(key)
        if found is None:
            store = TableBudgetStore(self._table, key[0], registration_id)
            found = SharedWriteBudget(
                store, self.policy, max_wait_seconds=self._max_wait, clock=self._clock, sleep=self._sleep
            )
            self._budgets[key] = found
        return found
