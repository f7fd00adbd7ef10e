"""Load a whole catalog into Graph (``vlsync backfill``), and the chunked, leased push that reconcile
shares with it.

Records stream from the catalog (``shared.catalog``) into chunks of up to 100 items (one ledger
transaction, ``shared.ledger.MAX_TRANSACTION_OPERATIONS``); at most ``in_flight`` chunks are pushed
at once, so memory holds a bounded window whatever the catalog's size. Each chunk takes its items'
leases in one go (``Ledger.pushing_many``, the batch form of the one lease protocol), pushes them
through the ``BatchWriter`` (20 upserts per ``$batch``), and records what reached Graph in one go.

Ordering: a backfilled item's event time is its ``lastModifiedDateTime`` when the record has one,
else the run's ``as_of`` time (``vlsync``: the catalog file's modification time unless ``--as-of``
says otherwise; a resumed run reuses the first run's). A webhook event recorded after that time
wins: the item is skipped as stale, never overwritten. A record whose event the ledger already holds
(the same ``lastModifiedDateTime`` pushed before) is skipped too, which makes a repeated backfill cheap.

Checkpoint: a record is done when its push was recorded, judged stale, or failed permanently for
itself (an item's own 4xx answer, 400 or 422 say: sending the same body again cannot succeed; it is
reported). A transient failure, a busy item, or a ledger row that kept changing (``LedgerConflict``)
is not done, so the next run tries it again.

Failures that are the run's, not an item's, stop the run (``RunStopped``) and mark nothing done: a
401 or 403 (the credential or its permission), a 404 (an upsert by ``externalId`` creates the item,
so a 404 means the registration is not there), and a ``$batch`` request failing as a whole
(``BatchRequestError``).

A catalog names each ``externalId`` once: a later record with an id seen before is an invalid line
naming the first (the diff of ``shared.reconcile`` reports it the same way). The ids seen are kept as
64-bit digests with the line of their first record, about 100 bytes a record (a million records:
about 100 MB).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from azure.core.exceptions import AzureError

from shared.catalog import CatalogProblem, Record
from shared.checkpoint import Checkpoint
from shared.graph import GraphClient, GraphError, GraphPermanentError
from shared.graph_batch import BatchRequestError, BatchWriter, on_its_way
from shared.ledger import (
    MAX_TRANSACTION_OPERATIONS,
    BatchEvent,
    BusyWait,
    ItemBusy,
    Ledger,
    LedgerConflict,
    PushTiming,
    StaleEvent,
)
from shared.models import LearningContent, parse_rfc3339

logger = logging.getLogger(__name__)

PUSHED_BY = "backfill"
DETAILS_KEPT = 1000  # failures and problems listed in full; beyond that they are counted only
CHECKPOINT_EVERY_SECONDS = 1.0  # a crash re-sends at most this long's work plus the chunks in flight
OnInvalid = Literal["continue", "stop"]
# Statuses no item can get past: the credential (401), its permission (403), the registration (404:
# an upsert by externalId creates a missing item, and a delete of a missing item is no error).
RUN_LEVEL_STATUSES = frozenset({401, 403, 404})


class RunStopped(Exception):
    """A failure of the whole run (see the module's checkpoint rule): nothing it touched was marked done."""

    def __init__(self, error: GraphError) -> None:
        super().__init__(
            f"stopped: Graph answered {error} - a failure of the run, not of an item "
            "(check the credential, its permission and the registration id, then run it again)"
        )
        self.error = error


def stops_the_run(error: GraphError) -> bool:
    return isinstance(error, BatchRequestError) or error.status in RUN_LEVEL_STATUSES


@dataclass(frozen=True)
class Planned:
    """One item's push in a chunk: an upsert of ``body`` (Graph's names) or a delete."""

    line: int
    event: BatchEvent
    body: dict[str, Any] | None = None

    @property
    def external_id(self) -> str:
        return self.event.external_id


@dataclass
class Tally:
    """What a run did, item by item (counts), with the first ``DETAILS_KEPT`` failures in full."""

    pushed: int = 0
    stale: int = 0
    busy: int = 0
    failed: int = 0
    lost: int = 0
    invalid: int = 0
    already_done: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    problems: list[CatalogProblem] = field(default_factory=list)

    def fail(
        self, line: int, external_id: str, error: GraphError | LedgerConflict | AzureError, *, failed: bool = True
    ) -> None:
        """List ``error`` with the failures; ``failed``: also count it as failed (busy and lease-lost
        items are listed, and counted on their own)."""
        self.failed += failed
        if len(self.failures) < DETAILS_KEPT:
            status = error.status if isinstance(error, GraphError) else None
            message = error.message if isinstance(error, GraphError) else str(error)
            self.failures.append(
                {"line": line, "externalId": external_id, "status": status, "code": _code(error), "message": message}
            )

    def problem(self, record: Record) -> None:
        self.invalid += 1
        room = DETAILS_KEPT - len(self.problems)
        if room > 0:
            self.problems.extend(record.problems[:room])

    @property
    def finished(self) -> int:
        return self.pushed + self.stale + self.busy + self.failed + self.invalid + self.already_done

    def view(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "skippedStale": self.stale,
            "busy": self.busy,
            "failed": self.failed,
            "leaseLost": self.lost,
            "invalid": self.invalid,
            "alreadyDone": self.already_done,
            "failures": self.failures,
            "problems": [p.view() for p in self.problems],
        }


def _code(error: GraphError | LedgerConflict | AzureError) -> str:
    if isinstance(error, GraphError | LedgerConflict):
        return error.code
    return f"Storage{type(error).__name__}"


def event_time(content: LearningContent, as_of: datetime) -> datetime:
    """The ordering time of a catalog record: its ``lastModifiedDateTime``, else the run's ``as_of``."""
    if content.last_modified_date_time:
        return parse_rfc3339(content.last_modified_date_time)
    return as_of


@dataclass
class ChunkPusher:
    """Pushes chunks of planned items under their leases, through one writer; shared by backfill and
    reconcile. ``delete`` items go as single deletes (``GraphClient.delete_content``: the delete form
    Graph honours is learned there), concurrently."""

    graph: GraphClient
    ledger: Ledger
    writer: BatchWriter
    registration_id: str
    timing: PushTiming
    clock: Callable[[], datetime]
    busy: BusyWait | None = None
    source: str = PUSHED_BY
    pushed_by: str = PUSHED_BY
    stopped: GraphError | None = field(default=None, init=False)  # the run-level failure seen, if any

    async def push(self, chunk: list[Planned], tally: Tally) -> list[int]:
        """Push one chunk; the lines that are done (see the module's checkpoint rule).

        The ledger's storage failing (after its SDK's own retries), or a ledger row that kept changing
        under the batch (``LedgerConflict``), fails the chunk, not the run: its items are reported and
        stay not done (their leases were given back or expire), so the next run sends them again; a
        storage that is down fails every chunk, each reported."""
        if self.stopped is not None:
            return []
        try:
            return await self._push(chunk, tally)
        except (AzureError, LedgerConflict) as error:
            logger.error("backfill: a chunk of %d item(s) failed on the ledger: %s", len(chunk), error)
            for item in chunk:
                tally.fail(item.line, item.external_id, error)
            return []

    async def _push(self, chunk: list[Planned], tally: Tally) -> list[int]:
        owner = f"{self.pushed_by}/{uuid.uuid4().hex[:8]}"
        done: list[int] = []
        by_id = {item.external_id: item for item in chunk}
        async with self.ledger.pushing_many(
            self.registration_id,
            [item.event for item in chunk],
            owner=owner,
            timing=self.timing,
            pushed_by=self.pushed_by,
            source=self.source,
            clock=self.clock,
            busy=self.busy,
        ) as batch:

            async def one(item: Planned) -> None:
                deadline = batch.pushes[item.external_id].deadline
                try:
                    if item.event.op == "delete":
                        with on_its_way(deadline) as call:  # a cancelled delete may still land
                            await self.graph.delete_content(self.registration_id, item.external_id, deadline=call)
                    else:
                        assert item.body is not None
                        await self.writer.upsert(self.registration_id, item.body, deadline=deadline)
                except GraphError as error:
                    tally.fail(item.line, item.external_id, error)
                    if stops_the_run(error):
                        if self.stopped is None:
                            logger.error("%s: a failure of the run, not of an item: %s", self.pushed_by, error)
                            self.stopped = error
                    elif isinstance(error, GraphPermanentError):
                        done.append(item.line)
                    return
                batch.succeeded(item.external_id)

            tasks = [asyncio.ensure_future(one(by_id[external_id])) for external_id in batch.pushes]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                # Stop the others before the leases are judged: an item still queued in the writer is
                # then never sent, and one whose request is out stays unsettled (its lease is kept).
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        for external_id, why in batch.refused.items():
            item = by_id[external_id]
            if isinstance(why, StaleEvent):
                tally.stale += 1
                done.append(item.line)
            elif isinstance(why, ItemBusy):
                tally.busy += 1
                tally.fail(item.line, external_id, why, failed=False)
            else:
                tally.fail(item.line, external_id, why)
        tally.pushed += len(batch.recorded)
        done.extend(by_id[e].line for e in batch.recorded)
        for external_id, lost in batch.lost.items():
            tally.lost += 1
            # It reached Graph; the ledger marks it needsRepair (reconcile repairs it).
            tally.fail(by_id[external_id].line, external_id, lost, failed=False)
            done.append(by_id[external_id].line)
        return done


@dataclass
class Backfill:
    """One backfill run over a stream of catalog records."""

    pusher: ChunkPusher
    checkpoint: Checkpoint | None
    as_of: datetime
    chunk_size: int = MAX_TRANSACTION_OPERATIONS
    in_flight: int = 4
    on_invalid: OnInvalid = "continue"
    limit: int | None = None  # process at most this many records not yet done, then stop (a trial run)
    source_event_id: str | None = None  # of every event of the run (reconcile's tie-breaker)
    # A file's lines keep their places, so a resumed run skips the lines the checkpoint has done. An LMS's
    # list may not (a course added or removed moves the rest): then every course is claimed again, and
    # the ledger judges one pushed before at the same time stale, with no Graph request.
    skip_done_lines: bool = True
    progress: Callable[[Tally], None] | None = None
    monotonic: Callable[[], float] = time.monotonic
    tally: Tally = field(default_factory=Tally)
    stopped_at: CatalogProblem | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_TRANSACTION_OPERATIONS:
            raise ValueError(f"a chunk holds 1 to {MAX_TRANSACTION_OPERATIONS} items, not {self.chunk_size}")
        self._saved_at = self.monotonic()
        self._first_line: dict[int, int] = {}  # 64-bit digest of an externalId -> the line it is first on

    def _unique(self, record: Record) -> Record:
        """``record``, or an invalid record when its externalId is on an earlier line."""
        if record.content is None:
            return record
        external_id = record.content.external_id
        key = int.from_bytes(hashlib.blake2b(external_id.encode("utf-8"), digest_size=8).digest(), "big")
        first = self._first_line.setdefault(key, record.line)
        if first == record.line:
            return record
        problem = CatalogProblem(record.line, "/externalId", f"{external_id!r} repeats line {first}")
        return Record(record.line, problems=(problem,))

    async def run(self, records: Iterable[Record] | AsyncIterable[Record]) -> Tally:
        """Push ``records`` (a file's, read synchronously, or an LMS's list, ``shared.lms_catalog``); an
        error the records raise (an LMS that fails for good) ends the run after the chunks in flight,
        with the checkpoint saved."""
        async with aclosing(_each(records)) as stream:
            return await self._run(stream)

    async def _run(self, records: AsyncIterator[Record]) -> Tally:
        slots = asyncio.Semaphore(max(1, self.in_flight))
        tasks: set[asyncio.Task[None]] = set()
        chunk: list[Planned] = []
        taken = 0
        try:
            async for read in records:
                record = self._unique(read)  # before the checkpoint: a resumed run knows the done lines' ids
                if self.pusher.stopped is not None:
                    break
                done_before = self.checkpoint is not None and record.line in self.checkpoint.done
                if self.skip_done_lines and done_before:
                    self.tally.already_done += 1
                    continue
                if self.limit is not None and taken >= self.limit:
                    break
                # A list read again (skip_done_lines off) sends its done positions for the ledger to judge;
                # they do not count toward --limit, or a resumed trial would take the same first N for ever.
                taken += not done_before
                if record.content is None:
                    self.tally.problem(record)
                    self._progress()
                    if self.on_invalid == "stop":
                        self.stopped_at = record.problems[0]
                        break
                    continue
                planned = Planned(
                    record.line,
                    BatchEvent(
                        record.content.external_id,
                        event_time(record.content, self.as_of),
                        source_event_id=self.source_event_id,
                    ),
                    record.content.to_graph(),
                )
                chunk.append(planned)
                if len(chunk) >= self.chunk_size:
                    await self._launch(chunk, slots, tasks)
                    chunk = []
            if chunk and self.pusher.stopped is None:
                await self._launch(chunk, slots, tasks)
            await _settle(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._save(force=True)
        if self.pusher.stopped is not None:
            raise RunStopped(self.pusher.stopped)
        return self.tally

    async def _launch(self, chunk: list[Planned], slots: asyncio.Semaphore, tasks: set[asyncio.Task[None]]) -> None:
        await asyncio.sleep(0)  # the catalog is read synchronously: let the loop's other tasks run per chunk
        await slots.acquire()  # bounded work in flight: the reader waits here
        for task in [t for t in tasks if t.done()]:
            tasks.discard(task)
            task.result()  # a storage failure of a chunk stops the run (raised here)

        async def go() -> None:
            try:
                done = await self.pusher.push(chunk, self.tally)
            finally:
                slots.release()
            if self.checkpoint is not None:
                for line in done:
                    self.checkpoint.done.add(line)
            self._save()
            self._progress()

        tasks.add(asyncio.create_task(go()))

    def _save(self, *, force: bool = False) -> None:
        if self.checkpoint is None:
            return
        now = self.monotonic()
        if force or now - self._saved_at >= CHECKPOINT_EVERY_SECONDS:
            self.checkpoint.save()
            self._saved_at = now

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.tally)


async def _each(records: Iterable[Record] | AsyncIterable[Record]) -> AsyncGenerator[Record, None]:
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


async def _settle(tasks: set[asyncio.Task[None]]) -> None:
    """Wait for every chunk; the first failure is raised once the others are over."""
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
