"""Open edX: an OAuth2 client-credentials token, then the Courses API course detail.

Sources:
- ``POST /oauth2/access_token`` (form ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``, ``token_type=jwt``) answers ``{"access_token", "token_type": "JWT", "expires_in",
  "scope"}``: edx-platform ``docs/references/auth_code_samples.rst``
  (https://github.com/openedx/edx-platform/blob/master/docs/references/auth_code_samples.rst).
  A wrong client is 401 ``{"error": "invalid_client"}`` and another grant 400
  ``{"error": "unsupported_grant_type"}`` (RFC 6749 section 5.2, as django-oauth-toolkit answers).
  The emulator's access token is opaque, not a real JWT **[local simplification]**: the worker only
  sends it back.
- ``GET /api/courses/v1/courses/{course_key}/`` with ``Authorization: JWT <token>`` (``Bearer`` is
  accepted too): https://docs.huihoo.com/edx/open-edx-platform-api/courses/overview.html ("Get
  Details for a Course"); fields of edx-platform ``lms/djangoapps/course_api/serializers.py``
  (``CourseDetailSerializer``: ``id``, ``course_id``, ``name``, ``short_description``, ``overview``,
  ``media``, ``start``, ``end``, ``effort``, ``hidden``, ``pacing``...).
- ``GET /api/courses/v1/courses/`` ("Get a List of Courses"), ``page`` and ``page_size`` (default 10, at
  most 100; edx-platform ``course_api/views.py`` ``CourseListView`` with
  ``NamespacedPageNumberPagination``): ``{"results": [...], "pagination": {"next", "previous", "count",
  "num_pages"}}``, ``next`` an absolute URL or null. Items are the seeded details without ``overview``
  (the list's ``CourseSerializer`` has no ``overview``). A page beyond the last is 404 ``{"detail":
  "Invalid page."}`` (DRF's answer).
- Errors in Django REST framework's form ``{"detail": ...}``: "Authentication credentials were not
  provided." (401) and "Not found." (404) are DRF's defaults; **[unconfirmed]** the exact text for an
  expired or unknown JWT (edx-drf-extensions), modelled as "Invalid token.".
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .context import CONFIG, STATE, json_response, page_window

SCOPE = "read write email profile"  # the scopes in edx-platform's sample token answer


def error(status: int, message: str) -> web.Response:
    return json_response({"detail": message}, status)


async def access_token(request: web.Request) -> web.Response:
    form = await request.post()
    config = request.app[CONFIG]
    if form.get("grant_type") != "client_credentials":
        return json_response({"error": "unsupported_grant_type"}, 400)
    client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    if not (
        hmac.compare_digest(client_id.encode(), config.openedx_client_id.encode())
        and hmac.compare_digest(client_secret.encode(), config.secret.encode())
    ):
        return json_response({"error": "invalid_client"}, 401)
    token = request.app[STATE].issue_token(config.token_lifetime_seconds)
    token_type = "JWT" if str(form.get("token_type", "")).lower() == "jwt" else "Bearer"
    return json_response(
        {"access_token": token, "token_type": token_type, "expires_in": config.token_lifetime_seconds, "scope": SCOPE}
    )


def _refused(request: web.Request) -> web.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("jwt", "bearer") or not token.strip():
        return error(401, "Authentication credentials were not provided.")
    if not request.app[STATE].token_valid(token.strip()):
        return error(401, "Invalid token.")
    return None


async def course_list(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    courses = request.app[STATE].courses("openedx")
    page, size = page_window(request, "page_size", "page", 10, 100)
    pages = max(1, -(-len(courses) // size))
    if page > pages:
        return error(404, "Invalid page.")

    def at(number: int) -> str | None:
        if not 1 <= number <= pages:
            return None
        return str(request.url.update_query({"page": str(number), "page_size": str(size)}))

    results = [{k: v for k, v in c.items() if k != "overview"} for c in courses[(page - 1) * size : page * size]]
    pagination = {"next": at(page + 1), "previous": at(page - 1), "count": len(courses), "num_pages": pages}
    return json_response({"results": results, "pagination": pagination})


async def course_detail(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    course = request.app[STATE].course("openedx", request.match_info["course_key"])
    if course is None:
        return error(404, "Not found.")
    return json_response(course)


ROUTES = [
    web.post("/openedx/oauth2/access_token", access_token),
    web.get("/openedx/api/courses/v1/courses/", course_list),
    # Course keys hold ':' and '+', and legacy keys '/', so the key is everything up to the final slash.
    web.get(r"/openedx/api/courses/v1/courses/{course_key:.+}/", course_detail),
]
