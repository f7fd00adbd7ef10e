"""Through the app's own function: a redelivery is answered as a duplicate, and both are archived."""

from __future__ import annotations

import json
import uuid

import httpx
from azure.storage.blob import BlobServiceClient

from shared.archive import MASK
from shared.settings import Settings
from tests.conftest import SECRET
from tests.stack.conftest import Stack
from tests.webhooks import content, event, signed


def test_a_redelivery_is_a_duplicate_and_both_are_archived_without_secrets(stack: Stack) -> None:
    correlation = f"e2e-dup-{uuid.uuid4().hex[:8]}"
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
    names = [b.name for b in container.list_blobs(name_starts_with="demo/") if b.name.endswith(f"-{correlation}.json")]
    assert len(names) == 2
    documents = [json.loads(container.download_blob(name).readall()) for name in names]
    assert sorted(d["duplicate"] for d in documents) == [False, True]
    for document in documents:
        text = json.dumps(document)
        assert headers["webhook-signature"] not in text
        assert "e2e-function-key" not in text
        assert document["query"] == {"code": MASK}
        assert document["messageIds"] == first.json()["messageIds"]
