"""The raw event archive: every accepted delivery, as received but without its secrets, in Blob storage.

What it is for: seeing exactly what a sender sent, and (``vlsync replay archive``) deriving the
commands again after an outage, through ``intake.rederive``. It is best-effort: the intake
writes it after the commands are queued, and a failure is logged and counted
(``vlsync.archive.failed``), never turned into an error for the sender.

Two forms of blob in the ``EVENT_ARCHIVE_CONTAINER`` container, both under
``{source}/{yyyy}/{mm}/{dd}/{HH}/`` (UTC, the hour of receipt), so a time window of one source is read
by listing one name prefix per hour; :meth:`EventArchive.list` reads both:

- one blob per delivery, ``{receivedAt:%Y%m%dT%H%M%S%fZ}-{correlationId}.json``, holding one
  :class:`ArchivedDelivery` (``"v": 1``), written while the sender waits. ``EVENT_ARCHIVE_FLUSH_SECONDS``
  0 writes this form (and every archive written before segments existed holds it);
- segments, ``{firstReceivedAt:%Y%m%dT%H%M%S%fZ}-{unique}.ndjson``: one :class:`ArchivedDelivery` per
  line (the same JSON document), the deliveries of one source and hour in receipt order.
  ``EVENT_ARCHIVE_FLUSH_SECONDS`` > 0: :meth:`EventArchive.put` only buffers the record, and a
  background thread writes the buffer ``flush_seconds`` after its first record, or sooner when it
  holds a segment's worth (:data:`SEGMENT_RECORDS`, :data:`SEGMENT_BYTES`). A segment that cannot be
  written (after the blob client's own retry) counts each of its records in
  ``vlsync.archive.failed``; if writes fall behind, the buffer keeps at most :data:`BUFFER_RECORDS` /
  :data:`BUFFER_BYTES` and drops the oldest beyond, counted the same way.

  A host that crashes loses at most the last ``flush_seconds`` of archive records (what was buffered),
  never a command: commands are queued before the archive is written. A host that stops normally
  writes what it holds (an ``atexit`` flush), and ``list`` first writes what this process holds for
  the same container, so a replay run in the process that archived sees every delivery it accepted.

What is removed before anything is written (:func:`archived`), each replaced by ``[redacted]``:

- headers whose name says they carry a credential (authorization, cookies, keys, tokens, secrets,
  signatures and HMACs, SAS tokens, client certificates and principals: ``authorization``,
  ``x-functions-key``, ``webhook-signature``, ``x-thinkific-hmac-sha256``, ``aeg-sas-key``, ...), and
  the header the source's key travels in (``auth`` of kind ``header-key``);
- query parameters of the same kinds, the Functions key ``code``, and the source's ``query-key``
  parameter; the same parameters inside URL-valued headers (``x-original-url`` carries the query);
- in the body: top-level JSON members that are credentials (Moodle's ``token``), and every
  occurrence of the source's own secret values (8 characters or more), as text or JSON-escaped.
  ``bodyRedacted`` says the body is then no longer the bytes received, so a signature over it no
  longer verifies; a replay trusts the archive instead.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import heapq
import itertools
import json
import logging
import re
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode

from azure.core.exceptions import (
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, LinearRetry
from opentelemetry import metrics
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from shared import storage
from shared.settings import KeyAuth, Settings, SourceConfig
from shared.sources import WebhookRequest

logger = logging.getLogger(__name__)

_meter = metrics.get_meter("vlsync")
FAILED = _meter.create_counter(
    "vlsync.archive.failed",
    unit="{request}",
    description="Accepted deliveries that could not be archived (best-effort), per source",
)

MASK = "[redacted]"
# Header and query-parameter names that carry a credential. Matched anywhere in the name, on the safe
# side: a harmless header that happens to match loses only its value in the archive.
_SECRET_NAME = re.compile(
    r"auth|key|token|secret|passw|pwd|sig|hmac|cookie|session|credential|cert|principal|sas", re.IGNORECASE
)
# Query parameters only: the Functions host's key travels as ?code=.
_SECRET_QUERY = frozenset({"code"})
# Top-level members of a JSON body that are credentials (Moodle's local_webhooks sends the service's
# token in the body).
_SECRET_BODY_MEMBERS = frozenset({"token", "secret", "password", "apikey", "api_key", "access_token", "client_secret"})
# A secret shorter than this is not searched for in the body: replacing a two-letter string would
# mangle the document, and such a secret is no secret.
MIN_SCRUBBED_SECRET = 8
_URL_VALUE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/?#]*)?/[^?#]*\?", re.IGNORECASE)
_BLOB_TIME = "%Y%m%dT%H%M%S%fZ"
# The sender waits while a per-delivery blob is written: one retry after about a second, not the
# storage SDK's default exponential back-off from 15 s. A segment gets the same single retry in the
# background: the buffer fills behind a write that hangs, so a write must give up soon (at worst about
# 2 x (5 + 15) + 2 = 42 s: two attempts of connect and read timeouts, and the back-off).
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=1),
    "connection_timeout": 5,
    "read_timeout": 15,
}
SEGMENT_SUFFIX = ".ndjson"
# A segment is one blob request instead of 200: 99.5% of the archive's requests saved, and more would
# save little more. Kept small because a replay reads a whole segment for any record in it (and holds
# the segments whose times overlap), and because it is also the flush trigger: at 200 deliveries/s
# or more the buffer is written before flush_seconds is up.
SEGMENT_RECORDS = 200
# The storage SDK's default block size: one Put Blob request, far below the SDK's 64 MiB single-put
# limit, and a few seconds at most on a slow link, inside the 15 s read timeout above.
SEGMENT_BYTES = 4 * 1024 * 1024
# The buffer only grows while a write is stuck (storage down or slow: about 42 s per segment at worst,
# above). 10,000 records is that long at about 240 deliveries/s; 32 MiB is 8 full segments. With the
# batch being written, at most twice this is held: 64 MiB, an eighth of the smallest Flex Consumption
# instance (512 MB). Beyond it the oldest records are dropped (counted in vlsync.archive.failed), so
# the buffer holds the latest deliveries when storage comes back.
BUFFER_RECORDS = 10_000
BUFFER_BYTES = 32 * 1024 * 1024


class ArchiveUnreadable(ValueError):
    """A blob of the archive is not an archived delivery (named in the message)."""


class ArchivedDelivery(BaseModel):
    """One accepted delivery as archived (the blob's JSON, version 1)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    v: Literal[1] = 1
    source: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    received_at: datetime = Field(alias="receivedAt")
    correlation_id: str = Field(alias="correlationId", min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    body_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", alias="bodyEncoding")
    body_redacted: bool = Field(default=False, alias="bodyRedacted")
    message_ids: list[str] = Field(default_factory=list, alias="messageIds")
    duplicate: bool = False

    @field_validator("received_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone")
        return value.astimezone(UTC)

    @field_serializer("received_at")
    def _rfc3339(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    @property
    def blob_name(self) -> str:
        at = self.received_at
        return f"{self.source}/{at:%Y/%m/%d/%H}/{at.strftime(_BLOB_TIME)}-{self.correlation_id}.json"

    def raw_body(self) -> bytes:
        """The body as bytes (as received, unless ``body_redacted``)."""
        if self.body_encoding == "base64":
            return base64.b64decode(self.body, validate=True)
        return self.body.encode("utf-8")

    def to_request(self) -> WebhookRequest:
        """The delivery as the intake saw it (less its secrets), for ``intake.rederive``."""
        return WebhookRequest(
            source_name=self.source,
            headers=dict(self.headers),
            body=self.raw_body(),
            correlation_id=self.correlation_id,
            received_at=self.received_at,
            query=dict(self.query),
        )

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode("utf-8")


def archived(
    request: WebhookRequest,
    source: SourceConfig | None,
    secret: str | None,
    message_ids: Sequence[str],
    *,
    duplicate: bool = False,
) -> ArchivedDelivery:
    """The archive record of an accepted delivery, every credential removed (see the module's doc)."""
    secrets = [s for s in (secret or "").split() if len(s) >= MIN_SCRUBBED_SECRET]
    auth = getattr(source, "auth", None)
    key_header = auth.name.lower() if isinstance(auth, KeyAuth) and auth.scheme == "header-key" else None
    key_param = auth.name.lower() if isinstance(auth, KeyAuth) and auth.scheme == "query-key" else None

    headers = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if _SECRET_NAME.search(lowered) or lowered == key_header:
            headers[lowered] = MASK
        else:
            headers[lowered] = _scrub_text(_redact_url(value, key_param), secrets)
    query = {
        name: MASK if _secret_param(name, key_param) else _scrub_text(value, secrets)
        for name, value in request.query.items()
    }
    body, redacted = _redact_body(request.body, secrets)
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return ArchivedDelivery(
        source=request.source_name,
        receivedAt=request.received_at,
        correlationId=request.correlation_id,
        headers=headers,
        query=query,
        body=text,
        bodyEncoding=encoding,
        bodyRedacted=redacted,
        messageIds=list(message_ids),
        duplicate=duplicate,
    )


def _secret_param(name: str, key_param: str | None) -> bool:
    lowered = name.lower()
    return bool(_SECRET_NAME.search(lowered)) or lowered in _SECRET_QUERY or lowered == key_param


def _redact_url(value: str, key_param: str | None) -> str:
    """A URL or path with a query (``x-original-url``, ``referer``): its credential parameters masked."""
    if not _URL_VALUE.match(value):
        return value
    head, _, rest = value.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    pairs = [(k, MASK if _secret_param(k, key_param) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{head}?{urlencode(pairs, safe='[]')}{hash_mark}{fragment}"


def _scrub_text(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        value = value.replace(secret, MASK)
    return value


def _redact_body(body: bytes, secrets: list[str]) -> tuple[bytes, bool]:
    """The body with its credential members and the source's secret values masked; whether it changed."""
    out = body
    with contextlib.suppress(ValueError, RecursionError):  # not JSON (or not UTF-8): only the value scrub applies
        document = json.loads(body)
        if isinstance(document, dict):
            members = [k for k, v in document.items() if k.lower() in _SECRET_BODY_MEMBERS and isinstance(v, str)]
            if members:
                document.update(dict.fromkeys(members, MASK))
                out = json.dumps(document, separators=(",", ":")).encode("ascii")
    for secret in secrets:
        forms = {secret.encode("utf-8", "surrogatepass"), json.dumps(secret)[1:-1].encode("ascii")}
        for form in forms:
            out = out.replace(form, MASK.encode("ascii"))
    return out, out != body


class DeliveryArchive(Protocol):
    """The intake's archive port."""

    def put(self, delivery: ArchivedDelivery) -> str | None:
        """Store the delivery: its blob name when written at once, None when buffered for a segment."""
        ...


@dataclass(frozen=True, slots=True)
class _Record:
    """A buffered delivery: its JSON line, and what grouping, ordering and the failure log need."""

    source: str
    received_at: datetime
    correlation_id: str
    order: str  # the per-delivery blob's leaf name: the order list() yields in
    line: bytes

    @classmethod
    def of(cls, delivery: ArchivedDelivery) -> _Record:
        return cls(delivery.source, delivery.received_at, delivery.correlation_id, _order(delivery), delivery.to_json())

    @property
    def hour(self) -> datetime:
        return self.received_at.replace(minute=0, second=0, microsecond=0)


class EventArchive:
    """The archive container (Azurite locally through ``LearningSyncStorage``).

    ``flush_seconds`` 0 writes one blob per delivery in :meth:`put`. Above 0, ``put`` buffers and a
    daemon thread (started by the first buffered record, gone once the buffer is empty) writes
    segments; ``background=False`` leaves the writing to :meth:`flush_if_due` and :meth:`flush`
    (tests, with an injected ``monotonic``). Safe to call from many threads at once.
    """

    def __init__(
        self,
        container: ContainerClient,
        *,
        flush_seconds: float = 0.0,
        segment_records: int = SEGMENT_RECORDS,
        segment_bytes: int = SEGMENT_BYTES,
        buffer_records: int = BUFFER_RECORDS,
        buffer_bytes: int = BUFFER_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        if flush_seconds < 0:
            raise ValueError("flush_seconds must be 0 or more")
        self._container = container
        self._key = (container.primary_hostname, container.container_name)
        self._ensured = False
        self._flush_seconds = flush_seconds
        self._segment_records, self._segment_bytes = segment_records, segment_bytes
        self._buffer_records, self._buffer_bytes = buffer_records, buffer_bytes
        self._monotonic = monotonic
        self._background = background
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a record came, or the buffer is full
        self._writing = threading.Lock()  # one batch written at a time, in order: flush() waits for the thread's
        self._buffer: deque[_Record] = deque()
        self._bytes = 0
        self._first_at = 0.0  # monotonic time of the oldest buffered record
        # Dropped since the last flush, to log: how many, their sources, the first LOGGED_IDS correlation ids
        # (a long outage drops hundreds of thousands; their ids must not pile up instead of their lines).
        self._dropped = _Dropped()
        self._thread: threading.Thread | None = None
        self._closed = False
        if flush_seconds > 0:
            with _LIVE_LOCK:
                _LIVE.add(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> EventArchive | None:
        """The deployment's archive, or None when ``EVENT_ARCHIVE_RETENTION_DAYS`` is 0 (archive off);
        segments when ``EVENT_ARCHIVE_FLUSH_SECONDS`` is above 0."""
        if settings.event_archive_retention_days == 0:
            return None
        service = storage.open_client(BlobServiceClient, settings.storage("blob"), **CLIENT_OPTIONS)
        return cls(
            service.get_container_client(settings.event_archive_container),
            flush_seconds=settings.event_archive_flush_seconds,
        )

    def put(self, delivery: ArchivedDelivery) -> str | None:
        """Archive one delivery. Segments: buffered and None at once (storage is not called). Otherwise,
        or once :meth:`close` ran: written now, its blob name, and a storage failure raised."""
        if self._flush_seconds == 0:
            return self._put_one(delivery)
        record = _Record.of(delivery)
        with self._changed:
            buffered = not self._closed
            dropped = self._append(record) if buffered else []
        for old in dropped:
            FAILED.add(1, {"vlsync.source": old.source})
        return None if buffered else self._put_one(delivery)

    def flush(self) -> int:
        """Write everything buffered now, in the calling thread (after any batch the thread is writing);
        the number of records written. A segment that fails is counted and logged, not raised."""
        with self._writing:
            with self._changed:
                batch = list(self._buffer)
                self._buffer.clear()
                self._bytes = 0
                dropped, self._dropped = self._dropped, _Dropped()
            if dropped.count:
                _log_dropped(dropped, self._buffer_records, self._buffer_bytes)
            written = 0
            segments = list(self._segments(batch))
            for index, segment in enumerate(segments):
                try:
                    written += self._put_segment(segment)
                except _Unreachable:  # each segment left would hang as long: counted as failed, not tried
                    _give_up(segments[index + 1 :])
                    break
            return written

    def flush_if_due(self) -> int:
        """:meth:`flush` if ``flush_seconds`` have passed since the oldest buffered record, or the buffer
        holds a segment's worth; else 0. The thread's rule, for ``background=False``."""
        with self._changed:
            due = bool(self._buffer) and self._due()
        return self.flush() if due else 0

    def close(self) -> int:
        """Write what is buffered; later deliveries are written one blob each, at once (shutdown)."""
        with self._changed:
            self._closed = True
        written = self.flush()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return written

    # -- the buffer (self._lock held) ------------------------------------------------------------------

    def _append(self, record: _Record) -> list[_Record]:
        """Buffer the record, drop the oldest beyond the cap (always keeping the newest), wake the
        thread when a segment's worth is buffered, start it when none runs; the dropped records."""
        if not self._buffer:
            self._first_at = self._monotonic()
        self._buffer.append(record)
        self._bytes += len(record.line)
        dropped = []
        while len(self._buffer) > 1 and (len(self._buffer) > self._buffer_records or self._bytes > self._buffer_bytes):
            old = self._buffer.popleft()
            self._bytes -= len(old.line)
            dropped.append(old)
        self._dropped.add(dropped)
        if self._full():
            self._changed.notify()
        if self._background and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-archive-flush", daemon=True)
            self._thread.start()
        return dropped

    def _full(self) -> bool:
        return len(self._buffer) >= self._segment_records or self._bytes >= self._segment_bytes

    def _due(self) -> bool:
        return self._full() or self._monotonic() - self._first_at >= self._flush_seconds

    # -- the background thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._wait_until_due():
                self.flush()
        finally:  # also after a bug's exception (reported by threading.excepthook): the next put starts another
            with self._changed:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _wait_until_due(self) -> bool:
        """Block until the buffer is due (True), or return False once it is empty (the thread ends)."""
        with self._changed:
            while self._buffer and not self._due():
                self._changed.wait(self._first_at + self._flush_seconds - self._monotonic())
            if self._buffer:
                return True
            self._thread = None
            return False

    # -- writing ---------------------------------------------------------------------------------------

    def _segments(self, batch: Sequence[_Record]) -> Iterator[list[_Record]]:
        """The batch as segments: per source and hour, in receipt order, each within the segment limits
        (a record larger than the byte limit alone in its own)."""
        groups: dict[tuple[str, datetime], list[_Record]] = {}
        for record in batch:
            groups.setdefault((record.source, record.hour), []).append(record)
        for key in sorted(groups):
            segment: list[_Record] = []
            size = 0
            for record in sorted(groups[key], key=lambda r: r.order):
                if segment and (
                    len(segment) >= self._segment_records or size + len(record.line) + 1 > self._segment_bytes
                ):
                    yield segment
                    segment, size = [], 0
                segment.append(record)
                size += len(record.line) + 1
            yield segment

    def _put_segment(self, segment: list[_Record]) -> int:
        """Write one segment; the number of records written (0: counted and logged as failed). Raises
        ``_Unreachable`` (counted and logged too) when storage did not answer at all."""
        first = segment[0]
        at = first.received_at
        name = f"{first.source}/{at:%Y/%m/%d/%H}/{at.strftime(_BLOB_TIME)}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}"
        data = b"".join(record.line + b"\n" for record in segment)
        try:
            try:
                self._upload(name, data, "application/x-ndjson")
            except ResourceExistsError as exists:
                # The name is unique to this write: a retry after a lost answer found it written. Any
                # other 409 (e.g. ContainerBeingDeleted) is a refusal, counted below.
                if getattr(exists, "error_code", None) != "BlobAlreadyExists":  # set by the storage SDK
                    raise
        except Exception as error:  # best-effort by design (module doc): never raised out of flush()
            logger.exception(
                "archive segment failed; %d record(s) not archived source=%s correlations=%s",
                len(segment),
                first.source,
                _some(record.correlation_id for record in segment),
            )
            FAILED.add(len(segment), {"vlsync.source": first.source})
            if isinstance(error, ServiceRequestError | ServiceResponseError):
                raise _Unreachable from error
            return 0
        return len(segment)

    def _put_one(self, delivery: ArchivedDelivery) -> str:
        name = delivery.blob_name
        self._upload(name, delivery.to_json(), "application/json")
        return name

    def _upload(self, name: str, data: bytes, content_type: str) -> None:
        settings = ContentSettings(content_type=content_type)
        try:
            self._container.upload_blob(name, data, overwrite=False, content_settings=settings)
        except ResourceNotFoundError:  # the container does not exist yet (Azurite starts empty)
            self._ensure()
            self._container.upload_blob(name, data, overwrite=False, content_settings=settings)

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            self._ensured = True

    # -- reading ---------------------------------------------------------------------------------------

    def list(self, since: datetime, until: datetime, source: str | None = None) -> Iterator[ArchivedDelivery]:
        """The deliveries received in ``[since, until)``, oldest first, of one source or all.

        Reads one name prefix per source and hour, per-delivery blobs and segments alike (a segment's
        records outside the window are left out). What this process has buffered for the same
        container is written first. Raises :class:`ArchiveUnreadable` for a blob that is not an
        archived delivery, rather than skipping what a replay would then miss.
        """
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("since and until must carry a time zone")
        since, until = since.astimezone(UTC), until.astimezone(UTC)
        for archive in _live(self._key):
            archive.flush()
        sources = [source] if source is not None else self.sources()
        hour = since.replace(minute=0, second=0, microsecond=0)
        while hour < until:
            found: list[str] = []
            for name in sources:
                prefix = f"{name}/{hour:%Y/%m/%d/%H}/"
                try:
                    blobs = list(self._container.list_blobs(name_starts_with=prefix))
                except ResourceNotFoundError:  # no container: nothing was archived
                    return
                found.extend(blob.name for blob in blobs if _in_window(blob.name, since, until))
            yield from self._merged(found, since, until)
            hour += timedelta(hours=1)

    def _merged(self, names: Sequence[str], since: datetime, until: datetime) -> Iterator[ArchivedDelivery]:
        """The deliveries of the blobs in receipt order, reading a blob only once nothing before its
        name's time is left to yield: a name's time is the earliest of its records, so only the blobs
        whose times overlap are held at once."""
        blobs = sorted((_leaf(name).split("-", 1)[0], name) for name in names)
        ready: list[tuple[str, int, ArchivedDelivery]] = []
        tiebreak = itertools.count()
        next_blob = 0
        while next_blob < len(blobs) or ready:
            while next_blob < len(blobs) and (not ready or blobs[next_blob][0] <= ready[0][0]):
                for delivery in self._read(blobs[next_blob][1]):
                    if since <= delivery.received_at < until:
                        heapq.heappush(ready, (_order(delivery), next(tiebreak), delivery))
                next_blob += 1
            if ready:
                yield heapq.heappop(ready)[2]

    def sources(self) -> Sequence[str]:
        """The sources that have archived deliveries (the top-level name prefixes)."""
        try:
            return sorted(item.name.rstrip("/") for item in self._container.walk_blobs(delimiter="/"))
        except ResourceNotFoundError:
            return []

    def _read(self, name: str) -> Sequence[ArchivedDelivery]:
        data = self._container.download_blob(name).readall()
        if not name.endswith(SEGMENT_SUFFIX):
            return [_parse(data, name)]
        lines = enumerate(data.splitlines(), start=1)
        return [_parse(line, f"{name} line {number}") for number, line in lines if line.strip()]


def _parse(data: bytes, where: str) -> ArchivedDelivery:
    try:
        return ArchivedDelivery.model_validate_json(data)
    except ValidationError as exc:
        raise ArchiveUnreadable(f"{where}: {exc.error_count()} invalid field(s)") from exc


class _Unreachable(Exception):
    """Storage did not answer a segment's write (connection refused, timed out)."""


def _give_up(segments: Sequence[list[_Record]]) -> None:
    """The segments of a batch left after one failed: counted and logged as failed, not tried."""
    records = [record for segment in segments for record in segment]
    if not records:
        return
    for source, count in Counter(record.source for record in records).items():
        FAILED.add(count, {"vlsync.source": source})
    logger.error(
        "archive: %d more record(s) of the batch not archived after a failed segment correlations=%s",
        len(records),
        _some(record.correlation_id for record in records),
    )


# A log line names at most this many correlation ids: a full buffer drops thousands at once.
LOGGED_IDS = 50


def _some(ids: Iterable[str]) -> str:
    shown = list(itertools.islice(ids, LOGGED_IDS + 1))
    return ",".join(shown[:LOGGED_IDS]) + (",..." if len(shown) > LOGGED_IDS else "")


@dataclass
class _Dropped:
    count: int = 0
    sources: set[str] = field(default_factory=set)
    ids: list[str] = field(default_factory=list)

    def add(self, records: Sequence[_Record]) -> None:
        self.count += len(records)
        self.sources.update(record.source for record in records)
        self.ids.extend(record.correlation_id for record in records[: LOGGED_IDS + 1 - len(self.ids)])


def _log_dropped(dropped: _Dropped, records: int, size: int) -> None:
    logger.error(
        "archive buffer full (%d records or %d bytes): %d oldest record(s) dropped, not archived sources=%s "
        "correlations=%s",
        records,
        size,
        dropped.count,
        ",".join(sorted(dropped.sources)),
        _some(dropped.ids),
    )


def _leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _order(delivery: ArchivedDelivery) -> str:
    """A delivery's place in list()'s order: its per-delivery blob's leaf name (receipt time first)."""
    return _leaf(delivery.blob_name)


def _stamp(name: str) -> datetime | None:
    """The receipt time in a blob's name (a segment's: its first record's), or None for a name the
    archive did not write."""
    try:
        return datetime.strptime(_leaf(name).split("-", 1)[0], _BLOB_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _in_window(name: str, since: datetime, until: datetime) -> bool:
    """Whether a blob may hold a delivery of ``[since, until)``: a delivery's blob when its time is in
    it, a segment (whose records come at or after its name's time, within the hour) when it starts
    before ``until``."""
    stamp = _stamp(name)
    if stamp is None:
        return False
    if name.endswith(SEGMENT_SUFFIX):
        return stamp < until
    return since <= stamp < until


# Segment archives of this process, for the exit flush and for list()'s read-your-writes. Weak: an
# archive with buffered records is held by its thread until they are written.
_LIVE: weakref.WeakSet[EventArchive] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _live(key: tuple[str, str] | None = None) -> list[EventArchive]:
    with _LIVE_LOCK:
        return [archive for archive in _LIVE if key is None or archive._key == key]


@atexit.register
def flush_all() -> None:
    """Write what every archive of this process has buffered: a stopping host writes what it has."""
    for archive in _live():
        archive.flush()
