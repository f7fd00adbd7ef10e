"""The raw event archive: every accepted delivery, as received but without its secrets, in Blob storage.

What it is for: seeing exactly what a sender sent, and (``vlsync replay archive``) deriving the
commands again after an outage, through ``intake.rederive``. It is best-effort: the intake
writes it after the commands are queued, and a failure is logged and counted
(``vlsync.archive.failed``), never turned into an error for the sender.

One blob per delivery in the ``EVENT_ARCHIVE_CONTAINER`` container:
``{source}/{yyyy}/{mm}/{dd}/{HH}/{receivedAt:%Y%m%dT%H%M%S%fZ}-{correlationId}.json`` (UTC), so a
time window of one source is read by listing one name prefix per hour. The JSON document is an
:class:`ArchivedDelivery` (``"v": 1``).

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

import base64
import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
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
# The sender waits while the blob is written: one retry after about a second, not the storage SDK's
# default exponential back-off from 15 s.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=1),
    "connection_timeout": 5,
    "read_timeout": 15,
}


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

    def put(self, delivery: ArchivedDelivery) -> str:
        """Store the delivery; returns its blob name."""
        ...


class EventArchive:
    """The archive container (Azurite locally through ``LearningSyncStorage``)."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self._ensured = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EventArchive | None:
        """The deployment's archive, or None when ``EVENT_ARCHIVE_RETENTION_DAYS`` is 0 (archive off)."""
        if settings.event_archive_retention_days == 0:
            return None
        service = storage.open_client(BlobServiceClient, settings.storage("blob"), **CLIENT_OPTIONS)
        return cls(service.get_container_client(settings.event_archive_container))

    def put(self, delivery: ArchivedDelivery) -> str:
        name = delivery.blob_name
        data = delivery.to_json()
        try:
            self._upload(name, data)
        except ResourceNotFoundError:  # the container does not exist yet (Azurite starts empty)
            self._ensure()
            self._upload(name, data)
        return name

    def _upload(self, name: str, data: bytes) -> None:
        self._container.upload_blob(
            name, data, overwrite=False, content_settings=ContentSettings(content_type="application/json")
        )

    def _ensure(self) -> None:
        if not self._ensured:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            self._ensured = True

    def list(self, since: datetime, until: datetime, source: str | None = None) -> Iterator[ArchivedDelivery]:
        """The deliveries received in ``[since, until)``, oldest first, of one source or all.

        Reads one name prefix per source and hour. Raises :class:`ArchiveUnreadable` for a blob that
        is not an archived delivery, rather than skipping what a replay would then miss.
        """
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("since and until must carry a time zone")
        since, until = since.astimezone(UTC), until.astimezone(UTC)
        sources = [source] if source is not None else self.sources()
        hour = since.replace(minute=0, second=0, microsecond=0)
        while hour < until:
            found: list[tuple[str, str]] = []
            for name in sources:
                prefix = f"{name}/{hour:%Y/%m/%d/%H}/"
                try:
                    blobs = list(self._container.list_blobs(name_starts_with=prefix))
                except ResourceNotFoundError:  # no container: nothing was archived
                    return
                for blob in blobs:
                    stamp = _stamp(blob.name)
                    if stamp is not None and since <= stamp < until:
                        found.append((blob.name.rsplit("/", 1)[1], blob.name))
            for _, blob_name in sorted(found):
                yield self._read(blob_name)
            hour += timedelta(hours=1)

    def sources(self) -> Sequence[str]:
        """The sources that have archived deliveries (the top-level name prefixes)."""
        try:
            return sorted(item.name.rstrip("/") for item in self._container.walk_blobs(delimiter="/"))
        except ResourceNotFoundError:
            return []

    def _read(self, name: str) -> ArchivedDelivery:
        data = self._container.download_blob(name).readall()
        try:
            return ArchivedDelivery.model_validate_json(data)
        except ValidationError as exc:
            raise ArchiveUnreadable(f"{name}: {exc.error_count()} invalid field(s)") from exc


def _stamp(name: str) -> datetime | None:
    """The receipt time in a blob's name, or None for a name the archive did not write."""
    leaf = name.rsplit("/", 1)[-1]
    try:
        return datetime.strptime(leaf.split("-", 1)[0], _BLOB_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None
