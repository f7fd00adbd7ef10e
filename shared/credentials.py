"""The worker's Graph credential: as the product's Entra app, with the managed identity as its secret.

Viva Learning binds a provider registration to the app id that registered it (Microsoft's draft ISV
guide, microsoftgraph/microsoft-graph-docs PR 17789, unpublished), and an admin registers through
the product's Entra app. So the worker must push as that same app. The managed identity is the app's
federated identity credential (GA for user-assigned identities since 2025; at most 20 per app):

1. the managed identity gets a token for ``api://AzureADTokenExchange`` (no secret anywhere);
2. Entra exchanges it, as the app's client assertion, for a Graph token of the app
   (``ClientAssertionCredential``: client-credentials grant with a jwt-bearer assertion).

``GRAPH_AUTH_MODE=managed-identity`` keeps the old way (the identity's own app id and app roles) as a
fallback where no app registration may be created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, ClientAuthenticationError

from shared.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

# The audience Entra accepts for federated credentials (the value every Azure doc and the Bicep
# quickstart msi-as-a-fic-secretless use; a different audience is refused with AADSTS700212).
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"


class AsyncCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    async def close(self) -> None: ...


class AppCredential:
    """Graph tokens of the app ``client_id``, one ``ClientAssertionCredential`` (and token cache) per tenant.

    ``ClientAssertionCredential`` calls its assertion callback synchronously, even in the async API,
    so the callback cannot await the managed identity. Instead ``get_token`` first makes sure a
    managed-identity token is at hand (that credential caches it; a fresh one is asked for only when
    the one held expires within ``ASSERTION_MARGIN``) and the callback hands it over. Any valid
    assertion will do, so concurrent callers need no lock.

    If the identity endpoint fails, the app token cached by ``ClientAssertionCredential`` still
    serves until it expires: the callback is only called when a new app token is needed, and it
    raises the identity's error then, as a ``ClientAuthenticationError``.

    ``transport_options`` reach azure-core's transport (the local stack passes ``connection_verify``
    with its CA file; Azure needs none).
    """

    ASSERTION_MARGIN = 300.0  # seconds: an assertion must outlive the exchange it is sent to

    def __init__(
        self,
        identity: AsyncCredential,
        *,
        client_id: str,
        home_tenant: str,
        authority: str | None = None,
        clock: Callable[[], float] = time.time,
        **transport_options: Any,
    ) -> None:
        self._identity = identity
        self._client_id = client_id
        self._home_tenant = home_tenant.lower()
        self._authority = authority
        self._clock = clock
        self._options = transport_options
        self._assertion: AccessToken | None = None
        self._identity_error: AzureError | None = None
        self._by_tenant: dict[str, AsyncCredential] = {}

    def _usable(self, token: AccessToken | None, margin: float = 0.0) -> bool:
        return token is not None and token.expires_on - margin > self._clock()

    def _assertion_for_exchange(self) -> str:
        if self._assertion is not None and self._usable(self._assertion):
            return self._assertion.token
        raise ClientAuthenticationError(
            f"no managed-identity token for the app-token exchange: {self._identity_error or 'none obtained yet'}"
        )

    def _for_tenant(self, tenant_id: str) -> AsyncCredential:
        found = self._by_tenant.get(tenant_id)
        if found is None:
            from azure.identity.aio import ClientAssertionCredential

            extra: dict[str, Any] = dict(self._options)
            if self._authority:
                extra["authority"] = self._authority
            found = ClientAssertionCredential(tenant_id, self._client_id, self._assertion_for_exchange, **extra)
            self._by_tenant[tenant_id] = found
        return found

    async def _refresh_assertion(self) -> None:
        if self._usable(self._assertion, self.ASSERTION_MARGIN):
            return
        try:
            self._assertion = await self._identity.get_token(EXCHANGE_SCOPE)
            self._identity_error = None
        except AzureError as exc:  # a cached app token may still serve; the callback reports it if not
            self._identity_error = exc
            logger.warning("managed-identity token for the exchange unavailable: %s", type(exc).__name__)

    async def get_token(self, *scopes: str, tenant_id: str | None = None, **kwargs: Any) -> AccessToken:
        """A Graph token of the app in ``tenant_id`` (default: the deployment's own tenant)."""
        await self._refresh_assertion()
        credential = self._for_tenant((tenant_id or self._home_tenant).lower())
        return await credential.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        credentials = [*self._by_tenant.values(), self._identity]
        self._by_tenant.clear()
        await asyncio.gather(*(c.close() for c in credentials))


class HomeTenantOnly:
    """The managed identity's own tokens (GRAPH_AUTH_MODE=managed-identity) are for its own tenant
    only; azure-identity ignores ``tenant_id`` there, so a command of another tenant would be pushed
    with the home tenant's token. This refuses it instead (the queue retries, then parks it)."""

    def __init__(self, identity: AsyncCredential, home_tenant: str | None) -> None:
        self._identity = identity
        self._home = home_tenant.lower() if home_tenant else None

    async def get_token(self, *scopes: str, tenant_id: str | None = None, **kwargs: Any) -> AccessToken:
        if tenant_id and self._home and tenant_id.lower() != self._home:
            raise ClientAuthenticationError(
                f"tenant {tenant_id}: the managed identity signs in to its own tenant ({self._home}) only; "
                "other tenants need GRAPH_AUTH_MODE=app"
            )
        return await self._identity.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        await self._identity.close()


def tls_options() -> dict[str, Any]:
    """``SSL_CERT_FILE`` (OpenSSL's own variable) passed to azure-core explicitly: aiohttp reads it only
    once, when it is imported. Azure needs none; the local stack's sign-in host has its own CA."""
    ca_file = os.environ.get("SSL_CERT_FILE")
    return {"connection_verify": ca_file} if ca_file else {}


def graph_credential(settings: Settings, **transport_options: Any) -> AsyncCredential:
    """The credential ``GRAPH_AUTH_MODE`` selects (``app``: the exchange above; ``managed-identity``: direct)."""
    from azure.identity.aio import ManagedIdentityCredential

    identity = ManagedIdentityCredential(client_id=settings.azure_client_id, **transport_options)
    if settings.graph_auth_mode == "managed-identity":
        return HomeTenantOnly(identity, settings.tenant_id)
    if not settings.viva_app_client_id:
        raise SettingsError(
            "GRAPH_AUTH_MODE=app needs VIVA_APP_CLIENT_ID, the client id of the Entra app whose federated "
            "credential is this managed identity (azd output VIVA_APP_CLIENT_ID); "
            "or set GRAPH_AUTH_MODE=managed-identity"
        )
    return AppCredential(
        identity,
        client_id=settings.viva_app_client_id,
        home_tenant=settings.home_tenant(),
        authority=settings.authority_host,
        **transport_options,
    )
