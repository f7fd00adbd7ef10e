"""The per-app bundle every handler needs, stored under one typed aiohttp app key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .auth import Caller
from .faults import FaultInjector
from .requestlog import RequestLog
from .schema import Metadata, Validator
from .state import EmulatorState

DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class EmulatorSettings:
    page_size: int = DEFAULT_PAGE_SIZE
    signing_key: str | None = None  # None: local/tokens.py default (env VLS_LOCAL_SIGNING_KEY)


@dataclass(frozen=True)
class EmulatorRuntime:
    state: EmulatorState
    faults: FaultInjector
    requests: RequestLog
    settings: EmulatorSettings
    metadata: Metadata
    validator: Validator


RUNTIME = web.AppKey("graph_emulator_runtime", EmulatorRuntime)
CALLER = web.RequestKey("graph_emulator_caller", Caller)
