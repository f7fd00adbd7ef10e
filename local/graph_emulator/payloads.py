"""JSON request and response bodies, shared by the Graph routes and the admin API."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import GraphError, bad_request, missing_content_type
from .inbound import Inbound

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": ODATA_JSON, "OData-Version": "4.0", **(headers or {})},
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise bad_request(f"Duplicate property named '{key}' is not allowed.")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise bad_request(f"The request body is not valid JSON: '{name}' is not a JSON value.")


async def read_json(request: Inbound) -> Any:
    """Read a JSON request body the way Graph does: JSON media type, UTF-8, no duplicate keys."""
    raw = await request.read()
    if not raw.strip():
        raise bad_request("The request body is empty; a JSON payload is required.")
    declared = request.headers.get("Content-Type")
    if declared is None:
        raise missing_content_type()
    if request.content_type != "application/json":
        raise GraphError(
            415,
            "UnsupportedMediaType",
            f"Content-Type '{declared or ''}' is not supported for this request; use 'application/json'.",
        )
    if request.charset and request.charset.lower() not in ("utf-8", "utf8"):
        raise GraphError(415, "UnsupportedMediaType", f"Charset '{request.charset}' is not supported; use UTF-8.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request("The request body is not valid UTF-8.") from exc
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
