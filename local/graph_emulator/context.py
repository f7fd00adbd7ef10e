"""The per-app bundle every handler needs, stored under one typed aiohttp app key."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .auth import Caller
from .faults import FaultInjector
from .requestlog import RequestLog
from .schema import Metadata, Validator
from .state import EmulatorState

DEFAULT_PAGE_SIZE = 100

DeleteForms = Literal["documented", "sdk", "both"]
PatchSemantics = Literal["merge", "replace"]
AppBinding = Literal["strict-app", "lenient"]
BatchMode = Literal["on", "off"]


@dataclass(frozen=True)
class EmulatorSettings:
    page_size: int = DEFAULT_PAGE_SIZE
    signing_key: str | None = None  # None: local/tokens.py default (env VLS_LOCAL_SIGNING_KEY)


class Modes(BaseModel):
    """How the emulator reads what Graph leaves open (``GET/PATCH /_emulator/settings``, camelCase).

    The defaults are the strict readings (README "Emulator settings"): ``documented`` accepts only the
    delete form the docs show; ``merge`` keeps properties a PATCH leaves out, so only a client that
    sends every property it manages gets the same result under both readings; ``strict-app`` refuses a
    content write from an app other than the one that registered the provider. ``batch`` and
    ``latencyMs`` are not readings of Graph but test conditions: batching refused, a round trip's delay.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    delete_forms: DeleteForms = Field(default="documented", alias="deleteForms")
    patch_semantics: PatchSemantics = Field(default="merge", alias="patchSemantics")
    visibility_lag_ms: int = Field(default=0, ge=0, le=86_400_000, alias="visibilityLagMs")
    app_binding: AppBinding = Field(default="strict-app", alias="appBinding")
    # "off" refuses every $batch (a client's fallback to single requests can be tested); see batch.py.
    batch: BatchMode = Field(default="on")
    # A fixed delay per HTTP request (one round trip; a $batch pays it once), without blocking the loop.
    latency_ms: int = Field(default=0, ge=0, le=60_000, alias="latencyMs")

    def to_json(self) -> dict[str, object]:
        return self.model_dump(by_alias=True)


class ModeSwitch:
    """The current modes, changeable at run time; ``reset`` returns to the start-up modes. Thread-safe."""

    def __init__(self, initial: Modes) -> None:
        self._lock = threading.Lock()
        self._initial = initial
        self._current = initial

    @property
    def current(self) -> Modes:
        with self._lock:
            return self._current

    def update(self, changes: Modes) -> Modes:
        """Apply the fields ``changes`` sets explicitly."""
        with self._lock:
            self._current = self._current.model_copy(update=changes.model_dump(exclude_unset=True))
            return self._current

    def reset(self) -> None:
        with self._lock:
            self._current = self._initial


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class EmulatorRuntime:
    state: EmulatorState
    faults: FaultInjector
    requests: RequestLog
    settings: EmulatorSettings
    metadata: Metadata
    validator: Validator
    modes: ModeSwitch
    sleep: Sleep = asyncio.sleep  # the per-request latency's wait (tests inject one that records)


RUNTIME = web.AppKey("graph_emulator_runtime", EmulatorRuntime)
CALLER = web.RequestKey("graph_emulator_caller", Caller)
REQUEST_ID = web.RequestKey("graph_emulator_request_id", str)
