"""Intake against real queue storage (Azurite): 202 with ids, or a problem and an empty queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import intake
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from tests.conftest import SECRET
from tests.queues import peek_json, peek_messages
from tests.webhooks import content, event, signed


def queued(settings: Settings) -> list[dict[str, Any]]:
    return peek_json(settings.storage_connection_string or "", settings.content_queue_name)


def post(settings: Settings, body: Any, source: str = "demo", **kw: Any) -> intake.IntakeResponse:
    raw, headers = signed(body, SECRET, **kw)
    request = intake.make_request(source, headers, raw)
    return intake.receive(request, settings, lambda: StorageCommandQueue.from_settings(settings))


def test_accepted_event_is_queued_base64_and_versioned(settings: Settings) -> None:
    response = post(settings, event("x.created", content("c-1")))
    assert response.status == 202
    assert response.body["accepted"] == 1
    [message] = queued(settings)
    assert message["v"] == 1
    assert message["op"] == "upsert"
    assert message["registrationId"] == "reg-1"
    assert ContentCommand.model_validate(message).external_id == "c-1"
    assert len(response.body["messageIds"]) == 1


def test_batch_enqueues_one_message_per_command(settings: Settings) -> None:
    batch = [event("x.created", content(f"c-{i}")) for i in range(5)]
    response = post(settings, batch, content_type="application/cloudevents-batch+json")
    assert response.status == 202
    assert response.body["accepted"] == 5
    assert sorted(m["externalId"] for m in queued(settings)) == [f"c-{i}" for i in range(5)]


def test_correlation_id_is_kept_and_carried(settings: Settings) -> None:
    response = post(settings, event("x.created", content()), extra_headers={"x-correlation-id": "abc-123"})
    assert response.headers["x-correlation-id"] == "abc-123"
    assert queued(settings)[0]["correlationId"] == "abc-123"


def test_unsafe_correlation_id_is_replaced(settings: Settings) -> None:
    response = post(settings, event("x.created", content()), extra_headers={"x-correlation-id": "a\nb"})
    assert response.headers["x-correlation-id"] != "a\nb"


def test_unknown_source_is_404_problem(settings: Settings) -> None:
    response = post(settings, event("x.created", content()), source="nope")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert response.body["type"] == "urn:vlsync:problem:unknown-source"
    assert queued(settings) == []


def test_bad_signature_is_401_and_nothing_queued(settings: Settings) -> None:
    raw, headers = signed(event("x.created", content()), SECRET)
    response = intake.receive(
        intake.make_request("demo", headers, raw + b" "), settings, lambda: StorageCommandQueue.from_settings(settings)
    )
    assert response.status == 401
    assert response.body["type"].endswith("signature-invalid")
    assert queued(settings) == []


def test_oversize_body_is_413(settings: Settings) -> None:
    small = settings.model_copy(update={"webhook_max_body_bytes": 100})
    response = post(small, event("x.created", content()))
    assert response.status == 413
    assert response.body["type"].endswith("body-too-large")


def test_command_over_queue_limit_is_413_and_batch_not_partially_queued(settings: Settings) -> None:
    huge = content("big", description="x" * 60_000)
    batch = [event("x.created", content("ok")), event("x.created", huge)]
    response = post(settings, batch, content_type="application/cloudevents-batch+json")
    assert response.status == 413
    assert response.body["type"].endswith("command-too-large")
    assert queued(settings) == []


def test_schema_violation_lists_pointers_and_queues_nothing(settings: Settings) -> None:
    batch = [event("x.created", content("ok")), event("x.created", content("bad", level="expert"))]
    response = post(settings, batch, content_type="application/cloudevents-batch+json")
    assert response.status == 400
    assert response.body["errors"] == [{"detail": response.body["errors"][0]["detail"], "pointer": "/1/data/level"}]
    assert queued(settings) == []


def test_lone_surrogate_is_400_and_queues_nothing(settings: Settings) -> None:
    body = event("x.created", content("c-1", description="\ud800"))
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as the escape "\\ud800"
    response = post(settings, raw)
    assert response.status == 400
    assert [e["pointer"] for e in response.body["errors"]] == ["/data/description"]
    json.dumps(response.body).encode("utf-8")
    assert queued(settings) == []


def test_event_time_before_2000_is_400_and_queues_nothing(settings: Settings) -> None:
    response = post(settings, event("x.created", content("c-1"), time="1601-01-01T00:00:00Z"))
    assert response.status == 400
    assert [e["pointer"] for e in response.body["errors"]] == ["/time"]
    assert queued(settings) == []


def test_invalid_sources_setting_is_500_not_a_crash(settings: Settings) -> None:
    broken = settings.model_copy(update={"sources_json": "{not json"})
    response = post(broken, event("x.created", content()))
    assert response.status == 500
    assert response.body["type"].endswith("source-misconfigured")


def test_queue_down_is_503_with_retry_after(settings: Settings) -> None:
    down = settings.model_copy(
        update={
            "storage_connection_string": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        }
    )
    raw, headers = signed(event("x.created", content()), SECRET)
    queue = StorageCommandQueue.from_settings(down)
    queue._queue._config.retry_policy.total_retries = 0  # fail fast in the test
    response = intake.receive(intake.make_request("demo", headers, raw), down, lambda: queue)
    assert response.status == 503
    assert response.headers["Retry-After"] == "30"


class FailingSecondSend(StorageCommandQueue):
    """The real storage queue, with the second send failing as storage would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends = 0

    def _send(self, client: Any, text: str) -> Any:
        self.sends += 1
        if self.sends == 2:
            from azure.core.exceptions import ServiceRequestError

            raise ServiceRequestError("injected storage failure")
        return super()._send(client, text)


def test_partial_enqueue_is_withdrawn(settings: Settings) -> None:
    from shared.queue import service_client

    queue = FailingSecondSend(
        service_client(settings), settings.content_queue_name, settings.poison_queue_name, settings.held_queue_name
    )
    batch = [event("x.created", content(f"c-{i}")) for i in range(3)]
    raw, headers = signed(batch, SECRET, content_type="application/cloudevents-batch+json")
    response = intake.receive(intake.make_request("demo", headers, raw), settings, lambda: queue)
    assert response.status == 503
    assert queue.sends == 2
    assert queued(settings) == []


@pytest.mark.parametrize("source", ["../etc", "demo%00", "x" * 300])
def test_hostile_source_names_are_unknown(settings: Settings, source: str) -> None:
    assert post(settings, event("x.created", content()), source=source).status == 404


def test_unresolved_key_vault_reference_is_a_misconfiguration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "@Microsoft.KeyVault(VaultName=kv;SecretName=demo-webhook-secret)")
    response = post(settings, event("x.created", content()))
    assert response.status == 500
    assert response.body["type"].endswith("source-misconfigured")
    assert queued(settings) == []


def test_correlation_id_with_trailing_newline_is_replaced(settings: Settings) -> None:
    response = post(settings, event("x.created", content()), extra_headers={"x-correlation-id": "abc"})
    assert response.headers["x-correlation-id"] == "abc"
    assert intake.correlation_id({"x-correlation-id": "abc\n"}) != "abc\n"


def test_queued_messages_never_expire(settings: Settings) -> None:
    post(settings, event("x.created", content("ttl")))
    [message] = peek_messages(settings.storage_connection_string or "", settings.content_queue_name)
    assert message.expires_on is None or message.expires_on.year >= 9999
