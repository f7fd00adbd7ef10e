"""Delivery dedupe: a sender's redelivery of a delivery already accepted gets 202 and keeps nothing queued.

Senders deliver at least once: a 202 that is lost on the way back (a timeout, a dropped connection)
makes them send the same delivery again, minutes or hours later. The intake remembers each accepted
delivery in a table for ``DEDUPE_HORIZON_HOURS`` and answers a redelivery with ``"duplicate": true``.

The key (:func:`delivery_key`) is the delivery id the source's adapter established while
authenticating (``Delivery.delivery_id``) together with the SHA-256 of the body:

- Standard Webhooks (``cloudevents``, ``mapped``, ``openedx`` signed that way): ``webhook-id``, which
  the specification keeps the same on every retry of a message.
- ``canvas``: the JWT's ``jti`` (an unsigned Live Event, or a JWT without ``jti``: the body's digest).
- ``moodle``: ``<eventname>:<objectid>:<timecreated>`` (the plugin sends no id and does not retry).
- ``thinkific``: the ``X-Thinkific-Hmac-Sha256`` of the body (Thinkific sends no delivery id).
- ``eventgrid``, ``docebo``, ``openedx`` with a key: no delivery id; the body alone, so only a
  byte-identical redelivery (which carries the same event ids) is a duplicate.

The body is part of the key so that a sender that reuses an id for different content never has an
event dropped: a duplicate is the same id with the same bytes. A redelivery that differs in a byte is
queued again and is harmless, because the worker's ledger skips an event it has applied (same
``sourceEventId``) or one older than what Graph has.

Order, for at-least-once: the commands are queued first and the delivery is remembered after
(:meth:`DeliveryDedupe.claim`: an insert that fails if the key is taken), so a failed enqueue (503)
lets the sender's retry through, and a new delivery costs one table request, not a read and a
write. A redelivery finds the key taken: its commands, just queued, are withdrawn again
(``CommandQueue.withdraw``), and the answer is ``"duplicate": true``. A withdrawal that fails (a
worker received the message meanwhile) leaves a copy that the worker's ledger makes a no-op. Two
identical deliveries at the same moment on one instance are serialised (:data:`IN_FLIGHT`); on two
instances exactly one insert wins, and the other delivery is answered as a duplicate. A dedupe
table that cannot be read or written never rejects a delivery: the intake logs, counts
(``vlsync.dedupe.degraded``) and accepts.

Table storage has no time-to-live: a row older than the horizon reads as absent and is replaced by
the next acceptance of that key; :meth:`TableDeliveryDedupe.purge` deletes expired rows (run it from
an operator tool or a timer; rows are small, so a daily or weekly purge is plenty).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode
from opentelemetry import metrics

from shared import storage
from shared.settings import Settings
from shared.sources import Delivery, WebhookRequest

logger = logging.getLogger(__name__)

_meter = metrics.get_meter("vlsync")
DUPLICATES = _meter.create_counter(
    "vlsync.deliveries.duplicate", unit="{request}", description="Redeliveries answered as duplicates, per source"
)
DEGRADED = _meter.create_counter(
    "vlsync.dedupe.degraded",
    unit="{request}",
    description="Deliveries accepted without dedupe because its table failed, per source and step",
)

# The property of a dedupe row naming the claim that wrote it (a random token per claim).
CLAIM_PROPERTY = "claimId"
# How often a claim looks again when the key's row changes under it (a purge, another acceptance):
# each round is a redelivery racing another; more than a few means something else is wrong.
CLAIM_ROUNDS = 3
# Table storage's limit for one entity-group transaction (all rows in one partition).
PURGE_CHUNK = 100
# A table property holds at most 64 KiB (32 K UTF-16 characters); larger id lists are not kept.
MAX_MESSAGE_IDS_CHARS = 30_000
# The intake answers while the sender waits: a dedupe table that is down must cost seconds, not the
# SDK's default ten retries.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 5,
    "read_timeout": 10,
}


def delivery_key(request: WebhookRequest, delivery: Delivery) -> str:
    """The dedupe key of an authenticated delivery: its delivery id (may be empty) and its body's digest."""
    body_digest = hashlib.sha256(request.body).hexdigest()
    material = f"{delivery.delivery_id}\n{body_digest}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True)
