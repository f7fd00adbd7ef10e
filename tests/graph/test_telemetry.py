"""One trace from webhook to Graph call, across the queue, and the product counters (real OTel SDK)."""

from __future__ import annotations

import base64

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared import intake
from shared.graph import GraphClient
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests import otel
from tests.conftest import SECRET
from tests.graph.conftest import GraphSide, worker_credential
from tests.webhooks import content, event, signed


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    otel.install()


async def test_one_trace_from_webhook_through_queue_to_graph(
    settings: Settings, graph_side: GraphSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    otel.EXPORTER.clear()
    routed = settings.model_copy(
        update={"sources_json": settings.sources_json.replace("reg-1", graph_side.registration_id)}
    )
    raw, headers = signed(event("x.created", content("t-1")), SECRET)
    response = intake.receive(
        intake.make_request("demo", headers, raw), routed, lambda: StorageCommandQueue.from_settings(routed)
    )
    assert response.status == 202

    [message] = QueueClient.from_connection_string(
        routed.storage_connection_string or "", routed.content_queue_name
    ).receive_messages()
    body = base64.b64decode(message.content)
    credential = worker_credential(graph_side)
    async with httpx.AsyncClient() as http:
        graph = GraphClient(
            http, credential, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default"
        )
        queue = StorageCommandQueue.from_settings(routed)
        ports = WorkerPorts(graph=graph, queue=queue, ledger=Ledger.from_settings(routed))
        outcome = await process(body, MessageInfo(message.id, 1), ports)
    await credential.close()
    assert outcome is Outcome.UPSERTED

    spans = {s.name: s for s in otel.EXPORTER.get_finished_spans()}
    receive, apply, call = spans["webhook receive"], spans["content upsert"], spans["graph PATCH"]
    assert receive.context.trace_id == apply.context.trace_id == call.context.trace_id
    assert apply.parent is not None
    assert apply.parent.span_id == receive.context.span_id
    assert call.parent is not None
    assert call.parent.span_id == apply.context.span_id
    assert call.attributes["http.response.status_code"] == 202
    assert graph_side.get_content("t-1").status_code == 200


async def test_parked_and_applied_counters(graph_side: GraphSide, settings: Settings) -> None:
    queue = StorageCommandQueue.from_settings(settings)
    credential = worker_credential(graph_side)
    async with httpx.AsyncClient() as http:
        graph = GraphClient(
            http, credential, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default"
        )
        parked_before = otel.counter("vlsync.commands.parked").get((("vlsync.reason", "malformed"),), 0)
        ports = WorkerPorts(graph=graph, queue=queue, ledger=Ledger.from_settings(settings))
        await process(b"garbage", MessageInfo("m", 1), ports)
    await credential.close()
    assert otel.counter("vlsync.commands.parked")[(("vlsync.reason", "malformed"),)] == parked_before + 1
