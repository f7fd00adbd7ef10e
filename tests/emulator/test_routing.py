"""Graph-style answers for unknown paths, wrong methods, unsupported resources and the admin API."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ADMIN, APP_READ, APP_WRITE, PROVIDERS, assert_graph_error, content_url

# Graph's front door (shared by every workload) answers an unresolvable segment with this code
# (microsoft-graph-docs issue 10167).
PARSE_URI = "RequestBroker--ParseUri"


@pytest.mark.parametrize(
    ("path", "code", "fragment"),
    [
        ("/v1.0/employeeExperience/learningThings", PARSE_URI, "Resource not found for the segment 'learningThings'"),
        (
            "/v1.0/employeeExperiences/learningProviders",
            PARSE_URI,
            "Resource not found for the segment 'employeeExperiences'",
        ),
        ("/v1.0/me", PARSE_URI, "segment 'me'"),
        ("/v2.0/employeeExperience/learningProviders", "badRequest", "Invalid version"),
        ("/employeeExperience/learningProviders", "badRequest", "Invalid version"),
        ("/v1.0/employeeExperience//learningProviders", "badRequest", "empty path segment"),
    ],
)
def test_unknown_paths(client: httpx.Client, path: str, code: str, fragment: str) -> None:
    assert_graph_error(client.get(path, headers=ADMIN), 400, code, fragment)


def test_unknown_segment_below_provider(client: httpx.Client, provider_id: str) -> None:
    response = client.get(f"{PROVIDERS}/{provider_id}/learningStuff", headers=APP_READ)
    assert_graph_error(response, 400, PARSE_URI, "segment 'learningStuff'")
    response = client.get(content_url(provider_id, "/abc/def"), headers=APP_READ)
    assert_graph_error(response, 400, PARSE_URI, "segment 'def'")


def test_segment_names_are_case_insensitive(client: httpx.Client, provider_id: str) -> None:
    response = client.get("/v1.0/EmployeeExperience/LearningProviders", headers=ADMIN)
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["value"]] == [provider_id]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", PROVIDERS, "GET, POST"),
        ("DELETE", PROVIDERS, "GET, POST"),
        ("POST", f"{PROVIDERS}/00000000-0000-0000-0000-000000000001", "GET, PATCH, DELETE"),
        ("POST", content_url("p", ""), "GET"),
        ("PUT", content_url("p", "(externalId='a')"), "GET, PATCH"),  # DELETE takes /$ref (deleteForms documented)
        ("PATCH", content_url("p", "(externalId='a')/$ref"), "DELETE"),
    ],
)
def test_wrong_method(client: httpx.Client, method: str, path: str, allow: str) -> None:
    response = client.request(method, path, headers=APP_WRITE, json={})
    assert_graph_error(response, 405, "methodNotAllowed", method)
    assert response.headers["Allow"] == allow


@pytest.mark.parametrize(
    "path",
    [
        "/v1.0/employeeExperience",
        "/v1.0/employeeExperience/learningCourseActivities",
        f"{PROVIDERS}/p/learningCourseActivities",
    ],
)
def test_known_but_not_emulated(client: httpx.Client, path: str) -> None:
    assert_graph_error(client.get(path, headers=APP_READ), 501, "NotImplemented", "emulator")


def test_admin_errors(client: httpx.Client) -> None:
    assert_graph_error(client.get("/_emulator/nothing"), 404, "notFound", "/_emulator/nothing")
    response = client.post("/_emulator/faults")
    assert_graph_error(response, 405, "methodNotAllowed")
    assert response.headers["Allow"] == "GET, PUT, DELETE"
    health = client.get("/_emulator/health")
    assert health.json()["status"] == "ok"
    assert health.headers["request-id"]


def test_request_log_and_state(client: httpx.Client, provider_id: str) -> None:
    client.get(PROVIDERS, headers={**ADMIN, "client-request-id": "trace-me"})
    client.get(PROVIDERS)
    log = client.get("/_emulator/requests").json()["value"]
    assert log[-2]["clientRequestId"] == "trace-me"
    assert log[-2]["tokenKind"] == "delegated"
    assert log[-2]["status"] == 200
    assert log[-1]["tokenKind"] is None
    assert log[-1]["status"] == 401
    assert {"time", "method", "path", "status", "faulted", "requestId", "durationMs"} <= set(log[-1])
    assert client.delete("/_emulator/requests").status_code == 204
    assert client.get("/_emulator/requests").json()["value"] == []
    state = client.get("/_emulator/state").json()
    [tenant] = state["tenants"].values()
    assert [p["id"] for p in tenant["providers"]] == [provider_id]
