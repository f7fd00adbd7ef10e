"""Token credentials for ``vlsync``: one per call, fitted to what Graph accepts for that call.

Provider calls are delegated-only in Graph (a signed-in Global or Knowledge admin); content calls
take an app-only token. Locally both come from the stack's identity endpoint: a delegated token from
``POST /dev/token``, and the app token through the real ``azure.identity.aio.ManagedIdentityCredential``
(App Service protocol), exactly as the worker gets it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from typing import Any, Protocol

import httpx
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from vlsync.config import CallKind, CliConfig, ConfigError, CredentialChoice

GRAPH_RESOURCE = "https://graph.microsoft.com"
APP_SCOPE = f"{GRAPH_RESOURCE}/.default"
PROVIDER_SCOPE = f"{GRAPH_RESOURCE}/LearningProvider.ReadWrite"
LOCAL_DELEGATED_SCOPES = ("LearningProvider.ReadWrite",)
TOKEN_REFRESH_MARGIN = 300  # seconds before expiry that a cached token is renewed


class ClosableCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    async def close(self) -> None: ...


class SyncCredential(Protocol):
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


class ThreadedCredential:
    """A synchronous azure-identity credential made awaitable (``azure.identity.aio`` has no
    device-code or interactive-browser credential): each call runs on a worker thread."""

    def __init__(self, credential: SyncCredential) -> None:
        self._credential = credential
        self._lock = asyncio.Lock()  # one sign-in at a time, even with concurrent callers

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        async with self._lock:
            return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


class LocalDelegatedCredential:
    """A delegated admin token (``scp LearningProvider.ReadWrite``) from the local identity endpoint's
    ``POST /dev/token``, cached until shortly before it expires."""

    def __init__(
        self,
        endpoint: str,
        header: str,
        *,
        scopes: tuple[str, ...] = LOCAL_DELEGATED_SCOPES,
        client_id: str | None = None,
    ) -> None:
        self._url = dev_token_url(endpoint)
        self._header = header
        self._scopes = list(scopes)
        self._client_id = client_id  # the app the admin signs in through (the token's appid)
        self._http = httpx.AsyncClient(timeout=10)
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        async with self._lock:
            if self._token is None or self._token.expires_on - TOKEN_REFRESH_MARGIN < time.time():
                self._token = await self._fetch()
            return self._token

    async def _fetch(self) -> AccessToken:
        try:
            response = await self._http.post(
                self._url,
                json={
                    "resource": GRAPH_RESOURCE,
                    "scopes": self._scopes,
                    **({"clientId": self._client_id} if self._client_id else {}),
                },
                headers={"X-IDENTITY-HEADER": self._header},
            )
        except httpx.HTTPError as exc:
            raise ClientAuthenticationError(f"local identity endpoint {self._url} unreachable: {exc}") from exc
        if response.status_code != 200:
            try:
                reason = str(response.json().get("message"))
            except (ValueError, AttributeError):
                reason = response.text[:300]
            raise ClientAuthenticationError(f"local identity endpoint answered {response.status_code}: {reason}")
        body = response.json()
        return AccessToken(str(body["access_token"]), int(body["expires_on"]))

    async def close(self) -> None:
        await self._http.aclose()


def worker_credential(config: CliConfig) -> ClosableCredential:
    """The worker's own credential (``shared.credentials.graph_credential``) from the CLI's settings."""
    from shared.credentials import graph_credential
    from shared.settings import Settings, SettingsError

    try:
        settings = Settings.model_validate(
            {
                "GRAPH_AUTH_MODE": config.graph_auth_mode,
                "VIVA_APP_CLIENT_ID": config.app_client_id,
                "VIVA_APP_TENANT_ID": config.tenant_id,
                "AZURE_CLIENT_ID": config.managed_identity_client_id,
                "AZURE_AUTHORITY_HOST": config.authority_host,
            }
        )
        return graph_credential(settings, **config.tls_options())
    except (SettingsError, ValueError) as exc:
        raise ConfigError(f"the worker's credential: {exc}") from None


def dev_token_url(endpoint: str) -> str:
    """``http://host:port/msi/token`` -> ``http://host:port/dev/token``."""
    base = endpoint.rstrip("/")
    return (base[: -len("/msi/token")] if base.lower().endswith("/msi/token") else base) + "/dev/token"


def scope_for(kind: CallKind, choice: CredentialChoice) -> str:
    """Interactive user sign-ins ask for the provider permission by name; everything else for ``.default``
    (the Azure CLI accepts only ``.default``; app tokens carry the app's granted roles)."""
    if kind == "provider" and choice in ("device-code", "browser"):
        return PROVIDER_SCOPE
    return APP_SCOPE


def _prompt(verification_uri: str, user_code: str, expires_on: datetime) -> None:
    print(
        f"To sign in, open {verification_uri} and enter the code {user_code} (expires {expires_on:%H:%M:%S}).",
        file=sys.stderr,
        flush=True,
    )


