"""Who the local identity endpoint can issue tokens for.

The ids are fixed (or derived from the client id) so the Graph emulator, the tests and the
launcher can all predict the ``oid``/``appid`` claims without asking the endpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from local.tokens import DEFAULT_TENANT_ID

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


@dataclass(frozen=True)
class IdentityConfig:
    """Everything the endpoint serves; ``system=None`` means the app has no system-assigned identity."""

    header: str
    system: Identity | None = field(default_factory=Identity.system)
    user_assigned: tuple[Identity, ...] = ()
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    tenant_id: str = DEFAULT_TENANT_ID
    dev_scopes: tuple[str, ...] = DEFAULT_DEV_SCOPES
    signing_key: str | None = None  # None: ``local.tokens.signing_key()`` (env or the stack default)

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("the X-IDENTITY-HEADER secret must not be empty")
        if self.lifetime_seconds <= 0:
            raise ValueError("token lifetime must be positive")
        seen: set[str] = set()
        for ident in self.user_assigned:
            key = ident.client_id.lower()
            if key in seen:
                raise ValueError(f"user-assigned identity {ident.client_id} is configured twice")
            seen.add(key)

    def find(self, selector: str, value: str) -> Identity | None:
        """The user-assigned identity named by ``client_id``/``object_id``/``mi_res_id`` (ids are case-insensitive)."""
        wanted = value.strip().lower()
        for ident in self.user_assigned:
            candidate = {"client_id": ident.client_id, "object_id": ident.object_id, "mi_res_id": ident.resource_id}
            if candidate[selector].lower() == wanted:
                return ident
        return None
