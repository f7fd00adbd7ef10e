"""``shared.credentials.AppCredential`` with the real azure-identity classes against the local Entra route."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from shared.credentials import AppCredential, HomeTenantOnly
from tests.conftest import APP_CLIENT_ID, TENANT_ID
from tests.graph.conftest import GraphSide, worker_credential

SCOPE = "https://graph.microsoft.com/.default"
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_one_exchange_per_token_and_one_cache_per_tenant(graph_side: GraphSide, identity_server: Any) -> None:
    credential = worker_credential(graph_side)
    identity_server.clear_requests()
    try:
        first = await credential.get_token(SCOPE)
        again = await credential.get_token(SCOPE, tenant_id=TENANT_ID.upper())  # the same tenant, other spelling
        assert first.token == again.token
        assert len(identity_server.requests(identity_server.entra_token_path)) == 1
        assert len(identity_server.requests()) == 1  # one managed-identity assertion
        with pytest.raises(ClientAuthenticationError, match="AADSTS90002"):
            await credential.get_token(SCOPE, tenant_id=OTHER_TENANT)  # its own credential, its own exchange
        assert sorted(credential._by_tenant) == sorted([TENANT_ID, OTHER_TENANT])
        assert jwt.decode(first.token, options={"verify_signature": False})["appid"] == APP_CLIENT_ID
    finally:
        await credential.close()
    assert credential._by_tenant == {}


class DownIdentity:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ServiceRequestError("identity endpoint down")

    async def close(self) -> None:
        return None


async def test_a_cached_app_token_outlives_an_identity_outage(graph_side: GraphSide) -> None:
    clock = Clock()
    real = worker_credential(graph_side)
    credential = AppCredential(
        real._identity,
        client_id=APP_CLIENT_ID,
        home_tenant=TENANT_ID,
        authority=graph_side.identity.authority_host,
        clock=clock,
        connection_verify=graph_side.identity.ca_file,
    )
    try:
        token = await credential.get_token(SCOPE)
        credential._identity = DownIdentity()
        clock.now += 3 * 3600  # the held assertion is stale now; the app token is still in its cache
        assert (await credential.get_token(SCOPE)).token == token.token
        # A new app token needs a new assertion, and the identity's error says why there is none.
        with pytest.raises(ClientAuthenticationError, match="identity endpoint down"):
            await credential.get_token(SCOPE, claims='{"access_token": {"nbf": {"essential": true, "value": "1"}}}')
    finally:
        await real.close()


class FixedIdentity:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(kwargs)
        return AccessToken("t", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


async def test_the_managed_identity_mode_refuses_other_tenants() -> None:
    identity = FixedIdentity()
    credential = HomeTenantOnly(identity, TENANT_ID.upper())
    assert (await credential.get_token(SCOPE, tenant_id=TENANT_ID)).token == "t"
    assert (await credential.get_token(SCOPE)).token == "t"
    with pytest.raises(ClientAuthenticationError, match="GRAPH_AUTH_MODE=app"):
        await credential.get_token(SCOPE, tenant_id=OTHER_TENANT)
    assert len(identity.calls) == 2
