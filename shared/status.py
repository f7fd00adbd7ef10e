"""Status and health: how full the queues are, how long the oldest command waits, the last success
and failure per source, and the circuit state. Read only: nothing is received, moved or written.

Where each answer comes from, and its limits:

- **Queue depth**: the service's approximate message count, which includes hidden messages (in
  flight, deferred, waiting for a retry).
- **Oldest message**: the oldest insertion time among the first 32 visible messages (one peek, the
  most the service returns). Hidden messages are not seen, so a command deferred by a long
  ``Retry-After`` does not count, and its age restarts when it is sent back (a deferral is a new message).
- **Last success per source**: the newest ``pushedAt`` among the ledger rows pushed in the last
  ``LEDGER_WINDOW``. The ledger has one row per item (its last push), keyed by registration and item,
  so a time filter is a scan of the table: it is bounded to ``LEDGER_SCAN_PAGES`` pages, and
  ``ledgerScan.complete`` says whether the scan got to the end. A source with nothing pushed in the
  window, or only items pushed again since by ``vlsync`` (whose rows carry no source), shows none.
- **Last failure per source**: the newest ``lastError.at`` among the peeked poison messages (the
  first 32, the oldest parked). With more parked than that, newer failures may be missing
  (``poisonScan.complete`` is false); transient failures that were retried successfully leave no trace here.
- **Circuit**: the Graph circuit breaker's shared row (``shared.circuit``): ``"closed"``, ``"open"`` or
  ``"half-open"`` (``"unknown"`` when unreadable). Open or half-open makes the health degraded: commands
  are waiting in the queue for Graph.

The health rule (``GET /api/health``, anonymous, only ``{"status"}``): **degraded** when the poison
queue holds any message (parked commands wait for an operator), or when the oldest visible work
message is older than ``BACKLOG_DEGRADED_AFTER`` (the worker is not draining the queue: retries
keep a message's insertion time but are spread over a few minutes, and deferrals are hidden).
Held commands do not degrade health: holding is what ``vlsync provider disable`` asked for.
**down** when the queues cannot be read at all. Up and degraded answer 200, down 503: degraded is a
state of the data, not of the instance, so a load balancer or App Service health check must not take
instances out for it (every instance would answer the same, and intake would stop accepting the
LMS's deliveries); down means this instance cannot queue anything, which is what 503 is for.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient
from pydantic import ValidationError

from shared import storage
from shared.circuit import TableCircuitStore
from shared.models import ContentCommand
from shared.queue import QueueRole, QueueSnapshot, QueueUnavailable
from shared.settings import Settings

logger = logging.getLogger(__name__)

Health = Literal["up", "degraded", "down"]
BACKLOG_DEGRADED_AFTER = timedelta(minutes=15)  # also the circuit breaker's longest cool-down (issue 9)
LEDGER_WINDOW = timedelta(hours=24)
LEDGER_SCAN_PAGES = 5  # of up to 1,000 rows each: a bounded cost for a ledger of any size
# The anonymous answer is cached this long per process, so polling it costs storage at most this often.
HEALTH_CACHE_SECONDS = 10.0
CIRCUIT_UNKNOWN = "unknown"


class QueuePort(Protocol):
    def snapshot(self, role: QueueRole) -> QueueSnapshot: ...


# -- the rule ----------------------------------------------------------------------------------------


def assess(work: QueueSnapshot, poison: QueueSnapshot, now: datetime) -> tuple[Health, list[str]]:
    """``up`` or ``degraded``, with the reasons (pure; see the module's docstring for the rule)."""
    reasons = []
    if poison.approximate_count > 0:
        reasons.append(f"{poison.approximate_count} parked command(s) in {poison.name}")
    oldest = work.oldest_inserted
    if oldest is not None and now - oldest > BACKLOG_DEGRADED_AFTER:
        minutes = int((now - oldest).total_seconds() // 60)
        reasons.append(f"the oldest visible command in {work.name} has waited {minutes} min")
    return ("degraded" if reasons else "up"), reasons


# -- per source ---------------------------------------------------------------------------------------


@dataclass
class SourceStatus:
    source: str
    configured: bool
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_kind: str | None = None
    parked_seen: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "configured": self.configured,
            "lastSuccess": _iso(self.last_success),
            "lastFailure": _iso(self.last_failure),
            "lastFailureKind": self.last_failure_kind,
            "parkedSeen": self.parked_seen,
        }


@dataclass(frozen=True)
class LedgerScan:
    last_success: dict[str, datetime]
    rows_read: int
    complete: bool
    error: str | None = None

    def view(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "windowHours": LEDGER_WINDOW.total_seconds() / 3600,
            "rowsRead": self.rows_read,
            "complete": self.complete,
        }
        if self.error:
            doc["error"] = self.error
        return doc


def last_pushes(
    table: TableClient, now: datetime, *, max_pages: int = LEDGER_SCAN_PAGES, page_size: int = 1000
) -> LedgerScan:
    """The newest push per source among the ledger rows pushed within ``LEDGER_WINDOW`` (bounded scan)."""
    newest: dict[str, datetime] = {}
    rows = 0
    pages = table.query_entities(
        "pushedAt ge @since",
        parameters={"since": now - LEDGER_WINDOW},
        select=["source", "pushedAt"],
        results_per_page=page_size,
    ).by_page()
    try:
        for index, page in enumerate(pages):
            if index >= max_pages:
                return LedgerScan(newest, rows, complete=False)
            for row in page:
                rows += 1
                source, pushed = row.get("source"), row.get("pushedAt")
                if source and isinstance(pushed, datetime):
                    pushed = pushed if pushed.tzinfo else pushed.replace(tzinfo=UTC)
                    if source not in newest or pushed > newest[source]:
                        newest[str(source)] = pushed
    except ResourceNotFoundError:  # no ledger table yet: nothing was ever pushed
        return LedgerScan({}, 0, complete=True)
    return LedgerScan(newest, rows, complete=True)


def _parked(snapshot: QueueSnapshot) -> list[ContentCommand]:
    commands = []
    for message in snapshot.peeked:
        if message.text is None:
            continue
        try:
            commands.append(ContentCommand.model_validate_json(message.text))
        except ValidationError:  # malformed: no source to count it under
            continue
    return commands


def per_source(configured: Iterable[str], ledger: LedgerScan, poison: QueueSnapshot) -> dict[str, SourceStatus]:
    """Every configured source, and every other source seen in the ledger or the poison queue."""
    names = set(configured)
    sources = {name: SourceStatus(name, configured=True) for name in sorted(names)}
    for name, pushed in ledger.last_success.items():
        sources.setdefault(name, SourceStatus(name, configured=False)).last_success = pushed
    for command in _parked(poison):
        status = sources.setdefault(command.source, SourceStatus(command.source, configured=False))
        status.parked_seen += 1
        error = command.last_error
        if error is not None and (status.last_failure is None or error.at > status.last_failure):
            status.last_failure, status.last_failure_kind = error.at, error.kind
    return dict(sorted(sources.items()))


# -- the report -------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def queue_view(snapshot: QueueSnapshot, now: datetime) -> dict[str, Any]:
    oldest = snapshot.oldest_inserted
    return {
        "name": snapshot.name,
        "approximateCount": snapshot.approximate_count,
        "oldestVisibleAt": _iso(oldest),
        "oldestAgeSeconds": round((now - oldest).total_seconds(), 1) if oldest else None,
    }


@dataclass
class StatusReport:
    status: Health
    reasons: list[str]
    checked_at: datetime
    queues: dict[QueueRole, QueueSnapshot]
    sources: dict[str, SourceStatus]
    ledger: LedgerScan
    circuit: str = CIRCUIT_UNKNOWN
    notes: list[str] = field(default_factory=list)
    needs_repair: list[dict[str, str]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        poison = self.queues["poison"]
        return {
            "status": self.status,
            "reasons": self.reasons,
            "checkedAt": _iso(self.checked_at),
            "queues": {role: queue_view(snapshot, self.checked_at) for role, snapshot in self.queues.items()},
            "sources": [status.view() for status in self.sources.values()],
            "ledgerScan": self.ledger.view(),
            "poisonScan": {
                "peeked": len(poison.peeked),
                "approximateCount": poison.approximate_count,
                "complete": len(poison.peeked) >= poison.approximate_count,
            },
            "circuit": self.circuit,
            "needsRepair": self.needs_repair,
        }


REPAIRS_SHOWN = 50  # enough to act on; a count beyond it would mean a systemic fault the logs show


def needing_repair(ledger_table: TableClient) -> list[dict[str, str]]:
    """Items whose push reached Graph after a newer event was recorded (``Ledger.pushing``: lease lost),
    so Graph may hold an older state until the newest event is applied again."""
    rows = ledger_table.query_entities(
        "needsRepair eq true", select=["PartitionKey", "externalId", "staleEventTime"], results_per_page=REPAIRS_SHOWN
    )
    found: list[dict[str, str]] = []
    for row in rows:
        tenant, _, registration = str(row["PartitionKey"]).partition(":")
        found.append({"tenantId": tenant, "registrationId": registration, "externalId": str(row.get("externalId"))})
        if len(found) >= REPAIRS_SHOWN:
            break
    return found


def collect(
    queue: QueuePort,
    ledger_table: TableClient | None,
    configured_sources: Iterable[str],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    circuit: str = CIRCUIT_UNKNOWN,
) -> StatusReport:
    """The full report. Raises ``QueueUnavailable`` when the queues cannot be read; a ledger that cannot
    be read leaves last successes unknown and says why (``ledgerScan.error``)."""
    snapshots: dict[QueueRole, QueueSnapshot] = {role: queue.snapshot(role) for role in ("work", "poison", "held")}
    checked = now()
    if ledger_table is None:
        ledger = LedgerScan({}, 0, complete=False, error="no ledger table configured")
    else:
        try:
            ledger = last_pushes(ledger_table, checked)
        except AzureError as exc:
            logger.warning("status: the ledger could not be read: %s", exc)
            ledger = LedgerScan({}, 0, complete=False, error=_first_line(exc))
    health, reasons = assess(snapshots["work"], snapshots["poison"], checked)
    if circuit == CIRCUIT_UNKNOWN and ledger_table is not None:
        circuit, until = _circuit(ledger_table)
        if circuit in ("open", "half-open"):  # commands wait in the queue while Graph is given time
            health = "degraded" if health == "up" else health
            reasons.append(f"the Graph circuit is {circuit}" + (f" until {until}" if until else ""))
    repairs: list[dict[str, str]] = []
    if ledger_table is not None:
        try:
            repairs = needing_repair(ledger_table)
        except AzureError as exc:
            logger.warning("status: items needing repair could not be listed: %s", exc)
    if repairs:
        health = "degraded" if health == "up" else health
        reasons.append(f"{len(repairs)} item(s) need repair: Graph may hold an older state (needsRepair)")
    sources = per_source(configured_sources, ledger, snapshots["poison"])
    return StatusReport(health, reasons, checked, snapshots, sources, ledger, circuit, needs_repair=repairs)


def _circuit(ledger_table: TableClient) -> tuple[str, str | None]:
    """The circuit breaker's shared state (``shared.circuit``: a row of the ledger table)."""
    try:
        state, _ = TableCircuitStore(ledger_table).read()
    except AzureError as exc:
        logger.warning("status: the circuit state could not be read: %s", exc)
        return CIRCUIT_UNKNOWN, None
    return state.state, state.until.isoformat() if state.until and state.state != "closed" else None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# -- the HTTP answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthAnswer:
    status: int
    body: Mapping[str, Any]


def _code(health: Health) -> int:
    return 503 if health == "down" else 200


_cache: weakref.WeakKeyDictionary[Any, tuple[float, HealthAnswer]] = weakref.WeakKeyDictionary()


def health(
    queue: QueuePort,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Callable[[], float] = time.monotonic,
    max_age: float = HEALTH_CACHE_SECONDS,
) -> HealthAnswer:
    """``GET /api/health``: ``{"status": "up" | "degraded" | "down"}`` and nothing else (anonymous).

    Cached per queue object for ``max_age`` seconds, so anonymous polling cannot drive storage calls.
    """
    cached = _cache.get(queue)
    if cached is not None and clock() - cached[0] < max_age:
        return cached[1]
    try:
        work, poison = queue.snapshot("work"), queue.snapshot("poison")
        state, reasons = assess(work, poison, now())
    except QueueUnavailable as exc:
        logger.error("health: queues unreadable: %s", exc)
        state, reasons = "down", []
    if reasons:
        logger.info("health %s: %s", state, "; ".join(reasons))
    answer = HealthAnswer(_code(state), {"status": state})
    _cache[queue] = (clock(), answer)
    return answer


def details(
    queue: QueuePort,
    ledger_table: TableClient | None,
    configured_sources: Iterable[str],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> HealthAnswer:
    """``GET /api/health/details`` (function key): the full report; 503 with the reason when down."""
    try:
        report = collect(queue, ledger_table, configured_sources, now=now)
    except QueueUnavailable as exc:
        logger.error("health details: queues unreadable: %s", exc)
        return HealthAnswer(503, {"status": "down", "reasons": [_first_line(exc)], "circuit": CIRCUIT_UNKNOWN})
    return HealthAnswer(_code(report.status), report.view())


# -- the app's wiring ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _table(connection: storage.StorageConnection, name: str) -> TableClient:
    return storage.open_client(TableServiceClient, connection).get_table_client(name)


def ledger_table(settings: Settings) -> TableClient:
    """The ledger table, read only here; one client per connection and name, reused across calls."""
    return _table(settings.storage("table"), settings.ledger_table_name)


def configured_sources(settings: Settings) -> list[str]:
    """The configured sources' names; none when ``SOURCES`` cannot be read (intake reports that)."""
    try:
        return sorted(settings.sources())
    except ValueError as exc:  # SettingsError, a pydantic ValidationError
        logger.warning("status: SOURCES cannot be read: %s", _first_line(exc))
        return []


def app_details(settings: Settings, queue: QueuePort) -> HealthAnswer:
    """``details`` over the app's own queues, ledger and sources."""
    try:
        table: TableClient | None = ledger_table(settings)
    except ValueError as exc:  # StorageNotConfigured, a malformed connection string
        logger.warning("status: no ledger table: %s", exc)
        table = None
    return details(queue, table, configured_sources(settings))
