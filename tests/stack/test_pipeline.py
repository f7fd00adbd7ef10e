"""Signed webhook -> intake -> Azurite queue -> worker -> Graph emulator, through the app's own functions."""

from __future__ import annotations

import time

from tests.stack.conftest import Stack
from tests.webhooks import content, event


def test_upsert_then_delete_reaches_graph(stack: Stack) -> None:
    response = stack.post(event("com.lms.course.created", content("e2e-1", level="intermediate")))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    stack.wait_for(lambda: stack.graph_get("e2e-1").status_code == 200)
    assert stack.graph_get("e2e-1").json()["level"] == "intermediate"

    assert stack.post(event("com.lms.course.deleted", subject="e2e-1")).status_code == 202
    stack.wait_for(lambda: stack.graph_get("e2e-1").status_code == 404)


def test_wrong_signature_is_401_and_changes_nothing(stack: Stack) -> None:
    response = stack.post(
        event("x.created", content("e2e-unsigned")), secret="whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:vlsync:problem:signature-invalid"
    stack.host.wait_until_idle(10)
    assert stack.graph_get("e2e-unsigned").status_code == 404


def test_bad_level_is_400_naming_the_field(stack: Stack) -> None:
    response = stack.post(event("x.created", content("e2e-bad", level="expert")))
    assert response.status_code == 400
    assert [e["pointer"] for e in response.json()["errors"]] == ["/data/level"]


def test_unknown_source_is_404(stack: Stack) -> None:
    assert stack.post(event("x.created", content()), source="nobody").status_code == 404


def test_batch_and_hostile_ids_all_arrive(stack: Stack) -> None:
    ids = [f"batch-{i}" for i in range(20)] + ["O'Brien/1", "100% + #2", "Ünïcødé курс"]
    batch = [event("x.upserted", content(i)) for i in ids]
    response = stack.post(batch, content_type="application/cloudevents-batch+json")
    assert response.status_code == 202
    assert response.json()["accepted"] == len(ids)
    stack.host.wait_until_idle(30)
    assert all(stack.graph_get(i).status_code == 200 for i in ids)


def test_throttling_is_retried_until_applied(stack: Stack) -> None:
    stack_faults = [{"status": 429, "retryAfterSeconds": 1}, {"status": 503, "retryAfterSeconds": 1}]
    import httpx

    httpx.post(f"{stack.graph_url}/_emulator/faults/next", json=stack_faults, timeout=10).raise_for_status()
    assert stack.post(event("x.created", content("e2e-throttled"))).status_code == 202
    stack.wait_for(lambda: stack.graph_get("e2e-throttled").status_code == 200, timeout=20)


def test_permanent_failure_is_parked_once_with_reason(stack: Stack) -> None:
    stack.clear_poison()
    assert stack.post(event("x.created", content("e2e-orphan")), source="orphan").status_code == 202
    stack.wait_for(lambda: len(stack.poison()) == 1)
    [parked] = stack.poison()
    assert parked["externalId"] == "e2e-orphan"
    assert parked["lastError"]["status"] == 400
    patches = [r for r in stack.graph_requests() if "e2e-orphan" in str(r) and r.get("method") == "PATCH"]
    assert len(patches) == 1  # parked at once, not retried five times


def test_a_persistent_transient_refusal_is_parked_by_the_last_attempt(stack: Stack) -> None:
    """A 409 that never clears is retried, not counted by the circuit (Graph answers), and parked by the
    worker's own last attempt: it never expires and says why."""
    import httpx

    stack.clear_poison()
    refusal = {"status": 409, "match": {"pathContains": "e2e-refused"}}
    httpx.post(f"{stack.graph_url}/_emulator/faults/next", json=[refusal] * 60, timeout=10).raise_for_status()
    try:
        assert stack.post(event("x.created", content("e2e-refused"))).status_code == 202
        stack.wait_for(lambda: len(stack.poison()) == 1, timeout=60)
    finally:
        httpx.delete(f"{stack.graph_url}/_emulator/faults", timeout=10)
    [poisoned] = stack.poison()
    assert poisoned["externalId"] == "e2e-refused"
    # Parked by the worker on its last attempt (never expires, says why), not the host's 7-day copy.
    assert poisoned["lastError"]["kind"] == "transient"
    assert poisoned["lastError"]["status"] == 409
    assert poisoned["lastError"]["attempts"] == 5


def test_a_graph_outage_opens_the_circuit_and_parks_nothing(stack: Stack) -> None:
    """Graph down (503 for every call): after GRAPH_CIRCUIT_FAILURES failures the circuit opens and the
    command waits in the queue; when Graph is back, a probe closes the circuit and the command lands."""
    import httpx

    stack.clear_poison()
    outage = {"serverErrorRatio": 1.0, "serverErrorStatus": 503}
    httpx.put(f"{stack.graph_url}/_emulator/faults", json=outage, timeout=10).raise_for_status()
    try:
        assert stack.post(event("x.created", content("e2e-outage", title="Through the outage"))).status_code == 202
        # Five failed attempts (30 s of queue time compressed to 1 s visibility): the circuit opens.
        stack.wait_for(lambda: circuit_state(stack) == "open", timeout=60)
        time.sleep(3)  # a cool-down and a failed probe later, still nothing parked
        assert stack.poison() == []
    finally:
        httpx.delete(f"{stack.graph_url}/_emulator/faults", timeout=10)
    stack.wait_for(lambda: stack.graph_get("e2e-outage").status_code == 200, timeout=60)
    assert stack.graph_get("e2e-outage").json()["title"] == "Through the outage"
    stack.wait_for(lambda: circuit_state(stack) == "closed", timeout=10)
    assert stack.poison() == []


def circuit_state(stack: Stack) -> str:
    from shared import bootstrap

    return str(bootstrap.circuit_breaker().view()["state"])
