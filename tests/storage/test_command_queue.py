"""The app's command queue on real queue storage (Azurite): what it writes and when it shows."""

from __future__ import annotations

import time

from shared import queue
from shared.settings import Settings
from tests.queues import peek_messages, peek_texts


def test_producer_really_base64_encodes(settings: Settings) -> None:
    q = queue.StorageCommandQueue.from_settings(settings)
    q.send_all(['{"x": "é"}'])
    assert peek_texts(settings.storage_connection_string or "", settings.content_queue_name) == ['{"x": "é"}']


def test_deferred_message_reappears_after_the_delay(settings: Settings) -> None:
    q = queue.StorageCommandQueue.from_settings(settings)
    q.ensure_queues()
    main = (settings.storage_connection_string or "", settings.content_queue_name)
    q.defer('{"deferred": 1}', 1)
    assert peek_messages(*main) == []
    time.sleep(1.6)
    assert peek_texts(*main) == ['{"deferred": 1}']
