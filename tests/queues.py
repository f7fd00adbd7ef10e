"""Reading a storage queue in tests, as the app writes it: Base64-encoded JSON.

Only "this queue was never created" (``QueueNotFound``) reads as "no messages". Every other failure
(storage unreachable, credentials refused, a bad name) is raised, so an assertion that nothing was
queued cannot pass because the queue could not be read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage, StorageErrorCode

MAX_PEEK = 32  # the most messages one peek returns (a limit of the queue service)


def peek_messages(connection_string: str, queue_name: str, **client_options: Any) -> list[QueueMessage]:
    """The first messages of the queue, not dequeued; [] if the queue does not exist.

    ``client_options`` go to the ``QueueClient``. Without them a failure is not retried: Azurite is
    local, and the SDK's own back-off would report storage being down only after minutes.
    """
    client_options.setdefault("retry_total", 0)
    with QueueClient.from_connection_string(connection_string, queue_name, **client_options) as client:
        try:
            return list(client.peek_messages(max_messages=MAX_PEEK))
        except ResourceNotFoundError as error:
            if getattr(error, "error_code", None) == StorageErrorCode.QUEUE_NOT_FOUND:
                return []
            raise


def peek_texts(connection_string: str, queue_name: str, **client_options: Any) -> list[str]:
    """The messages' Base64-decoded text (what the worker receives), as is."""
    return [
        base64.b64decode(m.content, validate=True).decode()
        for m in peek_messages(connection_string, queue_name, **client_options)
    ]


def peek_json(connection_string: str, queue_name: str, **client_options: Any) -> list[Any]:
    """The messages' Base64-decoded JSON documents."""
    return [json.loads(text) for text in peek_texts(connection_string, queue_name, **client_options)]
