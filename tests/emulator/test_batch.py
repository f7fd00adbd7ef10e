"""``POST /$batch`` (Graph JSON batching) and the per-request latency."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.graph_emulator import run_in_thread
from shared.odata import key_literal

from .conftest import (
    ADMIN,
    APP_READ,
    APP_WRITE,
    CONTENT_BODY,
    PROVIDER_BODY,
    PROVIDERS,
    USER_CONTENT_READ,
    assert_graph_error,
)

JSON = {"Content-Type": "application/json"}


def upsert(provider_id: str, ext: str, request_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "PATCH",
        "url": f"/employeeExperience/learningProviders/{provider_id}/learningContents(externalId={key_literal(ext)})",
        "headers": JSON,
        "body": {**CONTENT_BODY, **changes},
    }


def batch(
    client: httpx.Client, requests: list[dict[str, Any]], headers: dict[str, str] = APP_WRITE, version: str = "v1.0"
) -> httpx.Response:
    return client.post(f"/{version}/$batch", json={"requests": requests}, headers=headers)


def by_id(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["responses"]}


def test_a_batch_of_upserts_answers_each_and_logs_each(client: httpx.Client, provider_id: str) -> None:
    client.delete("/_emulator/requests")
    response = batch(client, [upsert(provider_id, f"c/{i}", str(i), title=f"T{i}") for i in range(1, 4)])
    answers = by_id(response)
    assert [item["id"] for item in response.json()["responses"]] == ["3", "2", "1"]  # not the request order
    log = client.get("/_emulator/requests").json()["value"]
    outer = [r for r in log if r["batchRequestId"] is None]
    inner = [r for r in log if r["batchRequestId"] is not None]
    assert [(r["method"], r["path"], r["status"]) for r in outer] == [("POST", "/v1.0/$batch", 200)]
    assert {r["batchRequestId"] for r in inner} == {response.headers["request-id"]}
    assert sorted(r["path"] for r in inner) == sorted(
        f"/v1.0/employeeExperience/learningProviders/{provider_id}/learningContents(externalId={key_literal(f'c/{i}')})"
        for i in range(1, 4)
    )
    stats = client.get("/_emulator/requests/stats").json()
    assert stats == {"http": 1, "batches": 1, "batched": 3, "writes": 3, "statuses": {"202": 3, "200": 1}}
    for i in range(1, 4):
        assert answers[str(i)]["status"] == 202
        assert answers[str(i)]["body"]["externalId"] == f"c/{i}"
        assert answers[str(i)]["body"]["title"] == f"T{i}"
        assert answers[str(i)]["headers"]["request-id"]
        got = client.get(
            f"{PROVIDERS}/{provider_id}/learningContents(externalId={key_literal(f'c/{i}')})", headers=APP_READ
        )
        assert got.json()["id"] == answers[str(i)]["body"]["id"]


def test_beta_and_relative_urls_without_a_leading_slash(client: httpx.Client, provider_id: str) -> None:
    request = upsert(provider_id, "b", "one")
    request["url"] = request["url"].lstrip("/")
    answers = by_id(batch(client, [request, {"id": "two", "method": "GET", "url": request["url"]}], version="beta"))
    assert answers["one"]["status"] == 202
    assert answers["two"]["status"] in (200, 404)  # requests of a parallel batch have no order


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"requests": []}, "no requests"),
        ({}, "Invalid batch payload format"),
        ({"requests": {}}, "Invalid batch payload format"),
        ({"requests": [], "extra": 1}, "Invalid batch payload format"),
        ({"requests": [{"id": "1", "method": "GET"}]}, "'url'"),
        ({"requests": [{"id": "", "method": "GET", "url": "/x"}]}, "'id'"),
        ({"requests": [{"id": "1", "method": "FETCH", "url": "/x"}]}, "'method'"),
        ({"requests": [{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/x"}]}, "relative"),
        (
            {"requests": [{"id": "a", "method": "GET", "url": "/x"}, {"id": "A", "method": "GET", "url": "/x"}]},
            "Request Id A has to be unique",
        ),
        (
            {
                "requests": [
                    {"id": "1", "method": "GET", "url": "/x"},
                    {"id": "2", "method": "GET", "url": "/x", "dependsOn": ["9"]},
                ]
            },
            "not in the batch",
        ),
        (
            {
                "requests": [
                    {"id": "1", "method": "GET", "url": "/x", "dependsOn": ["2"]},
                    {"id": "2", "method": "GET", "url": "/x", "dependsOn": ["1"]},
                ]
            },
            "fully sequential or fully parallel",
        ),
        (
            {
                "requests": [
                    {"id": "1", "method": "GET", "url": "/x"},
                    {"id": "2", "method": "GET", "url": "/x", "dependsOn": ["1"]},
                    {"id": "3", "method": "GET", "url": "/x"},
                ]
            },
            "fully sequential or fully parallel",
        ),
        ({"requests": [{"id": str(i), "method": "GET", "url": "/x"} for i in range(21)]}, "at most 20"),
    ],
)
def test_a_malformed_batch_is_refused_as_a_whole(client: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    client.delete("/_emulator/requests")
    response = client.post("/v1.0/$batch", json=body, headers=APP_WRITE)
    assert_graph_error(response, 400, "BadRequest", fragment)
    assert client.get("/_emulator/requests/stats").json()["batched"] == 0  # nothing ran


def test_twenty_is_the_limit(client: httpx.Client, provider_id: str) -> None:
    answers = by_id(batch(client, [upsert(provider_id, f"x{i}", str(i)) for i in range(20)]))
    assert {a["status"] for a in answers.values()} == {202}
    assert len(client.get(f"{PROVIDERS}/{provider_id}/learningContents", headers=APP_READ).json()["value"]) == 20


def test_each_request_is_validated_and_authorised_on_its_own(client: httpx.Client, provider_id: str) -> None:
    no_type = upsert(provider_id, "n", "no-type")
    del no_type["headers"]
    requests = [
        upsert(provider_id, "ok", "ok"),
        upsert(provider_id, "bad", "bad", level="expert"),
        no_type,
        {"id": "providers", "method": "GET", "url": "/employeeExperience/learningProviders"},  # needs delegated
        {"id": "nested", "method": "POST", "url": "/$batch", "headers": JSON, "body": {"requests": []}},
        {
            "id": "lost",
            "method": "GET",
            "url": f"/employeeExperience/learningProviders/{provider_id}/learningContents/nope",
        },
    ]
    answers = by_id(batch(client, requests))
    assert answers["ok"]["status"] == 202
    assert answers["bad"]["status"] == 400
    assert answers["bad"]["body"]["error"]["code"] == "badRequest"
    assert "level" in answers["bad"]["body"]["error"]["message"]
    assert answers["no-type"]["status"] == 400
    assert answers["no-type"]["body"]["error"]["code"] == "BadRequest"  # Content-Type is required with a body
    assert answers["providers"]["status"] == 403
    assert answers["nested"]["status"] == 400
    assert answers["lost"]["status"] == 404
    assert answers["lost"]["body"]["error"]["innerError"]["request-id"] == answers["lost"]["headers"]["request-id"]


def test_a_delegated_token_cannot_write_content_inside_a_batch_either(client: httpx.Client, provider_id: str) -> None:
    answers = by_id(batch(client, [upsert(provider_id, "u", "1")], headers=USER_CONTENT_READ))
    assert answers["1"]["status"] == 403


def test_a_refused_token_refuses_the_whole_batch(client: httpx.Client, provider_id: str) -> None:
    response = batch(client, [upsert(provider_id, "u", "1")], headers={"Authorization": "Bearer nonsense"})
    assert_graph_error(response, 401, "InvalidAuthenticationToken")


def test_an_inner_429_carries_its_own_retry_after_while_the_others_succeed(
    client: httpx.Client, provider_id: str
) -> None:
    fault = {"tokenBucket": {"capacity": 3, "refillPerSecond": 0.01}, "retryAfterSeconds": 7}
    assert client.put("/_emulator/faults", json=fault).status_code == 200
    response = batch(client, [upsert(provider_id, f"t{i}", str(i)) for i in range(5)])
    answers = by_id(response)
    statuses = sorted(a["status"] for a in answers.values())
    assert statuses == [202, 202, 202, 429, 429]  # the bucket took one token per inner request
    for answer in answers.values():
        if answer["status"] == 429:
            assert int(answer["headers"]["Retry-After"]) >= 1
            assert answer["body"]["error"]["code"] == "tooManyRequests"
    assert "Retry-After" not in response.headers
    log = client.get("/_emulator/requests").json()["value"]
    assert sum(r["faulted"] == "tokenBucket" for r in log) == 2
    # A single request now gets the 429 too: the batch spent the same bucket.
    single = client.patch("/v1.0" + upsert(provider_id, "s", "s")["url"], json=CONTENT_BODY, headers=APP_WRITE)
    assert single.status_code == 429


def test_depends_on_runs_in_order_and_a_failed_dependency_answers_424(client: httpx.Client, provider_id: str) -> None:
    first = upsert(provider_id, "d1", "1", level="expert")  # fails validation
    second = {**upsert(provider_id, "d2", "2"), "dependsOn": ["1"]}
    third = {**upsert(provider_id, "d3", "3"), "dependsOn": ["2"]}
    answers = by_id(batch(client, [first, second, third]))
    assert answers["1"]["status"] == 400
    assert answers["2"]["status"] == 424
    assert answers["3"]["status"] == 424
    assert answers["2"]["body"]["error"]["code"] == "failedDependency"
    assert client.get(f"{PROVIDERS}/{provider_id}/learningContents", headers=APP_READ).json()["value"] == []

    ok = [
        upsert(provider_id, "s1", "1", title="one"),
        {**upsert(provider_id, "s1", "2", title="two"), "dependsOn": ["1"]},
    ]
    answers = by_id(batch(client, ok))
    assert (answers["1"]["status"], answers["2"]["status"]) == (202, 202)
    got = client.get(f"{PROVIDERS}/{provider_id}/learningContents(externalId='s1')", headers=APP_READ).json()
    assert got["title"] == "two"  # run in dependency order


def test_scripted_faults_hit_inner_requests_unless_aimed_at_the_batch(client: httpx.Client, provider_id: str) -> None:
    client.post("/_emulator/faults/next", json={"status": 503, "retryAfterSeconds": 2})
    answers = by_id(batch(client, [upsert(provider_id, "f1", "1"), upsert(provider_id, "f2", "2")]))
    assert sorted(a["status"] for a in answers.values()) == [202, 503]
    client.post("/_emulator/faults/next", json={"status": 429, "match": {"pathContains": "$batch"}})
    whole = batch(client, [upsert(provider_id, "f3", "1")])
    assert_graph_error(whole, 429, "tooManyRequests")
    assert (
        client.get(f"{PROVIDERS}/{provider_id}/learningContents(externalId='f3')", headers=APP_READ).status_code == 404
    )


def test_batch_off_refuses_it_and_get_is_not_allowed(client: httpx.Client, provider_id: str) -> None:
    assert_graph_error(client.get("/v1.0/$batch", headers=APP_WRITE), 405, "methodNotAllowed")
    assert client.patch("/_emulator/settings", json={"batch": "off"}).json()["batch"] == "off"
    refused = batch(client, [upsert(provider_id, "o", "1")])
    assert_graph_error(refused, 400, "RequestBroker--ParseUri", "$batch")
    assert client.get("/_emulator/requests/stats").json()["batched"] == 0
    single = client.patch("/v1.0" + upsert(provider_id, "o", "1")["url"], json=CONTENT_BODY, headers=APP_WRITE)
    assert single.status_code == 202  # single requests still work: the client's fallback


# -- latency ------------------------------------------------------------------------------------------
def test_latency_is_paid_once_per_http_request_a_batch_included() -> None:
    waits: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    with (
        run_in_thread(latency_ms=40, sleep=recording_sleep) as emu,
        httpx.Client(base_url=emu.url, timeout=10) as client,
    ):
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        answers = by_id(batch(client, [upsert(provider_id, f"l{i}", str(i)) for i in range(10)]))
        assert len(answers) == 10
        client.get("/_emulator/health")  # the admin API is not a Graph round trip
    assert waits == [0.04, 0.04]  # the POST of the provider, the batch of ten


def test_latency_does_not_block_other_requests() -> None:
    """Counted, not timed: each request's latency wait holds until all eight are waiting at once,
    which only happens when the emulator serves them side by side (a blocking wait would see one)."""
    callers = 8
    waiting = most = 0
    all_waiting = asyncio.Event()  # bound to the emulator's loop on first use

    async def gate(seconds: float) -> None:
        nonlocal waiting, most
        waiting += 1
        most = max(most, waiting)
        if waiting == callers:
            all_waiting.set()
        with contextlib.suppress(TimeoutError):  # served one by one: give up, and the count says so
            await asyncio.wait_for(all_waiting.wait(), timeout=5)
        waiting -= 1

    with run_in_thread(latency_ms=400, sleep=gate) as emu:
        results: list[int] = []

        def call() -> None:
            results.append(httpx.get(f"{emu.url}{PROVIDERS}", headers=ADMIN, timeout=60).status_code)

        threads = [threading.Thread(target=call) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * callers
    assert most == callers


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8),
        min_size=1,
        max_size=20,
        unique_by=str.lower,
    )
)
def test_every_request_gets_exactly_one_answer_under_its_own_id(
    client: httpx.Client, provider_id: str, ids: list[str]
) -> None:
    response = batch(
        client, [upsert(provider_id, f"h{n}", request_id, title=request_id) for n, request_id in enumerate(ids)]
    )
    answers = response.json()["responses"]
    assert sorted(a["id"] for a in answers) == sorted(ids)
    for answer in answers:
        assert answer["status"] == 202
        assert answer["body"]["title"] == answer["id"]  # each answer is its own request's
