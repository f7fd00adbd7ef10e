"""The real ``azure.identity.ManagedIdentityCredential`` (msal-based) against the local endpoint.

These also pin down SDK behaviours the worker relies on: which exception each failure raises,
what is retried, and what is cached.
"""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceResponseError, ServiceResponseTimeoutError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

from local import tokens
from local.identity import SYSTEM_CLIENT_ID, SYSTEM_OBJECT_ID, IdentityServer, derived_object_id, run_in_thread

from .conftest import FAST_RETRY, GRAPH_SCOPE, NO_ROLE_CLIENT_ID, UAMI_CLIENT_ID


def statuses(idp: IdentityServer) -> list[int | None]:
    return [e["status"] for e in idp.requests()]


def test_system_assigned_token_verifies_as_graph_app_token(endpoint: IdentityServer) -> None:
    token = ManagedIdentityCredential().get_token(GRAPH_SCOPE)

    claims = tokens.verify(token.token)
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["idtyp"] == "app"
    assert "LearningContent.ReadWrite.All" in claims["roles"]
    assert (claims["appid"], claims["oid"]) == (SYSTEM_CLIENT_ID, SYSTEM_OBJECT_ID)
    assert "scp" not in claims
    assert abs(token.expires_on - (time.time() + 3600)) < 60
    (req,) = endpoint.requests()
    assert req["query"] == {"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"}


def test_user_assigned_by_client_id(endpoint: IdentityServer) -> None:
    token = ManagedIdentityCredential(client_id=UAMI_CLIENT_ID).get_token(GRAPH_SCOPE)

    claims = tokens.verify(token.token)
    assert claims["appid"] == UAMI_CLIENT_ID
    assert claims["oid"] == derived_object_id(UAMI_CLIENT_ID)
    assert claims["roles"] == ["LearningContent.ReadWrite.All"]
    assert endpoint.requests()[0]["query"]["client_id"] == UAMI_CLIENT_ID


@pytest.mark.parametrize("key", ["object_id", "resource_id"])
def test_user_assigned_by_object_id_or_resource_id(endpoint: IdentityServer, key: str) -> None:
    (uami,) = [i for i in endpoint.config.user_assigned if i.client_id == UAMI_CLIENT_ID]
    value = uami.object_id if key == "object_id" else uami.resource_id

    token = ManagedIdentityCredential(identity_config={key: value}).get_token(GRAPH_SCOPE)

    assert tokens.verify(token.token)["appid"] == UAMI_CLIENT_ID
    # msal sends App Service's name for a resource id: mi_res_id.
    wire_key = "mi_res_id" if key == "resource_id" else key
    assert endpoint.requests()[0]["query"][wire_key] == value


def test_identity_without_roles_gets_token_without_roles(endpoint: IdentityServer) -> None:
    claims = tokens.verify(ManagedIdentityCredential(client_id=NO_ROLE_CLIENT_ID).get_token(GRAPH_SCOPE).token)

    assert claims["idtyp"] == "app"
    assert "roles" not in claims
    assert tokens.app_roles(claims) == set()


def test_one_credential_caches_the_token(endpoint: IdentityServer) -> None:
    credential = ManagedIdentityCredential()

    first = credential.get_token(GRAPH_SCOPE)
    second = credential.get_token(GRAPH_SCOPE)

    assert second.token == first.token
    assert statuses(endpoint) == [200]


def test_tokens_within_five_minutes_of_expiry_are_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """msal treats a token with < 300 s left as expired: a short lifetime disables caching."""
    with run_in_thread(header="short", lifetime=200) as short:
        for name, value in short.env.items():
            monkeypatch.setenv(name, value)
        credential = ManagedIdentityCredential()

        credential.get_token(GRAPH_SCOPE)
        credential.get_token(GRAPH_SCOPE)

        assert statuses(short) == [200, 200]


