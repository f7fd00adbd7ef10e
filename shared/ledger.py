"""The ledger (Azure Table storage): what was last pushed for each content item, and which
registrations are disabled.

It answers four questions: "is this command older than what Graph already has?" (so a late,
redelivered or out-of-order event never overwrites a newer one), "when was this item last pushed?"
(``vlsync content status``), "is this registration enabled?" (``vlsync provider disable``), and
"which items did ``vlsync provider disable --deactivate-content`` hide?" (``deactivatedBy`` on the
content row, so ``enable --reactivate-content`` shows exactly those again and leaves the items the
LMS retired alone; any later recorded push clears it, because that push decided the item's state).

Rows: PartitionKey = ``<tenant id>:<registration id>`` (a registration id is unique only within its
tenant, and one table may serve many tenants); RowKey = ``c-<sha256 of externalId>`` for content (ids may
hold characters Table keys forbid and be longer than a key may be), ``registration`` for the
registration's own state (enabled, and which app registered it in which tenant).

One ``Ledger`` object speaks for one tenant; ``for_tenant`` gives another tenant's view of the same table.

Every writer (the worker, every ``vlsync`` write, replay, backfill) pushes through ``Ledger.pushing``:
claim the item's lease, push within a deadline that ends before the lease (``push_timing``), then
record the push or, on an error, release the lease. A push that finds a newer event recorded after it
(its lease ended under it) marks the item ``needsRepair`` (``Ledger.needs_repair`` lists them).

Coalescing: a command that goes back to the queue to wait (the item busy, the write budget spent)
first announces its event on the item's row (``Ledger.announce``, only ever forward); a claim for an
older event than the one announced is refused ``Superseded`` (a ``StaleEvent``), since the newer
command is still queued and will push the newer state. ``judge_claim`` holds the rule for both forms.

Known rows: a ``Ledger`` (and its tenant views) remembers each content row as its own last read or write
left it, with the row's etag (``_KnownRows``). A write judged on that row is conditional on its etag,
so it saves the read where nothing changed since (a claim after this instance's record is one request,
not two); a write the service refuses (412, 404), and any judgement that writes nothing, is made again
on a fresh read. The service still decides: a remembered row is never an answer by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, TableTransactionError, UpdateMode

from shared import storage
from shared.graph import Deadline
from shared.models import order_key
from shared.settings import Settings

logger = logging.getLogger(__name__)

REGISTRATION_ROW = "registration"
# Rows that are not a registration's: the table's own bookkeeping and the Graph circuit (shared.circuit).
_META_PARTITION = "meta"
_KEYS_MIGRATED = "keys-tenant-v2"
_RESERVED_PARTITIONS = frozenset({_META_PARTITION, "circuit"})
SEARCHABLE_WITHIN_HOURS = 24  # the service's promise: searchable within 24 hours of ingestion
DEACTIVATED_BY_DISABLE = "provider-disable"  # deactivatedBy of what `provider disable --deactivate-content` hid
# A lease taken for a visibility switch, which carries no event: no recorded event is newer than it.
_NO_EVENT = datetime.max.replace(tzinfo=UTC)


_NO_LEASE: dict[str, Any] = {"leaseOwner": "", "leaseUntil": datetime(1970, 1, 1, tzinfo=UTC)}

# A push is given the time of three requests (the token, when it is not cached, a first attempt and one
# retry, each up to the Graph timeout) plus the waits between attempts that the inline budget allows.
REQUESTS_PER_PUSH = 3
# The margin from a push's deadline to the end of its item's lease is one Graph timeout: a request the
# client gave up on (at its timeout or at the deadline) is given as long again to land at Graph, and
# the lease is held that long after the push ends (``Deadline.unsettled``) rather than released. At
# least this much, for the record's Table round trips after the push and the clocks that judge the
# lease (the function app's instances are NTP-synchronised to within a second; ``vlsync`` judges
# leases on Graph's clock).
MIN_LEASE_MARGIN_SECONDS = 5.0
# Table storage's limit on an entity-group transaction: at most 100 operations, all in one partition
# (learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
MAX_TRANSACTION_OPERATIONS = 100
SHOWN_IDS = 5  # items named in one log line about a batch; the count says how many more


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LedgerConflict(Exception):
    """The ledger refused a push; ``code`` names why in reports."""

    code = "LedgerConflict"


class ItemBusy(LedgerConflict):
    """Another worker is pushing the same item right now; retry the message later."""

    code = "ItemBusy"

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until  # when the other holder's lease ends; None when unknown


class StaleEvent(LedgerConflict):
    """The ledger holds a newer event for the item, so this push would overwrite newer content."""

    code = "Stale"


class Superseded(StaleEvent):
    """A newer event of the item is announced (``Ledger.announce``): its command waits in the queue and
    will push the newer state, so this older one is not pushed (coalescing: a course changed ten times
    while its commands waited costs one Graph write)."""

    code = "Superseded"


class LeaseLost(LedgerConflict):
    """The push reached Graph, but a newer event had been recorded meanwhile: the item's lease ended
    before the push did (a clock that jumped, a storage call slower than the margin), so Graph may hold
    this older state. The item is marked ``needsRepair``: re-apply its newest event."""

    code = "LeaseLost"


@dataclass(frozen=True)
class PushTiming:
    """How long one push may take (its deadline, for token, attempts and waits) and how long its item's
    lease lasts. Build it with ``push_timing``; tests may give shorter ones."""

    deadline_seconds: float
    lease_seconds: float

    def __post_init__(self) -> None:
        if self.lease_seconds <= self.deadline_seconds:
            raise ValueError("a lease must outlast the push's deadline")

    @property
    def margin_seconds(self) -> float:
        """How long a request left without an answer may still land: the lease is held that long after
        such a push ends."""
        return self.lease_seconds - self.deadline_seconds


def push_timing(graph_timeout_seconds: float, max_inline_retry_seconds: float) -> PushTiming:
    """The one rule for a push's deadline and its item's lease, from the Graph client's settings (the
    worker's ``GRAPH_TIMEOUT_SECONDS`` and ``GRAPH_MAX_INLINE_RETRY_SECONDS``, or ``vlsync``'s own):
    deadline = 3 x timeout + inline budget; lease = deadline + max(timeout, 5 s)."""
    deadline = REQUESTS_PER_PUSH * graph_timeout_seconds + max_inline_retry_seconds
    return PushTiming(deadline, deadline + max(graph_timeout_seconds, MIN_LEASE_MARGIN_SECONDS))


@dataclass(frozen=True)
class BusyWait:
    """How long a claim waits for another owner's lease before ``ItemBusy`` reaches the caller: ``vlsync``
    waits briefly; the worker does not wait (it sends the message back to the queue)."""

    attempts: int
    seconds: float
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(frozen=True)
class Push:
    """What ``Ledger.pushing`` hands the pusher: the lease's owner, and the deadline that every Graph
    call of the push is given."""

    owner: str
    deadline: Deadline


@dataclass(frozen=True)
class _Claim:
    stale: bool = False
    superseded: bool = False  # stale because a newer event is announced, not recorded
    # The end of the owner's own lease, still live when it was claimed again: an earlier attempt of the
    # same message ended without letting go of it (a request it abandoned may still land until then,
    # or its process died mid-push).
    inherited_until: datetime | None = None
    # The row's etag after the claim's write: while the row still has it, no newer event can have been
    # recorded, so the record is one conditional write without a read (``_record_claimed``).
    etag: str | None = None


@dataclass(frozen=True)
class BatchEvent:
    """One item's event in a batch push (``Ledger.pushing_many``)."""

    external_id: str
    event_time: datetime
    op: Literal["upsert", "delete"] = "upsert"
    source_event_id: str | None = None