def build(kind: CallKind, config: CliConfig) -> ClosableCredential:
    """The credential for one kind of call (provider = delegated, content = app-only)."""
    choice = config.credential_for(kind)
    if choice == "local":
        if not (config.identity_endpoint and config.identity_header):
            raise ConfigError(
                "--credential local needs IDENTITY_ENDPOINT and IDENTITY_HEADER "
                "(source .dev/stack.env or use --env-file)"
            )
        if kind == "provider":
            return LocalDelegatedCredential(
                config.identity_endpoint, config.identity_header, client_id=config.client_id
            )
        # The real managed-identity credential reads the App Service variables from the environment, and
        # content calls then sign in exactly as the worker does (``shared.credentials``): as the app,
        # through the identity's federated credential, when the stack runs with GRAPH_AUTH_MODE=app.
        os.environ["IDENTITY_ENDPOINT"] = config.identity_endpoint
        os.environ["IDENTITY_HEADER"] = config.identity_header
        return worker_credential(config)
    if choice == "managed-identity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=config.managed_identity_client_id)
    if choice == "azure-cli":
        from azure.identity.aio import AzureCliCredential

        return AzureCliCredential(tenant_id=config.tenant_id or "")
    if choice == "environment":
        from azure.identity.aio import EnvironmentCredential

        return EnvironmentCredential()
    if choice == "default":
        from azure.identity.aio import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=config.managed_identity_client_id)
    if choice == "device-code":
        from azure.identity import DeviceCodeCredential

        return ThreadedCredential(
            DeviceCodeCredential(
                client_id=require_client_id(kind, config),
                tenant_id=config.tenant_id or "organizations",
                prompt_callback=_prompt,
            )
        )
    if choice == "browser":
        from azure.identity import InteractiveBrowserCredential

        return ThreadedCredential(
            InteractiveBrowserCredential(
                client_id=require_client_id(kind, config),
                tenant_id=config.tenant_id or "organizations",
            )
        )
    raise ConfigError(f"unknown credential {choice!r}")


APP_REGISTRATION = (
    "an Entra app registration of your own that is a public client (Authentication: 'Allow public client "
    "flows' = Yes{redirect}) with the delegated Microsoft Graph permission LearningProvider.ReadWrite, "
    "admin consent granted"
)


def app_registration(choice: CredentialChoice) -> str:
    return APP_REGISTRATION.format(redirect=", redirect URI http://localhost" if choice == "browser" else "")


def missing_client_id(kind: CallKind, choice: CredentialChoice) -> str:
    """The usage message when a user sign-in has no app registration to sign in through."""
    why = (
        "provider calls need a signed-in user's token with LearningProvider.ReadWrite, which the Azure CLI's "
        "own app cannot get"
        if kind == "provider"
        else "a user sign-in goes through an app registration"
    )
    return (
        f"--credential {choice} needs the client id of the app to sign in through ({why}). "
        "azd provision made it: VIVA_APP_CLIENT_ID=$(azd env get-value VIVA_APP_CLIENT_ID), or --client-id <id>; "
        "registering through that app binds the provider to the app the worker pushes as. Without azd, "
        f"create {app_registration(choice)} (Entra admin center > App registrations > New registration; "
        "docs/deploy.md) and pass its Application (client) ID: --client-id <id> or VLSYNC_CLIENT_ID=<id> "
        "(and --tenant-id or VIVA_APP_TENANT_ID for your tenant)"
    )


def refused_hint(kind: CallKind, choice: CredentialChoice, client_id: str | None, status: int | None) -> str | None:
    """What a 401/403 from Graph means for the credential used, and which registration and scope it needs."""
    if status not in (401, 403):
        return None
    if kind == "content":
        return (
            "content calls need an app-only token with the application permission LearningContent.ReadWrite.All "
            "(reads: LearningContent.Read.All), admin consent granted, of the app that registered the provider: "
            "a 403 accessDenied means the registration is bound to another app id. The worker pushes as the "
            "product's app (VIVA_APP_CLIENT_ID) through its managed identity; vlsync doctor checks each link"
        )
    fix = (
        "sign in with --credential browser (or device-code) through the product's app: --client-id "
        f"$VIVA_APP_CLIENT_ID, or {app_registration('browser')}"
    )
    if choice in ("device-code", "browser"):
        return (
            f"provider calls need the delegated permission LearningProvider.ReadWrite: the app registration "
            f"{client_id} must be a public client with the delegated Microsoft Graph permission "
            "LearningProvider.ReadWrite (admin consent granted), and the signed-in user a Global or Knowledge "
            "administrator with a Viva Learning licence"
        )
    if choice == "azure-cli":
        return (
            "Azure CLI tokens carry only the scopes pre-authorised for the CLI's own app, and "
            f"LearningProvider.ReadWrite is not one of them: {fix}"
        )
    if choice in ("default", "environment", "managed-identity"):
        return (
            f"Graph accepts only delegated (signed-in user) tokens for provider calls, and --credential {choice} "
            f"gives an app-only one: {fix}"
        )
    return f"provider calls need a delegated token with LearningProvider.ReadWrite: {fix}"


def require_client_id(kind: CallKind, config: CliConfig) -> str:
    """The app registration a device-code or browser sign-in goes through; a usage error without one."""
    if not config.client_id:
        raise ConfigError(missing_client_id(kind, config.credential_for(kind)))
    return config.client_id
