"""One trace from webhook to Graph call, across the queue, and the product counters (real OTel SDK)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from azure.identity.aio import ManagedIdentityCredential
from azure.storage.queue import QueueClient
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import intake, telemetry
from shared.graph import GraphClient
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.conftest import SECRET, UAMI_CLIENT_ID, GraphSide
from tests.webhooks import content, event, signed

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


def counter(name: str) -> dict[tuple[tuple[str, Any], ...], int]:
    data = READER.get_metrics_data()
    out: dict[tuple[tuple[str, Any], ...], int] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        out[tuple(sorted(point.attributes.items()))] = int(point.value)
    return out


async def test_one_trace_from_webhook_through_queue_to_graph(
    settings: Settings, graph_side: GraphSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    EXPORTER.clear()
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
    credential = ManagedIdentityCredential(client_id=UAMI_CLIENT_ID)
    async with httpx.AsyncClient() as http:
        graph = GraphClient(
            http, credential, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default"
        )
        queue = StorageCommandQueue.from_settings(routed)
        ports = WorkerPorts(
            graph=graph, park=queue.park, hold=queue.hold, defer=queue.defer, ledger=Ledger.from_settings(routed)
        )
        outcome = await process(body, MessageInfo(message.id, 1), ports)
    await credential.close()
    assert outcome is Outcome.UPSERTED

    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    receive, apply, call = spans["webhook receive"], spans["content upsert"], spans["graph PATCH"]
    assert receive.context.trace_id == apply.context.trace_id == call.context.trace_id
    assert apply.parent is not None
    assert apply.parent.span_id == receive.context.span_id
    assert call.parent is not None
    assert call.parent.span_id == apply.context.span_id
    assert call.attributes["http.response.status_code"] == 202
    assert graph_side.get_content("t-1").status_code == 200


def test_counters_count_accepted_and_rejected(settings: Settings) -> None:
    before = counter("vlsync.events.accepted").get((("vlsync.source", "demo"),), 0)
    batch = [event("x.created", content(f"k-{i}")) for i in range(3)]
    raw, headers = signed(batch, SECRET, content_type="application/cloudevents-batch+json")
    intake.receive(
        intake.make_request("demo", headers, raw), settings, lambda: StorageCommandQueue.from_settings(settings)
    )
    assert counter("vlsync.events.accepted")[(("vlsync.source", "demo"),)] == before + 3

    raw, headers = signed(event("x.created", content()), SECRET)
    intake.receive(
        intake.make_request("demo", headers, raw + b"x"), settings, lambda: StorageCommandQueue.from_settings(settings)
    )
    rejected = counter("vlsync.events.rejected")
    assert rejected[(("vlsync.problem", "signature-invalid"), ("vlsync.source", "demo"))] >= 1


async def test_parked_and_applied_counters(graph_side: GraphSide, settings: Settings) -> None:
    queue = StorageCommandQueue.from_settings(settings)
    credential = ManagedIdentityCredential(client_id=UAMI_CLIENT_ID)
    async with httpx.AsyncClient() as http:
        graph = GraphClient(
            http, credential, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default"
        )
        parked_before = counter("vlsync.commands.parked").get((("vlsync.reason", "malformed"),), 0)
        ports = WorkerPorts(
            graph=graph, park=queue.park, hold=queue.hold, defer=queue.defer, ledger=Ledger.from_settings(settings)
        )
        await process(b"garbage", MessageInfo("m", 1), ports)
    await credential.close()
    assert counter("vlsync.commands.parked")[(("vlsync.reason", "malformed"),)] == parked_before + 1


def test_auth_string_parsing() -> None:
    assert telemetry._auth_client_id("ClientId=abc;Authorization=AAD") == "abc"
    assert telemetry._auth_client_id("Authorization=AAD") is True
    assert telemetry._auth_client_id(None) is False
    assert telemetry._auth_client_id("Authorization=Key") is False
