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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from shared import storage
from shared.settings import Settings

logger = logging.getLogger(__name__)

REGISTRATION_ROW = "registration"
SEARCHABLE_WITHIN_HOURS = 24  # the service's promise: searchable within 24 hours of ingestion
DEACTIVATED_BY_DISABLE = "provider-disable"  # deactivatedBy of what `provider disable --deactivate-content` hid
# A lease taken for a visibility switch, which carries no event: no recorded event is newer than it.
_NO_EVENT = datetime.max.replace(tzinfo=UTC)


_NO_LEASE: dict[str, Any] = {"leaseOwner": "", "leaseUntil": datetime(1970, 1, 1, tzinfo=UTC)}


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


def order_key(event_time: datetime, op: str, source_event_id: str | None) -> tuple[datetime, int, str]:
    """The total order of an item's events: event time; at equal times a delete after an upsert (a
    redelivered upsert must not bring back what a delete of the same second removed); then the
    source's event id, so two different events of one second are ordered the same way everywhere."""
    return (event_time, 1 if op == "delete" else 0, source_event_id or "")


def is_stale(
    known: LedgerEntry | None, event_time: datetime, op: str = "upsert", source_event_id: str | None = None
) -> bool:
    """Stale: Graph already has the result of this very event or of one ordered after it."""
    if known is None:
        return False
    return order_key(known.event_time, known.op, known.source_event_id) >= order_key(event_time, op, source_event_id)


def table_service(settings: Settings) -> TableServiceClient:
    """The table service of the ``LearningSyncStorage`` connection (see ``shared.storage``)."""
    return storage.open_client(TableServiceClient, settings.storage("table"))


class Ledger:
    """Reads and writes the ledger table; creates the table on first use (Azurite starts empty)."""

    def __init__(self, table: TableClient, *, tenant_id: str, state_cache_seconds: float = 10.0) -> None:
        self._table = table
        self.tenant_id = tenant_id.lower()
        self._ensured = False
        self._cache_seconds = state_cache_seconds
        self._states: dict[str, tuple[float, bool]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        table = table_service(settings).get_table_client(settings.ledger_table_name)
        cache = settings.registration_state_cache_seconds
        return cls(table, tenant_id=settings.home_tenant(), state_cache_seconds=cache)

    def for_tenant(self, tenant_id: str | None) -> Ledger:
        """This ledger's table as ``tenant_id`` sees it (``None``: this ledger's own tenant)."""
        if tenant_id is None or tenant_id.lower() == self.tenant_id:
            return self
        other = Ledger(self._table, tenant_id=tenant_id, state_cache_seconds=self._cache_seconds)
        other._ensured = self._ensured
        return other

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

    def last_push(self, registration_id: str, external_id: str) -> LedgerEntry | None:
        entity = self._get(self._pk(registration_id), content_row_key(external_id))
        return LedgerEntry.from_entity(entity) if entity and "pushedAt" in entity else None

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
    ) -> bool:
        """Take the item's lease for one push; ``False`` when the command is stale.

        Two workers holding commands for the same item (the host runs a batch of messages at once)
        must not both push: the older could land last. The lease serialises them, and staleness is
        judged under it, so the newer event's push is always the one that stays. Raises ``ItemBusy``
        while another worker's lease is live; the message then comes back later.
        """
        row = content_row_key(external_id)
        for _ in range(5):
            now = datetime.now(UTC)
            lease = {"leaseOwner": owner, "leaseUntil": now + timedelta(seconds=lease_seconds)}
            current = self._get(self._pk(registration_id), row)
            try:
                if current is None:
                    self._table.create_entity(
                        {"PartitionKey": self._pk(registration_id), "RowKey": row, "externalId": external_id, **lease}
                    )
                    return True
                known = LedgerEntry.from_entity(current) if "pushedAt" in current else None
                if is_stale(known, event_time, op, source_event_id):
                    return False
                holder, until = current.get("leaseOwner") or "", current.get("leaseUntil")
                if holder and holder != owner and until is not None and _utc(until) > now:
                    ends = _utc(until)
                    raise ItemBusy(f"{external_id!r} is being pushed by {holder} until {ends.isoformat()}", ends)
                self._table.update_entity(
                    {"PartitionKey": self._pk(registration_id), "RowKey": row, **lease},
                    mode=UpdateMode.MERGE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return True
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another worker moved first: read again
        raise ItemBusy(f"{external_id!r}: lease contended")

    def release(self, registration_id: str, external_id: str, owner: str) -> None:
        """Give the lease back after a failed push, so the retry need not wait for it to expire."""
        row = content_row_key(external_id)
        try:
            current = self._get(self._pk(registration_id), row)
            if current is not None and current.get("leaseOwner") == owner:
                self._table.update_entity(
                    {"PartitionKey": self._pk(registration_id), "RowKey": row, **_NO_LEASE},
                    mode=UpdateMode.MERGE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
        except AzureError:
            logger.warning("could not release the lease on %s; it expires by itself", external_id)

    def record(self, entry: LedgerEntry, owner: str | None = None) -> bool:
        """Record a push (and end ``owner``'s lease) unless a newer push was recorded meanwhile.

        Returns ``False`` when it was not recorded because the ledger already holds a newer event.
        """
        row = content_row_key(entry.external_id)
        for _ in range(5):
            current = self._get(self._pk(entry.registration_id), row)
            try:
                if current is None:
                    self._table.create_entity(entry.to_entity(self.tenant_id))
                    return True
                known = LedgerEntry.from_entity(current) if "pushedAt" in current else None
                if is_stale(known, entry.event_time, entry.op, entry.source_event_id):
                    return False
                ends_lease = owner is not None and current.get("leaseOwner") == owner
                self._table.update_entity(
                    {**entry.to_entity(self.tenant_id), **(_NO_LEASE if ends_lease else {})},
                    mode=UpdateMode.MERGE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return True
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another writer won the race: read again and compare
        logger.warning("ledger record for %s kept losing races; not recorded", entry.external_id)
        return False

    def lease(self, registration_id: str, external_id: str, owner: str, lease_seconds: float) -> None:
        """Take the item's lease for a change that is not an LMS event (``vlsync provider disable
        --deactivate-content`` / ``enable --reactivate-content``). Raises ``ItemBusy`` like ``claim``;
        end it with ``release``."""
        self.claim(registration_id, external_id, _NO_EVENT, owner, lease_seconds)

    def mark_deactivated(self, registration_id: str, external_id: str, by: str | None) -> None:
        """Set (``by``) or clear (``None``) who deactivated the item; call it while holding its lease."""
        self._ensure()
        self._table.upsert_entity(
            {
                "PartitionKey": self._pk(registration_id),
                "RowKey": content_row_key(external_id),
                "externalId": external_id,
                "deactivatedBy": by or "",
            },
            mode=UpdateMode.MERGE,
        )

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
