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
- Errors in Django REST framework's form ``{"detail": ...}``: "Authentication credentials were not
  provided." (401) and "Not found." (404) are DRF's defaults; **[unconfirmed]** the exact text for an
  expired or unknown JWT (edx-drf-extensions), modelled as "Invalid token.".
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .context import CONFIG, STATE, json_response

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


async def course_detail(request: web.Request) -> web.Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("jwt", "bearer") or not token.strip():
        return error(401, "Authentication credentials were not provided.")
    state = request.app[STATE]
    if not state.token_valid(token.strip()):
        return error(401, "Invalid token.")
    course = state.course("openedx", request.match_info["course_key"])
    if course is None:
        return error(404, "Not found.")
    return json_response(course)


ROUTES = [
    web.post("/openedx/oauth2/access_token", access_token),
    # Course keys hold ':' and '+', and legacy keys '/', so the key is everything up to the final slash.
    web.get(r"/openedx/api/courses/v1/courses/{course_key:.+}/", course_detail),
]
