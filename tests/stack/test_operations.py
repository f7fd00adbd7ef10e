"""The app's health and replay functions in the dev host: a Graph outage parks a command, health says
degraded, the admin function replays it, Graph gets the newest state and never an older one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from local.devhost import DevHost, HostKeys, HttpFunction
from shared import status
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import get_settings
from tests.stack.conftest import Stack
from tests.webhooks import content, event

KEYS = HostKeys(master="master-key", host=("default-key",), functions={"receive_webhook": ("lms-key",)})


def replay(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.intake}/ops/replay/poison", json=body, timeout=30)


def health(stack: Stack, path: str = "health") -> httpx.Response:
    return httpx.get(f"{stack.intake}/{path}", timeout=30)


def drain(stack: Stack) -> None:
    stack.host.wait_until_idle(30)


def test_the_app_declares_the_auth_levels_azure_enforces(stack: Stack) -> None:
    levels = {f.name: f.auth_level for f in stack.host.functions if isinstance(f, HttpFunction)}
    assert levels == {
        "receive_webhook": "function",
        "health": "anonymous",
        "health_details": "function",
        "replay_poison": "admin",
        "replay_archive": "admin",
    }


@pytest.fixture
def keyed(stack: Stack) -> Iterator[str]:
    """The app's HTTP functions in a second host that checks keys as Azure does (its worker off)."""
    import function_app

    settings = {"AzureWebJobs.apply_content_command.Disabled": "true"}
    with DevHost.start(function_app.app, port=0, keys=KEYS, settings=settings) as host:
        yield host.base_url


def test_anonymous_health_says_only_the_status_and_details_need_the_key(keyed: str) -> None:
    anonymous = httpx.get(f"{keyed}/health", timeout=30)
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"status"}
    assert anonymous.headers["cache-control"] == "no-store"
    assert httpx.get(f"{keyed}/health/details", timeout=30).status_code == 401
    # A source's own key on receive_webhook opens only that function.
    assert httpx.get(f"{keyed}/health/details", headers={"x-functions-key": "lms-key"}, timeout=30).status_code == 401
    details = httpx.get(f"{keyed}/health/details", headers={"x-functions-key": "default-key"}, timeout=30)
    assert details.status_code == 200
    assert {"status", "queues", "sources", "ledgerScan", "poisonScan", "circuit"} <= set(details.json())


def test_replay_needs_the_master_key(keyed: str) -> None:
    url = f"{keyed}/ops/replay/poison"
    assert httpx.post(url, json={"dryRun": True}, timeout=30).status_code == 401
    assert httpx.post(url, json={"dryRun": True}, headers={"x-functions-key": "default-key"}).status_code == 401
    answer = httpx.post(url, json={"dryRun": True}, headers={"x-functions-key": "master-key"}, timeout=30)
    assert answer.status_code == 200
    assert set(answer.json()["counts"]) == {"replayed", "skipped", "unreplayable"}


def test_an_outage_parks_health_degrades_and_replay_recovers(stack: Stack) -> None:
    stack.clear_poison()
    drain(stack)
    # A refusal that never clears (409: Graph answers, so the circuit stays closed) parks the command.
    refusal = {"status": 409, "match": {"pathContains": "e2e-replay"}}
    httpx.post(f"{stack.graph_url}/_emulator/faults/next", json=[refusal] * 60, timeout=10).raise_for_status()
    try:
        assert stack.post(event("x.created", content("e2e-replay", title="After the outage"))).status_code == 202
        stack.wait_for(lambda: len(stack.poison()) == 1, timeout=60)
    finally:
        httpx.delete(f"{stack.graph_url}/_emulator/faults", timeout=10)
    drain(stack)
    status._cache.clear()  # the anonymous answer is cached for 10 s per process; this one must be fresh
    assert health(stack).json() == {"status": "degraded"}
    details = health(stack, "health/details").json()
    assert details["status"] == "degraded"
    assert details["queues"]["poison"]["approximateCount"] == 1
    [demo] = [s for s in details["sources"] if s["source"] == "demo"]
    assert (demo["configured"], demo["lastFailureKind"], demo["parkedSeen"]) == (True, "transient", 1)

    dry = replay(stack, {"dryRun": True, "source": "demo"}).json()
    assert dry["counts"] == {"replayed": 1, "skipped": 0, "unreplayable": 0}
    assert [item["externalId"] for item in dry["replayed"]] == ["e2e-replay"]
    assert len(stack.poison()) == 1  # a dry run moves nothing
    assert replay(stack, {"source": "other"}).json()["counts"]["skipped"] == 1
    assert len(stack.poison()) == 1

    done = replay(stack, {"source": "demo"}).json()
    assert done["counts"] == {"replayed": 1, "skipped": 0, "unreplayable": 0}
    stack.wait_for(lambda: stack.graph_get("e2e-replay").status_code == 200, timeout=30)
    assert stack.graph_get("e2e-replay").json()["title"] == "After the outage"
    assert replay(stack, {}).json()["counts"]["replayed"] == 0  # safe to run twice
    drain(stack)
    assert stack.poison() == []
    after = health(stack, "health/details").json()
    assert after["status"] == "up", after["reasons"]


def test_a_replayed_older_command_never_overwrites_the_newer_state(stack: Stack) -> None:
    stack.clear_poison()
    newer = event("x.updated", content("e2e-stale", title="Newer"), time="2026-11-27T12:00:00Z")
    assert stack.post(newer).status_code == 202
    stack.wait_for(lambda: stack.graph_get("e2e-stale").status_code == 200)
    # An older event for the same item, parked during an outage (as the worker parks it).
    older = ContentCommand.model_validate(
        {
            "op": "upsert",
            "tenantId": get_settings().tenant_id,
            "registrationId": stack.registration_id,
            "externalId": "e2e-stale",
            "content": content("e2e-stale", title="Older"),
            "source": "demo",
            "sourceEventId": "older-event",
            "eventTime": datetime(2026, 11, 27, 11, tzinfo=UTC),
            "correlationId": "corr-older",
            "lastError": {"kind": "transient", "status": 503, "message": "outage", "at": datetime.now(UTC)},
        }
    )
    StorageCommandQueue.from_settings(get_settings()).park(older.to_json())
    assert replay(stack, {"externalId": "e2e-stale"}).json()["counts"]["replayed"] == 1
    drain(stack)
    assert stack.poison() == []  # skipped by the ledger, not parked again
    assert stack.graph_get("e2e-stale").json()["title"] == "Newer"
