"""Sending a plan's deliveries to the intake as an LMS would: signed, concurrent, retried until answered.

Each send is signed at the moment it goes out (Standard Webhooks: the signature covers the
``webhook-timestamp``, which must be within 5 minutes of the receiver's clock), so a retry of a
refused or unanswered delivery carries the same ``webhook-id`` and body with a new timestamp, as a
sender's retry does. 429, 5xx and lost connections are retried (the intake's ``Retry-After`` is
capped at one second: time compression, said in the output); any other 4xx is a refusal, which a
valid plan never earns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from local.faults.plan import Delivery, Event, Plan
from shared.signatures import sign

RETRY_PAUSE_CAP = 1.0  # seconds; the intake asks for 30 (QUEUE_RETRY_AFTER_SECONDS) when storage is down
REQUEST_TIMEOUT = 120.0  # longer than the intake can take while storage retries, so answers are rarely lost


@dataclass
class Attempt:
    timestamp: int  # the webhook-timestamp it was signed with
    status: int | None  # None: no answer (connection lost, timeout): it may or may not have been accepted
    duplicate: bool = False
    error: str | None = None
    answered_at: float = 0.0  # wall clock (time.time()) when the answer came; 0 when none did


@dataclass
class Send:
    delivery: Delivery
    resend: bool
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def answer(self) -> int | None:
        return self.attempts[-1].status if self.attempts else None


class Sender:
    """Sends ``plan.order`` with ``workers`` threads; ``progress`` is the share of sends finished."""

    def __init__(
        self,
        url: str,
        secret: str,
        plan: Plan,
        *,
        workers: int = 8,
        give_up_after: float = 900.0,
        rate: float | None = None,
        correlate: bool = False,
    ) -> None:
        self.url = url
        self.secret = secret
        self.plan = plan
        self.workers = workers
        self.give_up_after = give_up_after
        self.rate = rate  # sends per second, paced from the start (None: as fast as the workers go)
        self.correlate = correlate  # send the webhook-id as x-correlation-id (Graph's client-request-id)
        self._next = 0
        self.sends: list[Send] = []
        self._todo: queue.Queue[Send] = queue.Queue()
        seen: set[int] = set()
        for index in plan.order:
            send = Send(plan.deliveries[index], resend=index in seen)
            seen.add(index)
            self.sends.append(send)
            self._todo.put(send)
        self._done = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._work, name=f"sender-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def progress(self) -> float:
        with self._lock:
            return self._done / max(1, len(self.sends))

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            while True:
                try:
                    send = self._todo.get_nowait()
                except queue.Empty:
                    break
                if self.rate:
                    with self._lock:
                        due, self._next = self.started_at + self._next / self.rate, self._next + 1
                    time.sleep(max(0.0, due - time.monotonic()))
                self._deliver(client, send)
                with self._lock:
                    self._done += 1
                    if self._done == len(self.sends):
                        self.finished_at = time.monotonic()

    def _deliver(self, client: httpx.Client, send: Send) -> None:
        deadline = time.monotonic() + self.give_up_after
        delivery = send.delivery
        while True:
            stamp = int(time.time())
            headers = sign(delivery.body, self.secret, webhook_id=delivery.webhook_id, timestamp=stamp)
            headers["content-type"] = delivery.content_type
            if self.correlate:
                headers["x-correlation-id"] = delivery.webhook_id
            pause = 0.2
            try:
                response = client.post(self.url, content=delivery.body, headers=headers)
            except httpx.HTTPError as exc:
                # Refused before it was sent (the host is down) or unanswered: either way, send again.
                send.attempts.append(Attempt(stamp, None, error=f"{type(exc).__name__}: {exc}"[:200]))
            else:
                body: Any = None
                with contextlib.suppress(ValueError):
                    body = response.json()
                duplicate = isinstance(body, dict) and body.get("duplicate") is True
                send.attempts.append(Attempt(stamp, response.status_code, duplicate, answered_at=time.time()))
                if response.status_code < 300 or (response.status_code < 500 and response.status_code != 429):
                    return
                with contextlib.suppress(ValueError):
                    pause = max(pause, float(response.headers.get("retry-after", "0")))
            if time.monotonic() > deadline:
                return
            time.sleep(min(pause, RETRY_PAUSE_CAP))


@dataclass(frozen=True)
class Outcome:
    """What the intake made of a plan."""

    accepted: list[tuple[Event, int]]  # each accepted event once, with its effective event time
    deliveries: int  # sends, re-sends included
    answered_duplicate: int  # sends the intake answered with "duplicate": true
    rejected: list[str]  # sends refused with a 4xx (a harness or product bug)
    undelivered: list[str]  # sends never answered 2xx before the sender gave up


def outcome(sender: Sender) -> Outcome:
    """Effective time of an untimed event: the timestamp of the attempt that was accepted first.

    An attempt without an answer that a later "duplicate" answer proves accepted counts from its own
    timestamp; a re-send the intake accepted again (no dedupe) does not move the event's time: the
    sender's event happened once, at its first acceptance.
    """
    first: dict[int, int] = {}  # delivery index -> effective timestamp
    duplicates = 0
    rejected: list[str] = []
    undelivered: list[str] = []
    by_delivery: dict[int, list[Attempt]] = {}
    for send in sender.sends:
        by_delivery.setdefault(send.delivery.index, []).extend(send.attempts)
        answer = send.answer
        if any(a.duplicate for a in send.attempts):
            duplicates += 1
        if answer is not None and 400 <= answer < 500 and answer != 429:
            rejected.append(f"{send.delivery.webhook_id}: {answer}")
        elif answer is None or answer >= 300:
            undelivered.append(f"{send.delivery.webhook_id}: {answer}")
    for index, attempts in by_delivery.items():
        attempts = sorted(attempts, key=lambda a: a.timestamp)
        fresh = [a for a in attempts if a.status is not None and a.status < 300 and not a.duplicate]
        if fresh:
            first[index] = fresh[0].timestamp
        elif any(a.duplicate for a in attempts):
            unanswered = [a for a in attempts if a.status is None]
            first[index] = unanswered[0].timestamp if unanswered else attempts[0].timestamp
    accepted = [
        (event, event.time if event.time is not None else first[index])
        for index, delivery in enumerate(sender.plan.deliveries)
        if index in first
        for event in delivery.events
    ]
    return Outcome(accepted, len(sender.sends), duplicates, rejected, undelivered)
