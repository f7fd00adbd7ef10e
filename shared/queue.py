"""The queue port: content commands in and out of an Azure Storage queue.

One encoding rule for the whole app: messages are Base64 text, because ``host.json`` keeps the
queue extension's default ``messageEncoding: base64`` (a producer that sent raw text would see every
message moved straight to the poison queue). A contract test keeps the two in step.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    QueueClient,
    QueueServiceClient,
    StorageErrorCode,
    TextBase64EncodePolicy,
)

from shared import storage
from shared.settings import Settings

logger = logging.getLogger(__name__)

MESSAGE_ENCODING = "base64"  # must equal host.json extensions.queues.messageEncoding
MAX_MESSAGE_BYTES = 64 * 1024  # Azure Storage limit on the stored (encoded) message
# Storage drops messages after 7 days by default; a command waiting out an outage, a disabled
# registration or an operator's look at the poison queue must not vanish on its own.
NEVER_EXPIRES = -1
MAX_DEFER_SECONDS = 6 * 60 * 60  # the longest wait a Retry-After may impose on one command
MAX_PEEK = 32  # the most messages one peek or receive returns (a limit of the queue service)
# How long a scan (replay, release) keeps each message it looked at hidden, so that it sees every
# message once; the messages it leaves are made visible again as soon as the scan ends.
SCAN_LEASE_SECONDS = 300

QueueRole = Literal["work", "poison", "held"]


def encoded_size(text: str) -> int:
    """Bytes the message occupies in the queue after Base64 encoding."""
    return len(base64.b64encode(text.encode("utf-8")))


def decode(content: str | bytes | None) -> str | None:
    """The text of a stored message (Base64 of UTF-8, as the app writes), or ``None`` when it is not."""
    try:
        return base64.b64decode(content or b"", validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None


class QueueUnavailable(Exception):
    """Storage refused or failed a queue operation; the caller reports it, nothing is lost silently."""


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored. Read without the SDK's decode policy: one message that is not Base64 (a
    producer that sent raw text) must not stop a scan of the whole queue."""

    message_id: str
    inserted_on: datetime | None
    text: str | None  # None: the stored content is not Base64 of UTF-8 text


@dataclass(frozen=True)
class QueueSnapshot:
    """What a look at one queue shows without taking anything from it."""

    role: QueueRole
    name: str
    approximate_count: int  # the service's estimate; includes hidden messages (in flight, deferred)
    peeked: tuple[StoredMessage, ...]  # the first visible messages, at most MAX_PEEK

    @property
    def oldest_inserted(self) -> datetime | None:
        """The oldest insertion time among the peeked messages (hidden ones are not seen)."""
        times = [m.inserted_on for m in self.peeked if m.inserted_on is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class SentMessage:
    """A message just sent; its pop receipt lets the sender take it back until a worker receives it."""

    message_id: str
    pop_receipt: str


def message_ids(sent: Sequence[SentMessage]) -> list[str]:
    return [message.message_id for message in sent]


class CommandQueue(Protocol):
    """The content-command queues as intake (``send_all``, ``withdraw``) and the worker (the rest) use them."""

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]: ...

    def withdraw(self, sent: Sequence[SentMessage]) -> int: ...

    def park(self, text: str) -> str: ...

    def hold(self, text: str) -> str: ...

    def defer(self, text: str, delay_seconds: float) -> str: ...


