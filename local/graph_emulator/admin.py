"""The unauthenticated ``/_emulator`` admin API: faults, settings, request log, state, providers, reset, health.

There is deliberately no endpoint to seed providers: seeding goes through the real Graph API
with a delegated token, so the emulator never holds data that real Graph could not.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from .context import RUNTIME, Modes
from .errors import GraphError, bad_request, method_not_allowed, not_found
from .faults import FaultConfig, ScriptedFault
from .payloads import json_response, read_json

log = logging.getLogger("graph_emulator.admin")

PREFIX = "/_emulator"
_SCRIPT = TypeAdapter(list[ScriptedFault])


def _validation_message(exc: ValidationError, what: str = "fault configuration") -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "body"
        problems.append(f"{where}: {err['msg']}")
    return f"Invalid {what}: " + "; ".join(problems)


async def health(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    snapshot = rt.state.snapshot_path
    return json_response(
        {"status": "ok", "pageSize": rt.settings.page_size, "snapshot": str(snapshot) if snapshot else None}
    )


async def persistence(request: web.Request) -> web.Response:
    """The snapshot and journal files, entries since the last compaction, compactions, last error."""
    return json_response(request.app[RUNTIME].state.persistence())


async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].faults.describe())


async def put_faults(request: web.Request) -> web.Response:
    body: Any = await read_json(request)
    try:
        config = FaultConfig.model_validate(body)
    except ValidationError as exc:
        raise bad_request(_validation_message(exc)) from exc
    faults = request.app[RUNTIME].faults
    faults.configure(config)
    log.info("faults configured config=%s", config.model_dump(by_alias=True, exclude_none=True))
    return json_response(faults.describe())


async def delete_faults(request: web.Request) -> web.Response:
    request.app[RUNTIME].faults.clear()
    log.info("faults cleared")
    return web.Response(status=204)


async def push_script(request: web.Request) -> web.Response:
    body: Any = await read_json(request)
    if isinstance(body, dict):
        body = [body]
    try:
        entries = _SCRIPT.validate_python(body)
    except ValidationError as exc:
        raise bad_request(_validation_message(exc)) from exc
    faults = request.app[RUNTIME].faults
    faults.push_script(entries)
    log.info("fault script extended entries=%s", len(entries))
    return json_response(faults.describe())


async def get_settings(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].modes.current.to_json())


async def patch_settings(request: web.Request) -> web.Response:
    """Change some settings (the others stay); ``POST /_emulator/reset`` restores the start-up ones."""
    body: Any = await read_json(request)
    try:
        changes = Modes.model_validate(body)
    except ValidationError as exc:
        raise bad_request(_validation_message(exc, "settings")) from exc
    modes = request.app[RUNTIME].modes.update(changes)
    log.info("settings changed settings=%s", modes.to_json())
    return json_response(modes.to_json())


async def get_requests(request: web.Request) -> web.Response:
    records = request.app[RUNTIME].requests.records()
    return json_response({"value": [r.to_json() for r in records]})


async def get_request_stats(request: web.Request) -> web.Response:
    """Totals since the last clear, over every request (the ring keeps only the recent ones)."""
    return json_response(request.app[RUNTIME].requests.stats())


async def delete_requests(request: web.Request) -> web.Response:
    request.app[RUNTIME].requests.clear()
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    rt.state.clear()
    rt.faults.clear()
    rt.requests.clear()
    rt.modes.reset()
    log.info("emulator reset")
    return web.Response(status=204)


async def get_state(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].state.dump())


async def get_providers(request: web.Request) -> web.Response:
    """Every registered provider and the app id it is bound to (``registeredByAppId``, null if unbound)."""
    return json_response({"value": request.app[RUNTIME].state.registrations()})


async def compact(request: web.Request) -> web.Response:
    """Start a compaction in the background (202); 409 without ``--snapshot`` or while one runs."""
    state = request.app[RUNTIME].state
    if state.journal is None:
        raise GraphError(409, "conflict", "The emulator keeps no snapshot (start it with --snapshot FILE).")
    if not state.compact(background=True):
        raise GraphError(409, "conflict", "A compaction is already running.")
    log.info("compaction started by the admin API")
    return json_response(state.persistence(), 202)


ROUTES: dict[str, dict[str, Any]] = {
    "/health": {"GET": health},
    "/persistence": {"GET": persistence},
    "/persistence/compact": {"POST": compact},
    "/faults": {"GET": get_faults, "PUT": put_faults, "DELETE": delete_faults},
    "/faults/next": {"POST": push_script},
    "/settings": {"GET": get_settings, "PATCH": patch_settings},
    "/requests": {"GET": get_requests, "DELETE": delete_requests},
    "/requests/stats": {"GET": get_request_stats},
    "/reset": {"POST": reset},
    "/state": {"GET": get_state},
    "/providers": {"GET": get_providers},
}


def add_routes(app: web.Application) -> None:
    for path, methods in ROUTES.items():
        for method, handler in methods.items():
            app.router.add_route(method, PREFIX + path, handler)


def unmatched(request: web.Request) -> GraphError:
    """The error for an /_emulator request no admin route took: 405 on a known path, else 404."""
    path = request.path.removeprefix(PREFIX).rstrip("/") or "/"
    methods = ROUTES.get(path)
    if methods:
        return method_not_allowed(request.method, tuple(methods))
    return not_found(f"Unknown emulator admin endpoint '{request.path}'.")
