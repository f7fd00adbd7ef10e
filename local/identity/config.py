"""Who the local identity endpoint can issue tokens for.

The ids are fixed (or derived from the client id) so the Graph emulator, the tests and the
launcher can all predict the ``oid``/``appid`` claims without asking the endpoint.

Besides managed identities there are app registrations (:class:`AppRegistration`): the Entra app
the worker signs in as, with a managed identity as its federated credential
(:func:`federated_credential_for`), and public-client apps that operator tooling signs in to.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from local.tokens import DEFAULT_TENANT_ID, TOKEN_EXCHANGE_AUDIENCE, issuer

API_VERSION = "2019-08-01"
DEFAULT_ROLES: tuple[str, ...] = ("LearningContent.ReadWrite.All",)
DEFAULT_LIFETIME_SECONDS = 3600

# The function app's system-assigned identity (the "service principal" App Service creates for it).
SYSTEM_CLIENT_ID = "5a1e0000-0000-4000-8000-00000000c11d"
SYSTEM_OBJECT_ID = "5a1e0000-0000-4000-8000-0000000000b1"
SYSTEM_RESOURCE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-vlsync-local"
    "/providers/Microsoft.Web/sites/func-vlsync-local"
)
# Where user-assigned identities live; ``mi_res_id`` requests must name one of these.
UAMI_RESOURCE_PREFIX = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-vlsync-local"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
)

# Operator tooling (``POST /dev/token``): a fixed admin user signed in to a local CLI app.
DEV_CLIENT_ID = "de100000-0000-4000-8000-0000000c11a0"
DEV_ADMIN_OBJECT_ID = "de100000-0000-4000-8000-0000000ad111"
DEV_APP_OBJECT_ID = "de100000-0000-4000-8000-00000000a990"
DEFAULT_DEV_SCOPES: tuple[str, ...] = ("LearningProvider.ReadWrite",)

_OBJECT_ID_NAMESPACE = uuid.UUID("6d1f0a52-3c1b-4f5e-9a57-1d3e0c1b2a11")


def derived_object_id(client_id: str) -> str:
    """A stable object id for a client id, so restarts and tests see the same ``oid``."""
    return str(uuid.uuid5(_OBJECT_ID_NAMESPACE, client_id.lower()))


def service_principal_object_id(client_id: str) -> str:
    """The stable object id of an app registration's service principal (its app tokens' ``oid``).

    Derived apart from :func:`derived_object_id` so an app and an identity that share a client id
    (a test shortcut, never the case in Entra) still get different object ids.
    """
    return str(uuid.uuid5(_OBJECT_ID_NAMESPACE, "servicePrincipal:" + client_id.lower()))


@dataclass(frozen=True)
class Identity:
    """One managed identity: what the token says about it and which app roles it holds."""

    client_id: str
    object_id: str
    resource_id: str
    roles: tuple[str, ...] = DEFAULT_ROLES
    user_assigned: bool = True

    @classmethod
    def user(
        cls,
        client_id: str,
        *,
        roles: tuple[str, ...] | list[str] = DEFAULT_ROLES,
        object_id: str | None = None,
        name: str | None = None,
    ) -> Identity:
        if not client_id.strip():
            raise ValueError("a user-assigned identity needs a client id")
        return cls(
            client_id=client_id,
            object_id=object_id or derived_object_id(client_id),
            resource_id=UAMI_RESOURCE_PREFIX + (name or f"id-vlsync-{client_id.lower()[:8]}"),
            roles=tuple(roles),
        )

    @classmethod
    def system(cls, *, roles: tuple[str, ...] | list[str] = DEFAULT_ROLES) -> Identity:
        return cls(SYSTEM_CLIENT_ID, SYSTEM_OBJECT_ID, SYSTEM_RESOURCE_ID, tuple(roles), user_assigned=False)

    def public(self) -> dict[str, Any]:
        """What ``/_identity/health`` shows (nothing secret)."""
        return {
            "clientId": self.client_id,
            "objectId": self.object_id,
            "resourceId": self.resource_id,
            "roles": list(self.roles),
            "userAssigned": self.user_assigned,
        }


# Limits Entra enforces when a federated identity credential is created ("Configure an application to
# trust a managed identity", learn.microsoft.com/entra/workload-id/workload-identity-federation-config-
# app-trust-managed-identity, and the Graph federatedIdentityCredential resource): at most 20 per app;
# a name of 3-120 URL-friendly characters starting with a letter or digit; exactly one audience
# ("This field can only accept a single value"); issuer+subject unique within the app. Entra does
# NOT check issuer/subject/audience values at creation ("the error does not become apparent until the
# token exchange fails"), so neither does this.
MAX_FEDERATED_CREDENTIALS = 20
_FIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,119}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _strings(raw: Any, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(v, str) and v.strip() for v in raw):
        raise ValueError(f"{what} must be a list of non-empty strings")
    return tuple(v.strip() for v in raw)


def _check_keys(raw: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return raw


@dataclass(frozen=True)
class FederatedCredential:
    """One federated identity credential of an app: tokens with this ``iss``/``sub`` and an ``aud`` in
    ``audiences`` may be exchanged for the app's tokens. Matching is exact and case-sensitive, as in
    Entra since 2024 (its error AADSTS7002138 names a subject that matched only case-insensitively)."""

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)

    _KEYS = frozenset({"name", "issuer", "subject", "audiences"})

    def __post_init__(self) -> None:
        if not _FIC_NAME.fullmatch(self.name):
            raise ValueError(
                f"federated credential name {self.name!r} must be 3-120 letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        if not self.issuer or not self.subject:
            raise ValueError(f"federated credential {self.name!r} needs an issuer and a subject")
        if len(self.audiences) != 1 or not self.audiences[0]:
            raise ValueError(f"federated credential {self.name!r} must have exactly one audience")

    @classmethod
    def parse(cls, raw: Any) -> FederatedCredential:
        """From the camelCase JSON of ``PUT /_identity/apps/{clientId}`` (Graph's own property names)."""
        body = _check_keys(raw, cls._KEYS, "federated credential")
        for key in ("name", "issuer", "subject"):
            if not isinstance(body.get(key), str):
                raise ValueError(f"federated credential '{key}' must be a string")
        audiences = _strings(body.get("audiences", [TOKEN_EXCHANGE_AUDIENCE]), "federated credential 'audiences'")
        return cls(body["name"], body["issuer"], body["subject"], audiences)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "issuer": self.issuer, "subject": self.subject, "audiences": list(self.audiences)}


