"""What the Graph handlers read of a request, so a request inside a ``$batch`` is served like one on the wire.

``aiohttp.web.Request`` satisfies :class:`Inbound`; :class:`InnerRequest` is one entry of a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy


class Inbound(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def raw_path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def charset(self) -> str | None: ...
    async def read(self) -> bytes: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...


class InnerRequest(MutableMapping[Any, Any]):
    """One request of a ``$batch``: its method, relative URL (under the batch's version), headers and body.

    The ``Authorization`` header is the batch's: Graph authorises every request of a batch with the
    batch's token (json-batching: the individual requests carry no token of their own).
    """

    def __init__(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes, *, scheme: str, host: str
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers))
        self.scheme = scheme
        self.host = host
        self._body = body
        self._state: dict[Any, Any] = {}
        declared = self.headers.get("Content-Type", "")
        kind, *params = (part.strip() for part in declared.split(";"))
        self.content_type = kind.lower() or "application/octet-stream"
        charset = next((p.partition("=")[2].strip('"') for p in params if p.lower().startswith("charset=")), None)
        self.charset = charset or None

    async def read(self) -> bytes:
        return self._body

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._state[key]

    def __iter__(self) -> Any:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)
