"""Upserts grouped into Graph JSON batches (``POST /$batch``), for backfill and reconcile.

Graph's JSON batching takes up to 20 requests per batch, answers each one with its own status (in
any order), and throttles each one on its own: an inner 429 carries its own ``Retry-After``
(https://learn.microsoft.com/graph/json-batching; ``/work/shared/docs/graph-viva-learning.md`` §7).
So a ``BatchWriter`` retries each inner 429 or 5xx alone, after its own wait, in a later batch, and
reports every other inner 4xx to that item's caller. Graph counts each request inside a batch against
its limits, so a batch spends ``len(requests)`` from the shared write budget (``GraphClient.call``'s
``cost``), and each inner 429/503 is reported to the budget (``WriteBudget.settled``) as a single
request's would be.

Whether the Viva Learning workload accepts its calls inside ``$batch`` is undocumented (unverified).
A batch refused as a whole (400, 404, 405 or 501 for the batch, or every inner answer 405/501, or a
400 about batching) turns the writer to concurrent single ``upsert_content`` calls for the rest of
its life, and ``on_fallback`` is told once.

Each item keeps its own ``Deadline`` (the push's, under its ledger lease): a batch is sent with the
earliest deadline of its items, and a request it leaves without an answer marks every item's
deadline unsettled (Graph may still apply it), as ``GraphClient.call`` does for a single push. While
a request is on its way the item's deadline is unsettled too, and it is settled again only when an
answer comes: a caller that gives up meanwhile (a cancelled run) must keep the item's lease for the
landing margin, since the writer's request may still land after the caller has gone.

A batch failing as a whole for a reason that is not the service refusing batching (401, 403, any
other non-transient status of the ``$batch`` itself) is a ``BatchRequestError``: it says nothing about
the items, so the caller must not treat it as an answer for each of them.

With a shared write budget (``GraphClient.budget``) whose ``burst`` is below ``batch_size``, batches
hold at most ``burst`` requests: a larger batch would go over the budget's window bound
(``shared.ratebudget.reserve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from shared import odata
from shared.graph import (
    GATEWAY_GAVE_UP,
    MAX_INLINE_ATTEMPTS,
    MIN_ATTEMPT_SECONDS,
    Deadline,
    GraphClient,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    classify,
    next_delay,
    past_deadline,
    retry_after_seconds,
)
from shared.models import upsert_body

logger = logging.getLogger(__name__)

MAX_BATCH_REQUESTS = 20  # Graph's JSON batching limit (learn.microsoft.com/graph/json-batching)
BATCH_PATH = "/$batch"
# A batch the service does not serve at all: the path is unknown (404), the method or the batched
# calls refused (405), not implemented (501), or the batch refused as malformed (400) - for a batch
# this writer built, that can only mean the workload does not take these calls batched.
BATCH_REFUSED = frozenset({400, 404, 405, 501})
INNER_UNSUPPORTED = frozenset({405, 501})
# How long the first item of a batch waits for others to join it: a backfill fills a batch in well
# under a millisecond, while a lone reconcile item is not held up for long.
DEFAULT_LINGER_SECONDS = 0.02


class BatchRequestError(GraphPermanentError):
    """The ``$batch`` request itself failed for good (401, 403, 413...): no item was answered."""


@runtime_checkable
class BurstBudget(Protocol):
    """A write budget that says how many writes may go at once (``SharedWriteBudget.burst``)."""

    @property
    def burst(self) -> int: ...


@dataclass
class _Job:
    registration_id: str
    content: dict[str, Any]
    deadline: Deadline | None
    future: asyncio.Future[dict[str, Any]]
    attempts: int = 0
    last: GraphTransientError | None = None

    @property
    def external_id(self) -> str:
        return str(self.content["externalId"])


@dataclass
class WriterStats:
    batches: int = 0  # $batch requests sent
    singles: int = 0  # single upserts sent after the fallback
    inner_retries: int = 0  # inner requests sent again (429, 5xx)
    fallback: str | None = None  # why the writer stopped batching

    def view(self) -> dict[str, Any]:
        return {
            "batchRequests": self.batches,
            "singleRequests": self.singles,
            "innerRetries": self.inner_retries,
            "fallback": self.fallback,
        }


@dataclass
class BatchWriter:
    """Queue upserts (``upsert``) and send them as batches of up to ``batch_size``, ``concurrency``
    batches in flight. Use it as an async context manager: leaving it stops the dispatcher."""

    graph: GraphClient
    batch_size: int = MAX_BATCH_REQUESTS
    concurrency: int = 4
    single_concurrency: int = 16
    linger_seconds: float = DEFAULT_LINGER_SECONDS
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    on_fallback: Callable[[str], None] | None = None
    batching: bool = True
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_REQUESTS:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_REQUESTS} requests, not {self.batch_size}")
        if isinstance(self.graph.budget, BurstBudget):
            self.batch_size = max(1, min(self.batch_size, self.graph.budget.burst))
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max(1, self.concurrency))
        self._single_slots = asyncio.Semaphore(max(1, self.single_concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BatchWriter:
        self._dispatcher = asyncio.create_task(self._dispatch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():  # nobody is left to send them: their callers must not hang
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(GraphTransientError(None, "Cancelled", "the batch writer was closed"))

    async def upsert(
        self, registration_id: str, content: dict[str, Any], *, deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """Create or replace one item (the worker's full upsert body); Graph's answer for it, or its
        ``GraphError`` (a permanent inner 4xx at once; a 429/5xx once its retries are spent)."""
        if self._dispatcher is None:
            raise RuntimeError("use the BatchWriter as an async context manager")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(registration_id, content, deadline, future))
        return await future

    # -- dispatch ---------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if not self.batching:
                self._spawn(self._single(first))
                continue
            jobs = [first]
            until = loop.time() + self.linger_seconds
            while len(jobs) < self.batch_size:
                if not self._queue.empty():  # what is queued already joins without a wait (a busy loop
                    jobs.append(self._queue.get_nowait())  # could otherwise spend the linger on turns)
                    continue
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._slots.acquire()  # back-pressure: at most `concurrency` batches in flight
            self._spawn(self._batch(jobs))

    async def _single(self, job: _Job) -> None:
        async with self._single_slots:
            if job.future.done():
                return
            try:
                self.stats.singles += 1
                with on_its_way(job.deadline) as deadline:
                    answer = await self.graph.upsert_content(job.registration_id, job.content, deadline=deadline)
            except GraphError as error:
                _reject(job, error)
            except Exception as error:  # a bug or an unexpected failure still reaches the item's caller
                _reject(job, error)
                raise
            else:
                _resolve(job, answer)

    async def _batch(self, jobs: list[_Job]) -> None:
        try:
            if not self.batching:  # the writer fell back while this batch waited for a slot
                for job in jobs:
                    self._spawn(self._single(job))
                return
            await self._send(jobs)
        except Exception as error:  # no job is left waiting forever, whatever went wrong
            for job in jobs:
                _reject(job, error)
            raise
        finally:
            self._slots.release()

    def _fall_back(self, why: str, jobs: list[_Job]) -> None:
        if self.batching:
            self.batching = False
            self.stats.fallback = why
            logger.warning("graph $batch refused (%s); sending single requests for the rest of the run", why)
            if self.on_fallback is not None:
                self.on_fallback(why)
        for job in jobs:
            self._spawn(self._single(job))

    async def _send(self, jobs: list[_Job]) -> None:
        for job in jobs:
            job.attempts += 1
        live = [job for job in jobs if self._may_attempt(job)]
        if not live:
            return
        by_id = {str(index): job for index, job in enumerate(live)}
        requests = [
            {
                "id": request_id,
                "method": "PATCH",
                "url": odata.content_by_external_id(job.registration_id, job.external_id),
                "headers": {"Content-Type": "application/json"},
                "body": upsert_body(job.content),
            }
            for request_id, job in by_id.items()
        ]
        deadline = _earliest(live)
        self.stats.batches += 1
        settled = _sending(live)  # on its way: unsettled until an answer comes (or for good, if none does)
        try:
            response = await self.graph.call(
                "POST", BATCH_PATH, json={"requests": requests}, deadline=deadline, cost=len(requests)
            )
        except GraphError as error:
            _answered(settled)
            # 501 is a 5xx, which the client calls transient: for a batch it is a refusal all the same.
            if error.status in BATCH_REFUSED:
                self._fall_back(f"{error.status} {error.code}: {error.message[:200]}", live)
                return
            if not isinstance(error, GraphTransientError):
                whole = BatchRequestError(error.status, error.code, error.message, error.request_id)
                for job in live:
                    _reject(job, whole)
                return
            _spread_unsettled(deadline, live)
            # The upserts are idempotent PATCHes: a batch that may have been applied is safe to repeat.
            for job in live:
                self._retry_later(job, error)
            return
        _answered(settled)
        _spread_unsettled(deadline, live)
        await self._answers(by_id, response)

    async def _answers(self, by_id: dict[str, _Job], response: httpx.Response) -> None:
        try:
            answers = response.json().get("responses")
        except (ValueError, AttributeError):
            answers = None
        if not isinstance(answers, list):
            self._fall_back(f"{response.status_code} without a batch answer", list(by_id.values()))
            return
        statuses = [a.get("status") for a in answers if isinstance(a, dict)]
        if statuses and len(statuses) == len(by_id) and all(self._unsupported(a) for a in answers):
            self._fall_back(f"every inner request answered {sorted({str(s) for s in statuses})}", list(by_id.values()))
            return
        seen: set[str] = set()
        for answer in answers:
            if not isinstance(answer, dict) or str(answer.get("id")) not in by_id:
                continue
            request_id = str(answer["id"])
            seen.add(request_id)
            await self._one_answer(by_id[request_id], answer)
        for request_id, job in by_id.items():
            if request_id not in seen:  # no answer for it: as if no response came
                self._retry_later(
                    job, GraphTransientError(None, "NoBatchAnswer", "the batch answered without this request")
                )

    @staticmethod
    def _unsupported(answer: Any) -> bool:
        if not isinstance(answer, dict):
            return False
        status = answer.get("status")
        if status in INNER_UNSUPPORTED:
            return True
        code, message = _inner_error(answer)
        return status == 400 and "batch" in f"{code} {message}".lower()

    async def _one_answer(self, job: _Job, answer: dict[str, Any]) -> None:
        status = int(answer.get("status") or 0)
        headers = httpx.Headers({str(k): str(v) for k, v in (answer.get("headers") or {}).items()})
        if classify(status, "PATCH") == "ok":
            body = answer.get("body")
            _resolve(job, body if isinstance(body, dict) else {})
            return
        code, message = _inner_error(answer)
        request_id = headers.get("request-id")
        if status in (429, 503) and self.graph.budget is not None:
            await self.graph.budget.settled(status, retry_after_seconds(headers, message))
        if classify(status, "PATCH") == "transient" or status == 0:
            if status in GATEWAY_GAVE_UP and job.deadline is not None:
                job.deadline.unsettled = True
            error = GraphTransientError(
                status or None, code, message, request_id, retry_after_seconds(headers, message)
            )
            self._retry_later(job, error)
            return
        _reject(job, GraphPermanentError(status, code, message, request_id))

    def _may_attempt(self, job: _Job) -> bool:
        if job.future.done():
            return False
        if job.deadline is not None and job.deadline.remaining() < MIN_ATTEMPT_SECONDS:
            _reject(job, past_deadline(job.deadline, job.last, "PATCH not attempted in a batch"))
            return False
        return True

    def _retry_later(self, job: _Job, error: GraphTransientError) -> None:
        """Send ``job`` again alone after its own wait (Graph's ``Retry-After``, at least the back-off),
        in whatever batch is forming then; give up past its attempts or its deadline."""
        delay = next_delay(error, job.attempts)
        if job.attempts >= MAX_INLINE_ATTEMPTS:
            _reject(job, error)
            return
        if job.deadline is not None and job.deadline.remaining() - delay < MIN_ATTEMPT_SECONDS:
            _reject(job, past_deadline(job.deadline, error, f"PATCH not retried after {delay:.1f}s"))
            return
        job.last = error
        self.stats.inner_retries += 1
        logger.info("batch: %s answered %s; again in %.1fs", job.external_id, error, delay)
        self._spawn(self._requeue(job, delay))

    async def _requeue(self, job: _Job, delay: float) -> None:
        await self.sleep(delay)
        self._queue.put_nowait(job)


@contextlib.contextmanager
def on_its_way(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """The deadline to give one request's call: ``deadline`` is unsettled while the request is out, and
    once the call is over (an answer, or a ``GraphError``) as the call left it (the copy yielded). A
    call abandoned otherwise (cancelled, an unexpected error) leaves it unsettled: it may still land."""
    if deadline is None:
        yield None
        return
    before = deadline.unsettled
    call = Deadline(deadline.at, deadline.clock)
    deadline.unsettled = True
    try:
        yield call
    except GraphError:
        deadline.unsettled = before or call.unsettled
        raise
    deadline.unsettled = before or call.unsettled


def _resolve(job: _Job, answer: dict[str, Any]) -> None:
    if not job.future.done():  # its caller may have gone (a cancelled run): nobody waits for the answer
        job.future.set_result(answer)


def _reject(job: _Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)


def _sending(jobs: list[_Job]) -> list[tuple[Deadline, bool]]:
    """Mark each job's deadline unsettled while its request is on its way; what to restore after."""
    marked = [(job.deadline, job.deadline.unsettled) for job in jobs if job.deadline is not None]
    for deadline, _ in marked:
        deadline.unsettled = True
    return marked


def _answered(marked: list[tuple[Deadline, bool]]) -> None:
    """An answer (or a failure the client saw to its end) came: each deadline is as it was before the send;
    ``GraphClient.call`` marks the batch's own deadline when it left a request unanswered (spread then)."""
    for deadline, before in marked:
        deadline.unsettled = before


def _inner_error(answer: dict[str, Any]) -> tuple[str, str]:
    body = answer.get("body")
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return f"Http{answer.get('status')}", str(body)[:500] if body else f"inner status {answer.get('status')}"
    return str(err.get("code") or "Error"), str(err.get("message") or "")[:1024]


def _earliest(jobs: list[_Job]) -> Deadline | None:
    deadlines = [job.deadline for job in jobs if job.deadline is not None]
    if not deadlines:
        return None
    first = min(deadlines, key=lambda d: d.at)
    return Deadline(first.at, first.clock)


def _spread_unsettled(batch_deadline: Deadline | None, jobs: list[_Job]) -> None:
    if batch_deadline is not None and batch_deadline.unsettled:
        for job in jobs:
            if job.deadline is not None:
                job.deadline.unsettled = True
