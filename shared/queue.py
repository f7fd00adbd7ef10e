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
from typing import Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared import storage
from shared.settings import Settings

logger = logging.getLogger(__name__)

MESSAGE_ENCODING = "base64"  # must equal host.json extensions.queues.messageEncoding
MAX_MESSAGE_BYTES = 64 * 1024  # Azure Storage limit on the stored (encoded) message
# Storage drops messages after 7 days by default; a command waiting out an outage, a disabled
# registration or an operator's look at the poison queue must not vanish on its own.
NEVER_EXPIRES = -1
MAX_DEFER_SECONDS = 6 * 60 * 60  # the longest wait a Retry-After may impose on one command


def encoded_size(text: str) -> int:
    """Bytes the message occupies in the queue after Base64 encoding."""
    return len(base64.b64encode(text.encode("utf-8")))


class QueueUnavailable(Exception):
    """Storage refused or failed a queue operation; the caller reports it, nothing is lost silently."""


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    pop_receipt: str


class CommandQueue(Protocol):
    """The content-command queues as intake (``send_all``) and the worker (the rest) use them."""

    def send_all(self, texts: Sequence[str]) -> list[str]: ...

    def park(self, text: str) -> str: ...

    def hold(self, text: str) -> str: ...

    def defer(self, text: str, delay_seconds: float) -> str: ...


class StorageCommandQueue:
    """Content-command queue and its poison queue on Azure Storage (Azurite locally)."""

    def __init__(self, service: QueueServiceClient, queue_name: str, poison_name: str, held_name: str) -> None:
        self._queue = self._client(service, queue_name)
        self._poison = self._client(service, poison_name)
        self._held = self._client(service, held_name)
        self._created: set[str] = set()

    @staticmethod
    def _client(service: QueueServiceClient, name: str) -> QueueClient:
        return service.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=BinaryBase64DecodePolicy()
        )

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

    def send_all(self, texts: Sequence[str]) -> list[str]:
        """Enqueue every message or none: on a failure, those already sent are deleted again."""
        sent: list[SentMessage] = []
        try:
            for text in texts:
                sent.append(self._send(self._queue, text))
        except AzureError as exc:
            self._compensate(sent)
            raise QueueUnavailable(f"enqueue failed after {len(sent)} of {len(texts)} message(s): {exc}") from exc
        return [s.message_id for s in sent]

    def _compensate(self, sent: list[SentMessage]) -> None:
        for message in sent:
            try:
                self._queue.delete_message(message.message_id, message.pop_receipt)
            except AzureError:
                # The worker will still apply it: a duplicate of an accepted-later retry, never a loss.
                logger.exception("could not withdraw message %s after a partial enqueue", message.message_id)

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

    def release_held(self, belongs: Callable[[str], bool], *, lease_seconds: int = 300) -> int:
        """Move every held command that ``belongs`` back to the work queue; returns how many moved.

        A message is re-sent before it is deleted, so a failure in between leaves a duplicate (which
        the worker tolerates), never a loss. Held messages of other registrations are left alone.
        """
        self._ensure(self._held)
        moved = 0
        others: dict[str, str] = {}  # message id -> pop receipt, kept hidden during the scan
        try:
            while True:
                received = self._held.receive_messages(visibility_timeout=lease_seconds, max_messages=32)
                batch = [m for m in received if m.id not in others]
                if not batch:
                    return moved
                for message in batch:
                    raw = message.content
                    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                    if belongs(text):
                        self._send(self._queue, text)
                        self._held.delete_message(message.id, message.pop_receipt)
                        moved += 1
                    else:
                        others[message.id] = message.pop_receipt or ""
        finally:
            for message_id, receipt in others.items():  # other registrations' commands: visible again
                self._held.update_message(message_id, receipt, visibility_timeout=0)

    def ensure_queues(self) -> None:
        for client in (self._queue, self._poison, self._held):
            self._ensure(client)


def service_client(settings: Settings) -> QueueServiceClient:
    """The queue service of the ``LearningSyncStorage`` connection (see ``shared.storage``)."""
    return storage.open_client(QueueServiceClient, settings.storage("queue"))
