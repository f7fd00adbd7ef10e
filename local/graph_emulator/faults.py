"""Fault injection: random ratios, a token bucket, and a deterministic script.

Clients must survive throttling (429 + Retry-After), transient 5xx, slow answers and dropped
connections. Ratios draw from a seeded RNG so a failing run can be replayed; the script
(``POST /_emulator/faults/next``) gives tests exact control over the next matching requests.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_MODEL_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FaultMatch(BaseModel):
    """Which Graph requests a fault applies to; an absent field matches everything."""

    model_config = _MODEL_CONFIG

    methods: list[str] | None = None
    path_contains: str | None = Field(default=None, alias="pathContains")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        upper = [m.upper() for m in value]
        unknown = sorted(set(upper) - {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
        if unknown:
            raise ValueError(f"unknown HTTP methods: {', '.join(unknown)}")
        return upper

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path


class TokenBucketConfig(BaseModel):
    model_config = _MODEL_CONFIG

    capacity: int = Field(ge=1)
    refill_per_second: float = Field(ge=0, alias="refillPerSecond")


class FaultConfig(BaseModel):
    """The ``PUT /_emulator/faults`` document (camelCase on the wire)."""

    model_config = _MODEL_CONFIG

    seed: int | None = None
    throttle_ratio: float = Field(default=0.0, ge=0, le=1, alias="throttleRatio")
    retry_after_seconds: int = Field(default=1, ge=0, le=3600, alias="retryAfterSeconds")
    token_bucket: TokenBucketConfig | None = Field(default=None, alias="tokenBucket")
    server_error_ratio: float = Field(default=0.0, ge=0, le=1, alias="serverErrorRatio")
    server_error_status: int = Field(default=503, alias="serverErrorStatus")
    latency_ms: int = Field(default=0, ge=0, le=120_000, alias="latencyMs")
    drop_connection_ratio: float = Field(default=0.0, ge=0, le=1, alias="dropConnectionRatio")
    match: FaultMatch | None = None

    @field_validator("server_error_status")
    @classmethod
    def _server_error(cls, value: int) -> int:
        if value not in (500, 502, 503, 504):
            raise ValueError("serverErrorStatus must be one of 500, 502, 503, 504")
        return value


class ScriptedFault(BaseModel):
    """One entry of ``POST /_emulator/faults/next``: an error status, a drop, and/or a delay.

    ``retryAfterMinutesInBody`` (429/503 only) answers as the Viva error tables show it: the hint only
    in the message, "Retry after {noOfMinutes} minutes", and no ``Retry-After`` header.
    """

    model_config = _MODEL_CONFIG

    status: int | None = Field(default=None, ge=400, le=599)
    retry_after_seconds: int | None = Field(default=None, ge=0, le=3600, alias="retryAfterSeconds")
    retry_after_minutes_in_body: int | None = Field(default=None, ge=0, le=60, alias="retryAfterMinutesInBody")
    drop: bool = False
    latency_ms: int = Field(default=0, ge=0, le=120_000, alias="latencyMs")
    message: str | None = None
    match: FaultMatch | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> ScriptedFault:
        if self.status is None and not self.drop and not self.latency_ms:
            raise ValueError("a scripted fault needs 'status', 'drop': true or 'latencyMs'")
        if self.status is not None and self.drop:
            raise ValueError("'status' and 'drop' cannot be combined")
        if self.retry_after_minutes_in_body is not None:
            if self.status not in (429, 503):
                raise ValueError("'retryAfterMinutesInBody' needs 'status' 429 or 503")
            if self.retry_after_seconds is not None:
                raise ValueError("'retryAfterMinutesInBody' and 'retryAfterSeconds' cannot be combined")
        return self


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request. ``status`` None and ``drop`` False means: delay, then serve it."""

    kind: str
    latency_ms: int = 0
    drop: bool = False
    status: int | None = None
    retry_after_seconds: int | None = None  # sent as the Retry-After header
    message: str | None = None


