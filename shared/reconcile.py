"""Compare a registration's content in Graph with the source catalog and make Graph equal it
(``vlsync reconcile``, and the reconcile timer of ``handlers/reconcile.py``).

The diff compares only the properties the product manages (``shared.models.upsert_body``: every
``LearningContent`` property), each side normalised the same way: an absent property and its
documented default are equal (``isActive`` absent = true, a list absent = []), date-times are
compared as instants (``...Z`` equals ``...+00:00``), read-only properties (``id``, ``@odata.*``)
are ignored. It sorts items four ways:

- create: in the catalog, not in Graph;
- update: in both, a managed property differs (the diff names which);
- remove: in Graph, not in the catalog: deactivated (an upsert with ``isActive`` false; items already
  inactive are left alone) or, with ``delete``, deleted;
- repair: marked ``needsRepair`` in the ledger (a push reached Graph after a newer event was recorded)
  and in the catalog: pushed again even when Graph looks equal. One marked but not in the catalog is
  only reported (``repairMissing``): its newest state must come from the LMS (``vlsync replay``).

A registration may be shared by several sources, each owning the items whose ``externalId`` starts
with its ``externalIdPrefix``. With a ``prefix``, the diff sees only that part of the registration:
Graph items without it are neither updated nor removed (counted as ``outsidePrefix``), and a catalog
record without it is an invalid line. With ``may_remove`` false (the timer's choice for a source
without a prefix in a shared registration: it cannot tell its items from the others'), nothing is
removed, and what would have been is counted (``removalRefused``).

Memory: the catalog is read in passes (``records`` is called again for each), holding a 32-byte digest
and a line number per item; Graph's normalised item is kept only for items that differ or are to be
removed.

Applying goes through the backfill's leased chunks and writer (``shared.backfill``), so a newer webhook
state is never overwritten. Event times: a catalog row's ``lastModifiedDateTime``, else ``as_of``
(the time of the catalog's export: an ``as_of`` later than the export would let the export's
state override webhook events that came between the two); a removal's is ``as_of``. Each run's
events carry the source event id ``reconcile:<run start>``, which orders them after an earlier push
of the same event time (a backfill's, or an earlier reconcile's): drift that no newer event explains
is repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from shared.backfill import Backfill, ChunkPusher, Planned, RunStopped, Tally
from shared.catalog import CatalogProblem, Record
from shared.ledger import MAX_TRANSACTION_OPERATIONS, BatchEvent
from shared.models import ABSENT_VALUES, LearningContent, parse_rfc3339, upsert_body

logger = logging.getLogger(__name__)

Removal = Literal["deactivate", "delete"]
MANAGED: tuple[str, ...] = tuple(
    sorted({field.alias or name for name, field in LearningContent.model_fields.items()} | set(ABSENT_VALUES))
)
_TIMES = frozenset({"createdDateTime", "lastModifiedDateTime"})
SOURCE = "reconcile"
YIELD_EVERY = 500  # records read between turns given to the event loop (the catalog is read synchronously)


def normalised(item: dict[str, Any]) -> dict[str, Any]:
    """An item's managed properties as one comparable document (see the module's rules)."""
    present = {k: item[k] for k in MANAGED if item.get(k) is not None}
    body = upsert_body(present)
    for name in _TIMES:
        value = body.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a date-time: compared as written
                body[name] = parse_rfc3339(value).astimezone(UTC).isoformat()
    return {k: body.get(k) for k in MANAGED}


def digest(document: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")).digest()


def changed(catalog: dict[str, Any], graph: dict[str, Any]) -> list[str]:
    """The managed properties whose normalised values differ."""
    return [name for name in MANAGED if catalog.get(name) != graph.get(name)]


def deactivation(graph_item: dict[str, Any]) -> dict[str, Any] | None:
    """The full upsert body that hides a Graph item, or ``None`` when it is already inactive."""
    body = normalised(graph_item)
    if body.get("isActive") is False:
        return None
    return {**body, "isActive": False}


@dataclass
class Plan:
    """The diff, and what applying it needs."""

    create: list[tuple[int, str]] = field(default_factory=list)  # (line, externalId)
    update: list[tuple[int, str, list[str]]] = field(default_factory=list)  # (line, externalId, properties)
    repair: list[tuple[int, str]] = field(default_factory=list)
    remove: list[dict[str, Any]] = field(default_factory=list)  # Graph's normalised items
    repair_missing: list[str] = field(default_factory=list)
    unchanged: int = 0
    problems: list[CatalogProblem] = field(default_factory=list)
    invalid: int = 0
    outside_prefix: int = 0  # Graph items of the registration outside the source's prefix: not compared
    removal_refused: int = 0  # items the diff would remove, kept because removal is not allowed

    def lines(self) -> set[int]:
        return (
            {line for line, _ in self.create} | {line for line, _, _ in self.update} | {line for line, _ in self.repair}
        )

    def view(self, removal: Removal) -> dict[str, Any]:
        return {
            "create": [e for _, e in self.create],
            "update": [{"externalId": e, "properties": props} for _, e, props in self.update],
            "deactivate" if removal == "deactivate" else "delete": [str(i["externalId"]) for i in self.remove],
            "repair": [e for _, e in self.repair],
            "repairMissing": self.repair_missing,
            "unchanged": self.unchanged,
            "invalid": self.invalid,
            "outsidePrefix": self.outside_prefix,
            "removalRefused": self.removal_refused,
            "problems": [p.view() for p in self.problems],
        }


class ContentLister(Protocol):
    """The one Graph call a diff makes (``GraphClient.list_contents``)."""

    def list_contents(self, registration_id: str) -> AsyncIterator[dict[str, Any]]: ...


async def plan(
    records: Callable[[], Iterable[Record]],
    graph: ContentLister,
    registration_id: str,
    needs_repair: Iterable[str],
    *,
    removal: Removal = "deactivate",
    prefix: str = "",
    may_remove: bool = True,
) -> Plan:
    """The diff between the catalog (``records()`` streams it; called twice) and Graph, within ``prefix``
    (see the module's rules)."""
    result = Plan()
    catalog: dict[str, tuple[bytes, int]] = {}
    for count, record in enumerate(records(), start=1):
        if count % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if record.content is None:
            result.invalid += 1
            result.problems.extend(record.problems[: max(0, 1000 - len(result.problems))])
            continue
        external_id = record.content.external_id
        if not external_id.startswith(prefix):
            result.invalid += 1
            message = f"{external_id!r} does not start with the source's externalIdPrefix {prefix!r}"
            result.problems.append(CatalogProblem(record.line, "/externalId", message))
            continue
        if external_id in catalog:
            result.invalid += 1
            first = catalog[external_id][1]
            result.problems.append(CatalogProblem(record.line, "/externalId", f"{external_id!r} repeats line {first}"))
            continue
        catalog[external_id] = (digest(normalised(record.content.to_graph())), record.line)
    in_graph: set[str] = set()
    differing: dict[str, dict[str, Any]] = {}
    async for item in graph.list_contents(registration_id):
        external_id = str(item.get("externalId"))
        if not external_id.startswith(prefix):  # another source's item in a shared registration
            result.outside_prefix += 1
            continue
        current = normalised(item)
        known = catalog.get(external_id)
        if known is None:
            if removal == "delete" or current.get("isActive") is not False:
                if may_remove:
                    result.remove.append(current)
                else:
                    result.removal_refused += 1
            continue
        in_graph.add(external_id)
        if digest(current) != known[0]:
            differing[external_id] = current
    marked = set(needs_repair)
    for count, record in enumerate(records(), start=1):
        if count % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        content = record.content
        if content is None or catalog.get(content.external_id, (b"", -1))[1] != record.line:
            continue
        external_id = content.external_id
        if external_id not in in_graph:
            result.create.append((record.line, external_id))
        elif external_id in differing:
            props = changed(normalised(content.to_graph()), differing[external_id])
            result.update.append((record.line, external_id, props))
        elif external_id in marked:
            result.repair.append((record.line, external_id))
        else:
            result.unchanged += 1
    result.repair_missing = sorted(e for e in marked - set(catalog) if e.startswith(prefix))
    return result


@dataclass
class Reconcile:
    """Applies a ``Plan`` through the backfill's pusher (leases, ledger order, batch writer)."""

    pusher: ChunkPusher
    as_of: datetime
    run_started: datetime
    in_flight: int = 4

    @property
    def source_event_id(self) -> str:
        return f"{SOURCE}:{self.run_started.astimezone(UTC).isoformat()}"

    async def apply(self, result: Plan, records: Callable[[], Iterable[Record]], removal: Removal) -> Tally:
        wanted = result.lines()
        run = Backfill(self.pusher, None, self.as_of, in_flight=self.in_flight, source_event_id=self.source_event_id)
        tally = await run.run(r for r in records() if r.line in wanted)
        for chunk in _chunks(self._removals(result.remove, removal), MAX_TRANSACTION_OPERATIONS):
            await self.pusher.push(chunk, tally)
        if self.pusher.stopped is not None:
            raise RunStopped(self.pusher.stopped)
        return tally

    def _removals(self, items: list[dict[str, Any]], removal: Removal) -> Iterator[Planned]:
        for item in items:
            external_id = str(item["externalId"])
            if removal == "delete":
                yield Planned(0, BatchEvent(external_id, self.as_of, "delete", self.source_event_id))
                continue
            body = deactivation(item)
            if body is not None:
                yield Planned(0, BatchEvent(external_id, self.as_of, "upsert", self.source_event_id), body)


def _chunks(items: Iterable[Planned], size: int) -> Iterator[list[Planned]]:
    chunk: list[Planned] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
