"""The managed identity → app exchange with the sync classes (``ManagedIdentityCredential`` is msal-based).

Sync ``ClientAssertionCredential`` can ask the managed identity inside ``func`` on every app-token
request, the shape Entra's docs show for .NET; msal caches the managed-identity token meanwhile.
"""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential

from local import tokens
from local.identity import TOKEN_PATH, IdentityServer

from .conftest import APP_CLIENT_ID, APP_ROLES, EXCHANGE_SCOPE, FAST_RETRY, GRAPH_SCOPE, UAMI_CLIENT_ID


def app_credential(idp: IdentityServer, **kwargs: object) -> ClientAssertionCredential:
    managed_identity = ManagedIdentityCredential(client_id=UAMI_CLIENT_ID)
    return ClientAssertionCredential(
        idp.tenant_id,
        APP_CLIENT_ID,
        lambda: managed_identity.get_token(EXCHANGE_SCOPE).token,
        authority=idp.authority_host,
        connection_verify=str(idp.ca_file),
        **kwargs,
    )


def test_sync_exchange_gives_the_app_token(endpoint: IdentityServer) -> None:
    with app_credential(endpoint) as credential:
        token = credential.get_token(GRAPH_SCOPE)

    claims = tokens.verify(token.token)
    assert (claims["appid"], claims["roles"]) == (APP_CLIENT_ID, list(APP_ROLES))
    assert [e["status"] for e in endpoint.requests(TOKEN_PATH)] == [200]
    assert [e["status"] for e in endpoint.requests(endpoint.entra_token_path)] == [200]


def test_sync_exchange_without_federated_credential_is_70021(endpoint: IdentityServer) -> None:
    endpoint.remove_federated_credentials(APP_CLIENT_ID)

    with app_credential(endpoint, **FAST_RETRY) as credential, pytest.raises(ClientAuthenticationError) as info:
        credential.get_token(GRAPH_SCOPE)

    assert "(invalid_request) AADSTS70021: No matching federated identity record found" in str(info.value)
