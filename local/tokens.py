"""Access tokens of the local stack.

The identity endpoint mints them and the Graph emulator checks them, so both sides share one
format: an HS256 JWT shaped like an Entra v1 access token (``aud``, ``iss``, ``tid``, ``oid``,
``appid``, ``idtyp``, and ``roles`` for app tokens or ``scp`` for delegated ones). Version 2.0 tokens
(``TokenRequest(version="2.0")``) differ the way Entra's do: the issuer is
``https://login.microsoftonline.com/{tid}/v2.0`` and the client is ``azp`` instead of ``appid``;
managed-identity tokens for :data:`TOKEN_EXCHANGE_AUDIENCE` are of that kind, because that issuer is
what an app's federated credential trusts. The signing key is local-only; it comes from
``VLS_LOCAL_SIGNING_KEY`` or the stack's default.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ACCEPTED_AUDIENCES = (GRAPH_AUDIENCE, GRAPH_AUDIENCE + "/", GRAPH_APP_ID)
# What a managed-identity token must be issued for to serve as an app's federated credential
# (Entra global cloud; the US Gov and China clouds use their own values, not emulated here).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret
DEFAULT_TENANT_ID = "00000000-0000-0000-0000-00000000a11c"
DEFAULT_SIGNING_KEY = "vlsync-local-stack-signing-key-not-a-secret"
ALGORITHM = "HS256"


TokenVersion = Literal["1.0", "2.0"]


def signing_key() -> str:
    return os.environ.get("VLS_LOCAL_SIGNING_KEY", DEFAULT_SIGNING_KEY)


def issuer(tenant_id: str, version: TokenVersion = "1.0") -> str:
    """Entra's ``iss`` for a token of ``version``."""
    if version == "2.0":
        return f"https://login.microsoftonline.com/{tenant_id}/v2.0"
    return f"https://sts.windows.net/{tenant_id}/"


@dataclass(frozen=True)
class TokenRequest:
    """What a token says about its caller."""

    audience: str = GRAPH_AUDIENCE
    tenant_id: str = DEFAULT_TENANT_ID
    client_id: str = "11111111-1111-1111-1111-111111111111"
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    lifetime_seconds: int = 3600
    version: TokenVersion = "1.0"

    @property
    def delegated(self) -> bool:
        return bool(self.scopes)


def mint(req: TokenRequest, *, key: str | None = None, now: float | None = None) -> tuple[str, int]:
    """Return ``(token, expires_on_epoch_seconds)``."""
    issued = int(now if now is not None else time.time())
    expires = issued + req.lifetime_seconds
    claims: dict[str, Any] = {
        "aud": req.audience,
        "iss": issuer(req.tenant_id, req.version),
        "tid": req.tenant_id,
        "oid": req.object_id,
        "sub": req.object_id,
        # v2.0 tokens name the client ``azp``; v1.0 tokens ``appid`` (Entra's access-token claims reference).
        ("azp" if req.version == "2.0" else "appid"): req.client_id,
        "ver": req.version,
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "idtyp": "user" if req.delegated else "app",
        "uti": uuid.uuid4().hex,
    }
    if req.roles:
        claims["roles"] = list(req.roles)
    if req.scopes:
        claims["scp"] = " ".join(req.scopes)
    return jwt.encode(claims, key or signing_key(), algorithm=ALGORITHM), expires


class TokenError(Exception):
    """The token is missing, malformed, expired, signed with another key or meant for another audience."""


class TokenSignatureError(TokenError):
    """A well-formed token whose signature is not the local key's (the token endpoint answers this apart)."""


def verify(
    token: str,
    *,
    key: str | None = None,
    audiences: tuple[str, ...] | None = ACCEPTED_AUDIENCES,
    check_lifetime: bool = True,
) -> dict[str, Any]:
    """Check signature, expiry and audience; return the claims.

    ``audiences=None`` and ``check_lifetime=False`` leave those checks to a caller that reports them
    in its own words (the local Entra token endpoint validating a client assertion).
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key or signing_key(),
            algorithms=[ALGORITHM],
            audience=None if audiences is None else list(audiences),
            options={
                "require": ["exp", "aud", "tid"],
                "verify_aud": audiences is not None,
                "verify_exp": check_lifetime,
                "verify_nbf": check_lifetime,
                "verify_iat": check_lifetime,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("Lifetime validation failed, the token is expired.") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("Invalid audience.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenSignatureError(f"Access token validation failure: {exc}.") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"Access token validation failure: {exc}.") from exc
    return claims


def app_roles(claims: dict[str, Any]) -> set[str]:
    return set(claims.get("roles") or ()) if claims.get("idtyp") == "app" else set()


def delegated_scopes(claims: dict[str, Any]) -> set[str]:
    return set(str(claims.get("scp", "")).split()) if claims.get("idtyp") == "user" else set()
