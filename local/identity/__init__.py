"""Local managed-identity endpoint (App Service protocol) and Entra token endpoint, for the local stack and tests.

The function app's real ``ManagedIdentityCredential`` reads ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``
and gets JWTs from here (minted by ``local.tokens``) that the Graph emulator verifies, so the token
path runs unmodified locally. The managed identity → app exchange runs unmodified too: a managed
identity token for ``api://AzureADTokenExchange`` is the client assertion of the real
``ClientAssertionCredential``, pointed at ``authority_host`` (HTTPS, trusted through ``ca_file``),
which answers a Graph app token of the app whose federated credential trusts that identity.

Run it with ``python -m local.identity`` or, in tests,
``with run_in_thread(header="s", apps=[...]) as idp: idp.endpoint, idp.authority_host, idp.ca_file``.
"""

from __future__ import annotations

from .app import (
    DEV_TOKEN_PATH,
    ENTRA_TOKEN_ROUTE,
    HEADER_NAME,
    TOKEN_PATH,
    Fault,
    IdentityState,
    build_app,
    entra_token_path,
)
from .config import (
    API_VERSION,
    DEFAULT_DEV_SCOPES,
    DEFAULT_ROLES,
    DEV_ADMIN_OBJECT_ID,
    DEV_APP_OBJECT_ID,
    DEV_CLIENT_ID,
    SYSTEM_CLIENT_ID,
    SYSTEM_OBJECT_ID,
    AppRegistration,
    FederatedCredential,
    Identity,
    IdentityConfig,
    derived_object_id,
    federated_credential_for,
    service_principal_object_id,
)
from .runner import IdentityServer, make_config, run_in_thread
from .tls import ca_bundle

__all__ = [
    "API_VERSION",
    "DEFAULT_DEV_SCOPES",
    "DEFAULT_ROLES",
    "DEV_ADMIN_OBJECT_ID",
    "DEV_APP_OBJECT_ID",
    "DEV_CLIENT_ID",
    "DEV_TOKEN_PATH",
    "ENTRA_TOKEN_ROUTE",
    "HEADER_NAME",
    "SYSTEM_CLIENT_ID",
    "SYSTEM_OBJECT_ID",
    "TOKEN_PATH",
    "AppRegistration",
    "Fault",
    "FederatedCredential",
    "Identity",
    "IdentityConfig",
    "IdentityServer",
    "IdentityState",
    "build_app",
    "ca_bundle",
    "derived_object_id",
    "entra_token_path",
    "federated_credential_for",
    "make_config",
    "run_in_thread",
    "service_principal_object_id",
]
