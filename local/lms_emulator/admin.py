"""The admin API under ``/_lms``: seed courses, script faults, read the request log, sign Canvas events.

- ``PUT /_lms/{platform}/courses/{id}`` (Thinkific also ``/products/{id}``): the body is the course
  in the vendor's API shape, stored and answered exactly as given -> 204. Only the vendor's key
  fields are checked: ``id`` equal to the path's id, and the title (Canvas ``name``, Moodle
  ``fullname``, Open edX ``name``, Thinkific ``name``).
- ``DELETE`` the same path -> 204; the API then answers the vendor's not-found form.
- ``POST /_lms/faults`` ``{"platform", "status", "count": 1, "retryAfter": null}``: the next ``count``
  API calls of that platform (the Open edX token endpoint included) answer ``status`` in the vendor's
  error form; a 429 always carries ``Retry-After`` (default 1 s).
- ``GET /_lms/requests`` -> ``{"value": [{"platform", "method", "path", "status", "at"}]}`` (API calls
  only, paths without query: no secrets); ``DELETE /_lms/requests`` clears it.
- ``POST /_lms/canvas/sign`` with claims -> ``{"jwt": ...}`` signed by the dev key of ``/canvas/jwks``.
- ``GET /_lms/health`` -> ``{"status": "ok"}``.
Admin errors are ``400 {"error": "<what is wrong>"}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .config import PLATFORMS, Platform
from .context import CANVAS_KEY, STATE, json_response
from .state import Fault

TITLE_FIELD: dict[str, str] = {"canvas": "name", "moodle": "fullname", "openedx": "name", "thinkific": "name"}


def bad(message: str) -> web.Response:
    return json_response({"error": message}, 400)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _target(request: web.Request) -> tuple[Platform, str, str] | str:
    platform, collection = request.match_info["platform"], request.match_info["collection"]
    if platform not in PLATFORMS:
        return f"platform must be one of {', '.join(PLATFORMS)}"
    allowed = ("courses", "products") if platform == "thinkific" else ("courses",)
    if collection not in allowed:
        return f"{platform} has {' and '.join(allowed)}, not {collection}"
    return platform, collection, request.match_info["id"]


async def put_course(request: web.Request) -> web.Response:
    target = _target(request)
    if isinstance(target, str):
        return bad(target)
    platform, collection, course_id = target
    course = await _json_object(request)
    if course is None:
        return bad("the body must be a JSON object: the course as the vendor's API returns it")
    if str(course.get("id")) != course_id:
        return bad(f"id: the course's id ({course.get('id')!r}) must be the path's id ({course_id!r})")
    title = TITLE_FIELD[platform]
    if not isinstance(course.get(title), str) or not course[title]:
        return bad(f"{title}: {platform} always returns the course's title here")
    request.app[STATE].put_course(platform, course_id, course, collection)
    return web.Response(status=204)


async def delete_course(request: web.Request) -> web.Response:
    target = _target(request)
    if isinstance(target, str):
        return bad(target)
    platform, collection, course_id = target
    request.app[STATE].delete_course(platform, course_id, collection)
    return web.Response(status=204)


async def add_fault(request: web.Request) -> web.Response:
    body = await _json_object(request)
    if body is None:
        return bad('the body must be {"platform", "status", "count", "retryAfter"}')
    platform, status = body.get("platform"), body.get("status")
    count, retry_after = body.get("count", 1), body.get("retryAfter")
    if platform not in PLATFORMS:
        return bad(f"platform must be one of {', '.join(PLATFORMS)}")
    if not isinstance(status, int) or not 400 <= status <= 599:
        return bad("status must be an HTTP error status (400-599)")
    if not isinstance(count, int) or count < 1:
        return bad("count must be a positive integer")
    if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
        return bad("retryAfter must be a number of seconds (0 or more)")
    if status == 429 and retry_after is None:
        retry_after = 1
    request.app[STATE].add_fault(str(platform), Fault(status, count, retry_after))
    return web.Response(status=204)


async def list_requests(request: web.Request) -> web.Response:
    return json_response({"value": [r.to_json() for r in request.app[STATE].requests()]})


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].clear_requests()
    return web.Response(status=204)


async def sign_canvas(request: web.Request) -> web.Response:
    claims = await _json_object(request)
    if claims is None:
        return bad("the body must be the Live Event (metadata, body) as a JSON object")
    return json_response({"jwt": request.app[CANVAS_KEY].sign(claims)})


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


ROUTES = [
    web.get("/_lms/health", health),
    web.get("/_lms/requests", list_requests),
    web.delete("/_lms/requests", clear_requests),
    web.post("/_lms/faults", add_fault),
    web.post("/_lms/canvas/sign", sign_canvas),
    web.put("/_lms/{platform}/{collection}/{id:.+}", put_course),
    web.delete("/_lms/{platform}/{collection}/{id:.+}", delete_course),
]
