"""What the emulator is started with: the API secret it accepts, and the fixed identities of Open edX and Thinkific."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Platform = Literal["canvas", "moodle", "openedx", "thinkific"]
PLATFORMS: tuple[Platform, ...] = ("canvas", "moodle", "openedx", "thinkific")

DEFAULT_OPENEDX_CLIENT_ID = "vlsync-dev"
DEFAULT_THINKIFIC_SUBDOMAIN = "acme"
# Open edX's default JWT access token lifetime (JWT_AUTH JWT_EXPIRATION, 3600 s in edx-platform's settings);
# the token endpoint's sample output shows ``expires_in: 3600``
# (https://github.com/openedx/edx-platform/blob/master/docs/references/auth_code_samples.rst).
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600


@dataclass(frozen=True)
class LmsConfig:
    """``secret`` is every platform's API secret: the Canvas access token, the Moodle web-service token,
    the Open edX OAuth2 client secret and the Thinkific API key (one value keeps the local stack simple)."""

    secret: str
    openedx_client_id: str = DEFAULT_OPENEDX_CLIENT_ID
    thinkific_subdomain: str = DEFAULT_THINKIFIC_SUBDOMAIN
    token_lifetime_seconds: int = DEFAULT_TOKEN_LIFETIME_SECONDS

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the LMS emulator needs a non-empty secret")
