"""Bearer-token checks with the local stack's token format (``local/tokens.py``).

Permissions mirror the Graph docs: content is app-only for writes (delegated reads allowed),
providers are delegated-only. The caller's app id (the ``appid`` claim, Entra v1; ``azp`` in v2 tokens)
is kept: a provider remembers the app that registered it (see ``routes._require_bound_app``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from local import tokens

from .errors import forbidden, unauthenticated

TokenKind = Literal["app", "delegated"]

CONTENT_READ_ROLES = ("LearningContent.Read.All", "LearningContent.ReadWrite.All")
CONTENT_WRITE_ROLES = ("LearningContent.ReadWrite.All",)
CONTENT_READ_SCOPES = ("LearningContent.Read.All",)
PROVIDER_READ_SCOPES = ("LearningProvider.Read", "LearningProvider.ReadWrite")
PROVIDER_WRITE_SCOPES = ("LearningProvider.ReadWrite",)


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    kind: TokenKind
    roles: frozenset[str]
    scopes: frozenset[str]
    app_id: str | None = None  # the client app the token was issued to; None if the token names none


def bearer_token(header: str | None) -> str:
    if not header:
        raise unauthenticated("Access token is empty.")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Access token is empty.")
    return token.strip()


# Verified tokens, so a client's many requests with one token pay for its signature check once (it was
# 40% of a PATCH's server time). Only a token that passed ``tokens.verify`` enters; a hit re-checks the
# expiry (the one check time can change). Bounded: a full cache is emptied, not grown.
_VERIFIED: dict[tuple[str, str | None], tuple[Caller, float]] = {}
_VERIFIED_LIMIT = 1024


def authenticate(header: str | None, *, signing_key: str | None = None) -> Caller:
    """Verify the token and classify it; every failure is a Graph 401."""
    token = bearer_token(header)
    signing_key = signing_key or tokens.signing_key()  # the key in force now (the env may change it)
    cached = _VERIFIED.get((token, signing_key))
    if cached is not None:
        caller, expires = cached
        if time.time() < expires:
            return caller
        _VERIFIED.pop((token, signing_key), None)
    try:
        claims = tokens.verify(token, key=signing_key)
    except tokens.TokenError as exc:
        raise unauthenticated(str(exc)) from exc
    caller = _caller(claims)
    if len(_VERIFIED) >= _VERIFIED_LIMIT:
        _VERIFIED.clear()
    _VERIFIED[(token, signing_key)] = (caller, float(claims["exp"]))
    return caller


def _caller(claims: dict[str, Any]) -> Caller:
    roles = frozenset(tokens.app_roles(claims))
    scopes = frozenset(tokens.delegated_scopes(claims))
    if claims.get("idtyp") == "app" and roles:
        kind: TokenKind = "app"
    elif claims.get("idtyp") == "user" and scopes:
        kind = "delegated"
    else:
        raise unauthenticated("Either scp or roles claim need to be present in the token.")
    app_id = claims.get("appid") or claims.get("azp")
    return Caller(str(claims["tid"]), kind, roles, scopes, str(app_id) if app_id else None)


def token_kind_hint(header: str | None) -> str | None:
    """Unverified token kind for the request log only (it also covers rejected requests)."""
    try:
        claims: dict[str, Any] = jwt.decode(bearer_token(header), options={"verify_signature": False})
    except Exception:
        return "invalid" if header else None
    return {"app": "app", "user": "delegated"}.get(str(claims.get("idtyp")), "unknown")


def _need(granted: frozenset[str], needed: tuple[str, ...], what: str) -> None:
    if not granted.intersection(needed):
        raise forbidden(
            f"Missing {what} permissions on the request. API requires one of '{', '.join(needed)}'. "
            f"{what.capitalize()}s on the request '{', '.join(sorted(granted))}'."
        )


def require_content_read(caller: Caller) -> None:
    if caller.kind == "app":
        _need(caller.roles, CONTENT_READ_ROLES, "role")
    else:
        _need(caller.scopes, CONTENT_READ_SCOPES, "scope")


def require_content_write(caller: Caller) -> None:
    if caller.kind != "app":
        raise forbidden(
            "Delegated permissions are not supported for this operation; "
            "use an application token with LearningContent.ReadWrite.All."
        )
    _need(caller.roles, CONTENT_WRITE_ROLES, "role")


def require_provider(caller: Caller, *, write: bool) -> None:
    if caller.kind != "delegated":
        raise forbidden(
            "Application permissions are not supported for this operation; "
            "learning providers can only be managed with a delegated (user) token."
        )
    _need(caller.scopes, PROVIDER_WRITE_SCOPES if write else PROVIDER_READ_SCOPES, "scope")
