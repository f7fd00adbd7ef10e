"""Sample LMS deliveries (JSON files beside this module, built from the vendor facts in
docs/sources.md) and the helpers that sign them as each platform does: a local RSA key set for
Canvas JWTs, Thinkific's hex HMAC, Standard Webhooks for mapped sources."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.sources import WebhookRequest
from shared.sources.canvas import JwksCache
from shared.sources.thinkific import sign as thinkific_sign

HERE = Path(__file__).resolve().parent
# One authentic delivery per kind (and the LMS APIs' answers) lives with the local stack, which
# sends them too (``python -m local.send_sample``); the rest of the samples are the tests' own.
LOCAL_SAMPLES = HERE.parents[1] / "local" / "samples" / "lms"
RECEIVED_AT = datetime(2024, 9, 10, 12, 0, tzinfo=UTC)  # after every sample's event time


def load(name: str) -> Any:
    """A fresh copy of ``tests/payloads/<name>.json`` or ``local/samples/lms/<name>.json`` (e.g.
    ``canvas/course_created``)."""
    return copy.deepcopy(_load(name))


@cache
def _load(name: str) -> Any:
    path = HERE / f"{name}.json"
    return json.loads((path if path.exists() else LOCAL_SAMPLES / f"{name}.json").read_text())


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def request(
    body: Any,
    *,
    source: str = "lms",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
    received_at: datetime = RECEIVED_AT,
) -> WebhookRequest:
    return WebhookRequest(
        source_name=source,
        headers={"content-type": content_type, **{k.lower(): v for k, v in (headers or {}).items()}},
        body=raw(body),
        correlation_id="corr-1",
        received_at=received_at,
        query=query or {},
    )


# -- Canvas: RS256 JWTs and a local key set ---------------------------------------------------------


class CanvasKeys:
    """A JWKS like Canvas's (previous, current, next) with the private keys to sign as Canvas does."""

    def __init__(self, kids: tuple[str, ...] = ("2024-08", "2024-09", "2024-10")) -> None:
        self.private = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in kids}
        self.current = kids[len(kids) // 2]

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.private.items():
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**public, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, **extra: Any) -> bytes:
        """The body Canvas POSTs with "Sign Payload" on: the Live Event as the JWT's claims."""
        kid = kid or self.current
        token = jwt.encode({**claims, **extra}, self.private[kid], algorithm="RS256", headers={"kid": kid})
        return token.encode()

    def cache(self) -> JwksCache:
        """A key cache whose fetch port answers from this key set, counting fetches."""
        return JwksCache(lambda url: self.jwks(), clock=time.monotonic)


@cache
def canvas_keys() -> CanvasKeys:
    """One key set per test run: RSA key generation takes a moment."""
    return CanvasKeys()


# -- Thinkific ---------------------------------------------------------------------------------------


def thinkific_headers(body: Any, key: str) -> dict[str, str]:
    return {"X-Thinkific-Hmac-Sha256": thinkific_sign(raw(body), key)}
