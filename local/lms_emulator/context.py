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