def federated_credential_for(
    identity: Identity, *, tenant_id: str = DEFAULT_TENANT_ID, name: str | None = None
) -> FederatedCredential:
    """The credential Azure creates when an app trusts ``identity`` (portal scenario "Managed Identity").

    Issuer is the tenant's v2.0 authority, subject the identity's object (principal) id, audience
    ``api://AzureADTokenExchange``. Only user-assigned identities qualify: Entra documents that
    system-assigned ones "aren't supported" as an app's federated credential. The default name is
    the identity's resource name, as a launcher would pick it.
    """
    if not identity.user_assigned:
        raise ValueError("only a user-assigned managed identity can be an app's federated credential")
    return FederatedCredential(
        name=name or identity.resource_id.rsplit("/", 1)[-1],
        issuer=issuer(tenant_id, "2.0"),
        subject=identity.object_id,
    )


@dataclass(frozen=True)
class AppRegistration:
    """An Entra app registration and its service principal in the local tenant.

    ``roles`` are the application permissions granted on Graph (the ``roles`` of its app tokens);
    ``scopes`` the delegated permissions consented (what ``POST /dev/token`` may put in ``scp`` for
    it); ``public_client`` is "Allow public client flows" with the redirect ``http://localhost``, which
    operator tooling's interactive sign-in needs. Its app tokens come only from the token exchange
    with a federated credential: local apps have no secrets or certificates.
    """

    client_id: str
    display_name: str = ""
    object_id: str = ""  # of the service principal; "" derives it (service_principal_object_id)
    roles: tuple[str, ...] = DEFAULT_ROLES
    scopes: tuple[str, ...] = DEFAULT_DEV_SCOPES
    public_client: bool = True
    federated_credentials: tuple[FederatedCredential, ...] = ()

    _KEYS = frozenset(
        {"clientId", "objectId", "displayName", "roles", "scopes", "publicClient", "federatedCredentials"}
    )

    def __post_init__(self) -> None:
        if not _GUID.fullmatch(self.client_id):
            raise ValueError(f"app client id {self.client_id!r} must be a GUID")
        if not self.object_id:
            object.__setattr__(self, "object_id", service_principal_object_id(self.client_id))
        if not self.display_name:
            object.__setattr__(self, "display_name", f"vlsync-local-{self.client_id.lower()[:8]}")
        fics = self.federated_credentials
        if len(fics) > MAX_FEDERATED_CREDENTIALS:
            raise ValueError(f"an app has at most {MAX_FEDERATED_CREDENTIALS} federated credentials, got {len(fics)}")
        if len({f.name for f in fics}) < len(fics):
            raise ValueError(f"app {self.client_id}: federated credential names must be unique")
        if len({(f.issuer, f.subject) for f in fics}) < len(fics):
            raise ValueError(f"app {self.client_id}: issuer and subject must be unique among its federated credentials")

    @classmethod
    def parse(cls, raw: Any, *, client_id: str | None = None) -> AppRegistration:
        """From camelCase JSON (``PUT /_identity/apps/{clientId}``, ``--apps-file``); ``client_id`` is the path's."""
        body = _check_keys(raw, cls._KEYS, "app")
        given = body.get("clientId", client_id)
        if not isinstance(given, str):
            raise ValueError("app 'clientId' must be a string")
        if client_id is not None and given.lower() != client_id.lower():
            raise ValueError(f"body clientId {given!r} differs from the path's {client_id!r}")
        public_client = body.get("publicClient", True)
        if not isinstance(public_client, bool):
            raise ValueError("app 'publicClient' must be true or false")
        for key in ("displayName", "objectId"):
            if not isinstance(body.get(key, ""), str):
                raise ValueError(f"app '{key}' must be a string")
        fics = body.get("federatedCredentials", [])
        if not isinstance(fics, list):
            raise ValueError("app 'federatedCredentials' must be a list")
        return cls(
            client_id=given,
            display_name=body.get("displayName", ""),
            object_id=body.get("objectId", ""),
            roles=_strings(body.get("roles", list(DEFAULT_ROLES)), "app 'roles'"),
            scopes=_strings(body.get("scopes", list(DEFAULT_DEV_SCOPES)), "app 'scopes'"),
            public_client=public_client,
            federated_credentials=tuple(FederatedCredential.parse(f) for f in fics),
        )

    def public(self) -> dict[str, Any]:
        """What ``GET /_identity/apps`` shows: the ``parse`` shape plus the derived ids."""
        return {
            "clientId": self.client_id,
            "objectId": self.object_id,
            "displayName": self.display_name,
            "roles": list(self.roles),
            "scopes": list(self.scopes),
            "publicClient": self.public_client,
            "redirectUris": ["http://localhost"] if self.public_client else [],
            "federatedCredentials": [f.public() for f in self.federated_credentials],
        }

    @classmethod
    def trusting(
        cls,
        client_id: str,
        identities: Iterable[Identity],
        *,
        tenant_id: str = DEFAULT_TENANT_ID,
        roles: tuple[str, ...] = DEFAULT_ROLES,
    ) -> AppRegistration:
        """An app whose federated credentials trust ``identities`` (each via :func:`federated_credential_for`)."""
        fics = tuple(federated_credential_for(i, tenant_id=tenant_id) for i in identities)
        return cls(client_id, roles=roles, federated_credentials=fics)


