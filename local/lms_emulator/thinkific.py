"""Thinkific: the Admin API's product and course (``GET /api/public/v1/products/{id}``, ``/courses/{id}``).

Sources:
- Authentication by the headers ``X-Auth-API-Key`` and ``X-Auth-Subdomain``; wrong credentials are
  401 ``{"error": "Authentication Error"}``: https://developers.thinkific.com/api/api-key-auth/.
- Base path ``https://api.thinkific.com/api/public/v1/``:
  https://help.thinkific.com/support/solutions/articles/239358-getting-started-with-the-api-.
- The Product fields (``id``, ``productable_id``, ``productable_type``, ``name``, ``description``,
  ``card_image_url``, ``slug``, ``status``, ``hidden``, ``private``, ``created_at``...): the Admin API
  schema, as generated into https://hexdocs.pm/thinkific_admin_api/ThinkificAdminAPI.Model.ProductResponse.html.
- **[unconfirmed]** the body of a 404 (modelled as ``{"error": "Record not found"}``).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .context import CONFIG, STATE, json_response


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _resource(kind: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        config = request.app[CONFIG]
        key = request.headers.get("X-Auth-API-Key", "")
        subdomain = request.headers.get("X-Auth-Subdomain", "")
        if not (
            hmac.compare_digest(key.encode(), config.secret.encode())
            and hmac.compare_digest(subdomain.encode(), config.thinkific_subdomain.encode())
        ):
            return error(401, "Authentication Error")
        item = request.app[STATE].course("thinkific", request.match_info["id"], collection=kind)
        if item is None:
            return error(404, "Record not found")
        return json_response(item)

    return web.get(f"/thinkific/api/public/v1/{kind}/{{id}}", handler)


ROUTES = [_resource("products"), _resource("courses")]
