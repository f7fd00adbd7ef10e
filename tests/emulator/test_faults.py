"""Fault injection: scripted faults, seeded ratios, latency, dropped connections, token bucket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url


def list_url(provider_id: str) -> str:
    return content_url(provider_id, "")


def script(client: httpx.Client, entries: list[dict[str, Any]]) -> None:
    response = client.post("/_emulator/faults/next", json=entries)
    assert response.status_code == 200, response.text


def test_scripted_faults_apply_in_order(client: httpx.Client, provider_id: str) -> None:
    script(client, [{"status": 429, "retryAfterSeconds": 1}, {"status": 503}, {"status": 500}])
    throttled = client.get(list_url(provider_id), headers=APP_READ)
    error = assert_graph_error(throttled, 429, "tooManyRequests", "Retry after 1 seconds")
    assert throttled.headers["Retry-After"] == "1"
    assert error["innerError"]["request-id"]

    unavailable = client.get(list_url(provider_id), headers=APP_READ)
    assert_graph_error(unavailable, 503, "serviceUnavailable", "Retry after")
    assert int(unavailable.headers["Retry-After"]) >= 1

    broken = client.get(list_url(provider_id), headers=APP_READ)
    assert_graph_error(broken, 500, "internalServerError")
    assert "Retry-After" not in broken.headers

    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    log = client.get("/_emulator/requests").json()["value"]
    assert [(r["status"], r["faulted"]) for r in log[-4:]] == [
        (429, "scripted:429"),
        (503, "scripted:503"),
        (500, "scripted:500"),
        (200, None),
    ]
    assert log[-1]["tokenKind"] == "app"


@pytest.mark.parametrize(("status", "code"), [(429, "tooManyRequests"), (503, "serviceUnavailable")])
def test_a_retry_hint_only_in_the_body(client: httpx.Client, provider_id: str, status: int, code: str) -> None:
    # The Viva error tables: {"code": "tooManyRequests", "message": "Retry after {noOfMinutes} minutes"}.
    script(client, [{"status": status, "retryAfterMinutesInBody": 3}])
    response = client.get(list_url(provider_id), headers=APP_READ)
    error = assert_graph_error(response, status, code)
    assert error["message"] == "Retry after 3 minutes"
    assert "Retry-After" not in response.headers
    assert client.get("/_emulator/faults").json()["script"] == []


def test_scripted_fault_happens_before_auth(client: httpx.Client, provider_id: str) -> None:
    script(client, [{"status": 429}])
    assert client.get(list_url(provider_id)).status_code == 429  # no token at all
    assert client.get(list_url(provider_id)).status_code == 401


def test_scripted_faults_respect_match(client: httpx.Client, provider_id: str) -> None:
    script(client, [{"status": 429, "match": {"methods": ["PATCH"], "pathContains": "learningContents"}}])
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    url = content_url(provider_id, "(externalId='m')")
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 429
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202


def test_dropped_connection(client: httpx.Client, provider_id: str) -> None:
    script(client, [{"drop": True}])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(list_url(provider_id), headers=APP_READ)
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    dropped = client.get("/_emulator/requests").json()["value"][-2]
    assert dropped["status"] is None
    assert dropped["faulted"] == "scripted:drop"


def test_latency(client: httpx.Client, provider_id: str) -> None:
    script(client, [{"latencyMs": 400}])
    started = time.perf_counter()
    response = client.get(list_url(provider_id), headers=APP_READ)
    slow = time.perf_counter() - started
    assert response.status_code == 200  # a latency-only fault still serves the request
    started = time.perf_counter()
    client.get(list_url(provider_id), headers=APP_READ)
    fast = time.perf_counter() - started
    assert slow >= 0.4
    assert fast < 0.3  # the entry was consumed by the first request


def test_configured_latency(client: httpx.Client, provider_id: str) -> None:
    client.put("/_emulator/faults", json={"latencyMs": 250, "match": {"methods": ["GET"]}}).raise_for_status()
    started = time.perf_counter()
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    assert time.perf_counter() - started >= 0.25


def statuses(client: httpx.Client, provider_id: str, count: int) -> list[int]:
    return [client.get(list_url(provider_id), headers=APP_READ).status_code for _ in range(count)]


def test_server_error_ratio_is_seeded(client: httpx.Client, provider_id: str) -> None:
    config = {"seed": 7, "serverErrorRatio": 0.3, "serverErrorStatus": 500}
    client.put("/_emulator/faults", json=config).raise_for_status()
    first = statuses(client, provider_id, 40)
    client.put("/_emulator/faults", json=config).raise_for_status()
    second = statuses(client, provider_id, 40)
    assert first == second
    assert set(first) == {200, 500}
    assert 4 <= first.count(500) <= 20
    client.put("/_emulator/faults", json={**config, "seed": 8}).raise_for_status()
    assert statuses(client, provider_id, 40) != first


def test_throttle_ratio_and_drop_ratio(client: httpx.Client, provider_id: str) -> None:
    client.put("/_emulator/faults", json={"seed": 3, "throttleRatio": 1, "retryAfterSeconds": 2}).raise_for_status()
    response = client.get(list_url(provider_id), headers=APP_READ)
    assert_graph_error(response, 429, "tooManyRequests", "Retry after 2 seconds")
    assert response.headers["Retry-After"] == "2"

    client.put("/_emulator/faults", json={"dropConnectionRatio": 1}).raise_for_status()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(list_url(provider_id), headers=APP_READ)
    assert client.delete("/_emulator/faults").status_code == 204
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200


def test_config_match_limits_faults(client: httpx.Client, provider_id: str) -> None:
    client.put(
        "/_emulator/faults",
        json={"throttleRatio": 1, "match": {"methods": ["PATCH", "DELETE"], "pathContains": "learningContents"}},
    ).raise_for_status()
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    url = content_url(provider_id, "(externalId='x')")
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 429


def test_token_bucket(client: httpx.Client, provider_id: str) -> None:
    client.put("/_emulator/faults", json={"tokenBucket": {"capacity": 3, "refillPerSecond": 2}}).raise_for_status()
    assert statuses(client, provider_id, 3) == [200, 200, 200]
    throttled = client.get(list_url(provider_id), headers=APP_READ)
    assert_graph_error(throttled, 429, "tooManyRequests")
    assert throttled.headers["Retry-After"] == "1"
    time.sleep(0.55)  # 2 tokens/s: one token back after 0.5 s
    assert client.get(list_url(provider_id), headers=APP_READ).status_code == 200
    assert client.get("/_emulator/faults").json()["injected"] == 1


@pytest.mark.parametrize(
    "config",
    [
        {"throttleRatio": 1.5},
        {"serverErrorStatus": 404},
        {"tokenBucket": {"capacity": 0, "refillPerSecond": 1}},
        {"latencyMs": -1},
        {"match": {"methods": ["FETCH"]}},
        {"unknownKnob": True},
        [1, 2],
    ],
)
def test_bad_fault_config(client: httpx.Client, config: Any) -> None:
    assert_graph_error(client.put("/_emulator/faults", json=config), 400, "badRequest", "Invalid fault configuration")


@pytest.mark.parametrize(
    "entries",
    [
        [{}],
        [{"status": 200}],
        [{"status": 429, "drop": True}],
        [{"bogus": 1}],
        "x",
        [{"status": 500, "retryAfterMinutesInBody": 1}],
        [{"status": 429, "retryAfterMinutesInBody": 1, "retryAfterSeconds": 60}],
    ],
)
def test_bad_script(client: httpx.Client, entries: Any) -> None:
    assert_graph_error(client.post("/_emulator/faults/next", json=entries), 400, "badRequest")


def test_faults_view_and_reset(client: httpx.Client, provider_id: str) -> None:
    client.put("/_emulator/faults", json={"seed": 1, "throttleRatio": 0.2}).raise_for_status()
    script(client, [{"status": 503}, {"drop": True}])
    view = client.get("/_emulator/faults").json()
    assert view["config"]["throttleRatio"] == 0.2
    assert view["script"] == [{"status": 503}, {"drop": True}]
    assert client.post("/_emulator/reset").status_code == 204
    assert client.get("/_emulator/faults").json() == {"config": None, "script": [], "injected": 0, "tokens": None}
    assert client.get("/_emulator/requests").json()["value"] == []
    assert client.get("/_emulator/state").json()["tenants"] == {}
    # Admin calls are never faulted or logged.
    client.put("/_emulator/faults", json={"throttleRatio": 1}).raise_for_status()
    assert client.get("/_emulator/health").status_code == 200
    assert client.get("/_emulator/requests").json()["value"] == []
