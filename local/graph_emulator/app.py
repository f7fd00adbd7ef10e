"""aiohttp application: one middleware gives every response Graph's ids, errors and faults."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from . import admin
from .context import DEFAULT_PAGE_SIZE, REQUEST_ID, RUNTIME, EmulatorRuntime, EmulatorSettings, Modes, ModeSwitch, Sleep
from .exchange import Ids, error_response, exchange, record
from .faults import FaultConfig, FaultInjector
from .requestlog import RequestLog
from .routes import handle_graph
from .schema import Validator, load_metadata
from .state import EmulatorState

log = logging.getLogger("graph_emulator")

MAX_BODY_BYTES = 4 * 1024 * 1024  # Graph's documented request size limit


def _drop_connection(request: web.Request) -> None:
    """Abort the TCP connection so the client gets no status line at all."""
    transport = request.transport
    if transport is not None:
        transport.abort()


@web.middleware
async def graph_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    ids = Ids.of(request)
    is_admin = request.path == admin.PREFIX or request.path.startswith(admin.PREFIX + "/")
    if is_admin:
        if request.match_info.route.handler is handle_graph:
            response: web.StreamResponse = error_response(admin.unmatched(request), ids)
        else:
            response = (await exchange(request, ids, None, lambda: handler(request))).response or web.Response()
        response.headers["request-id"] = ids.request_id
        response.headers["client-request-id"] = ids.client_request_id
        return response
    latency_ms = rt.modes.current.latency_ms
    if latency_ms:
        # One round trip's delay per HTTP request (a $batch pays it once), awaited: the loop keeps serving.
        await rt.sleep(latency_ms / 1000)
    # A $batch is throttled and faulted per inner request (batch.py); only a scripted fault aimed at it hits it.
    is_batch = request.path.endswith("/$batch")
    decision = rt.faults.decide_envelope(request.method, request.path) if is_batch else None
    if not is_batch:
        decision = rt.faults.decide(request.method, request.path)
    request[REQUEST_ID] = ids.request_id
    outcome = await exchange(request, ids, decision, lambda: handler(request))
    if outcome.dropped:
        _drop_connection(request)
    status = outcome.response.status if outcome.response is not None else None
    record(rt, request, status, decision, ids, started)
    if outcome.response is None:
        # The transport is already aborted; aiohttp cannot write this and drops it quietly.
        return web.Response(status=500)
    return outcome.response


def create_app(
    state: EmulatorState | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    signing_key: str | None = None,
    faults: FaultConfig | None = None,
    request_log_limit: int = 1000,
    modes: Modes | None = None,
    sleep: Sleep = asyncio.sleep,
) -> web.Application:
    """Build the emulator app. ``state`` defaults to a fresh in-memory state without snapshot;
    ``modes`` to the strict readings (``Modes()``), which ``POST /_emulator/reset`` returns to."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    metadata = load_metadata()
    runtime = EmulatorRuntime(
        state=state if state is not None else EmulatorState(),
        faults=FaultInjector(faults),
        requests=RequestLog(request_log_limit),
        settings=EmulatorSettings(page_size=page_size, signing_key=signing_key),
        metadata=metadata,
        validator=Validator(metadata),
        modes=ModeSwitch(modes or Modes()),
        sleep=sleep,
    )
    app = web.Application(middlewares=[graph_middleware], client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    admin.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", handle_graph)
    return app