class StorageCommandQueue:
    """Content-command queue and its poison queue on Azure Storage (Azurite locally)."""

    def __init__(self, service: QueueServiceClient, queue_name: str, poison_name: str, held_name: str) -> None:
        self._queue = self._client(service, queue_name)
        self._poison = self._client(service, poison_name)
        self._held = self._client(service, held_name)
        # The same queues read as stored (no decode policy), for scans and peeks: see StoredMessage.
        self._raw: dict[QueueRole, QueueClient] = {
            "work": service.get_queue_client(queue_name),
            "poison": service.get_queue_client(poison_name),
            "held": service.get_queue_client(held_name),
        }
        self._created: set[str] = set()

    @staticmethod
    def _client(service: QueueServiceClient, name: str) -> QueueClient:
        return service.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=BinaryBase64DecodePolicy()
        )

    @property
    def poison_name(self) -> str:
        return self._poison.queue_name

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageCommandQueue:
        return cls(
            service_client(settings), settings.content_queue_name, settings.poison_queue_name, settings.held_queue_name
        )

    def _send(self, client: QueueClient, text: str) -> SentMessage:
        try:
            msg = client.send_message(text, time_to_live=NEVER_EXPIRES)
        except ResourceNotFoundError:
            self._ensure(client)
            msg = client.send_message(text, time_to_live=NEVER_EXPIRES)
        return SentMessage(msg.id, msg.pop_receipt or "")

    def _ensure(self, client: QueueClient) -> None:
        if client.queue_name not in self._created:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._created.add(client.queue_name)

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]:
        """Enqueue every message or none: on a failure, those already sent are deleted again."""
        sent: list[SentMessage] = []
        try:
            for text in texts:
                sent.append(self._send(self._queue, text))
        except AzureError as exc:
            self.withdraw(sent)
            raise QueueUnavailable(f"enqueue failed after {len(sent)} of {len(texts)} message(s): {exc}") from exc
        return sent

    def withdraw(self, sent: Sequence[SentMessage]) -> int:
        """Delete messages this queue just sent (a partial enqueue, a redelivery found after its enqueue);
        returns how many. One a worker has received meanwhile has a new pop receipt and stays: the worker
        applies it, and its ledger makes a repeat of an applied event a no-op, so this is never a loss."""
        withdrawn = 0
        for message in sent:
            try:
                self._queue.delete_message(message.message_id, message.pop_receipt)
                withdrawn += 1
            except AzureError as exc:
                logger.warning("could not withdraw message %s (it is applied instead): %s", message.message_id, exc)
        return withdrawn

    def park(self, text: str) -> str:
        """Put a command on the poison queue, where operators inspect and replay it."""
        try:
            return self._send(self._poison, text).message_id
        except AzureError as exc:
            raise QueueUnavailable(f"parking failed: {exc}") from exc

    def defer(self, text: str, delay_seconds: float) -> str:
        """Send a command back to the work queue, invisible until Graph's ``Retry-After`` has passed."""
        delay = max(1, min(int(delay_seconds + 0.999), MAX_DEFER_SECONDS))
        try:
            message = self._queue.send_message(text, visibility_timeout=delay, time_to_live=NEVER_EXPIRES)
        except AzureError as exc:
            raise QueueUnavailable(f"deferring failed: {exc}") from exc
        return str(message.id)

    def hold(self, text: str) -> str:
        """Keep a command of a disabled registration until it is enabled again (``release_held``)."""
        try:
            return self._send(self._held, text).message_id
        except AzureError as exc:
            raise QueueUnavailable(f"holding failed: {exc}") from exc

    def release_held(self, belongs: Callable[[str], bool], *, lease_seconds: int = SCAN_LEASE_SECONDS) -> int:
        """Move every held command that ``belongs`` back to the work queue; returns how many moved.

        Held messages of other registrations are left alone (see ``move_back``).
        """
        moved = 0

        def decide(message: StoredMessage) -> str | None:
            nonlocal moved
            if message.text is not None and belongs(message.text):
                moved += 1
                return message.text
            return None

        self.move_back("held", decide, lease_seconds=lease_seconds)
        return moved

    def move_back(
        self,
        role: Literal["poison", "held"],
        decide: Callable[[StoredMessage], str | None],
        *,
        lease_seconds: int = SCAN_LEASE_SECONDS,
        limit: int | None = None,
    ) -> bool:
        """Look at every message of the poison or held queue once; where ``decide`` returns a text,
        send that text to the work queue and delete the message, else leave the message where it is.

        Sent before deleted, so a failure in between leaves a duplicate (which the worker's ledger
        makes harmless), never a loss. The messages looked at stay hidden during the scan (for
        ``lease_seconds``), so a message is looked at once, and those left are visible again at the
        end. ``limit``: stop after moving that many. Returns whether the whole queue was looked at
        (False: stopped at the limit). A scan longer than ``lease_seconds`` may end early, when only
        messages it has already looked at come back.
        """
        source = self._raw[role]
        moved = 0
        left: dict[str, str] = {}  # message id -> pop receipt, kept hidden during the scan
        try:
            self._ensure(source)
            while True:
                received = list(
                    source.receive_messages(
                        visibility_timeout=lease_seconds, messages_per_page=MAX_PEEK, max_messages=MAX_PEEK
                    )
                )
                fresh = [m for m in received if m.id not in left]
                # Every message received is shown again at the end unless moved, also when a move fails
                # (seen before and received again after its lease ran out: only the newest receipt counts).
                left.update((m.id, m.pop_receipt or "") for m in received)
                if not fresh:
                    return True
                for message in fresh:
                    if limit is not None and moved >= limit:
                        return False
                    text = decide(StoredMessage(message.id, message.inserted_on, decode(message.content)))
                    if text is None:
                        continue
                    self._send(self._queue, text)
                    source.delete_message(message.id, message.pop_receipt)
                    del left[message.id]
                    moved += 1
        except AzureError as exc:
            raise QueueUnavailable(f"moving from {source.queue_name} failed after {moved} message(s): {exc}") from exc
        finally:
            for message_id, receipt in left.items():
                try:
                    source.update_message(message_id, receipt, visibility_timeout=0)
                except AzureError:  # it shows again when its lease ends: late, never lost
                    logger.warning("could not show message %s of %s again", message_id, source.queue_name)

    def snapshot(self, role: QueueRole) -> QueueSnapshot:
        """The queue's approximate depth and its first visible messages, taking nothing from it.

        A queue that does not exist yet is empty; any other storage failure raises ``QueueUnavailable``.
        """
        client = self._raw[role]
        try:
            count = client.get_queue_properties().approximate_message_count or 0
            peeked = client.peek_messages(max_messages=MAX_PEEK)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == StorageErrorCode.QUEUE_NOT_FOUND:
                return QueueSnapshot(role, client.queue_name, 0, ())
            raise QueueUnavailable(f"reading queue {client.queue_name} failed: {exc}") from exc
        except AzureError as exc:
            raise QueueUnavailable(f"reading queue {client.queue_name} failed: {exc}") from exc
        messages = tuple(StoredMessage(m.id, m.inserted_on, decode(m.content)) for m in peeked)
        return QueueSnapshot(role, client.queue_name, count, messages)

    def ensure_queues(self) -> None:
        for client in (self._queue, self._poison, self._held):
            self._ensure(client)


def service_client(settings: Settings) -> QueueServiceClient:
    """The queue service of the ``LearningSyncStorage`` connection (see ``shared.storage``)."""
    return storage.open_client(QueueServiceClient, settings.storage("queue"))
