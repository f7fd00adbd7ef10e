"""The endpoint's own HTTP contract: protocol errors, /dev/token, the control routes and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import tokens
from local.identity import DEV_ADMIN_OBJECT_ID, DEV_CLIENT_ID, IdentityServer, derived_object_id, run_in_thread

from .conftest import HEADER, NO_ROLE_CLIENT_ID, UAMI_CLIENT_ID

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAPH = "https://graph.microsoft.com"


@pytest.fixture
def http(endpoint: IdentityServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.base_url, timeout=5) as client:
        yield client


def msi(http: httpx.Client, header: str | None = HEADER, **params: str) -> httpx.Response:
    query = {"api-version": "2019-08-01", "resource": GRAPH} | params
    headers = {"X-IDENTITY-HEADER": header} if header is not None else {}
    return http.get("/msi/token", params={k: v for k, v in query.items() if v != ""}, headers=headers)


def test_response_has_app_service_shape(http: httpx.Client) -> None:
    before = int(time.time())
    body = msi(http).json()

    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str)  # App Service sends a string
    assert before + 3600 <= int(body["expires_on"]) <= int(time.time()) + 3600
    assert (body["resource"], body["token_type"]) == (GRAPH, "Bearer")
    assert tokens.verify(body["access_token"])["appid"] == body["client_id"]


@pytest.mark.parametrize(
    ("header", "message"), [(None, "header is missing"), ("wrong", "does not match"), ("", "does not match")]
)
def test_missing_or_wrong_header_is_401(http: httpx.Client, header: str | None, message: str) -> None:
    resp = msi(http, header=header)

    assert resp.status_code == 401
    body = resp.json()
    assert body["statusCode"] == 401
    assert message in body["message"]
    assert "access_token" not in body


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"resource": ""}, "'resource' query parameter is required"),
        ({"api-version": "2017-09-01"}, "api-version '2017-09-01' is not supported"),
        ({"api-version": ""}, "api-version '' is not supported"),
        ({"client_id": "nope"}, "identity not found (client_id=nope)"),
        ({"object_id": "nope"}, "identity not found (object_id=nope)"),
        ({"mi_res_id": "/subscriptions/x"}, "identity not found (mi_res_id=/subscriptions/x)"),
        ({"client_id": UAMI_CLIENT_ID, "object_id": "x"}, "Only one of"),
    ],
)
def test_bad_requests_are_400_with_app_service_body(http: httpx.Client, params: dict[str, str], message: str) -> None:
    resp = msi(http, **params)

    assert resp.status_code == 400
    assert resp.json()["statusCode"] == 400
    assert message in resp.json()["message"]


@pytest.mark.parametrize("resource", [GRAPH, GRAPH + "/.default"])
def test_resource_with_or_without_default_suffix_is_the_audience(http: httpx.Client, resource: str) -> None:
    body = msi(http, resource=resource).json()

    assert body["resource"] == GRAPH
    assert tokens.verify(body["access_token"], audiences=(GRAPH,))["aud"] == GRAPH


def test_other_resources_get_their_own_audience(http: httpx.Client) -> None:
    body = msi(http, resource="https://storage.azure.com/").json()

    with pytest.raises(tokens.TokenError, match="Invalid audience"):
        tokens.verify(body["access_token"])  # the Graph emulator must reject it
    assert tokens.verify(body["access_token"], audiences=("https://storage.azure.com/",))


def test_user_assigned_ids_are_case_insensitive(http: httpx.Client) -> None:
    body = msi(http, client_id=UAMI_CLIENT_ID.upper()).json()

    assert body["client_id"] == UAMI_CLIENT_ID
    assert tokens.verify(body["access_token"])["oid"] == derived_object_id(UAMI_CLIENT_ID)


def test_dev_token_delegated_for_the_local_admin(http: httpx.Client) -> None:
    resp = http.post(
        "/dev/token",
        json={"resource": GRAPH, "scopes": ["LearningProvider.ReadWrite"]},
        headers={"X-IDENTITY-HEADER": HEADER},
    )

    assert resp.status_code == 200
    body = resp.json()
    claims = tokens.verify(body["access_token"])
    assert claims["idtyp"] == "user"
    assert claims["scp"] == "LearningProvider.ReadWrite"
    assert (claims["oid"], claims["appid"]) == (DEV_ADMIN_OBJECT_ID, DEV_CLIENT_ID)
    assert "roles" not in claims
    assert tokens.delegated_scopes(claims) == {"LearningProvider.ReadWrite"}
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}


def test_dev_token_accepts_qualified_and_default_scopes(endpoint: IdentityServer) -> None:
    body = endpoint.dev_token(scopes=[f"{GRAPH}/.default", f"{GRAPH}/LearningContent.Read.All"])

    assert tokens.verify(body["access_token"])["scp"] == "LearningProvider.ReadWrite LearningContent.Read.All"


def test_dev_token_app_roles(endpoint: IdentityServer) -> None:
    with_role = tokens.verify(endpoint.dev_token(resource=GRAPH, roles=["LearningContent.Read.All"])["access_token"])
    without = tokens.verify(endpoint.dev_token(resource=GRAPH, roles=[])["access_token"])

    assert (with_role["idtyp"], with_role["roles"]) == ("app", ["LearningContent.Read.All"])
    assert "scp" not in with_role
    assert without["idtyp"] == "app"
    assert "roles" not in without


@pytest.mark.parametrize(
    ("body", "header", "status", "message"),
    [
        ({"scopes": ["LearningProvider.ReadWrite"]}, "wrong", 401, "does not match"),
        ({"resource": GRAPH}, HEADER, 400, "either 'scopes'"),
        ({"scopes": ["a"], "roles": ["b"]}, HEADER, 400, "either 'scopes'"),
        ({"scopes": "LearningProvider.ReadWrite"}, HEADER, 400, "list of non-empty strings"),
        ({"scopes": ["https://other.example/X.Read"]}, HEADER, 400, "is not for resource"),
        (["not", "an", "object"], HEADER, 400, "JSON object"),
    ],
)
def test_dev_token_rejects(http: httpx.Client, body: Any, header: str, status: int, message: str) -> None:
    resp = http.post("/dev/token", json=body, headers={"X-IDENTITY-HEADER": header})

    assert resp.status_code == status
    assert message in resp.json()["message"]


def test_faults_over_http_apply_in_order_then_clear(endpoint: IdentityServer, http: httpx.Client) -> None:
    queued = http.post("/_identity/faults/next", json=[{"status": 500}, {"status": 429, "retryAfter": 7}])
    assert queued.json() == {"pending": 2}
    assert http.get("/_identity/health").json()["pendingFaults"] == 2

    first, second, third = msi(http), msi(http), msi(http)

    assert [first.status_code, second.status_code, third.status_code] == [500, 429, 200]
    assert first.json()["statusCode"] == 500
    assert second.headers["Retry-After"] == "7"
    http.post("/_identity/faults/next", json={"status": 503})
    assert http.delete("/_identity/faults").json() == {"pending": 0}
    assert msi(http).status_code == 200


def test_faults_apply_to_dev_token_too(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"status": 503}])

    with pytest.raises(httpx.HTTPStatusError, match="503"):
        endpoint.dev_token(scopes=["LearningProvider.ReadWrite"])


def test_latency_fault_delays_a_normal_answer(http: httpx.Client, endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"latencyMs": 300}])
    started = time.monotonic()

    resp = msi(http)

    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.28


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "drop": True},
        {"status": "500"},
        {"status": 700},
        {"latencyMs": -1},
        {"retryAfter": 1},
        {},
        {"sttaus": 500},
        "500",
    ],
)
def test_invalid_faults_are_rejected(http: httpx.Client, endpoint: IdentityServer, fault: Any) -> None:
    resp = http.post("/_identity/faults/next", json=[fault])

    assert resp.status_code == 400
    assert endpoint.state.pending_faults == 0


def test_request_log_has_no_secrets_and_records_outcomes(http: httpx.Client) -> None:
    msi(http, client_id=UAMI_CLIENT_ID)
    msi(http, header="wrong")
    http.post("/dev/token", json={"scopes": ["LearningProvider.ReadWrite"]}, headers={"X-IDENTITY-HEADER": HEADER})

    log = http.get("/_identity/requests").json()["requests"]

    assert [(e["path"], e["status"]) for e in log] == [("/msi/token", 200), ("/msi/token", 401), ("/dev/token", 200)]
    assert log[0]["query"] == {"api-version": "2019-08-01", "resource": GRAPH, "client_id": UAMI_CLIENT_ID}
    assert log[0]["identity"] == UAMI_CLIENT_ID
    assert "does not match" in log[1]["error"]
    dumped = json.dumps(log)
    assert HEADER not in dumped
    assert "wrong" not in dumped
    assert "eyJ" not in dumped  # no JWTs


def test_health_lists_identities_without_the_secret(http: httpx.Client) -> None:
    body = http.get("/_identity/health").json()

    assert body["status"] == "ok"
    assert [i["clientId"] for i in body["userAssigned"]] == [UAMI_CLIENT_ID, NO_ROLE_CLIENT_ID]
    assert body["userAssigned"][1]["roles"] == []
    assert HEADER not in json.dumps(body)


def test_no_system_identity_means_identity_not_found() -> None:
    with run_in_thread(header="h", system=False) as idp, httpx.Client(base_url=idp.base_url) as client:
        resp = msi(client, header="h")

    assert resp.status_code == 400
    assert "identity not found (system)" in resp.json()["message"]


def test_system_roles_are_configurable() -> None:
    with (
        run_in_thread(header="h", system_roles=["LearningContent.Read.All"]) as idp,
        httpx.Client(base_url=idp.base_url) as client,
    ):
        claims = tokens.verify(msi(client, header="h").json()["access_token"])

    assert claims["roles"] == ["LearningContent.Read.All"]


def test_cli_port_0_prints_ready_line_and_serves(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.txt"
    args = [
        sys.executable, "-m", "local.identity", "--port", "0", "--header", "cli-secret",
        "--client-id", f"{UAMI_CLIENT_ID}=", "--roles", "LearningContent.Read.All", "--lifetime", "900",
    ]  # fmt: skip
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("identity endpoint listening on http://127.0.0.1:")
            assert line.endswith("/msi/token")
            endpoint = line.removeprefix("identity endpoint listening on ")
            assert not endpoint.endswith(":0/msi/token")

            def get(**params: str) -> dict[str, Any]:
                query = {"api-version": "2019-08-01", "resource": GRAPH} | params
                resp = httpx.get(endpoint, params=query, headers={"X-IDENTITY-HEADER": "cli-secret"}, timeout=5)
                result: dict[str, Any] = resp.json()
                return result

            system = get()
            uami = get(client_id=UAMI_CLIENT_ID)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    assert tokens.verify(system["access_token"])["roles"] == ["LearningContent.Read.All"]
    assert "roles" not in tokens.verify(uami["access_token"])
    assert int(system["expires_on"]) - time.time() == pytest.approx(900, abs=30)
    assert proc.returncode == 0
    logs = stderr_path.read_text()
    assert "/msi/token status=200" in logs
    assert "cli-secret" not in logs
    assert system["access_token"] not in logs


def test_cli_refuses_to_start_without_a_header(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IDENTITY_HEADER"}

    proc = subprocess.run(
        [sys.executable, "-m", "local.identity", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert proc.returncode == 2
    assert "--header" in proc.stderr