class SeenDelivery:
    """What the table keeps of an accepted delivery."""

    correlation_id: str
    message_ids: tuple[str, ...] | None  # None: too many to keep
    accepted_at: datetime
    seen_at: datetime  # the last acceptance or redelivery: the horizon counts from here


class DedupeContended(Exception):
    """The key's row kept changing while a claim looked at it; the intake accepts without dedupe."""


class DeliveryDedupe(Protocol):
    """The intake's dedupe port. ``key`` is :func:`delivery_key`'s."""

    def claim(self, source: str, key: str, delivery: SeenDelivery) -> SeenDelivery | None:
        """Remember ``delivery`` (just queued) under ``key`` and return None, unless a delivery accepted
        under ``key`` is within the horizon at ``delivery.seen_at``: then return that one, with its
        ``seen_at`` moved to this redelivery's (the horizon counts from the last one), and remember
        nothing of ``delivery``."""
        ...


class TableDeliveryDedupe:
    """Accepted deliveries in a table: ``PartitionKey`` the source name, ``RowKey`` the key (a hex digest)."""

    def __init__(self, table: TableClient, horizon: timedelta) -> None:
        self._table = table
        self.horizon = horizon
        self._ensured = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TableDeliveryDedupe | None:
        """The deployment's dedupe table, or None when ``DEDUPE_HORIZON_HOURS`` is 0 (dedupe off)."""
        if settings.dedupe_horizon_hours == 0:
            return None
        service = storage.open_client(TableServiceClient, settings.storage("table"), **CLIENT_OPTIONS)
        return cls(service.get_table_client(settings.dedupe_table_name), timedelta(hours=settings.dedupe_horizon_hours))

    def seen(self, source: str, key: str, at: datetime) -> SeenDelivery | None:
        """The delivery remembered under ``key`` within the horizon before ``at``, or None."""
        try:
            entity = self._table.get_entity(source, key)
        except ResourceNotFoundError:  # no such row, or no table yet (it is made on the first write)
            return None
        return self._earlier(entity, at)

    def _earlier(self, entity: Any, at: datetime) -> SeenDelivery | None:
        seen_at = _utc(entity.get("seenAt"))
        if seen_at is None or at - seen_at > self.horizon:
            return None  # expired: Table storage keeps rows until deleted
        raw_ids = entity.get("messageIds")
        ids = tuple(json.loads(raw_ids)) if isinstance(raw_ids, str) else None
        return SeenDelivery(
            correlation_id=str(entity.get("correlationId", "")),
            message_ids=ids,
            accepted_at=_utc(entity.get("acceptedAt")) or seen_at,
            seen_at=seen_at,
        )

    def claim(self, source: str, key: str, delivery: SeenDelivery) -> SeenDelivery | None:
        """One insert for a new delivery; a taken key is read, and taken over when its row expired.

        The row carries a token of this claim (``claimId``): a write that landed but whose answer was lost,
        sent again by the SDK, finds the row taken (409, or 412 on a takeover) by this very claim, and
        that must not read as a redelivery (its commands would be withdrawn)."""
        token = uuid.uuid4().hex
        entity = {**self._entity(source, key, delivery), CLAIM_PROPERTY: token}
        for _ in range(CLAIM_ROUNDS):
            try:
                self._table.create_entity(entity)
                return None
            except ResourceExistsError:
                pass
            except ResourceNotFoundError:  # the table does not exist yet (Azurite starts empty)
                self._ensure()
                continue
            try:
                current = self._table.get_entity(source, key)
            except ResourceNotFoundError:  # purged meanwhile: insert again
                continue
            if current.get(CLAIM_PROPERTY) == token:  # our own write: it landed, its answer did not
                return None
            earlier = self._earlier(current, delivery.seen_at)
            if earlier is None:  # expired: this acceptance takes the key, unless another moved first
                try:
                    self._table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return None
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
            self._refresh(source, key, str(current.metadata["etag"]), max(earlier.seen_at, delivery.seen_at))
            return replace(earlier, seen_at=max(earlier.seen_at, delivery.seen_at))
        raise DedupeContended(f"the dedupe row of {source}/{key} kept changing")

    def _refresh(self, source: str, key: str, etag: str, seen_at: datetime) -> None:
        """Move a remembered delivery's horizon to its latest redelivery, on the row as read (a row taken
        over meanwhile keeps its own). Only that is lost if it fails: the duplicate is known, so its
        commands are withdrawn either way."""
        try:
            self._table.update_entity(
                {"PartitionKey": source, "RowKey": key, "seenAt": seen_at},
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            pass  # another acceptance or redelivery wrote the row since: its seenAt is as recent
        except AzureError as exc:
            logger.warning("dedupe: could not move the horizon of %s/%s: %s", source, key, exc)

    def remember(self, source: str, key: str, delivery: SeenDelivery) -> None:
        """Write the row for ``key`` whatever was there (operator tools and tests; the intake claims)."""
        entity = self._entity(source, key, delivery)
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except ResourceNotFoundError:  # the table does not exist yet (Azurite starts empty)
            self._ensure()
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    @staticmethod
    def _entity(source: str, key: str, delivery: SeenDelivery) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": source,
            "RowKey": key,
            "correlationId": delivery.correlation_id,
            "acceptedAt": delivery.accepted_at,
            "seenAt": delivery.seen_at,
        }
        if delivery.message_ids is not None:
            text = json.dumps(list(delivery.message_ids), separators=(",", ":"))
            if len(text) <= MAX_MESSAGE_IDS_CHARS:
                entity["messageIds"] = text
            entity["messageCount"] = len(delivery.message_ids)
        return entity

    def purge(self, now: datetime | None = None) -> int:
        """Delete the rows older than the horizon; returns how many were found (deleted now or by a
        concurrent run). Safe to run at any time, and by two runs at once.

        Streamed page by page, and deleted in transactions of up to ``PURGE_CHUNK`` rows of one
        partition: a busy intake leaves hundreds of thousands of rows an hour, one delete each
        would outlast the timer."""
        cutoff = (now or datetime.now(UTC)) - self.horizon
        deleted = 0
        chunk: list[tuple[str, str]] = []
        try:
            rows = self._table.query_entities(
                "seenAt lt @cutoff",
                parameters={"cutoff": cutoff},
                select=["PartitionKey", "RowKey"],
                results_per_page=PURGE_CHUNK,
            )
            for row in rows:
                key = (str(row["PartitionKey"]), str(row["RowKey"]))
                if chunk and (len(chunk) == PURGE_CHUNK or chunk[0][0] != key[0]):
                    deleted += self._delete_all(chunk)
                    chunk = []
                chunk.append(key)
        except ResourceNotFoundError:  # no table yet: nothing was ever remembered
            return deleted
        return deleted + (self._delete_all(chunk) if chunk else 0)

    def _delete_all(self, keys: list[tuple[str, str]]) -> int:
        """One transaction; if it fails (on Azure, a row of it deleted meanwhile fails the whole of
        it), one by one."""
        try:
            self._table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for pk, rk in keys])
            return len(keys)
        except TableTransactionError:
            for pk, rk in keys:
                self._table.delete_entity(pk, rk)  # the SDK takes a missing row as deleted
            return len(keys)

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ensured = True


def _utc(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


class KeyedLocks:
    """One lock per key, held while a delivery is checked, enqueued and remembered, so that two
    identical deliveries on one instance cannot both pass the check."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


IN_FLIGHT = KeyedLocks()
