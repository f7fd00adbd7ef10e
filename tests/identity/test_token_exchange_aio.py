"""The managed identity → app exchange with the real aio classes, as the worker will run it.

``ManagedIdentityCredential`` gets a token for ``api://AzureADTokenExchange`` from ``/msi/token``;
``ClientAssertionCredential`` presents it at the local Entra token endpoint (HTTPS, trusted through
``connection_verify``) and gets a Graph app token of the app. The aio ``ClientAssertionCredential``
calls ``func`` synchronously (azure-identity 1.27 ``aio/_credentials/client_assertion.py``), so an
aio caller fetches the managed-identity token first and hands over a function that returns it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity.aio import ClientAssertionCredential, ManagedIdentityCredential

from local import tokens
from local.identity import TOKEN_PATH, IdentityServer, service_principal_object_id

from .conftest import (
    APP_CLIENT_ID,
    APP_ROLES,
    EXCHANGE_SCOPE,
    FAST_RETRY,
    GRAPH_SCOPE,
    NO_ROLE_CLIENT_ID,
    UAMI,
    UAMI_CLIENT_ID,
)

OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


async def managed_identity_token(client_id: str = UAMI_CLIENT_ID, scope: str = EXCHANGE_SCOPE) -> str:
    async with ManagedIdentityCredential(client_id=client_id) as credential:
        return (await credential.get_token(scope)).token


def app_credential(
    idp: IdentityServer,
    assertion: str | Callable[[], str],
    *,
    client_id: str = APP_CLIENT_ID,
    tenant_id: str | None = None,
    **kwargs: Any,
) -> ClientAssertionCredential:
    func = assertion if callable(assertion) else lambda: assertion
    options: dict[str, Any] = {"authority": idp.authority_host, "connection_verify": str(idp.ca_file)} | kwargs
    return ClientAssertionCredential(tenant_id or idp.tenant_id, client_id, func, **options)


def entra_log(idp: IdentityServer) -> list[dict[str, Any]]:
    return idp.requests(idp.entra_token_path)


async def test_exchange_gives_a_graph_app_token_of_the_app(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()

    async with app_credential(endpoint, assertion) as credential:
        token = await credential.get_token(GRAPH_SCOPE)

    claims = tokens.verify(token.token)  # what the Graph emulator checks
    assert (claims["appid"], claims["oid"]) == (APP_CLIENT_ID, service_principal_object_id(APP_CLIENT_ID))
    assert claims["roles"] == list(APP_ROLES)
    assert (claims["idtyp"], claims["aud"]) == ("app", tokens.GRAPH_AUDIENCE)
    assert claims["iss"] == f"https://sts.windows.net/{endpoint.tenant_id}/"
    (mi_request,) = endpoint.requests(TOKEN_PATH)
    assert mi_request["query"]["resource"] == tokens.TOKEN_EXCHANGE_AUDIENCE
    assert mi_request["query"]["client_id"] == UAMI_CLIENT_ID
    (exchange,) = entra_log(endpoint)
    assert exchange["status"] == 200
    assert exchange["identity"] == APP_CLIENT_ID
    app = endpoint.app(APP_CLIENT_ID)
    assert app is not None
    assert exchange["federatedCredential"] == app.federated_credentials[0].name
    assert assertion not in str(endpoint.requests(None))
    assert token.token not in str(endpoint.requests(None))


async def test_app_token_is_cached_so_the_assertion_is_asked_for_once(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()
    calls: list[int] = []

    def func() -> str:
        calls.append(1)
        return assertion

    async with app_credential(endpoint, func) as credential:
        first = await credential.get_token(GRAPH_SCOPE)
        second = await credential.get_token(GRAPH_SCOPE)

    assert second.token == first.token
    assert len(calls) == 1
    assert [e["status"] for e in entra_log(endpoint)] == [200]


async def test_without_the_federated_credential_the_exchange_fails_with_70021(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()
    before = endpoint.remove_federated_credentials(APP_CLIENT_ID)

    async with app_credential(endpoint, assertion, **FAST_RETRY) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS70021") as info:
            await credential.get_token(GRAPH_SCOPE)
    message = str(info.value)
    assert f"Assertion Subject: '{UAMI.object_id}'" in message
    assert f"Assertion Issuer: 'https://login.microsoftonline.com/{endpoint.tenant_id}/v2.0'" in message
    assert "Assertion Audience: 'api://AzureADTokenExchange'" in message

    endpoint.put_app(before)
    async with app_credential(endpoint, assertion) as credential:
        restored = await credential.get_token(GRAPH_SCOPE)

    assert tokens.verify(restored.token)["appid"] == APP_CLIENT_ID
    assert [e["status"] for e in entra_log(endpoint)] == [400, 200]


async def test_an_identity_the_app_does_not_trust_is_refused_by_subject(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token(NO_ROLE_CLIENT_ID)

    async with app_credential(endpoint, assertion) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700213") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert "invalid_client" in str(info.value)
    assert entra_log(endpoint)[-1]["status"] == 401


async def test_a_graph_token_is_no_assertion(endpoint: IdentityServer) -> None:
    """The likely slip (asking the identity for Graph, not the exchange audience): a v1 issuer no credential names."""
    assertion = await managed_identity_token(scope=GRAPH_SCOPE)

    async with app_credential(endpoint, assertion) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700211") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert f"issuer 'https://sts.windows.net/{endpoint.tenant_id}/'" in str(info.value)


async def test_unknown_app_is_700016(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()
    unknown = "a9900000-dead-4000-8000-000000000000"

    async with app_credential(endpoint, assertion, client_id=unknown) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700016") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert f"Application with identifier '{unknown}' was not found in the directory" in str(info.value)
    assert "unauthorized_client" in str(info.value)


async def test_wrong_tenant_is_90002(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()

    async with app_credential(endpoint, assertion, tenant_id=OTHER_TENANT) as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS90002") as info:
            await credential.get_token(GRAPH_SCOPE)

    assert f"Tenant '{OTHER_TENANT}' not found" in str(info.value)
    assert entra_log(endpoint) == []  # another tenant's path: not the local tenant's log filter
    (refused,) = endpoint.requests(f"/{OTHER_TENANT}/oauth2/v2.0/token")
    assert refused["status"] == 400


@pytest.mark.parametrize(
    ("scope", "code"),
    [
        ("https://graph.microsoft.com/LearningContent.ReadWrite.All", "AADSTS1002012"),
        ("https://storage.azure.com/.default", "AADSTS500011"),
    ],
)
async def test_client_credentials_scope_must_be_graph_default(endpoint: IdentityServer, scope: str, code: str) -> None:
    assertion = await managed_identity_token()

    async with app_credential(endpoint, assertion) as credential:
        with pytest.raises(ClientAuthenticationError, match=code):
            await credential.get_token(scope)


async def test_graph_app_id_scope_is_graph_too(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()

    async with app_credential(endpoint, assertion) as credential:
        token = await credential.get_token(f"{tokens.GRAPH_APP_ID}/.default")

    assert tokens.verify(token.token)["appid"] == APP_CLIENT_ID


async def test_injected_fault_on_the_token_endpoint_is_retried(endpoint: IdentityServer) -> None:
    """azure-identity retries its POSTs (``retry_on_methods``): one 503 costs one extra request."""
    assertion = await managed_identity_token()
    endpoint.inject_faults([{"status": 503}])

    async with app_credential(endpoint, assertion) as credential:
        await credential.get_token(GRAPH_SCOPE)

    assert [e["status"] for e in entra_log(endpoint)] == [503, 200]
    assert entra_log(endpoint)[0]["fault"]["status"] == 503


async def test_exhausted_fault_reads_as_an_entra_error(endpoint: IdentityServer) -> None:
    assertion = await managed_identity_token()
    endpoint.inject_faults([{"status": 503}])

    async with app_credential(endpoint, assertion, **FAST_RETRY) as credential:
        with pytest.raises(ClientAuthenticationError, match=r"\(temporarily_unavailable\) AADSTS90006: Injected"):
            await credential.get_token(GRAPH_SCOPE)


async def test_tls_is_verified_against_the_local_ca(endpoint: IdentityServer, tmp_path: Path) -> None:
    assertion = await managed_identity_token()

    for verify in (True, certifi.where()):  # the system's or the public roots: the local CA is in neither
        async with app_credential(endpoint, assertion, connection_verify=verify, **FAST_RETRY) as credential:
            with pytest.raises(ServiceRequestError, match="certificate verify failed"):
                await credential.get_token(GRAPH_SCOPE)
    assert entra_log(endpoint) == []  # refused in the handshake, before any request

    bundle = endpoint.ca_bundle(tmp_path / "bundle.pem")
    async with app_credential(endpoint, assertion, connection_verify=str(bundle)) as credential:
        token = await credential.get_token(GRAPH_SCOPE)
    assert tokens.verify(token.token)["appid"] == APP_CLIENT_ID


WORKER_SCRIPT = """
import asyncio, os
from azure.identity.aio import ClientAssertionCredential, ManagedIdentityCredential

