"""Through the app's own function: a redelivery is answered as a duplicate, and both are archived."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.archive import MASK, ArchivedDelivery, EventArchive
from shared.settings import Settings
from tests.conftest import SECRET
from tests.stack.conftest import Stack
from tests.webhooks import content, event, signed


def test_a_redelivery_is_a_duplicate_and_both_are_archived_without_secrets(stack: Stack) -> None:
    correlation = f"e2e-dup-{uuid.uuid4().hex[:8]}"
    before = datetime.now(UTC)
    raw, headers = signed(
        event("com.lms.course.created", content("e2e-dup")), SECRET, extra_headers={"x-correlation-id": correlation}
    )
    url = f"{stack.intake}/webhooks/demo?code=e2e-function-key"
    first = httpx.post(url, content=raw, headers=headers, timeout=30)
    assert first.status_code == 202, first.text
    assert first.json()["duplicate"] is False
    again = httpx.post(url, content=raw, headers=headers, timeout=30)
    assert again.status_code == 202, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["messageIds"] == first.json()["messageIds"]

    stack.wait_for(lambda: stack.graph_get("e2e-dup").status_code == 200)

    container = BlobServiceClient.from_connection_string(stack.connection_string).get_container_client(
        Settings.model_fields["event_archive_container"].default
    )
    window = (before - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=5))

    def archived() -> list[ArchivedDelivery]:
        """Both deliveries, once the archive's segment (written within a second) is there."""
        try:
            found = EventArchive(container).list(*window, source="demo")
            return [d for d in found if d.correlation_id == correlation]
        except ResourceNotFoundError:  # the container is made by the first segment write
            return []

    stack.wait_for(lambda: len(archived()) == 2)
    documents = [json.loads(d.to_json()) for d in archived()]
    assert sorted(d["duplicate"] for d in documents) == [False, True]
    for document in documents:
        text = json.dumps(document)
        assert headers["webhook-signature"] not in text
        assert "e2e-function-key" not in text
        assert document["query"] == {"code": MASK}
        assert document["messageIds"] == first.json()["messageIds"]