@dataclass(frozen=True)
class IdentityConfig:
    """Everything the endpoint serves; ``system=None`` means the app has no system-assigned identity.

    ``apps`` are the app registrations at start; at run time they live in ``IdentityState``, where
    tests and the admin routes change them.
    """

    header: str
    system: Identity | None = field(default_factory=Identity.system)
    user_assigned: tuple[Identity, ...] = ()
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    tenant_id: str = DEFAULT_TENANT_ID
    dev_scopes: tuple[str, ...] = DEFAULT_DEV_SCOPES
    signing_key: str | None = None  # None: ``local.tokens.signing_key()`` (env or the stack default)
    apps: tuple[AppRegistration, ...] = ()

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("the X-IDENTITY-HEADER secret must not be empty")
        if self.lifetime_seconds <= 0:
            raise ValueError("token lifetime must be positive")
        for what, ids in (
            ("user-assigned identity", [i.client_id for i in self.user_assigned]),
            ("app", [a.client_id for a in self.apps]),
        ):
            seen: set[str] = set()
            for client_id in ids:
                if client_id.lower() in seen:
                    raise ValueError(f"{what} {client_id} is configured twice")
                seen.add(client_id.lower())

    def find(self, selector: str, value: str) -> Identity | None:
        """The user-assigned identity named by ``client_id``/``object_id``/``mi_res_id`` (ids are case-insensitive)."""
        wanted = value.strip().lower()
        for ident in self.user_assigned:
            candidate = {"client_id": ident.client_id, "object_id": ident.object_id, "mi_res_id": ident.resource_id}
            if candidate[selector].lower() == wanted:
                return ident
        return None
