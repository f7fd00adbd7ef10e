"""A dev signing key for Canvas Live Events, so a local Canvas source can verify RS256 JWTs for real.

Canvas Data Services signs Live Events with RS256 and publishes the public keys as a JWKS (the
source's ``jwksUrl``; docs/sources.md "Canvas"). Locally the emulator plays that key server:
``GET {url}/canvas/jwks`` serves the public key and ``POST {url}/_lms/canvas/sign`` signs claims
with it (for ``local.send`` and the tests). The key lives as long as the process; a restarted
emulator has a new ``kid``, which the app's key cache fetches on its first unknown ``kid``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

RSA_KEY_BITS = 2048  # what RS256 keys are in practice; larger only slows start-up


class CanvasSigningKey:
    def __init__(self) -> None:
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        self.kid = f"lms-emulator-{secrets.token_hex(4)}"

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._private.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def sign(self, claims: dict[str, Any]) -> str:
        """The body Canvas POSTs with "Sign Payload" on: the Live Event as the JWT's claims."""
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})