class FaultInjector:
    """Decides, per Graph request, whether and how to misbehave. Thread-safe."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._script: deque[ScriptedFault] = deque()
        self.injected = 0
        self.configure(config)

    def configure(self, config: FaultConfig | None) -> None:
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed if config else None)
            bucket = config.token_bucket if config else None
            self._tokens = float(bucket.capacity) if bucket else 0.0
            self._refilled_at = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self.injected = 0
        self.configure(None)

    def push_script(self, entries: list[ScriptedFault]) -> None:
        with self._lock:
            self._script.extend(entries)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "config": self._config.model_dump(by_alias=True, exclude_none=True) if self._config else None,
                "script": [e.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True) for e in self._script],
                "injected": self.injected,
                "tokens": round(self._tokens, 3) if self._config and self._config.token_bucket else None,
            }

    def decide(self, method: str, path: str) -> FaultDecision | None:
        with self._lock:
            decision = self._scripted(method, path) or self._configured(method, path)
            if decision and (decision.drop or decision.status is not None):
                self.injected += 1
            return decision

    def decide_envelope(self, method: str, path: str) -> FaultDecision | None:
        """For a ``$batch`` POST itself: only a scripted entry whose own ``match`` names ``$batch`` in
        ``pathContains``. The configured faults and every other entry apply to its requests one by one
        (Graph throttles each request of a batch on its own)."""
        with self._lock:
            decision = self._scripted(method, path, envelope=True)
            if decision and (decision.drop or decision.status is not None):
                self.injected += 1
            return decision

    def _scripted(self, method: str, path: str, *, envelope: bool = False) -> FaultDecision | None:
        default_match = self._config.match if self._config else None
        for entry in self._script:
            match = entry.match or default_match
            aims_at_batch = bool(entry.match and entry.match.path_contains and "$batch" in entry.match.path_contains)
            if envelope != aims_at_batch:
                continue
            if match is None or match.matches(method, path):
                self._script.remove(entry)
                retry = entry.retry_after_seconds
                message = entry.message
                if entry.retry_after_minutes_in_body is not None:
                    message = message or f"Retry after {entry.retry_after_minutes_in_body} minutes"
                elif retry is None and entry.status in (429, 503):
                    retry = self._config.retry_after_seconds if self._config else 1
                kind = "drop" if entry.drop else (str(entry.status) if entry.status else "latency")
                return FaultDecision(f"scripted:{kind}", entry.latency_ms, entry.drop, entry.status, retry, message)
        return None

    def _configured(self, method: str, path: str) -> FaultDecision | None:
        cfg = self._config
        if cfg is None or (cfg.match is not None and not cfg.match.matches(method, path)):
            return None
        # Draw every ratio on every matching request so a seed replays identically.
        drop_draw, throttle_draw, error_draw = self._rng.random(), self._rng.random(), self._rng.random()
        latency = cfg.latency_ms
        if drop_draw < cfg.drop_connection_ratio:
            return FaultDecision("drop", latency, drop=True)
        if cfg.token_bucket is not None:
            wait = self._take_token(cfg.token_bucket, cfg.retry_after_seconds)
            if wait is not None:
                return FaultDecision("tokenBucket", latency, status=429, retry_after_seconds=wait)
        if throttle_draw < cfg.throttle_ratio:
            return FaultDecision("throttle", latency, status=429, retry_after_seconds=cfg.retry_after_seconds)
        if error_draw < cfg.server_error_ratio:
            status = cfg.server_error_status
            retry = cfg.retry_after_seconds if status == 503 else None
            return FaultDecision("serverError", latency, status=status, retry_after_seconds=retry)
        return FaultDecision("latency", latency) if latency else None

    def _take_token(self, bucket: TokenBucketConfig, fallback_retry: int) -> int | None:
        """Consume a token; when empty return the whole seconds until the next one."""
        now = time.monotonic()
        self._tokens = min(float(bucket.capacity), self._tokens + (now - self._refilled_at) * bucket.refill_per_second)
        self._refilled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        if bucket.refill_per_second <= 0:
            return max(1, fallback_retry)
        return max(1, math.ceil((1 - self._tokens) / bucket.refill_per_second))
