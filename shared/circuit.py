"""The Graph circuit breaker (issue 9 point 8): when Graph keeps failing for every item, stop calling it.

Without it, an outage longer than the queue's five attempts (about 2.5 minutes at the 30-second
visibility timeout) drains every command into the poison queue. With it, the worker counts Graph's
server-side failures; after ``FAILURES_TO_OPEN`` in a row the circuit opens and every command waits
in the queue, hidden for the rest of the cool-down, as a new message (so no delivery attempt is
spent). When the cool-down ends one worker probes (its next command is let through); any answer
from Graph (a 4xx or 429 too) closes the circuit, no answer or a 5xx opens it again for twice as
long, up to ``MAX_COOLDOWN``.

The state is one Table storage row shared by every instance (ETag-guarded writes), because a scaled-
out app has many workers and each must see the same outage. Each instance caches what it read for a
few seconds, so a healthy Graph costs no storage call per command: the row is written only when the
state changes or a failure is counted.

``transition`` is the whole state machine, pure, and tested on its own (hypothesis); ``CircuitBreaker``
adds the clock, the cache and the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient

from shared import telemetry
from shared.tables import write_if_unchanged

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half-open"]
# "unused": the command admitted (perhaps as the probe) ended without calling Graph (the ledger skipped
# it, or it went back to the queue to wait): it says nothing about Graph.
Event = Literal["success", "failure", "unused"]

# Five failures in a row: the queue's own attempt budget (maxDequeueCount 5), so one message that
# fails all its attempts is enough evidence; fewer would open the circuit on a couple of bad items.
FAILURES_TO_OPEN = 5
# The first cool-down is the queue's visibility timeout (30 s, host.json): what a retry would wait
# anyway. It doubles on each failed probe, to at most 15 minutes (the bound: a long outage is
# probed four times an hour, and a command waits at most that long after Graph is back).
FIRST_COOLDOWN = timedelta(seconds=30)
MAX_COOLDOWN = timedelta(minutes=15)
# How long a probe owns the half-open state: longer than one push can take (the worker's lease is
# longer still), so a crashed prober cannot keep the circuit half-open for ever.
PROBE_SECONDS = timedelta(seconds=120)
# How long the others wait while a probe is out, at first: a push takes a second or two, so they look
# again soon after it answered. Waiting out PROBE_SECONDS instead kept every command away for two
# minutes after Graph was back, and, when the probe never called Graph (the ledger skipped its
# command), left no command to take the probe over until they all came back (the fault run's 40-s
# outage did not drain in 4 minutes). A probe still out after that is hanging (Graph timing out, up to
# the push's deadline): the wait then grows with the probe's age, so a 100-s hang sends each waiting
# command back about 5 times, not 20.
PROBE_RECHECK = timedelta(seconds=5)
CACHE_SECONDS = 5.0  # how stale an instance's view may be; an outage is minutes, this is seconds


@dataclass(frozen=True)
class Circuit:
    state: State = "closed"
    failures: int = 0  # consecutive failures while closed
    cooldown: timedelta = FIRST_COOLDOWN  # the next (or current) open period
    until: datetime | None = None  # open: when probing may start; half-open: when the probe expires

    def waits(self, now: datetime, policy: Policy | None = None) -> float:
        """Seconds a command must wait before it may call Graph (0: call now): the rest of the cool-down,
        or, while a probe is out, until it may have answered: ``probe_recheck``, or the probe's age once
        it is older (never past the probe's expiry)."""
        if self.state == "closed" or self.until is None or now >= self.until:
            return 0.0
        left = (self.until - now).total_seconds()
        if self.state != "half-open":
            return left
        policy = policy or DEFAULT_POLICY
        age = (now - (self.until - policy.probe)).total_seconds()
        return min(left, max(policy.probe_recheck.total_seconds(), age))


@dataclass(frozen=True)
class Policy:
    """The numbers above, as settings may change them (GRAPH_CIRCUIT_FAILURES, GRAPH_CIRCUIT_COOLDOWN_SECONDS)."""

    failures_to_open: int = FAILURES_TO_OPEN
    first_cooldown: timedelta = FIRST_COOLDOWN
    max_cooldown: timedelta = MAX_COOLDOWN
    probe: timedelta = PROBE_SECONDS
    probe_recheck: timedelta = PROBE_RECHECK

    def closed(self) -> Circuit:
        return Circuit(cooldown=self.first_cooldown)


DEFAULT_POLICY = Policy()


def probe_lease(push_lease_seconds: float) -> timedelta:
    """How long a probe owns the half-open state: ``PROBE_SECONDS``, or a push's whole item lease when
    that is longer (130 s at the default GRAPH_TIMEOUT_SECONDS of 30), so a probe still pushing never
    loses the probe to a second one."""
    return max(PROBE_SECONDS, timedelta(seconds=push_lease_seconds))


def admit(circuit: Circuit, now: datetime, policy: Policy = DEFAULT_POLICY) -> Circuit | None:
    """The state after letting one command through, or ``None`` when it must wait.

    Closed lets everything through. Open lets nothing through until its cool-down ends; then the
    first command becomes the probe (half-open, owned until ``PROBE_SECONDS``). While a probe is out,
    others wait (``PROBE_RECHECK``, longer as the probe ages); a probe that never reported (its worker
    died) expires and the next command probes.
    """
    if circuit.state == "closed":
        return circuit
    if circuit.until is not None and now < circuit.until:
        return None
    return replace(circuit, state="half-open", until=now + policy.probe)


def transition(circuit: Circuit, event: Event, now: datetime, policy: Policy = DEFAULT_POLICY) -> Circuit:
    """The state after Graph answered a call made under ``circuit`` (or, ``unused``, was not called)."""
    if event == "unused":
        # A probe that never called Graph hands the probe back at once, rather than holding the
        # circuit half-open for PROBE_SECONDS: the next command probes.
        return replace(circuit, state="open", until=now) if circuit.state == "half-open" else circuit
    if event == "success":
        return policy.closed()  # closed, counters reset, cool-down back to its first length
    if circuit.state == "closed":
        failures = circuit.failures + 1
        if failures < policy.failures_to_open:
            return replace(circuit, failures=failures)
        return Circuit("open", 0, policy.first_cooldown, now + policy.first_cooldown)
    if circuit.state == "half-open":  # the probe failed: open again, for twice as long
        cooldown = min(circuit.cooldown * 2, policy.max_cooldown)
        return Circuit("open", 0, cooldown, now + cooldown)
    return circuit  # open: a call that was already in flight when it opened changes nothing


class CircuitStore(Protocol):
    def read(self) -> tuple[Circuit, str | None]: ...

    def write(self, circuit: Circuit, etag: str | None) -> bool:
        """Write if the row is still at ``etag`` (``None``: create); ``False`` when another instance won."""
        ...


class TableCircuitStore:
    """The circuit's row in the ledger table (``PartitionKey`` ``circuit``, ``RowKey`` the target)."""

    PARTITION = "circuit"

    def __init__(self, table: TableClient, target: str = "graph") -> None:
        self._table = table
        self._row = target
        self._ensured = False

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ensured = True

    def read(self) -> tuple[Circuit, str | None]:
        try:  # a missing table reads as a closed circuit too: reading creates nothing
            entity = self._table.get_entity(self.PARTITION, self._row)
        except ResourceNotFoundError:
            return Circuit(), None
        until = entity.get("until")
        circuit = Circuit(
            state=entity.get("state", "closed"),
            failures=int(entity.get("failures", 0)),
            cooldown=timedelta(seconds=float(entity.get("cooldownSeconds", FIRST_COOLDOWN.total_seconds()))),
            until=until.astimezone(UTC) if isinstance(until, datetime) else None,
        )
        return circuit, str(entity.metadata["etag"])

    def write(self, circuit: Circuit, etag: str | None) -> bool:
        self._ensure()
        entity: dict[str, Any] = {
            "PartitionKey": self.PARTITION,
            "RowKey": self._row,
            "state": circuit.state,
            "failures": circuit.failures,
            "cooldownSeconds": circuit.cooldown.total_seconds(),
            "until": circuit.until or datetime(1970, 1, 1, tzinfo=UTC),
            "changedAt": datetime.now(UTC),
        }
        return write_if_unchanged(self._table, entity, etag)


class CircuitBreaker:
    """One instance's view of the shared circuit. Storage trouble never stops pushes: without the
    row, the breaker fails open (lets commands through) and logs, because the queue's own retries and
    the worker's parking still hold the promise; the breaker only saves attempts."""

    def __init__(
        self,
        store: CircuitStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._seen: tuple[float, Circuit, str | None] | None = None

    def _read(self, fresh: bool = False) -> tuple[Circuit, str | None]:
        now = self._monotonic()
        if not fresh and self._seen and now - self._seen[0] < self._cache_seconds:
            return self._seen[1], self._seen[2]
        circuit, etag = self._store.read()
        self._seen = (now, circuit, etag)
        return circuit, etag

    def wait_seconds(self) -> float:
        """0 when this command may call Graph now; else how long it should stay hidden in the queue."""
        try:
            for _ in range(3):
                circuit, etag = self._read()
                now = self._clock()
                admitted = admit(circuit, now, self._policy)
                if admitted is None:
                    return max(1.0, circuit.waits(now, self._policy))
                if admitted == circuit:
                    return 0.0
                if self._store.write(admitted, etag):  # this command is the probe
                    logger.warning("graph circuit half-open: probing with one command")
                    self._seen = None
                    return 0.0
                self._read(fresh=True)  # another instance moved first: look again
            return self._policy.first_cooldown.total_seconds()
        except AzureError as exc:
            logger.warning("graph circuit state unreadable (%s); letting the command through", exc)
            return 0.0

    def record(self, event: Event) -> None:
        """Tell the breaker how Graph answered. Successes under a closed, failure-free circuit write nothing."""
        try:
            for _ in range(3):
                circuit, etag = self._read(fresh=event == "failure" or self._seen is None)
                after = transition(circuit, event, self._clock(), self._policy)
                if after == circuit:
                    return
                if self._store.write(after, etag):
                    self._seen = None
                    if event == "unused":
                        logger.info("graph circuit: the probe ended without calling Graph; the next command probes")
                    else:
                        self._announce(circuit, after)
                    return
                self._read(fresh=True)
        except AzureError as exc:
            logger.warning("graph circuit state not updated (%s)", exc)

    def _announce(self, before: Circuit, after: Circuit) -> None:
        if after.state == "open" and before.state != "open":
            why = (
                f"{self._policy.failures_to_open} failures in a row" if before.state == "closed" else "the probe failed"
            )
            logger.error("graph circuit OPEN for %.0fs: %s", after.cooldown.total_seconds(), why)
            telemetry.CIRCUIT_OPENED.add(1)
        elif after.state == "closed" and before.state != "closed":
            logger.warning("graph circuit closed: Graph answered again")
            telemetry.CIRCUIT_CLOSED.add(1)

    def view(self) -> dict[str, Any]:
        """For status reports: the state, and until when."""
        circuit, _ = self._read(fresh=True)
        return {
            "state": circuit.state,
            "until": circuit.until.isoformat() if circuit.until and circuit.state != "closed" else None,
            "failures": circuit.failures,
        }