def test_wrong_header_raises_credential_unavailable(endpoint: IdentityServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")

    with pytest.raises(CredentialUnavailableError, match=r"401, Unauthorized") as info:
        ManagedIdentityCredential().get_token(GRAPH_SCOPE)

    assert isinstance(info.value, ClientAuthenticationError)  # CredentialUnavailableError subclasses it
    assert statuses(endpoint) == [401]  # 401 is not retried


def test_unknown_client_id_raises_credential_unavailable(endpoint: IdentityServer) -> None:
    with pytest.raises(CredentialUnavailableError, match="identity not found"):
        ManagedIdentityCredential(client_id="00000000-dead-4000-8000-000000000000").get_token(GRAPH_SCOPE)

    assert statuses(endpoint) == [400]


@pytest.mark.parametrize("status", [500, 429])
def test_default_retry_policy_retries_a_transient_failure(endpoint: IdentityServer, status: int) -> None:
    """azure-core's RetryPolicy (not msal) retries 408/429/500/502/503/504; the first retry has no back-off."""
    endpoint.inject_faults([{"status": status}])

    token = ManagedIdentityCredential().get_token(GRAPH_SCOPE)

    assert tokens.verify(token.token)["idtyp"] == "app"
    assert statuses(endpoint) == [status, 200]


def test_retry_after_header_is_honoured(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"status": 503, "retryAfter": 1}])
    started = time.monotonic()

    ManagedIdentityCredential().get_token(GRAPH_SCOPE)

    assert time.monotonic() - started >= 0.9
    assert statuses(endpoint) == [503, 200]


def test_exhausted_5xx_raises_and_msal_throttles_the_next_call(endpoint: IdentityServer) -> None:
    """After a final 429/5xx, msal replays that failure for 5 s (Retry-After if sent) without calling the endpoint."""
    endpoint.inject_faults([{"status": 500}])
    credential = ManagedIdentityCredential(**FAST_RETRY)

    with pytest.raises(CredentialUnavailableError, match=r"500, Injected fault"):
        credential.get_token(GRAPH_SCOPE)
    with pytest.raises(CredentialUnavailableError, match=r"500, Injected fault"):
        credential.get_token(GRAPH_SCOPE)  # the endpoint would answer 200 now

    assert statuses(endpoint) == [500]
    assert tokens.verify(ManagedIdentityCredential().get_token(GRAPH_SCOPE).token)  # a new instance is not throttled


def test_non_json_error_body_surfaces_as_json_decode_error(endpoint: IdentityServer) -> None:
    """msal parses the body unconditionally: a plain-text error escapes as a bare ValueError."""
    endpoint.inject_faults([{"status": 502, "body": "Bad Gateway"}])

    with pytest.raises(ValueError, match="Expecting value") as info:
        ManagedIdentityCredential(**FAST_RETRY).get_token(GRAPH_SCOPE)

    assert not isinstance(info.value, ClientAuthenticationError)


def test_dropped_connection_is_retried_then_succeeds(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"drop": True}])

    ManagedIdentityCredential().get_token(GRAPH_SCOPE)

    assert statuses(endpoint) == [None, 200]


def test_dropped_connection_raises_service_response_error(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"drop": True}])

    with pytest.raises(ServiceResponseError, match="Remote end closed connection") as info:
        ManagedIdentityCredential(**FAST_RETRY).get_token(GRAPH_SCOPE)

    assert not isinstance(info.value, ClientAuthenticationError)
    assert [e.get("dropped") for e in endpoint.requests()] == [True]


def test_slow_endpoint_hits_the_read_timeout(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"latencyMs": 800}])

    with pytest.raises(ServiceResponseTimeoutError):
        ManagedIdentityCredential(read_timeout=0.2, **FAST_RETRY).get_token(GRAPH_SCOPE)

    deadline = time.monotonic() + 3  # let the server finish so the entry does not leak into the next test
    while not endpoint.requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses(endpoint) == [200]
