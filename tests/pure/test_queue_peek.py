"""``tests.queues`` fails when storage cannot be read: an unreachable endpoint is an error, not an empty queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from local.azurite import ACCOUNT, ACCOUNT_KEY, free_port
from tests.queues import peek_json, peek_messages, peek_texts


def unreachable_storage() -> str:
    """A connection string to a port on 127.0.0.1 that nothing listens on."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};"
    )


@pytest.mark.parametrize("peek", [peek_messages, peek_texts, peek_json])
def test_unreachable_storage_raises_instead_of_reading_as_empty(peek: Callable[..., list[Any]]) -> None:
    with pytest.raises(ServiceRequestError):
        peek(unreachable_storage(), "content-commands", retry_total=0)


def test_by_default_unreachable_storage_is_reported_at_once_not_after_the_sdks_back_off() -> None:
    started = time.monotonic()
    with pytest.raises(ServiceRequestError):
        peek_json(unreachable_storage(), "content-commands")
    assert time.monotonic() - started < 10
