"""Local managed-identity token endpoint (App Service protocol) for the local stack and the tests.

The function app's real ``ManagedIdentityCredential`` reads ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``
and gets JWTs from here (minted by ``local.tokens``) that the Graph emulator verifies, so the token
path runs unmodified locally. Run it with ``python -m local.identity`` or, in tests,
``with run_in_thread(header="s") as idp: idp.endpoint``.
"""

from __future__ import annotations

from .app import DEV_TOKEN_PATH, HEADER_NAME, TOKEN_PATH, Fault, IdentityState, build_app
from .config import (
    API_VERSION,
    DEFAULT_DEV_SCOPES,
    DEFAULT_ROLES,
    DEV_ADMIN_OBJECT_ID,
    DEV_APP_OBJECT_ID,
    DEV_CLIENT_ID,
    SYSTEM_CLIENT_ID,
    SYSTEM_OBJECT_ID,
    Identity,
    IdentityConfig,
    derived_object_id,
)
from .runner import IdentityServer, make_config, run_in_thread

__all__ = [
    "API_VERSION",
    "DEFAULT_DEV_SCOPES",
    "DEFAULT_ROLES",
    "DEV_ADMIN_OBJECT_ID",
    "DEV_APP_OBJECT_ID",
    "DEV_CLIENT_ID",
    "DEV_TOKEN_PATH",
    "HEADER_NAME",
    "SYSTEM_CLIENT_ID",
    "SYSTEM_OBJECT_ID",
    "TOKEN_PATH",
    "Fault",
    "Identity",
    "IdentityConfig",
    "IdentityServer",
    "IdentityState",
    "build_app",
    "derived_object_id",
    "make_config",
    "run_in_thread",
]
