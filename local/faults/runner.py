"""One fault run: send a plan while the fault plays, wait for the queue to drain, compare Graph's state.

Drained means the work queue is empty, hidden messages included (in flight, deferred, waiting out
a cool-down): Azure's approximate count, which Azurite keeps the same way, counts them all. The
time to drain is measured from the later of the fault's end and the last delivery.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from azure.core.exceptions import AzureError

from local.faults.injectors import Fault, GraphFault, NoFault, Restart, TokenDown, Window
from local.faults.plan import compare, make_plan
from local.faults.sender import RETRY_PAUSE_CAP, Sender, outcome
from local.faults.stack import Clocks, FaultStack

DRAIN_POLL = 0.5
DRAIN_CONFIRMATIONS = 3  # consecutive empty reads: a deferral is a send then a delete, never a gap


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one harness run; ``full()`` is ``make faults``, ``ci()`` the test's."""

    size: int = 2000
    clocks: Clocks = field(default_factory=Clocks)
    storm_on: float = 6.0
    storm_off: float = 4.0
    storm_min: float = 30.0
    long_retry_after: int = 15  # longer than the inline budget: the worker defers the command
    outage_seconds: float = 30.0
    long_outage_seconds: float = 600.0
    slow_seconds: float = 60.0
    slow_latency_ms: int = 2000
    token_down_seconds: float = 60.0
    azurite_down_seconds: float = 10.0
    host_down_seconds: float = 2.0
    drain_timeout: float = 1800.0
    batch_ratio: float = 0.3  # of the "batched" control run
    seed: int = 9

    @classmethod
    def full(cls) -> Profile:
        # Production host.json; two clocks shortened, or the run would wait on them rather than test:
        # a killed host's messages come back after the host's lease (10 minutes in Functions), and a
        # 60-second token outage only bites a worker whose cached token expires during it.
        return cls(clocks=Clocks(message_lease_seconds=120, token_lifetime_seconds=30))

    @classmethod
    def ci(cls) -> Profile:
        # Everything shorter, in proportion: an attempt takes ~3 s of inline retries plus a 1-s
        # visibility timeout, so five attempts span ~20-25 s: the 3-s outage must be survived by retries,
        # the 40-s one outlasts every attempt (what a circuit breaker must absorb).
        return cls(
            size=60,
            clocks=Clocks(
                visibility_timeout=1.0,
                max_polling_interval=0.5,
                message_lease_seconds=25,
                token_lifetime_seconds=4,
                inline_retry_seconds=3.0,
                graph_timeout_seconds=5.0,  # 2.5 times the slow fault's latency; shortens the item lease
            ),
            storm_on=1.5,
            storm_off=1.5,
            storm_min=5.0,
            long_retry_after=5,
            outage_seconds=3.0,
            long_outage_seconds=40.0,
            slow_seconds=6.0,
            token_down_seconds=8.0,
            azurite_down_seconds=3.0,
            host_down_seconds=1.0,
            drain_timeout=240.0,  # a drained run never waits for it; a circuit breaker's cool-down may
        )


def catalogue(profile: Profile) -> list[Fault]:
    """Every fault of issue 9 point 12, after two control runs."""
    p = profile
    storm = {"throttleRatio": 0.6}
    calm: dict[str, Any] = {}
    errors = [({"serverErrorRatio": 0.7, "serverErrorStatus": s}, p.storm_on) for s in (500, 502, 503, 504)]
    outage = {"serverErrorRatio": 1.0, "serverErrorStatus": 502}  # 502 carries no Retry-After
    return [
        NoFault(),
        NoFault(
            "batched",
            f"no fault; {p.batch_ratio:.0%} of deliveries are CloudEvents batches of 2-5 events",
            p.batch_ratio,
        ),
        GraphFault(
            "throttle-429",
            f"429 storms ({p.storm_on:g}s on / {p.storm_off:g}s off, 60% of Graph calls) with Retry-After 2s "
            f"and {p.long_retry_after}s",
            (
                ({**storm, "retryAfterSeconds": 2}, p.storm_on),
                (calm, p.storm_off),
                ({**storm, "retryAfterSeconds": p.long_retry_after}, p.storm_on),
                (calm, p.storm_off),
            ),
            p.storm_min,
            while_sending=True,
        ),
        GraphFault(
            "server-5xx",
            f"5xx bursts ({p.storm_on:g}s on / {p.storm_off:g}s off, 70% of Graph calls; 500, 502, 503, 504)",
            tuple(phase for burst in errors for phase in (burst, (calm, p.storm_off))),
            p.storm_min,
            while_sending=True,
        ),
        *(
            GraphFault(
                f"outage-{seconds:g}s",
                f"Graph answers every call 502 without Retry-After for {seconds:g}s",
                ((outage, seconds),),
                seconds,
                trigger=0.33,
            )
            for seconds in (p.outage_seconds, p.long_outage_seconds)
        ),
        GraphFault(
            "slow-graph",
            f"every Graph call answered {p.slow_latency_ms} ms late, for {p.slow_seconds:g}s from the first event",
            (({"latencyMs": p.slow_latency_ms}, p.slow_seconds),),
            p.slow_seconds,
        ),
        TokenDown(
            p.token_down_seconds,
            description=f"identity endpoint refuses every token request (503 / dropped) for {p.token_down_seconds:g}s",
        ),
        Restart(
            "azurite-restart",
            f"Azurite stopped mid-run and started again {p.azurite_down_seconds:g}s later",
            "azurite",
            p.azurite_down_seconds,
        ),
        Restart(
            "host-kill",
            f"function host SIGKILLed mid-batch, started again {p.host_down_seconds:g}s later",
            "host",
            p.host_down_seconds,
        ),
    ]