async def main():
    async with ManagedIdentityCredential(client_id=os.environ["TEST_UAMI"]) as mi:
        assertion = (await mi.get_token("api://AzureADTokenExchange/.default")).token
    tenant, client_id = os.environ["TEST_TENANT"], os.environ["TEST_APP"]
    async with ClientAssertionCredential(tenant, client_id, lambda: assertion, retry_total=0) as app:
        print((await app.get_token("https://graph.microsoft.com/.default")).token)

asyncio.run(main())
"""


def test_environment_alone_points_unchanged_code_at_the_local_authority(
    endpoint: IdentityServer, tmp_path: Path
) -> None:
    """No ``authority``/``connection_verify`` in the code: ``AZURE_AUTHORITY_HOST`` and ``SSL_CERT_FILE`` suffice.

    azure-identity reads ``AZURE_AUTHORITY_HOST`` (``get_default_authority``); aiohttp's default SSL
    context honours ``SSL_CERT_FILE``, but is built when aiohttp is imported, hence a fresh process.
    (``retry_total=0`` only keeps the refused run from spending seconds on retries.)
    """
    bundle = endpoint.ca_bundle(tmp_path / "bundle.pem")
    env = {k: v for k, v in os.environ.items() if k not in {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AZURE_CLIENT_ID"}}
    env |= endpoint.env | {
        "AZURE_AUTHORITY_HOST": endpoint.authority_host,
        "NO_PROXY": "127.0.0.1,localhost",
        "TEST_UAMI": UAMI_CLIENT_ID,
        "TEST_TENANT": endpoint.tenant_id,
        "TEST_APP": APP_CLIENT_ID,
    }

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-c", WORKER_SCRIPT]
        return subprocess.run(args, env=env | extra, capture_output=True, text=True, timeout=60, check=False)

    trusted = run({"SSL_CERT_FILE": str(bundle)})
    untrusted = run({})

    assert trusted.returncode == 0, trusted.stderr
    assert tokens.verify(trusted.stdout.strip())["appid"] == APP_CLIENT_ID
    assert untrusted.returncode != 0
    assert "certificate verify failed" in untrusted.stderr
