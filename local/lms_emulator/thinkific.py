"""Thinkific: the Admin API's product and course (``GET /api/public/v1/products/{id}``, ``/courses/{id}``).

Sources:
- Authentication by the headers ``X-Auth-API-Key`` and ``X-Auth-Subdomain``; wrong credentials are
  401 ``{"error": "Authentication Error"}``: https://developers.thinkific.com/api/api-key-auth/.
- Base path ``https://api.thinkific.com/api/public/v1/``:
  https://help.thinkific.com/support/solutions/articles/239358-getting-started-with-the-api-.
- The Product fields (``id``, ``productable_id``, ``productable_type``, ``name``, ``description``,
  ``card_image_url``, ``slug``, ``status``, ``hidden``, ``private``, ``created_at``...): the Admin API
  schema, as generated into https://hexdocs.pm/thinkific_admin_api/ThinkificAdminAPI.Model.ProductResponse.html.
- ``GET /api/public/v1/courses?page=&limit=`` (default limit 25): GetCoursesResponse ``{"items": [...],
  "meta": {"pagination": {"current_page", "next_page", "prev_page", "total_pages", "total_items",
  "entries_info"}}}``, ``next_page`` null on the last page
  (https://hexdocs.pm/thinkific_admin_api/ThinkificAdminAPI.Model.GetCoursesResponse.html).
  **[unconfirmed]** the largest ``limit`` (the emulator caps it at 250) and the ``entries_info`` text.
- **[unconfirmed]** the body of a 404 (modelled as ``{"error": "Record not found"}``).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .context import CONFIG, STATE, json_response, page_window


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _authenticated(request: web.Request) -> bool:
    config = request.app[CONFIG]
    key = request.headers.get("X-Auth-API-Key", "")
    subdomain = request.headers.get("X-Auth-Subdomain", "")
    return hmac.compare_digest(key.encode(), config.secret.encode()) and hmac.compare_digest(
        subdomain.encode(), config.thinkific_subdomain.encode()
    )


async def list_courses(request: web.Request) -> web.Response:
    if not _authenticated(request):
        return error(401, "Authentication Error")
    courses = request.app[STATE].courses("thinkific")
    page, size = page_window(request, "limit", "page", 25, 250)
    pages = max(1, -(-len(courses) // size))
    window = courses[(page - 1) * size : page * size]
    first = (page - 1) * size + 1
    pagination = {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_items": len(courses),
        "entries_info": f"{first}-{first + len(window) - 1} of {len(courses)}" if window else f"0 of {len(courses)}",
    }
    return json_response({"items": window, "meta": {"pagination": pagination}})


def _resource(kind: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        if not _authenticated(request):
            return error(401, "Authentication Error")
        item = request.app[STATE].course("thinkific", request.match_info["id"], collection=kind)
        if item is None:
            return error(404, "Record not found")
        return json_response(item)

    return web.get(f"/thinkific/api/public/v1/{kind}/{{id}}", handler)


ROUTES = [web.get("/thinkific/api/public/v1/courses", list_courses), _resource("products"), _resource("courses")]