class GraphWatcher:
    """Reads the emulator's request log (the last 1000 requests) often enough to see each request once."""

    def __init__(self, stack: FaultStack, prefix: str) -> None:
        self._stack = stack
        self._marker = f"{prefix}-c"
        self._seen: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="graph-watcher", daemon=True)

    def __enter__(self) -> GraphWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _read(self) -> None:
        for record in self._stack.graph_requests():
            self._seen.setdefault(str(record.get("requestId")), record)

    def _poll(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(httpx.HTTPError):  # read again next time; the log keeps 1000
                self._read()

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every request seen so far (the emulator's request log records, once each)."""
        return list(self._seen.values())

    @property
    def applied(self) -> int:
        """Content writes Graph took: a PATCH answered 2xx, a DELETE answered 2xx or 404 (already gone)."""
        return sum(
            1
            for r in self._seen.values()
            if self._marker in str(r.get("path"))
            and not r.get("faulted")
            and (
                (r.get("method") == "PATCH" and 200 <= (r.get("status") or 0) < 300)
                or (r.get("method") == "DELETE" and (r.get("status") or 0) in (200, 204, 404))
            )
        )

    @property
    def faulted(self) -> int:
        return sum(1 for r in self._seen.values() if r.get("faulted"))


def wait_drained(stack: FaultStack, timeout: float) -> float | None:
    """The moment (monotonic) the work queue was seen empty for good, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    empty_since: float | None = None
    confirmations = 0
    while time.monotonic() < deadline:
        try:
            count = stack.queue_count()
        except AzureError:  # storage restarting: not drained yet, read again
            count = -1
        if count == 0:
            empty_since = empty_since or time.monotonic()
            confirmations += 1
            if confirmations >= DRAIN_CONFIRMATIONS:
                return empty_since
        else:
            empty_since, confirmations = None, 0
        time.sleep(DRAIN_POLL)
    return None


@dataclass
class Result:
    fault: str
    description: str
    events: int = 0
    deliveries: int = 0
    accepted: int = 0
    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    held: int = 0
    lost: int = 0
    resurrected: int = 0
    stale_won: int = 0
    drain_seconds: float | None = None  # None: not drained within the timeout
    injected: int | None = None
    rejected: int = 0
    undelivered: int = 0
    note: str = ""
    error: str = ""  # the run itself broke (a part of the stack would not start, ...)
    transient: bool = True  # every fault here is transient: a parked command is a failure
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [
            f"{name}={value}"
            for name, value in (
                ("lost", self.lost),
                ("resurrected", self.resurrected),
                ("stale-won", self.stale_won),
                ("parked", self.parked if self.transient else 0),
                ("rejected", self.rejected),
                ("undelivered", self.undelivered),
            )
            if value
        ]
        if self.drain_seconds is None and not self.error:
            found.append("not drained")
        if self.error:
            found.append(f"error: {self.error}")
        return found

    @classmethod
    def broken(cls, fault: Fault, error: str) -> Result:
        return cls(fault.name, fault.description, error=error)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "problems": self.problems}


HEADER = (
    f"{'fault':<16} {'events':>6} {'sent':>6} {'applied':>7} {'dup-skip':>8} {'parked':>6} {'lost':>5} "
    f"{'resurr':>6} {'stale':>5} {'drain':>8} {'injected':>8}  result"
)


def line(r: Result) -> str:
    drain = "timeout" if r.drain_seconds is None else f"{r.drain_seconds:.1f}s"
    injected = "-" if r.injected is None else str(r.injected)
    verdict = "ok" if r.ok else "FAIL " + ", ".join(r.problems)
    return (
        f"{r.fault:<16} {r.events:>6} {r.deliveries:>6} {r.applied:>7} {r.duplicates:>8} {r.parked:>6} {r.lost:>5} "
        f"{r.resurrected:>6} {r.stale_won:>5} {drain:>8} {injected:>8}  {verdict}"
    )


def run_fault(stack: FaultStack, fault: Fault, profile: Profile, index: int) -> Result:
    """Send ``profile.size`` events while ``fault`` plays; wait for the drain; compare."""
    poison_before, held_before = stack.queue_count("poison"), stack.queue_count("held")
    plan = make_plan(
        fault.name, profile.size, seed=profile.seed * 1000 + index, now=time.time(), batch_ratio=fault.batch_ratio
    )
    sender = Sender(stack.intake_url, stack.secret, plan, give_up_after=max(900.0, profile.drain_timeout))
    with GraphWatcher(stack, plan.prefix) as watcher:
        sender.start()
        window: Window = fault.run(stack, sender)
        sender.join()
        assert sender.finished_at is not None
        calm_from = max(window.ended, sender.finished_at)
        drained_at = wait_drained(stack, profile.drain_timeout)
    note = window.note
    if drained_at is None:
        # Leave the next fault a clean queue; this one's verdict says what stayed behind.
        note = (note + "; " if note else "") + f"{stack.queue_count()} message(s) still queued; cleared"
        stack.clear_work_queue()
    sent = outcome(sender)
    graph = {
        str(item.get("externalId")): item
        for item in stack.list_contents()
        if str(item.get("externalId", "")).startswith(f"{plan.prefix}-c")
    }
    verdict = compare(plan, sent.accepted, graph)
    return Result(
        fault=fault.name,
        description=fault.description,
        events=len(plan.events),
        deliveries=sent.deliveries,
        accepted=len(sent.accepted),
        applied=watcher.applied,
        duplicates=sent.answered_duplicate,
        parked=stack.queue_count("poison") - poison_before,
        held=stack.queue_count("held") - held_before,
        lost=len(verdict.lost),
        resurrected=len(verdict.resurrected),
        stale_won=len(verdict.stale_won),
        drain_seconds=None if drained_at is None else max(0.0, drained_at - calm_from),
        injected=watcher.faulted if isinstance(fault, GraphFault) else window.injected,
        rejected=len(sent.rejected),
        undelivered=len(sent.undelivered),
        note=note,
        details=verdict.details + [{"rejected": r} for r in sent.rejected[:20]],
    )


def compression(profile: Profile) -> str:
    return f"{profile.clocks.describe()}; intake Retry-After capped at {RETRY_PAUSE_CAP:g}s for the sender"


def with_overrides(profile: Profile, **changes: Any) -> Profile:
    return replace(profile, **{k: v for k, v in changes.items() if v is not None})


def run_all(
    run_dir: Path,
    profile: Profile,
    faults: Sequence[Fault],
    *,
    stacks: int = 1,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every fault, on ``stacks`` stacks side by side (each its own processes and ports, the faults of
    one stack one after the other), longest first onto the least loaded; results in ``faults`` order.

    Side by side, each fault still has its stack to itself (Graph's faults are global to an emulator);
    only the machine is shared, which may stretch drain times, never the verdicts.
    """
    indexed = list(enumerate(faults))
    lanes: list[list[tuple[int, Fault]]] = [[] for _ in range(max(1, min(stacks, len(indexed))))]
    for entry in sorted(indexed, key=lambda e: -e[1].cost):
        min(lanes, key=lambda lane: sum(f.cost for _, f in lane)).append(entry)
    results: dict[int, Result] = {}
    lock = threading.Lock()

    def lane_run(number: int, lane: list[tuple[int, Fault]]) -> None:
        lane.sort(key=lambda e: e[0])
        try:
            stack = FaultStack(run_dir / f"stack-{number}" if len(lanes) > 1 else run_dir, profile.clocks)
            stack.__enter__()
        except Exception as exc:
            for index, fault in lane:
                with lock:
                    results[index] = Result.broken(fault, f"stack did not start: {exc}")
            return
        try:
            for index, fault in lane:
                try:
                    result = run_fault(stack, fault, profile, index)
                except Exception as exc:  # one fault's breakage is its own verdict; the lane goes on
                    result = Result.broken(fault, f"{type(exc).__name__}: {exc}")
                with lock:
                    results[index] = result
                    if on_result is not None:
                        on_result(result)
        finally:
            stack.close()

    threads = [
        threading.Thread(target=lane_run, args=(number, lane), name=f"lane-{number}")
        for number, lane in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[index] for index, _ in indexed]
