"""Recent Graph requests, for tests and for users debugging their integration, and running totals.

The ring keeps the most recent requests only; the totals (``GET /_emulator/requests/stats``) count
every request since the last clear, so a benchmark can count Graph calls over any number of them.
A request inside a ``$batch`` is recorded on its own, with ``batchRequestId`` naming its batch.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


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
    batch_request_id: str | None = None  # the request-id of the $batch holding it; None: an HTTP request

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
            "batchRequestId": data["batch_request_id"],
        }


class RequestLog:
    """Bounded, thread-safe ring of the most recent requests (oldest first), plus unbounded totals."""

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=limit)
        self._http = 0
        self._batches = 0
        self._inner = 0
        self._writes = 0
        self._statuses: Counter[str] = Counter()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if record.batch_request_id is None:
                self._http += 1
                self._batches += record.path.partition("?")[0].endswith("/$batch")
            else:
                self._inner += 1
            self._statuses[str(record.status) if record.status is not None else "dropped"] += 1
            is_batch = record.batch_request_id is None and record.path.partition("?")[0].endswith("/$batch")
            if record.method in WRITE_METHODS and not is_batch:
                self._writes += 1

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def stats(self) -> dict[str, Any]:
        """``http``: HTTP requests (a $batch counts once); ``batches``: of them $batch; ``batched``:
        requests inside batches; ``writes``: Graph writes, batched or not (the $batch POST itself is not
        one); ``statuses``: every answer by status, inner ones included."""
        with self._lock:
            return {
                "http": self._http,
                "batches": self._batches,
                "batched": self._inner,
                "writes": self._writes,
                "statuses": dict(self._statuses),
            }

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._http = self._batches = self._inner = self._writes = 0
            self._statuses.clear()
