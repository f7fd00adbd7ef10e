"""The real ``azure.identity.aio.ManagedIdentityCredential`` against the local endpoint.

The aio credential does not use msal: it has its own client (aiohttp transport), so its exception
types and caching differ from the sync class. These tests pin the differences down.
"""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import ManagedIdentityCredential

from local import tokens
from local.identity import IdentityServer, run_in_thread

from .conftest import FAST_RETRY, GRAPH_SCOPE, NO_ROLE_CLIENT_ID, UAMI_CLIENT_ID


def statuses(idp: IdentityServer) -> list[int | None]:
    return [e["status"] for e in idp.requests()]


async def test_system_assigned_token(endpoint: IdentityServer) -> None:
    async with ManagedIdentityCredential() as credential:
        token = await credential.get_token(GRAPH_SCOPE)

    claims = tokens.verify(token.token)
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["idtyp"] == "app"
    assert "LearningContent.ReadWrite.All" in claims["roles"]
    assert "client_id" not in endpoint.requests()[0]["query"]


async def test_user_assigned_by_client_id(endpoint: IdentityServer) -> None:
    async with ManagedIdentityCredential(client_id=UAMI_CLIENT_ID) as credential:
        token = await credential.get_token(GRAPH_SCOPE)

    assert tokens.verify(token.token)["appid"] == UAMI_CLIENT_ID
    assert endpoint.requests()[0]["query"]["client_id"] == UAMI_CLIENT_ID


async def test_identity_without_roles(endpoint: IdentityServer) -> None:
    async with ManagedIdentityCredential(client_id=NO_ROLE_CLIENT_ID) as credential:
        claims = tokens.verify((await credential.get_token(GRAPH_SCOPE)).token)

    assert "roles" not in claims


async def test_one_credential_caches_the_token(endpoint: IdentityServer) -> None:
    async with ManagedIdentityCredential() as credential:
        first = await credential.get_token(GRAPH_SCOPE)
        second = await credential.get_token(GRAPH_SCOPE)

    assert second.token == first.token
    assert statuses(endpoint) == [200]


async def test_short_lived_token_is_still_reused_for_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlike msal, the aio mixin refreshes a nearly-expired token at most once per 30 s."""
    with run_in_thread(header="short", lifetime=200) as short:
        for name, value in short.env.items():
            monkeypatch.setenv(name, value)
        async with ManagedIdentityCredential() as credential:
            await credential.get_token(GRAPH_SCOPE)
            await credential.get_token(GRAPH_SCOPE)

        assert statuses(short) == [200]


async def test_wrong_header_raises_client_authentication_error(
    endpoint: IdentityServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync class raises CredentialUnavailableError here; the aio one raises its parent class."""
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")

    async with ManagedIdentityCredential() as credential:
        with pytest.raises(ClientAuthenticationError, match="Unauthorized") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert not isinstance(info.value, CredentialUnavailableError)
    assert statuses(endpoint) == [401]


async def test_unknown_client_id_raises_client_authentication_error(endpoint: IdentityServer) -> None:
    async with ManagedIdentityCredential(client_id="00000000-dead-4000-8000-000000000000") as credential:
        with pytest.raises(ClientAuthenticationError, match="identity not found") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert not isinstance(info.value, CredentialUnavailableError)


async def test_default_retry_policy_retries_a_500(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"status": 500}])

    async with ManagedIdentityCredential() as credential:
        await credential.get_token(GRAPH_SCOPE)

    assert statuses(endpoint) == [500, 200]


async def test_exhausted_5xx_raises_and_is_not_throttled(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"status": 503}])

    async with ManagedIdentityCredential(**FAST_RETRY) as credential:
        with pytest.raises(ClientAuthenticationError, match="Injected fault"):
            await credential.get_token(GRAPH_SCOPE)
        await credential.get_token(GRAPH_SCOPE)  # no msal throttle: the next call reaches the endpoint

    assert statuses(endpoint) == [503, 200]


async def test_non_json_error_body_raises_credential_unavailable(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"status": 502, "body": "Bad Gateway"}])

    async with ManagedIdentityCredential(**FAST_RETRY) as credential:
        with pytest.raises(CredentialUnavailableError, match="Unexpected content type"):
            await credential.get_token(GRAPH_SCOPE)


async def test_dropped_connection_raises_service_request_error(endpoint: IdentityServer) -> None:
    """aiohttp itself resends an idempotent GET once after a disconnect, so one attempt costs two drops."""
    endpoint.inject_faults([{"drop": True}, {"drop": True}])

    async with ManagedIdentityCredential(**FAST_RETRY) as credential:
        with pytest.raises(ServiceRequestError, match="Server disconnected") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert not isinstance(info.value, ClientAuthenticationError)
    assert statuses(endpoint) == [None, None]


async def test_single_drop_is_absorbed_by_aiohttp_even_without_sdk_retries(endpoint: IdentityServer) -> None:
    endpoint.inject_faults([{"drop": True}])
    started = time.monotonic()

    async with ManagedIdentityCredential(**FAST_RETRY) as credential:
        await credential.get_token(GRAPH_SCOPE)

    assert statuses(endpoint) == [None, 200]
    assert time.monotonic() - started < 1
