"""The emulator's memory: seeded courses per platform, the request log, scripted faults, Open edX tokens."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import Platform

REQUEST_LOG_LIMIT = 1000  # plenty for a test or a debugging session; the oldest entries drop off


@dataclass(frozen=True)
class Fault:
    """The next ``remaining`` API calls of a platform answer ``status`` (with ``Retry-After`` if set)."""

    status: int
    remaining: int
    retry_after: int | None


@dataclass(frozen=True)
class RequestRecord:
    platform: str
    method: str
    path: str  # never the query: Moodle's token travels in it
    status: int
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "at": self.at,
        }


class LmsState:
    """Thread-safe: tests seed and read it from their own thread while the server runs on another."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._courses: dict[tuple[Platform, str], dict[str, dict[str, Any]]] = {}
        self._faults: dict[str, Fault] = {}
        self._requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._tokens: dict[str, float] = {}  # Open edX access token -> expiry (epoch seconds)

    # -- courses (and Thinkific products) -------------------------------------------------------
    def put_course(
        self, platform: Platform, course_id: str, course: dict[str, Any], collection: str = "courses"
    ) -> None:
        with self._lock:
            self._courses.setdefault((platform, collection), {})[course_id] = course

    def delete_course(self, platform: Platform, course_id: str, collection: str = "courses") -> bool:
        with self._lock:
            return self._courses.get((platform, collection), {}).pop(course_id, None) is not None

    def course(self, platform: Platform, course_id: str, collection: str = "courses") -> dict[str, Any] | None:
        with self._lock:
            return self._courses.get((platform, collection), {}).get(course_id)

    def courses(self, platform: Platform, collection: str = "courses") -> list[dict[str, Any]]:
        """Every seeded course of a platform in id order (numeric ids by value), as list APIs page them."""
        with self._lock:
            stored = dict(self._courses.get((platform, collection), {}))
        return [stored[key] for key in sorted(stored, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))]

    # -- faults --------------------------------------------------------------------------------
    def add_fault(self, platform: str, fault: Fault) -> None:
        with self._lock:
            self._faults[platform] = fault

    def take_fault(self, platform: str) -> Fault | None:
        """The fault this call answers with, if one is scripted; counts it down."""
        with self._lock:
            fault = self._faults.get(platform)
            if fault is None:
                return None
            if fault.remaining <= 1:
                del self._faults[platform]
            else:
                self._faults[platform] = Fault(fault.status, fault.remaining - 1, fault.retry_after)
            return fault

    # -- request log ---------------------------------------------------------------------------
    def record(self, platform: str, method: str, path: str, status: int) -> None:
        at = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            self._requests.append(RequestRecord(platform, method, path, status, at))

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- Open edX tokens -----------------------------------------------------------------------
    def issue_token(self, lifetime_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self._clock() + lifetime_seconds
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and self._clock() < expiry
