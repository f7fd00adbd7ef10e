"""``POST /api/ops/replay/archive`` in the dev host: Graph refuses a command, the worker parks it, the
parked copy is lost, and the admin function derives it again from the raw event archive; the worker
applies it. (tests/graph/test_cli_replay_archive.py replays a 5xx outage, with the worker in-process.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from local.devhost import DevHost, HostKeys
from tests.stack.conftest import Stack
from tests.webhooks import content, event

KEYS = HostKeys(master="master-key", host=("default-key",), functions={"receive_webhook": ("lms-key",)})


def replay_archive(base_url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{base_url}/ops/replay/archive", json=body, headers=headers, timeout=60)


def window(since: datetime, until: datetime, **more: Any) -> dict[str, Any]:
    return {"since": since.isoformat(), "until": until.isoformat(), **more}


@pytest.fixture
def keyed(stack: Stack) -> Iterator[str]:
    """The app's HTTP functions in a second host that checks keys as Azure does (its worker off)."""
    import function_app

    settings = {"AzureWebJobs.apply_content_command.Disabled": "true"}
    with DevHost.start(function_app.app, port=0, keys=KEYS, settings=settings) as host:
        yield host.base_url


def test_the_archive_replay_needs_the_master_key(keyed: str) -> None:
    now = datetime.now(UTC)
    body = window(now - timedelta(minutes=1), now, dryRun=True)
    assert replay_archive(keyed, body).status_code == 401
    assert replay_archive(keyed, body, **{"x-functions-key": "default-key"}).status_code == 401
    answer = replay_archive(keyed, body, **{"x-functions-key": "master-key"})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["counts"]) == {
        "read",
        "derived",
        "noCommands",
        "duplicate",
        "unknownSource",
        "redacted",
        "invalid",
        "enqueued",
    }
    bad = replay_archive(keyed, {"since": now.isoformat()}, **{"x-functions-key": "master-key"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_a_lost_parked_command_comes_back_from_the_archive(stack: Stack) -> None:
    """Graph refuses the push for good (403: the app lacked its permission), the worker parks it, the
    parked copy is lost; once Graph accepts again, the archive is all that is left to replay from. A
    refusal, not a 5xx outage, so the shared circuit breaker is not involved."""
    stack.host.wait_until_idle(30)
    stack.clear_poison()
    since = datetime.now(UTC)  # the host's clock is this process's: a margin would take in the test before
    refusal = [{"status": 403, "match": {"pathContains": "e2e-archived", "methods": ["PATCH"]}}]
    httpx.post(f"{stack.graph_url}/_emulator/faults/next", json=refusal, timeout=10).raise_for_status()
    try:
        delivered = stack.post(event("x.created", content("e2e-archived", title="From the archive")))
        assert delivered.status_code == 202
        stack.wait_for(lambda: len(stack.poison()) == 1, timeout=60)
    finally:
        httpx.delete(f"{stack.graph_url}/_emulator/faults", timeout=10)
    stack.host.wait_until_idle(30)
    assert stack.poison()[0]["lastError"]["kind"] == "permanent"
    stack.clear_poison()  # lost: the parked copy is gone, and with it the command
    until = datetime.now(UTC) + timedelta(seconds=1)
    assert stack.graph_get("e2e-archived").status_code == 404

    dry = replay_archive(stack.intake, window(since, until, source="demo", dryRun=True)).json()
    assert (dry["counts"]["read"], dry["counts"]["enqueued"]) == (1, 1), dry["commands"]
    [command] = dry["commands"]
    assert (command["externalId"], command["correlationId"]) == ("e2e-archived", delivered.json()["correlationId"])

    done = replay_archive(stack.intake, window(since, until, source="demo")).json()
    assert done["counts"]["enqueued"] == 1
    stack.wait_for(lambda: stack.graph_get("e2e-archived").status_code == 200, timeout=30)
    assert stack.graph_get("e2e-archived").json()["title"] == "From the archive"
    again = replay_archive(stack.intake, window(since, until, source="demo")).json()
    assert again["counts"]["enqueued"] == 1  # queued again, and skipped by the ledger
    stack.host.wait_until_idle(30)
    assert stack.poison() == []
    assert stack.graph_get("e2e-archived").json()["title"] == "From the archive"
