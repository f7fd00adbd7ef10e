"""The faults, each played through a public control: the Graph emulator's ``/_emulator/faults``, the
identity endpoint's ``/_identity/faults/next``, or the processes themselves (Azurite, the host).

A fault starts once a share of the plan has been sent (``trigger``), so that commands are queued and
in flight when it strikes, and lasts its ``duration``; storms and slow Graph last at least as long
as the sending. ``run`` blocks until the fault has ended and returns its window.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from local.faults.sender import Sender
from local.faults.stack import FaultStack

Config = dict[str, Any]


@dataclass(frozen=True)
class Window:
    started: float  # time.monotonic()
    ended: float
    injected: int | None = None  # requests refused, where only the fault's control can count them
    note: str = ""


class Fault(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def batch_ratio(self) -> float: ...

    @property
    def cost(self) -> float:
        """A rough weight for spreading faults over parallel stacks (seconds, give or take)."""
        ...

    def run(self, stack: FaultStack, sender: Sender) -> Window: ...


def _wait_for(sender: Sender, share: float) -> None:
    while sender.progress < share and not sender.done:
        time.sleep(0.05)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@dataclass(frozen=True)
class NoFault:
    """A control run: the same events without a fault (and, with ``batch_ratio``, in CloudEvents batches)."""

    name: str = "none"
    description: str = "no fault (control)"
    batch_ratio: float = 0.0

    @property
    def cost(self) -> float:
        return 10.0

    def run(self, stack: FaultStack, sender: Sender) -> Window:
        now = time.monotonic()
        return Window(now, now)


@dataclass(frozen=True)
class GraphFault:
    """The emulator's fault configuration, cycled through ``phases`` (config, seconds); ``{}`` is calm."""

    name: str
    description: str
    phases: tuple[tuple[Config, float], ...]
    duration: float
    trigger: float = 0.0
    while_sending: bool = False  # last at least until every delivery has been sent
    batch_ratio: float = 0.0

    @property
    def cost(self) -> float:
        # A 5xx leaves the item's lease to expire (the write may still land): add about one lease.
        return self.duration + (60.0 if any("serverErrorRatio" in config for config, _ in self.phases) else 10.0)

    def run(self, stack: FaultStack, sender: Sender) -> Window:
        _wait_for(sender, self.trigger)
        url = f"{stack.graph_url}/_emulator/faults"
        started = time.monotonic()
        deadline = started + self.duration

        def over() -> bool:
            return time.monotonic() >= deadline and (sender.done or not self.while_sending)

        try:
            for config, seconds in itertools.cycle(self.phases):
                httpx.put(url, json=config, timeout=10).raise_for_status()
                phase_end = time.monotonic() + seconds
                while time.monotonic() < phase_end and not over():
                    time.sleep(0.05)
                if over():
                    break
        finally:
            httpx.delete(url, timeout=10).raise_for_status()
        return Window(started, time.monotonic())


@dataclass(frozen=True)
class TokenDown:
    """Every token request fails (503, or the connection dropped) for ``duration`` seconds: the managed
    identity route and the Entra exchange route alike, since the endpoint's faults are shared."""

    duration: float
    trigger: float = 0.33
    name: str = "token-down"
    description: str = ""
    batch_ratio: float = 0.0
    entries: tuple[Config, ...] = field(default=({"status": 503}, {"drop": True}))

    @property
    def cost(self) -> float:
        return self.duration + 30.0

    def run(self, stack: FaultStack, sender: Sender) -> Window:
        _wait_for(sender, self.trigger)
        wall_start = time.time()
        started = time.monotonic()
        base = stack.identity_url
        try:
            while time.monotonic() < started + self.duration:
                # The endpoint's faults are a queue of "next requests"; keep it topped up for the whole window.
                pending = int(httpx.get(f"{base}/_identity/health", timeout=10).json()["pendingFaults"])
                if pending < 200:
                    batch = [self.entries[i % len(self.entries)] for i in range(500)]
                    httpx.post(f"{base}/_identity/faults/next", json=batch, timeout=10).raise_for_status()
                time.sleep(0.25)
        finally:
            httpx.delete(f"{base}/_identity/faults", timeout=10).raise_for_status()
        ended = time.monotonic()
        log = httpx.get(f"{base}/_identity/requests", timeout=10).json()["requests"]
        refused = sum(1 for entry in log if entry.get("fault") and entry.get("time", 0) >= wall_start)
        return Window(started, ended, refused, "token requests refused (log holds the last 1000)")


@dataclass(frozen=True)
class Restart:
    """A part of the stack taken down mid-run and started again ``down_seconds`` later: Azurite stopped
    with SIGINT (it saves its data, as a storage failover keeps it), or the host killed with SIGKILL."""

    name: str
    description: str
    part: Literal["azurite", "host"]
    down_seconds: float
    trigger: float = 0.5
    batch_ratio: float = 0.0

    @property
    def cost(self) -> float:
        return self.down_seconds + 60.0

    def run(self, stack: FaultStack, sender: Sender) -> Window:
        _wait_for(sender, self.trigger)
        in_queue = stack.queue_count()
        started = time.monotonic()
        if self.part == "azurite":
            stack.stop_azurite()
            _sleep_until(started + self.down_seconds)
            stack.start_azurite()
        else:
            stack.kill_host()
            _sleep_until(started + self.down_seconds)
            stack.start_host()
        return Window(started, time.monotonic(), None, f"{in_queue} message(s) queued or in flight when it went down")
