"""HTTP front end: aiohttp in, ``func.HttpRequest`` to the function, ``func.HttpResponse`` back out.

Routing is the host's (see :mod:`routes`), not aiohttp's: one catch-all handler resolves the
function. As on the host, an unknown route or a method the route does not allow answers 404, an
exception in the function answers 500 and logs the traceback. Auth levels are not enforced (as with
Core Tools) unless the host is given ``HostKeys`` (see :mod:`keys`); then a missing or wrong key is a 401.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .indexing import HttpFunction
from .invocation import CONTEXT_PARAMETER, OutValue, call_user_function, make_context, new_invocation_id
from .keys import HostKeys, presented_key
from .routes import MethodMismatch, RouteEntry, RouteTable

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the host's default request size limit
# Set by the server from the body it actually sends.
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class ResponseParts:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _joined(pairs: Iterable[tuple[str, str]], separator: str, *, fold_case: bool) -> dict[str, str]:
    merged: dict[str, str] = {}
    keys: dict[str, str] = {}
    for key, value in pairs:
        lookup = key.lower() if fold_case else key
        if lookup in keys:
            merged[keys[lookup]] += separator + value
        else:
            keys[lookup] = key
            merged[key] = value
    return merged


def build_http_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    route_params: Mapping[str, str],
    body: bytes,
) -> func.HttpRequest:
    """The request a function receives; repeated headers join with ', ', repeated query keys with ','."""
    return func.HttpRequest(
        method=method.upper(),
        url=url,
        headers=_joined(headers, ", ", fold_case=True),
        params=_joined(query, ",", fold_case=False),
        route_params=dict(route_params),
        body=body,
    )


def response_parts(result: Any) -> ResponseParts:
    """Translate a function's HTTP output as the worker's HttpResponseConverter does.

    ``func.HttpResponse`` keeps its status and headers and gets a Content-Type from its
    mimetype/charset unless it set one; a ``str`` is a 200 text/plain response; ``None`` (no output
    set) is a 204. Anything else is an error, as on the worker.
    """
    if result is None:
        return ResponseParts(204, [], b"")
    if isinstance(result, str):
        return ResponseParts(200, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8"))
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in _HOP_BY_HOP]
        if not any(k.lower() == "content-type" for k, _ in headers):
            mimetype = result.mimetype
            content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
            headers.append(("Content-Type", content_type))
        return ResponseParts(int(result.status_code), headers, result.get_body() or b"")
    raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(result).__name__}")


class HttpFrontend:
    """Serves the app's HTTP-triggered functions under the route prefix."""

    def __init__(
        self,
        functions: Sequence[HttpFunction],
        route_prefix: str,
        executor: ThreadPoolExecutor,
        keys: HostKeys | None = None,
    ) -> None:
        self.routes: RouteTable[HttpFunction] = RouteTable(
            route_prefix, [RouteEntry(f.template, f.methods, f) for f in functions]
        )
        self._executor = executor
        self._keys = keys
        self.in_flight = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._dispatch(request)
        finally:
            self.in_flight -= 1

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        found = self.routes.resolve(request.method, request.rel_url.raw_path)
        if found is None:
            logger.info("no function matches %s %s", request.method, request.rel_url.path)
            return web.Response(status=404)
        if isinstance(found, MethodMismatch):
            allowed = ",".join(sorted(found.allowed))
            logger.info("%s %s: route exists for %s only", request.method, request.rel_url.path, allowed)
            return web.Response(status=404, text=f"this route accepts {allowed}\n")
        function = found.target
        if self._keys is not None and not self._keys.allows(
            function.name, function.auth_level, presented_key(request.headers, request.rel_url.query)
        ):
            logger.info("%s %s: no valid %s-level key", request.method, request.rel_url.path, function.auth_level)
            return web.Response(status=401)
        http_request = build_http_request(
            request.method,
            str(request.url),
            request.headers.items(),
            request.rel_url.query.items(),
            found.route_params,
            await request.read(),
        )
        return await self._invoke(function, http_request)

    async def _invoke(self, function: HttpFunction, http_request: func.HttpRequest) -> web.Response:
        invocation_id = new_invocation_id()
        arguments: dict[str, Any] = {function.trigger_parameter: http_request}
        output: OutValue[Any] | None = None
        if function.output_parameter != "$return":
            output = OutValue()
            arguments[function.output_parameter] = output
        if function.uses_context:
            arguments[CONTEXT_PARAMETER] = make_context(function.name, invocation_id)
        logger.info(
            "Executing 'Functions.%s' (Reason='This function was programmatically called via the host APIs.', Id=%s)",
            function.name,
            invocation_id,
        )
        started = time.monotonic()
        try:
            result = await call_user_function(function.user_function, arguments, self._executor)
            parts = response_parts(output.get() if output is not None else result)
        except Exception:
            logger.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                function.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
            )
            return web.Response(status=500)
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            function.name,
            invocation_id,
            (time.monotonic() - started) * 1000,
        )
        return web.Response(status=parts.status, body=parts.body, headers=CIMultiDict(parts.headers))