@dataclass
class LeasedBatch:
    """What ``Ledger.pushing_many`` hands the pusher: a ``Push`` per item whose lease it holds, why the
    others were refused (``StaleEvent``, ``ItemBusy``), and - after the block - which pushes were
    recorded and which lost their lease (marked ``needsRepair``). The pusher calls ``succeeded`` for
    each item whose push reached Graph; the others' leases are released (or held while a request of
    theirs may still land)."""

    owner: str
    pushes: dict[str, Push]
    refused: dict[str, LedgerConflict]
    recorded: set[str] = field(default_factory=set)
    lost: dict[str, LeaseLost] = field(default_factory=dict)
    _done: set[str] = field(default_factory=set)

    def succeeded(self, external_id: str) -> None:
        if external_id not in self.pushes:
            raise KeyError(f"{external_id!r} holds no lease in this batch")
        self._done.add(external_id)


def partition_key(tenant_id: str, registration_id: str) -> str:
    """Tenant ids are GUIDs (no ':'), so the key splits back unambiguously."""
    return f"{tenant_id.lower()}:{registration_id}"


def content_row_key(external_id: str) -> str:
    return "c-" + hashlib.sha256(external_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    registration_id: str
    external_id: str
    op: Literal["upsert", "delete"]
    event_time: datetime
    pushed_at: datetime
    pushed_by: str
    source: str | None = None
    source_event_id: str | None = None

    def to_entity(self, tenant_id: str) -> dict[str, Any]:
        return {
            "PartitionKey": partition_key(tenant_id, self.registration_id),
            "RowKey": content_row_key(self.external_id),
            "tenantId": tenant_id.lower(),
            "registrationId": self.registration_id,
            "externalId": self.external_id,
            "op": self.op,
            "eventTime": self.event_time,
            "pushedAt": self.pushed_at,
            "pushedBy": self.pushed_by,
            "source": self.source or "",
            "sourceEventId": self.source_event_id or "",
            "deactivatedBy": "",  # a push decides the item's state: whatever hid it before no longer counts
            "needsRepair": False,  # and whatever older push may have landed over a newer one
        }

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> LedgerEntry:
        return cls(
            registration_id=entity.get("registrationId") or str(entity["PartitionKey"]).partition(":")[2],
            external_id=entity["externalId"],
            op=entity["op"],
            event_time=_utc(entity["eventTime"]),
            pushed_at=_utc(entity["pushedAt"]),
            pushed_by=entity.get("pushedBy", ""),
            source=entity.get("source") or None,
            source_event_id=entity.get("sourceEventId") or None,
        )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_stale(
    known: LedgerEntry | None, event_time: datetime, op: str = "upsert", source_event_id: str | None = None
) -> bool:
    """Stale: Graph already has the result of this very event or of one ordered after it."""
    if known is None:
        return False
    return order_key(known.event_time, known.op, known.source_event_id) >= order_key(event_time, op, source_event_id)


def announced_key(current: dict[str, Any] | None) -> tuple[datetime, int, str] | None:
    """The order key of the newest event announced on the row (``Ledger.announce``), if any."""
    if current is None or current.get("announcedTime") is None:
        return None
    return order_key(_utc(current["announcedTime"]), current.get("announcedOp") or "upsert",
                     current.get("announcedEventId") or None)  # fmt: skip


def judge_claim(
    current: dict[str, Any] | None,
    external_id: str,
    event_time: datetime,
    owner: str,
    op: str,
    source_event_id: str | None,
    now: datetime,
) -> _Claim:
    """The lease rule, without I/O: whether ``owner`` may take the lease of an item whose row reads
    ``current`` for this event (``stale``: the ledger holds it or a later one), and the live lease of
    its own it inherits. Raises ``ItemBusy`` while another owner's lease is live. Both the single
    (``Ledger.pushing``) and the batch form (``Ledger.pushing_many``) judge by it."""
    if current is None:
        return _Claim()
    known = LedgerEntry.from_entity(current) if "pushedAt" in current else None
    if is_stale(known, event_time, op, source_event_id):
        return _Claim(stale=True)
    announced = announced_key(current)
    if announced is not None and announced > order_key(event_time, op, source_event_id):
        return _Claim(stale=True, superseded=True)
    holder, until = current.get("leaseOwner") or "", current.get("leaseUntil")
    ends = _utc(until) if holder and until is not None else None
    live = ends if ends is not None and ends > now else None
    if live is not None and holder != owner:
        raise ItemBusy(f"{external_id!r} is being pushed by {holder} until {live.isoformat()}", live)
    return _Claim(inherited_until=live)


def _refusal(claimed: _Claim, external_id: str) -> StaleEvent:
    if claimed.superseded:
        return Superseded(f"a newer event of {external_id!r} is announced and queued; this one was not pushed")
    return StaleEvent(f"the ledger holds this event of {external_id!r} or a later one; it was not pushed")


def _etag(written: Any) -> str | None:
    """The etag a Table write answered with (its response metadata), ``None`` when it gave none."""
    etag = written.get("etag") if isinstance(written, dict) else None
    return str(etag) if etag else None


def _if_unchanged(etag: str) -> dict[str, Any]:
    return {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified}


# How many content rows a ``Ledger`` remembers (``_KnownRows``): an instance has at most 24 queue
# messages in flight (host.json: batchSize 16 + newBatchThreshold 8) and a backfill 4 chunks of 100
# items (``shared.backfill``), so 4,096 rows hold those and the items of a burst window of thousands of
# commands besides. A row is a dozen short properties (under 2 KB): a few MB at most.
KNOWN_ROWS = 4096

_RowKey = tuple[str, str]  # (PartitionKey, RowKey)


@dataclass(frozen=True)
class _Row:
    """A content row as a read returns it (``entity``: its properties, the keys included, never
    mutated), and its etag. ``known``: remembered from this ledger's own read or write, not read now,
    so only a write conditional on ``etag`` may be based on it."""

    entity: dict[str, Any]
    etag: str
    known: bool = False


def _as_read(written: Mapping[str, Any]) -> dict[str, Any] | None:
    """``written``'s properties as a read of the row returns them (azure-data-tables 12): a ``None`` is
    not sent, a str and a bool come back as sent, a datetime in UTC to the microsecond (the SDK sends
    six digits; it takes a naive one as local time). ``None`` where another type's read-back form could
    differ (an int64 comes back an ``EntityProperty``): the row is then not remembered."""
    shown: dict[str, Any] = {}
    for name, value in written.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            shown[name] = value.astimezone(UTC)
        elif type(value) in (str, bool):
            shown[name] = value
        else:
            return None
    return shown


def _entity(row: _Row | None) -> dict[str, Any] | None:
    return row.entity if row is not None else None


def _unread(row: _Row | None) -> bool:
    """Judged on a remembered row: a judgement that writes nothing needs a read to confirm it."""
    return row is not None and row.known


class _KnownRows:
    """The content rows a ledger last read or wrote, by (PartitionKey, RowKey): a bounded LRU shared by
    a ledger's tenant views (the keys hold the tenant) and locked, since claims run in many threads.
    An entry may be stale (another instance wrote since, or two threads' answers crossed); it is only
    ever the basis of a write conditional on its etag, which the service refuses then."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: OrderedDict[_RowKey, _Row] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _RowKey) -> _Row | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def at(self, key: _RowKey, etag: str) -> _Row | None:
        """The remembered row if it has ``etag``: the row exactly as a write conditional on it found it."""
        row = self.get(key)
        return row if row is not None and row.etag == etag else None

    def put(self, key: _RowKey, entity: dict[str, Any] | None, etag: str | None) -> None:
        """Remember the row (``None`` for either: forget it, its state being unknown)."""
        if entity is None or etag is None or self._size <= 0:
            self.drop(key)
            return
        with self._lock:
            self._rows[key] = _Row(entity, etag, known=True)
            self._rows.move_to_end(key)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def drop(self, key: _RowKey) -> None:
        with self._lock:
            self._rows.pop(key, None)


def _landing(claimed: _Claim, deadline: Deadline, timing: PushTiming, clock: Callable[[], datetime]) -> datetime | None:
    """Until when a request of this push, or of the owner's earlier attempt, may still land at Graph
    (``None``: nothing is in flight). One the push left without an answer gets the margin from now."""
    ends = [claimed.inherited_until] if claimed.inherited_until else []
    if deadline.unsettled:
        ends.append(clock() + timedelta(seconds=timing.margin_seconds))
    return max(ends, default=None)


async def _claim_waiting(claim: Callable[[], _Claim], busy: BusyWait | None) -> _Claim:
    """``claim`` in a thread, tried again while another owner holds the lease, as ``busy`` allows."""
    for _ in range((busy.attempts if busy else 1) - 1):
        try:
            return await asyncio.to_thread(claim)
        except ItemBusy:
            assert busy is not None
            await busy.sleep(busy.seconds)
    return await asyncio.to_thread(claim)  # the last try: ItemBusy reaches the caller


def table_service(settings: Settings) -> TableServiceClient:
    """The table service of the ``LearningSyncStorage`` connection (see ``shared.storage``)."""
    return storage.open_client(TableServiceClient, settings.storage("table"))


class Ledger:
    """Reads and writes the ledger table; creates the table on first use (Azurite starts empty)."""

    def __init__(
        self,
        table: TableClient,
        *,
        tenant_id: str,
        state_cache_seconds: float = 10.0,
        known_rows: int = KNOWN_ROWS,
    ) -> None:
        self._table = table
        self.tenant_id = tenant_id.lower()
        self._ensured = False
        self._cache_seconds = state_cache_seconds
        self._states: dict[str, tuple[float, bool]] = {}
        self._tenants: dict[str, Ledger] = {self.tenant_id: self}  # shared by every tenant's view
        self._known = _KnownRows(known_rows)  # shared by every tenant's view too (see the module's doc)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        table = table_service(settings).get_table_client(settings.ledger_table_name)
        cache = settings.registration_state_cache_seconds
        return cls(table, tenant_id=settings.home_tenant(), state_cache_seconds=cache)

    def for_tenant(self, tenant_id: str | None) -> Ledger:
        """This ledger's table as ``tenant_id`` sees it (``None``: this ledger's own tenant)."""
        if tenant_id is None or tenant_id.lower() == self.tenant_id:
            return self
        found = self._tenants.get(tenant_id.lower())
        if found is None:  # kept, so each tenant's registration-state cache lives as long as this ledger
            found = Ledger(self._table, tenant_id=tenant_id, state_cache_seconds=self._cache_seconds)
            found._ensured = self._ensured
            found._tenants = self._tenants
            found._known = self._known
            self._tenants[found.tenant_id] = found
        return found

    def adopt_legacy_rows(self) -> int:
        """Move rows written before ledger keys carried the tenant (PartitionKey = the bare registration
        id) under this tenant's keys, once per table; returns how many moved.

        Without it an upgrade would forget every registration's disabled state, every item's newest
        event (so an older event could overwrite a newer one) and every deactivation mark. A marker row
        records that the table was migrated, so later starts cost one read. Several instances may run
        it at once: a row already under its new key is kept (it was written after the upgrade, by a
        push the ledger judged against nothing), and the legacy row is removed either way.
        """
        self._ensure()
        if self._get(_META_PARTITION, _KEYS_MIGRATED) is not None:
            return 0
        moved = 0
        for entity in self._table.list_entities():
            partition, row = str(entity["PartitionKey"]), str(entity["RowKey"])
            if ":" in partition or partition in _RESERVED_PARTITIONS:
                continue
            if not (row.startswith("c-") or row == REGISTRATION_ROW):
                continue
            adopted = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
            adopted.update(
                PartitionKey=partition_key(self.tenant_id, partition),
                RowKey=row,
                tenantId=self.tenant_id,
                registrationId=partition,
            )
            with contextlib.suppress(ResourceExistsError):
                self._table.create_entity(adopted)
                moved += 1
            self._known.drop((adopted["PartitionKey"], row))
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(partition, row)
            self._known.drop((partition, row))
        self._table.upsert_entity(
            {"PartitionKey": _META_PARTITION, "RowKey": _KEYS_MIGRATED, "tenantId": self.tenant_id, "moved": moved}
        )
        if moved:
            logger.warning("ledger: moved %d row(s) from before tenant keys under tenant %s", moved, self.tenant_id)
        return moved

    def _pk(self, registration_id: str) -> str:
        return partition_key(self.tenant_id, registration_id)

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ensured = True

    def _get(self, partition: str, row: str) -> TableEntity | None:
        self._ensure()
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    # -- content ------------------------------------------------------------------------------

    def _read(self, partition: str, row: str) -> _Row | None:
        """A content row as read now (``None``: there is none), remembered for the next write on it."""
        entity = self._get(partition, row)
        if entity is None:
            self._known.drop((partition, row))
            return None
        read = _Row(dict(entity), str(entity.metadata["etag"]))
        self._known.put((partition, row), read.entity, read.etag)
        return read

    def _rows_to_judge(self, partition: str, row: str, reads: int) -> Iterator[_Row | None]:
        """The rows to judge a write on, in turn: first as this ledger knows it (if it does), then read,
        up to ``reads`` times. A writer takes the next after a conflict, and after a judgement on the
        known row that writes nothing: only a write's etag condition proves the known row current."""
        known = self._known.get((partition, row))
        if known is not None:
            yield known
        for _ in range(reads):
            yield self._read(partition, row)

    def _wrote(self, current: _Row | None, written: dict[str, Any], answer: Any, *, created: bool = False) -> None:
        """Remember the row as a successful write left it: ``written`` merged onto ``current`` (the row
        the write's etag condition found), or ``written`` alone when it ``created`` the row; forgotten
        when the row it was merged onto is unknown (``current`` ``None``)."""
        key = (str(written["PartitionKey"]), str(written["RowKey"]))
        shown = _as_read(written)
        if shown is not None and created:
            self._known.put(key, shown, _etag(answer))
        elif shown is not None and current is not None:
            self._known.put(key, {**current.entity, **shown}, _etag(answer))
        else:
            self._known.drop(key)

    def _beaten(self, key: _RowKey, current: _Row | None, error: AzureError) -> bool:
        """After a write the service refused: forget the row, and whether to judge it again on a read.
        A 404 means "changed since" only for a write judged on the known row (deleted since); after a
        read it is the caller's error (the table is gone), as it always was."""
        self._known.drop(key)
        if _unread(current):
            logger.debug("ledger: %s changed since this instance last saw it; reading it", key[1])
            return True
        return not isinstance(error, ResourceNotFoundError)

    def last_push(self, registration_id: str, external_id: str) -> LedgerEntry | None:
        read = self._read(self._pk(registration_id), content_row_key(external_id))
        return LedgerEntry.from_entity(read.entity) if read and "pushedAt" in read.entity else None

    def claim(
        self,
        registration_id: str,
        external_id: str,
        event_time: datetime,
        owner: str,
        lease_seconds: float,
        *,
        op: str = "upsert",
        source_event_id: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> bool:
        """Take the item's lease for one push; ``False`` when the command is stale.

        Two workers holding commands for the same item (the host runs a batch of messages at once)
        must not both push: the older could land last. The lease serialises them, and staleness is
        judged under it, so the newer event's push is always the one that stays. Raises ``ItemBusy``
        while another worker's lease is live; the message then comes back later. ``clock`` is the time
        the lease is taken and judged on (``vlsync``: Graph's). Pushes go through ``pushing``.
        """
        claimed = self._claim(
            registration_id,
            external_id,
            event_time,
            owner,
            lease_seconds,
            op=op,
            source_event_id=source_event_id,
            clock=clock,
        )
        return not claimed.stale

    def _claim(
        self,
        registration_id: str,
        external_id: str,
        event_time: datetime,
        owner: str,
        lease_seconds: float,
        *,
        op: str,
        source_event_id: str | None,
        clock: Callable[[], datetime],
    ) -> _Claim:
        """``claim``: judged first on the row as this ledger last wrote or read it, where it knows it
        (one request when the row is still so), else on the row as read."""
        partition, row = self._pk(registration_id), content_row_key(external_id)
        for current in self._rows_to_judge(partition, row, reads=5):
            now = clock()
            try:
                claimed = judge_claim(_entity(current), external_id, event_time, owner, op, source_event_id, now)
            except ItemBusy:
                if _unread(current):
                    continue  # only a read may refuse: the lease may have ended since
                raise
            if claimed.stale and _unread(current):
                continue
            if claimed.stale:
                return claimed
            operation = self._claim_operation(registration_id, external_id, current, owner, now, lease_seconds)
            try:
                if operation[0] == "create":
                    written = self._table.create_entity(operation[1])
                else:
                    written = self._table.update_entity(operation[1], **operation[2])
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
                if self._beaten((partition, row), current, error):
                    continue  # another worker moved first: read again
                raise
            self._wrote(current, operation[1], written, created=operation[0] == "create")
            return replace(claimed, etag=_etag(written))
        raise ItemBusy(f"{external_id!r}: lease contended")

    def _claim_operation(
        self,
        registration_id: str,
        external_id: str,
        current: _Row | None,
        owner: str,
        now: datetime,
        lease_seconds: float,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The write that takes the lease on a row judged as ``current`` (a table transaction operation):
        a create where there is no row, else a merge that holds only if the row is still as judged."""
        lease = {"leaseOwner": owner, "leaseUntil": now + timedelta(seconds=lease_seconds)}
        keys = {"PartitionKey": self._pk(registration_id), "RowKey": content_row_key(external_id)}
        if current is None:
            return "create", {**keys, "externalId": external_id, **lease}, {}
        return "update", {**keys, **lease}, _if_unchanged(current.etag)

    def release(self, registration_id: str, external_id: str, owner: str) -> None:
        """Give the lease back after a failed push, so the retry need not wait for it to expire."""
        try:
            self._change_own_lease(registration_id, external_id, owner, _NO_LEASE)
        except AzureError:
            logger.warning("could not release the lease on %s; it expires by itself", external_id)

    def hold(self, registration_id: str, external_id: str, owner: str, until: datetime) -> None:
        """Let ``owner``'s lease end at ``until`` (a request of its push may still land until then)."""
        try:
            self._change_own_lease(registration_id, external_id, owner, {"leaseUntil": until})
        except AzureError:
            logger.warning("could not shorten the lease on %s; it lasts its full length", external_id)

    def _change_own_lease(self, registration_id: str, external_id: str, owner: str, change: dict[str, Any]) -> None:
        """Write ``change`` onto the item's row while ``owner`` holds its lease: one write on the row as
        read (another writer changing it first raises), after one on the known row where there is one."""
        partition, row = self._pk(registration_id), content_row_key(external_id)
        for current in self._rows_to_judge(partition, row, reads=1):
            if current is None or current.entity.get("leaseOwner") != owner:
                if _unread(current):
                    continue
                return
            entity = {"PartitionKey": partition, "RowKey": row, **change}
            try:
                written = self._table.update_entity(entity, **_if_unchanged(current.etag))
            except (ResourceModifiedError, ResourceNotFoundError) as error:
                if self._beaten((partition, row), current, error) and current.known:
                    continue  # the known row was stale: judge the row as read
                raise  # the row as read changed under the write: the caller reports it, as it always did
            self._wrote(current, entity, written)
            return

    def record(self, entry: LedgerEntry, owner: str | None = None) -> bool:
        """Record a push (and end ``owner``'s lease; ``None``: leave the lease to expire).

        Returns ``False`` when it was not recorded because the ledger already holds a newer event;
        raises ``LedgerConflict`` when other writers kept changing the row (nothing recorded).
        """
        partition, row = self._pk(entry.registration_id), content_row_key(entry.external_id)
        for current in self._rows_to_judge(partition, row, reads=5):
            try:
                if current is None:
                    entity = entry.to_entity(self.tenant_id)
                    self._wrote(None, entity, self._table.create_entity(entity), created=True)
                    return True
                known = LedgerEntry.from_entity(current.entity) if "pushedAt" in current.entity else None
                if is_stale(known, entry.event_time, entry.op, entry.source_event_id):
                    if current.known:
                        continue  # only a read may refuse
                    return False
                ends_lease = owner is not None and current.entity.get("leaseOwner") == owner
                entity = {**entry.to_entity(self.tenant_id), **(_NO_LEASE if ends_lease else {})}
                self._wrote(current, entity, self._table.update_entity(entity, **_if_unchanged(current.etag)))
                return True
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
                if not self._beaten((partition, row), current, error):
                    raise
                # another writer won the race: read again and compare
        raise LedgerConflict(f"the ledger row of {entry.external_id!r} kept changing; the push was not recorded")

    def announce(
        self,
        registration_id: str,
        external_id: str,
        event_time: datetime,
        *,
        op: str = "upsert",
        source_event_id: str | None = None,
    ) -> bool:
        """Announce that a command for this event waits in the queue (it found the item busy, or the write
        budget spent), so that older commands of the item skip their push (``Superseded``): at least once
        holds, the newer command is still queued and pushes the newer state. Only ever moves forward:
        nothing is written when the row records or announces this event or a later one. Returns whether
        it was written. Takes no lease and changes nothing a push judges except the announcement; a
        conditional write, retried when another writer moved first."""
        mine = order_key(event_time, op, source_event_id)
        partition, row = self._pk(registration_id), content_row_key(external_id)
        for current in self._rows_to_judge(partition, row, reads=5):
            judged = _entity(current)
            known = LedgerEntry.from_entity(judged) if judged is not None and "pushedAt" in judged else None
            announced = announced_key(judged)
            if is_stale(known, event_time, op, source_event_id) or (announced is not None and announced >= mine):
                if _unread(current):
                    continue  # only a read may refuse
                return False
            entity = {
                "PartitionKey": partition,
                "RowKey": row,
                "externalId": external_id,
                "announcedTime": event_time,
                "announcedOp": op,
                "announcedEventId": source_event_id or "",
            }
            try:
                if current is None:
                    self._wrote(None, entity, self._table.create_entity(entity), created=True)
                else:
                    self._wrote(current, entity, self._table.update_entity(entity, **_if_unchanged(current.etag)))
                return True
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
                if not self._beaten((partition, row), current, error):
                    raise
                # another writer moved first: read again
        return False  # contended: an announcement only saves writes, so giving up loses nothing

    def _record_claimed(self, entry: LedgerEntry, etag: str | None, owner: str, ends_lease: bool) -> bool:
        """``record`` after a claim: while the row still has the claim's ``etag`` it holds no newer event
        and ``owner``'s lease, so one conditional write records the push (ending the lease when
        ``ends_lease``) without reading the row again; otherwise ``record`` reads and judges it."""
        if etag is not None:
            entity = {**entry.to_entity(self.tenant_id), **(_NO_LEASE if ends_lease else {})}
            key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
            try:
                written = self._table.update_entity(entity, **_if_unchanged(etag))
            except ResourceModifiedError:
                self._known.drop(key)  # another writer touched the row since the claim: read it and judge again
            else:
                self._wrote(self._known.at(key, etag), entity, written)
                return True
        return self.record(entry, owner if ends_lease else None)

    @contextlib.asynccontextmanager
    async def pushing(
        self,
        registration_id: str,
        external_id: str,
        *,
        owner: str,
        timing: PushTiming,
        pushed_by: str,
        op: Literal["upsert", "delete"] = "upsert",
        event_time: datetime | None = None,
        source: str | None = None,
        source_event_id: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        busy: BusyWait | None = None,
    ) -> AsyncIterator[Push]:
        """Push one item under its lease: the one protocol of every writer.

        Claims the lease: ``StaleEvent`` when the ledger holds this event or a later one, ``ItemBusy``
        while another owner's lease is live (after waiting as ``busy`` says). Yields the ``Push``, whose
        deadline every Graph call of the push must be given; then records the event, ending the lease,
        or on an error releases it. ``event_time`` ``None`` is a change that is no LMS event (a
        visibility switch): ordered after every event while it runs, and nothing is recorded.

        A lease is not ended while a request of the push may still land: one the push left without an
        answer (``Deadline.unsettled``) keeps it for the margin from the push's end; an earlier attempt
        of this owner that left its lease behind, until that lease's end. ``LeaseLost`` (the item
        marked ``needsRepair``) when the record finds a newer event: the lease ended before the push did.
        """
        deadline = Deadline.after(timing.deadline_seconds, monotonic)  # before the claim, so the lease outlasts it
        claim = functools.partial(
            self._claim,
            registration_id,
            external_id,
            _NO_EVENT if event_time is None else event_time,
            owner,
            timing.lease_seconds,
            op=op,
            source_event_id=source_event_id,
            clock=clock,
        )
        claimed = await _claim_waiting(claim, busy)
        if claimed.stale:
            raise _refusal(claimed, external_id)
        item = (registration_id, external_id, owner)
        try:
            yield Push(owner, deadline)
            landing = _landing(claimed, deadline, timing, clock)
            if event_time is None:  # a visibility switch: nothing to record
                await self._end_lease(*item, landing, clock)
                return
            entry = LedgerEntry(
                registration_id, external_id, op, event_time, clock(), pushed_by, source, source_event_id
            )
            # Nothing left in flight: the record ends the lease in the same write.
            recorded = await asyncio.to_thread(self._record_claimed, entry, claimed.etag, owner, landing is None)
        except BaseException:
            await self._end_lease(*item, _landing(claimed, deadline, timing, clock), clock)
            raise
        if landing is not None or not recorded:
            await self._end_lease(*item, landing, clock)
        if not recorded:
            await self._lease_lost(entry)

    @contextlib.asynccontextmanager
    async def pushing_many(
        self,
        registration_id: str,
        events: list[BatchEvent],
        *,
        owner: str,
        timing: PushTiming,
        pushed_by: str,
        source: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        busy: BusyWait | None = None,
    ) -> AsyncIterator[LeasedBatch]:
        """``pushing`` for many items of one registration at once: the same protocol and the same rules
        (``judge_claim``, ``is_stale``, ``_landing``), with the Table round trips shared.

        Items the ledger has never seen are claimed by one transaction of creates, without a read; else
        the rows are read and judged, the leases taken in one entity-group transaction (at most
        ``MAX_TRANSACTION_OPERATIONS`` items, distinct ids), and the pushes that
        ``succeeded`` recorded in another, each write conditional on the row being as this batch left
        it. Where a transaction fails (another writer touched a row) the items go through the single
        form's ``_claim`` and ``record``. A lost lease does not raise here: it is in ``lost``.
        """
        if len(events) > MAX_TRANSACTION_OPERATIONS:
            raise ValueError(f"a batch push holds at most {MAX_TRANSACTION_OPERATIONS} items, not {len(events)}")
        if len({event.external_id for event in events}) != len(events):
            raise ValueError("a batch push names each item once")
        deadlines = {event.external_id: Deadline.after(timing.deadline_seconds, monotonic) for event in events}
        claiming = asyncio.ensure_future(
            self._claim_all(registration_id, events, owner, timing, clock, busy, deadlines)
        )
        try:
            claims, etags, refused = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # The claims run on in their threads: wait for them, give back what they took, then stop
            # (else a run interrupted here would leave leases that block the next run and the worker).
            late = (await asyncio.gather(claiming, return_exceptions=True))[0]
            if not isinstance(late, BaseException):
                await self._release_all(registration_id, late[0], deadlines, owner, timing, clock)
            raise
        by_id = {event.external_id: event for event in events}
        batch = LeasedBatch(owner, {e: Push(owner, deadlines[e]) for e in claims}, refused)
        try:
            yield batch
            done = [by_id[e] for e in claims if e in batch._done]
            landings = {e: _landing(claims[e], deadlines[e], timing, clock) for e in claims}
            entries = [
                LedgerEntry(
                    registration_id,
                    ev.external_id,
                    ev.op,
                    ev.event_time,
                    clock(),
                    pushed_by,
                    source,
                    ev.source_event_id,
                )
                for ev in done
            ]
            recorded = await asyncio.to_thread(self._record_many, entries, owner, etags, landings)
        except BaseException:
            await self._release_all(registration_id, claims, deadlines, owner, timing, clock)
            raise
        batch.recorded = {entry.external_id for entry in entries if recorded[entry.external_id]}
        ends = [
            self._end_lease(registration_id, e, owner, landings[e], clock)
            for e in claims
            if e not in batch.recorded or landings[e] is not None
        ]
        await asyncio.gather(*ends)
        for entry in entries:
            if not recorded[entry.external_id]:
                try:
                    await self._lease_lost(entry)
                except LeaseLost as lost:
                    batch.lost[entry.external_id] = lost

    async def _claim_all(
        self,
        registration_id: str,
        events: list[BatchEvent],
        owner: str,
        timing: PushTiming,
        clock: Callable[[], datetime],
        busy: BusyWait | None,
        deadlines: dict[str, Deadline],
    ) -> tuple[dict[str, _Claim], dict[str, str], dict[str, LedgerConflict]]:
        """The batch's claims (stale ones moved to ``refused``), their etags, and the refusals; busy
        items are waited for one by one as ``busy`` allows."""
        claims, etags, refused = await asyncio.to_thread(
            self._claim_many, registration_id, events, owner, timing.lease_seconds, clock
        )
        by_id = {event.external_id: event for event in events}
        waited = [e for e, why in refused.items() if isinstance(why, ItemBusy)] if busy is not None else []
        for external_id, outcome in zip(
            waited,
            await asyncio.gather(
                *(self._claim_one_waiting(registration_id, by_id[e], owner, timing, clock, busy) for e in waited),
                return_exceptions=True,
            ),
            strict=True,
        ):
            if isinstance(outcome, _Claim):
                claims[external_id] = outcome
                del refused[external_id]
            elif isinstance(outcome, LedgerConflict):
                refused[external_id] = outcome
            else:  # a storage failure of one item's claim
                await self._release_all(registration_id, claims, deadlines, owner, timing, clock)
                raise outcome
        for external_id, claimed in list(claims.items()):
            if claimed.stale:
                del claims[external_id]
                refused[external_id] = _refusal(claimed, external_id)
        return claims, etags, refused

    async def _claim_one_waiting(
        self,
        registration_id: str,
        event: BatchEvent,
        owner: str,
        timing: PushTiming,
        clock: Callable[[], datetime],
        busy: BusyWait | None,
    ) -> _Claim:
        claim = functools.partial(
            self._claim,
            registration_id,
            event.external_id,
            event.event_time,
            owner,
            timing.lease_seconds,
            op=event.op,
            source_event_id=event.source_event_id,
            clock=clock,
        )
        return await _claim_waiting(claim, busy)

    async def _release_all(
        self,
        registration_id: str,
        claims: dict[str, _Claim],
        deadlines: dict[str, Deadline],
        owner: str,
        timing: PushTiming,
        clock: Callable[[], datetime],
    ) -> None:
        landings = {e: _landing(c, deadlines[e], timing, clock) for e, c in claims.items() if not c.stale}
        now = clock()
        kept = sorted(e for e, landing in landings.items() if landing is not None and landing > now)
        if kept:  # one line for the batch: an interrupted backfill has up to in-flight x 20 of them
            logger.warning(
                "keeping the lease on %d item(s) (%s) until %s: a request of their push may still reach Graph",
                len(kept),
                ", ".join(kept[:SHOWN_IDS]) + (", ..." if len(kept) > SHOWN_IDS else ""),
                max(at for at in landings.values() if at is not None),
            )
        await asyncio.gather(
            *(self._end_lease(registration_id, e, owner, at, clock, warn=False) for e, at in landings.items())
        )

    def _rows(self, registration_id: str, external_ids: list[str]) -> dict[str, _Row]:
        """The content rows of ``external_ids`` that exist, by external id: point reads, because a
        filter that ORs row keys makes Table storage scan the whole partition."""
        rows = ((e, self._read(self._pk(registration_id), content_row_key(e))) for e in external_ids)
        return {e: row for e, row in rows if row is not None}

    def _claim_fresh(
        self,
        registration_id: str,
        events: list[BatchEvent],
        owner: str,
        lease_seconds: float,
        clock: Callable[[], datetime],
    ) -> tuple[dict[str, _Claim], dict[str, str], dict[str, LedgerConflict]] | None:
        """Items the ledger has never seen (a first backfill) need no read: one transaction of creates
        claims them all, and fails as a whole if any row exists (``None``: read and judge them)."""
        now = clock()
        operations = [
            self._claim_operation(registration_id, event.external_id, None, owner, now, lease_seconds)
            for event in events
        ]
        try:
            answers = self._table.submit_transaction(operations)
        except (TableTransactionError, ResourceExistsError):
            return None  # a transaction fails as a whole: the rows are as they were
        for operation, answer in zip(operations, answers, strict=True):
            self._wrote(None, operation[1], answer, created=True)
        etags = {event.external_id: str(answer["etag"]) for event, answer in zip(events, answers, strict=True)}
        return {event.external_id: _Claim() for event in events}, etags, {}

    def _claim_many(
        self,
        registration_id: str,
        events: list[BatchEvent],
        owner: str,
        lease_seconds: float,
        clock: Callable[[], datetime],
    ) -> tuple[dict[str, _Claim], dict[str, str], dict[str, LedgerConflict]]:
        """Claims (stale ones included), the etag each claimed row has now, and the items refused busy."""
        fresh = self._claim_fresh(registration_id, events, owner, lease_seconds, clock)
        if fresh is not None:
            return fresh
        rows = self._rows(registration_id, [event.external_id for event in events])
        now = clock()
        claims: dict[str, _Claim] = {}
        refused: dict[str, LedgerConflict] = {}
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        claimable: list[BatchEvent] = []
        for event in events:
            current = rows.get(event.external_id)
            try:
                claimed = judge_claim(
                    _entity(current), event.external_id, event.event_time, owner, event.op, event.source_event_id, now
                )
            except ItemBusy as busy:
                refused[event.external_id] = busy
                continue
            claims[event.external_id] = claimed
            if not claimed.stale:
                claimable.append(event)
                operations.append(
                    self._claim_operation(registration_id, event.external_id, current, owner, now, lease_seconds)
                )
        if not operations:
            return claims, {}, refused
        try:
            answers = self._table.submit_transaction(operations)
            for event, operation, answer in zip(claimable, operations, answers, strict=True):
                self._wrote(rows.get(event.external_id), operation[1], answer, created=operation[0] == "create")
            return claims, {e.external_id: str(a["etag"]) for e, a in zip(claimable, answers, strict=True)}, refused
        except (TableTransactionError, ResourceExistsError, ResourceModifiedError):
            # A transaction fails as a whole: the rows are as read, so the known rows still hold.
            logger.info("ledger: a batch claim met another writer; claiming its %d item(s) one by one", len(claimable))
        for event in claimable:  # the single form: reads again, judges again, retries its own conflicts
            try:
                claims[event.external_id] = self._claim(
                    registration_id,
                    event.external_id,
                    event.event_time,
                    owner,
                    lease_seconds,
                    op=event.op,
                    source_event_id=event.source_event_id,
                    clock=clock,
                )
            except ItemBusy as busy:
                del claims[event.external_id]
                refused[event.external_id] = busy
        return claims, {}, refused

    def _record_many(
        self,
        entries: list[LedgerEntry],
        owner: str,
        etags: dict[str, str],
        landings: dict[str, datetime | None],
    ) -> dict[str, bool]:
        """Record the pushes in one transaction where every row is still as the claim left it (so no
        newer event can have been recorded since); the others, and all after a failed transaction,
        through ``record``, which reads and judges each row again."""
        recorded: dict[str, bool] = {}
        direct = [entry for entry in entries if entry.external_id in etags]
        if direct:
            operations = [
                (
                    "update",
                    {**entry.to_entity(self.tenant_id), **(_NO_LEASE if landings[entry.external_id] is None else {})},
                    _if_unchanged(etags[entry.external_id]),
                )
                for entry in direct
            ]
            try:
                answers = self._table.submit_transaction(operations)
                recorded.update((entry.external_id, True) for entry in direct)
                for entry, (_, entity, _condition), answer in zip(direct, operations, answers, strict=True):
                    key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
                    self._wrote(self._known.at(key, etags[entry.external_id]), entity, answer)
            except (TableTransactionError, ResourceModifiedError):
                logger.info("ledger: a batch record met another writer; recording its items one by one")
        for entry in entries:
            if entry.external_id not in recorded:
                ends = owner if landings[entry.external_id] is None else None
                recorded[entry.external_id] = self.record(entry, ends)
        return recorded

    async def _end_lease(
        self,
        registration_id: str,
        external_id: str,
        owner: str,
        landing: datetime | None,
        clock: Callable[[], datetime],
        *,
        warn: bool = True,
    ) -> None:
        """Release the push's lease, or, while a request of it may still land, keep it until then."""
        if landing is None or landing <= clock():
            await asyncio.to_thread(self.release, registration_id, external_id, owner)
            return
        if warn:
            logger.warning(
                "keeping the lease on %s until %s: a request of the push may still reach Graph", external_id, landing
            )
        await asyncio.to_thread(self.hold, registration_id, external_id, owner, landing)

    async def _lease_lost(self, entry: LedgerEntry) -> None:
        try:
            await asyncio.to_thread(self.mark_repair, entry)
        except AzureError as exc:  # the LeaseLost below still tells the pusher; its log says what to repair
            logger.error("could not mark %s needsRepair: %s", entry.external_id, type(exc).__name__)
        raise LeaseLost(
            f"{entry.op} of {entry.external_id!r} (event {entry.event_time.isoformat()}) reached Graph after a "
            "newer event was recorded: Graph may hold this older state; the item is marked needsRepair"
        )

    def mark_repair(self, entry: LedgerEntry) -> None:
        """Mark the item ``needsRepair``: ``entry``'s push reached Graph after a newer event was recorded,
        so Graph may hold the older state. Any later recorded push clears the mark (it decided the state)."""
        self._ensure()
        entity: dict[str, Any] = {
            "PartitionKey": self._pk(entry.registration_id),
            "RowKey": content_row_key(entry.external_id),
            "externalId": entry.external_id,
            "needsRepair": True,
            "staleOp": entry.op,
            "staleEventTime": entry.event_time,
            "staleSourceEventId": entry.source_event_id or "",
            "stalePushedAt": entry.pushed_at,
            "stalePushedBy": entry.pushed_by,
        }
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.MERGE)
        finally:  # merged onto whatever the row was: the next judgement reads it
            self._known.drop((entity["PartitionKey"], entity["RowKey"]))
        logger.error(
            "%s of %s (event %s) reached Graph after a newer event was recorded; marked needsRepair",
            entry.op,
            entry.external_id,
            entry.event_time.isoformat(),
        )

    def needs_repair(self, registration_id: str) -> list[dict[str, Any]]:
        """The registration's items marked ``needsRepair``: the newest recorded event (to re-apply) and
        the older push that may have landed over it."""
        self._ensure()
        rows = self._table.query_entities(
            "PartitionKey eq @pk and needsRepair eq true", parameters={"pk": self._pk(registration_id)}
        )
        return [
            {
                "externalId": str(row["externalId"]),
                "lastPush": LedgerEntry.from_entity(row) if "pushedAt" in row else None,
                "stale": {
                    "op": row.get("staleOp"),
                    "eventTime": row.get("staleEventTime"),
                    "sourceEventId": row.get("staleSourceEventId") or None,
                    "pushedAt": row.get("stalePushedAt"),
                    "pushedBy": row.get("stalePushedBy"),
                },
            }
            for row in rows
        ]

    def mark_deactivated(self, registration_id: str, external_id: str, by: str | None) -> None:
        """Set (``by``) or clear (``None``) who deactivated the item; call it while holding its lease."""
        self._ensure()
        keys = {"PartitionKey": self._pk(registration_id), "RowKey": content_row_key(external_id)}
        try:
            self._table.upsert_entity(
                {**keys, "externalId": external_id, "deactivatedBy": by or ""}, mode=UpdateMode.MERGE
            )
        finally:  # merged onto whatever the row was: the next judgement reads it
            self._known.drop((keys["PartitionKey"], keys["RowKey"]))

    def deactivated_items(self, registration_id: str, by: str) -> list[str]:
        """The external ids of the registration's items that ``by`` deactivated (and nothing pushed since)."""
        self._ensure()
        rows = self._table.query_entities(
            "PartitionKey eq @pk and deactivatedBy eq @by",
            parameters={"pk": self._pk(registration_id), "by": by},
            select=["externalId"],
        )
        return sorted(str(row["externalId"]) for row in rows)

    # -- registrations ------------------------------------------------------------------------

    def registration_enabled(self, registration_id: str, *, fresh: bool = False) -> bool:
        """Enabled unless ``vlsync provider disable`` said otherwise (cached for a few seconds unless ``fresh``)."""
        now = time.monotonic()
        cached = self._states.get(registration_id)
        if cached and not fresh and now - cached[0] < self._cache_seconds:
            return cached[1]
        entity = self._get(self._pk(registration_id), REGISTRATION_ROW)
        enabled = bool(entity.get("enabled", True)) if entity else True
        self._states[registration_id] = (now, enabled)
        return enabled

    def set_registration_enabled(self, registration_id: str, enabled: bool) -> None:
        self._ensure()
        self._table.upsert_entity(
            {
                "PartitionKey": self._pk(registration_id),
                "RowKey": REGISTRATION_ROW,
                "enabled": enabled,
                "changedAt": datetime.now(UTC),
            },
            mode=UpdateMode.MERGE,
        )
        self._states.pop(registration_id, None)

    def record_registration(self, registration_id: str, *, app_id: str, display_name: str, by: str) -> None:
        """Remember which app registered the provider in this tenant (Viva Learning binds content writes
        to that app id, per Microsoft's draft ISV guide), so ``vlsync doctor`` can compare."""
        self._ensure()
        self._table.upsert_entity(
            {
                "PartitionKey": self._pk(registration_id),
                "RowKey": REGISTRATION_ROW,
                "tenantId": self.tenant_id,
                "registrationId": registration_id,
                "appId": app_id.lower(),
                "displayName": display_name,
                "registeredBy": by,
                "registeredAt": datetime.now(UTC),
            },
            mode=UpdateMode.MERGE,
        )

    def registrations(self) -> list[dict[str, Any]]:
        """This tenant's registrations that ``vlsync provider register`` recorded: id, app id, name, when."""
        self._ensure()
        rows = self._table.query_entities(
            "RowKey eq @row and tenantId eq @tenant",
            parameters={"row": REGISTRATION_ROW, "tenant": self.tenant_id},
        )
        return [
            {
                "registrationId": str(row.get("registrationId") or ""),
                "appId": str(row.get("appId") or ""),
                "displayName": str(row.get("displayName") or ""),
                "registeredBy": str(row.get("registeredBy") or ""),
                "registeredAt": row.get("registeredAt"),
            }
            for row in rows
            if row.get("appId")
        ]
