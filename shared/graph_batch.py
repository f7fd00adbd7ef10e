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
deadline unsettled (Graph may still apply it), as ``GraphClient.call`` does for a single push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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
                answer = await self.graph.upsert_content(job.registration_id, job.content, deadline=job.deadline)
            except GraphError as error:
                job.future.set_exception(error)
            except Exception as error:  # a bug or an unexpected failure still reaches the item's caller
                job.future.set_exception(error)
                raise
            else:
                job.future.set_result(answer)

    async def _batch(self, jobs: list[_Job]) -> None:
        try:
            if not self.batching:  # the writer fell back while this batch waited for a slot
                for job in jobs:
                    self._spawn(self._single(job))
                return
            await self._send(jobs)
        except Exception as error:  # no job is left waiting forever, whatever went wrong
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
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
        try:
            response = await self.graph.call(
                "POST", BATCH_PATH, json={"requests": requests}, deadline=deadline, cost=len(requests)
            )
        except GraphError as error:
            # 501 is a 5xx, which the client calls transient: for a batch it is a refusal all the same.
            if error.status in BATCH_REFUSED:
                self._fall_back(f"{error.status} {error.code}: {error.message[:200]}", live)
                return
            if not isinstance(error, GraphTransientError):
                for job in live:
                    job.future.set_exception(error)
                return
            _spread_unsettled(deadline, live)
            # The upserts are idempotent PATCHes: a batch that may have been applied is safe to repeat.
            for job in live:
                self._retry_later(job, error)
            return
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
            job.future.set_result(body if isinstance(body, dict) else {})
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
        job.future.set_exception(GraphPermanentError(status, code, message, request_id))

    def _may_attempt(self, job: _Job) -> bool:
        if job.future.done():
            return False
        if job.deadline is not None and job.deadline.remaining() < MIN_ATTEMPT_SECONDS:
            job.future.set_exception(past_deadline(job.deadline, job.last, "PATCH not attempted in a batch"))
            return False
        return True

    def _retry_later(self, job: _Job, error: GraphTransientError) -> None:
        """Send ``job`` again alone after its own wait (Graph's ``Retry-After``, at least the back-off),
        in whatever batch is forming then; give up past its attempts or its deadline."""
        delay = next_delay(error, job.attempts)
        if job.attempts >= MAX_INLINE_ATTEMPTS:
            job.future.set_exception(error)
            return
        if job.deadline is not None and job.deadline.remaining() - delay < MIN_ATTEMPT_SECONDS:
            job.future.set_exception(past_deadline(job.deadline, error, f"PATCH not retried after {delay:.1f}s"))
            return
        job.last = error
        self.stats.inner_retries += 1
        logger.info("batch: %s answered %s; again in %.1fs", job.external_id, error, delay)
        self._spawn(self._requeue(job, delay))

    async def _requeue(self, job: _Job, delay: float) -> None:
        await self.sleep(delay)
        self._queue.put_nowait(job)


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
