"""One Graph exchange, as the middleware and ``$batch`` both run it: faults, serving, Graph errors, the log."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from .auth import token_kind_hint
from .context import CALLER, EmulatorRuntime
from .errors import GraphError, code_for_status, error_bytes
from .faults import FaultDecision
from .inbound import Inbound
from .requestlog import RequestRecord

log = logging.getLogger("graph_emulator")


@dataclass(frozen=True)
class Ids:
    request_id: str
    client_request_id: str

    @classmethod
    def of(cls, request: Inbound) -> Ids:
        request_id = str(uuid.uuid4())
        return cls(request_id, request.headers.get("client-request-id") or request_id)


def error_response(exc: GraphError, ids: Ids) -> web.Response:
    return web.Response(
        status=exc.status,
        body=error_bytes(exc.code, exc.message, ids.request_id, ids.client_request_id),
        headers={"Content-Type": "application/json", **exc.headers},
    )


def injected_error(decision: FaultDecision) -> GraphError:
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


@dataclass
class Outcome:
    response: web.StreamResponse | None  # None: the fault said drop the connection
    dropped: bool = False


async def exchange(
    request: Inbound,
    ids: Ids,
    decision: FaultDecision | None,
    serve: Callable[[], Awaitable[web.StreamResponse]],
) -> Outcome:
    """Apply the fault decision, serve, and turn every failure into a Graph error response."""
    try:
        if decision is not None:
            if decision.latency_ms:
                # The request has arrived: a client that gives up during the delay does not undo it
                # (the body is read first), as a slow Graph still applies a write.
                await request.read()
                await asyncio.sleep(decision.latency_ms / 1000)
            if decision.drop:
                return Outcome(None, dropped=True)
            if decision.status is not None:
                raise injected_error(decision)
        response = await serve()
    except GraphError as exc:
        response = error_response(exc, ids)
    except web.HTTPException as exc:
        # aiohttp-level failures (body too large, ...) still get a Graph body.
        response = error_response(GraphError(exc.status, code_for_status(exc.status), exc.reason), ids)
    except Exception:
        log.exception(
            "unhandled error method=%s path=%s request_id=%s", request.method, request.raw_path, ids.request_id
        )
        response = error_response(
            GraphError(500, "internalServerError", "An unexpected error occurred in the Graph emulator."), ids
        )
    response.headers["request-id"] = ids.request_id
    response.headers["client-request-id"] = ids.client_request_id
    return Outcome(response)


def record(
    rt: EmulatorRuntime,
    request: Inbound,
    status: int | None,
    decision: FaultDecision | None,
    ids: Ids,
    started: float,
    *,
    batch_request_id: str | None = None,
) -> None:
    faulted = decision.kind if decision is not None else None
    caller = request.get(CALLER) if isinstance(request, MutableMapping) else None
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
            request_id=ids.request_id,
            client_request_id=ids.client_request_id,
            duration_ms=duration_ms,
            batch_request_id=batch_request_id,
        )
    )
    if log.isEnabledFor(logging.INFO):
        log.info(
            "graph request method=%s path=%s status=%s fault=%s token=%s request_id=%s batch=%s duration_ms=%s",
            request.method,
            request.raw_path,
            status if status is not None else "dropped",
            faulted,
            token_kind,
            ids.request_id,
            batch_request_id,
            duration_ms,
        )
