"""Canvas LMS: ``GET /api/v1/courses/:id`` ("Get a single course").

Sources:
- The Course object and the ``include[]`` values: canvas-lms ``app/controllers/courses_controller.rb``
  (``@model Course``; https://canvas.instructure.com/doc/api/courses.html#method.courses.show).
  ``public_description``, ``syllabus_body`` and the course image (``image_download_url``) are returned
  only when asked for with ``include[]=public_description``, ``include[]=syllabus_body`` and
  ``include[]=course_image``; the emulator removes them from the seeded course otherwise.
- Authentication: ``Authorization: Bearer <token>``, or the ``access_token`` query parameter
  (https://canvas.instructure.com/doc/api/file.oauth.html, canvas-lms ``doc/templates/rest/basics.md``).
- ``Accept: application/json+canvas-string-ids`` returns every integer id as a string (Canvas ids
  exceed 2^53; https://canvas.instructure.com/doc/api/file.object_ids.html).
- ``GET /api/v1/accounts/:account_id/courses`` ("List active courses in an account",
  https://canvas.instructure.com/doc/api/accounts.html#method.accounts.courses_api): a JSON array,
  ``per_page`` (default 10, at most 100) and ``page``, and the ``Link`` header with ``rel="current"``,
  ``"next"`` (absent on the last page), ``"first"`` and ``"last"``
  (https://canvas.instructure.com/doc/api/file.pagination.html). Without ``state[]`` every state but
  ``deleted`` is listed. The emulator takes any account id (``self``, digits): it has one account.
- Error bodies ``{"errors": [{"message": ...}]}``: "Invalid access token." (401) and "The specified
  resource does not exist." (404) are Canvas's messages as commonly reported; **[unconfirmed]** that
  a request without any token gets ``{"status": "unauthenticated", "errors": [{"message": "user
  authorization required"}]}``.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .context import CANVAS_KEY, CONFIG, STATE, json_response, page_window

OPTIONAL_INCLUDES = {
    "public_description": ("public_description",),
    "syllabus_body": ("syllabus_body",),
    "course_image": ("image_download_url",),
}
STRING_IDS = "application/json+canvas-string-ids"


def error(status: int, message: str) -> web.Response:
    return json_response({"errors": [{"message": message}]}, status)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("access_token")


def _string_ids(course: dict[str, Any]) -> dict[str, Any]:
    return {
        key: str(value)
        if (key == "id" or key.endswith("_id")) and isinstance(value, int) and not isinstance(value, bool)
        else value
        for key, value in course.items()
    }


def _refused(request: web.Request) -> web.Response | None:
    token = _token(request)
    if token is None:
        return json_response({"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}, 401)
    if not hmac.compare_digest(token.encode(), request.app[CONFIG].secret.encode()):
        return error(401, "Invalid access token.")
    return None


def _shown(request: web.Request, course: dict[str, Any]) -> dict[str, Any]:
    asked = set(request.query.getall("include[]", []))
    hidden = {field for include, fields in OPTIONAL_INCLUDES.items() if include not in asked for field in fields}
    answer = {key: value for key, value in course.items() if key not in hidden}
    return _string_ids(answer) if STRING_IDS in request.headers.get("Accept", "") else answer


async def get_course(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    course = request.app[STATE].course("canvas", request.match_info["course_id"])
    if course is None:
        return error(404, "The specified resource does not exist.")
    return json_response(_shown(request, course))


async def account_courses(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    states = set(request.query.getall("state[]", []))
    courses = [
        c
        for c in request.app[STATE].courses("canvas")
        if (
            c.get("workflow_state") in states
            if states and "all" not in states
            else c.get("workflow_state") != "deleted"
        )
    ]
    page, size = page_window(request, "per_page", "page", 10, 100)
    last = max(1, -(-len(courses) // size))
    window = courses[(page - 1) * size : page * size]

    def link(number: int, rel: str) -> str:
        return f'<{request.url.update_query({"page": str(number), "per_page": str(size)})}>; rel="{rel}"'

    links = [link(page, "current")]
    if page < last:
        links.append(link(page + 1, "next"))
    if page > 1:
        links.append(link(page - 1, "prev"))
    links += [link(1, "first"), link(last, "last")]
    return json_response([_shown(request, c) for c in window], headers={"Link": ",".join(links)})


async def jwks(request: web.Request) -> web.Response:
    """The dev key set (canvas_keys.py); Canvas publishes its own at the source's default ``jwksUrl``."""
    return json_response(request.app[CANVAS_KEY].jwks())


ROUTES = [
    web.get("/canvas/api/v1/courses/{course_id}", get_course),
    web.get("/canvas/api/v1/accounts/{account_id}/courses", account_courses),
    web.get("/canvas/jwks", jwks),
]
