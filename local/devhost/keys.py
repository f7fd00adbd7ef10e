"""Function keys, checked only when asked: Core Tools does not enforce auth levels locally, and by
default neither does the dev host. A test that must show what Azure refuses passes ``HostKeys``.

The rule is the host's: ``anonymous`` needs no key; ``function`` takes a key of that function, a
host key, or the master key; ``admin`` takes the master key only. The key comes in the
``x-functions-key`` header or the ``code`` query parameter; a missing or wrong key is a 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


def _any_equal(presented: str, keys: Iterable[str]) -> bool:
    return any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys)


@dataclass(frozen=True)
class HostKeys:
    master: str
    host: tuple[str, ...] = ()  # host keys (``default``): valid for every function-level function
    functions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # function name -> its own keys

    def __post_init__(self) -> None:
        if not self.master or not all(self.host) or not all(all(k) for k in self.functions.values()):
            raise ValueError("keys must not be empty")

    def allows(self, function: str, auth_level: str, presented: str | None) -> bool:
        if auth_level == "anonymous":
            return True
        if not presented:
            return False
        if _any_equal(presented, [self.master]):
            return True
        if auth_level == "admin":
            return False
        return _any_equal(presented, [*self.host, *self.functions.get(function, ())])


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a request carries: the header first, then the query parameter."""
    return headers.get(KEY_HEADER) or query.get(KEY_QUERY) or None
