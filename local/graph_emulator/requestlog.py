"""Recent Graph requests, for tests and for users debugging their integration."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    time: str
    method: str
    path: str
    status: int | None  # None when the connection was dropped
    faulted: str | None
    token_kind: str | None
    request_id: str
    client_request_id: str
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "time": data["time"],
            "method": data["method"],
            "path": data["path"],
            "status": data["status"],
            "faulted": data["faulted"],
            "tokenKind": data["token_kind"],
            "requestId": data["request_id"],
            "clientRequestId": data["client_request_id"],
            "durationMs": data["duration_ms"],
        }


class RequestLog:
    """Bounded, thread-safe ring of the most recent requests (oldest first)."""

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=limit)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
