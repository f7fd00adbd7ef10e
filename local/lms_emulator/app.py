"""aiohttp application: the four platforms' routes, the admin API, and one middleware for faults and the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from . import admin, canvas, moodle, openedx, thinkific
from .canvas_keys import CanvasSigningKey
from .config import PLATFORMS, LmsConfig
from .context import CANVAS_KEY, CONFIG, STATE
from .state import LmsState

log = logging.getLogger("lms_emulator")

ERROR_FORMS: dict[str, Callable[[int, str], web.Response]] = {
    "canvas": canvas.error,
    "moodle": moodle.error,
    "openedx": openedx.error,
    "thinkific": thinkific.error,
}
UNFAULTED = {"/canvas/jwks"}  # the key server is Canvas's CDN in production, not the Canvas API


def _platform(path: str) -> str | None:
    first = path.split("/", 2)[1] if path.count("/") >= 2 else ""
    return first if first in PLATFORMS else None


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    platform = _platform(request.path)
    if platform is None:
        return await handler(request)
    state = request.app[STATE]
    fault = None if request.path in UNFAULTED else state.take_fault(platform)
    response: web.StreamResponse
    if fault is not None:
        response = ERROR_FORMS[platform](fault.status, f"fault injected by the LMS emulator ({fault.status})")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # no such route under the platform's root
            response = ERROR_FORMS[platform](exc.status, exc.reason)
    state.record(platform, request.method, request.path, response.status)
    log.info("%s %s %s -> %s", platform, request.method, request.path, response.status)
    return response


def create_app(config: LmsConfig, state: LmsState | None = None) -> web.Application:
    app = web.Application(middlewares=[api_middleware])
    app[CONFIG] = config
    app[STATE] = state or LmsState()
    app[CANVAS_KEY] = CanvasSigningKey()
    app.add_routes([*admin.ROUTES, *canvas.ROUTES, *moodle.ROUTES, *openedx.ROUTES, *thinkific.ROUTES])
    return app
