"""Keys of what every handler reads from the aiohttp application, and the JSON answer helper."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .canvas_keys import CanvasSigningKey
from .config import LmsConfig
from .state import LmsState

CONFIG = web.AppKey("config", LmsConfig)
STATE = web.AppKey("state", LmsState)
CANVAS_KEY = web.AppKey("canvas_key", CanvasSigningKey)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # json.dumps keeps integers exact (Canvas ids beyond 2^53 stay what was seeded).
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers or {})


def page_window(request: web.Request, size_param: str, page_param: str, default: int, maximum: int) -> tuple[int, int]:
    """(page, size) of a paged list request: 1-based page, size clamped to ``1..maximum`` as the vendors do;
    a value that is not a number is the default (Canvas and DRF ignore it rather than fail)."""

    def number(name: str, fallback: int) -> int:
        raw = request.query.get(name, "")
        return int(raw) if raw.isdigit() and int(raw) > 0 else fallback

    return number(page_param, 1), min(max(1, number(size_param, default)), maximum)
