"""aiohttp application: one middleware gives every response Graph's ids, errors and faults."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from . import admin
from .auth import token_kind_hint
from .context import CALLER, DEFAULT_PAGE_SIZE, RUNTIME, EmulatorRuntime, EmulatorSettings, Modes, ModeSwitch
from .errors import GraphError, code_for_status, error_bytes
from .faults import FaultConfig, FaultDecision, FaultInjector
from .requestlog import RequestLog, RequestRecord
from .routes import handle_graph
from .schema import Validator, load_metadata
from .state import EmulatorState

log = logging.getLogger("graph_emulator")

MAX_BODY_BYTES = 4 * 1024 * 1024  # Graph's documented request size limit


def _error_response(exc: GraphError, request_id: str, client_request_id: str) -> web.Response:
    return web.Response(
        status=exc.status,
        body=error_bytes(exc.code, exc.message, request_id, client_request_id),
        headers={"Content-Type": "application/json", **exc.headers},
    )


def _injected_error(decision: FaultDecision) -> GraphError:
    status = int(decision.status or 500)
    headers: dict[str, str] = {}
    retry = decision.retry_after_seconds
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if decision.message:
        message = decision.message
    elif retry is not None:
        message = f"Retry after {retry} seconds"
    else:
        message = "An error occurred while processing the request (fault injected by the Graph emulator)."
    return GraphError(status, code_for_status(status), message, headers)


def _drop_connection(request: web.Request) -> None:
    """Abort the TCP connection so the client gets no status line at all."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _dispatch(
    request: web.Request, handler: Handler, decision: FaultDecision | None
) -> web.StreamResponse | None:
    if decision is not None:
        if decision.latency_ms:
            # The request has arrived: a client that gives up during the delay does not undo it
            # (aiohttp keeps the body for the handler), as a slow Graph still applies a write.
            await request.read()
            await asyncio.sleep(decision.latency_ms / 1000)
        if decision.drop:
            _drop_connection(request)
            return None
        if decision.status is not None:
            raise _injected_error(decision)
    return await handler(request)


@web.middleware
async def graph_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    request_id = str(uuid.uuid4())
    client_request_id = request.headers.get("client-request-id") or request_id
    is_admin = request.path == admin.PREFIX or request.path.startswith(admin.PREFIX + "/")
    decision = None if is_admin else rt.faults.decide(request.method, request.path)
    response: web.StreamResponse | None
    try:
        if is_admin and request.match_info.route.handler is handle_graph:
            raise admin.unmatched(request)
        response = await _dispatch(request, handler, decision)
    except GraphError as exc:
        response = _error_response(exc, request_id, client_request_id)
    except web.HTTPException as exc:
        # aiohttp-level failures (body too large, ...) still get a Graph body.
        response = _error_response(
            GraphError(exc.status, code_for_status(exc.status), exc.reason), request_id, client_request_id
        )
    except Exception:
        log.exception("unhandled error method=%s path=%s request_id=%s", request.method, request.path, request_id)
        response = _error_response(
            GraphError(500, "internalServerError", "An unexpected error occurred in the Graph emulator."),
            request_id,
            client_request_id,
        )
    if response is not None:
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = client_request_id
    if not is_admin:
        _record(request, rt, response, decision, request_id, client_request_id, started)
    if response is None:
        # The transport is already aborted; aiohttp cannot write this and drops it quietly.
        return web.Response(status=500)
    return response


def _record(
    request: web.Request,
    rt: EmulatorRuntime,
    response: web.StreamResponse | None,
    decision: FaultDecision | None,
    request_id: str,
    client_request_id: str,
    started: float,
) -> None:
    status = response.status if response is not None else None
    faulted = decision.kind if decision is not None else None
    caller = request.get(CALLER)
    token_kind = caller.kind if caller is not None else token_kind_hint(request.headers.get("Authorization"))
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    rt.requests.add(
        RequestRecord(
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            method=request.method,
            path=request.raw_path,
            status=status,
            faulted=faulted,
            token_kind=token_kind,
            request_id=request_id,
            client_request_id=client_request_id,
            duration_ms=duration_ms,
        )
    )
    log.info(
        "graph request method=%s path=%s status=%s fault=%s token=%s request_id=%s duration_ms=%s",
        request.method,
        request.raw_path,
        status if status is not None else "dropped",
        faulted,
        token_kind,
        request_id,
        duration_ms,
    )


def create_app(
    state: EmulatorState | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    signing_key: str | None = None,
    faults: FaultConfig | None = None,
    request_log_limit: int = 1000,
    modes: Modes | None = None,
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
    )
    app = web.Application(middlewares=[graph_middleware], client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    admin.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", handle_graph)
    return app
