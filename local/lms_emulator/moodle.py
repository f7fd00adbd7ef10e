"""Moodle: the REST web-service endpoint with ``core_course_get_courses_by_field``.

Sources:
- ``/webservice/rest/server.php`` with ``wstoken``, ``wsfunction`` and ``moodlewsrestformat=json``, by
  GET or POST (form): https://docs.moodle.org/dev/Creating_a_web_service_client and
  https://moodledev.io/docs/apis/subsystems/external/functions.
- ``core_course_get_courses_by_field(field, value)`` answers ``{"courses": [...], "warnings": [...]}``;
  an unknown id is an empty ``courses`` list, not an error: moodle/moodle
  ``course/externallib.php`` (``get_courses_by_field`` and ``get_courses_by_field_returns``).
- ``field`` empty lists every course in id order, the site's front page (``SITEID`` 1, ``format: site``)
  among them: ``get_courses_by_field`` reads ``$DB->get_records('course', null, 'id ASC')``. The
  emulator answers a front page course of its own unless one is seeded.
- A wrong token is HTTP **200** with ``{"exception": "moodle_exception", "errorcode": "invalidtoken",
  "message": "Invalid token - token not found"}``: Moodle reports web-service errors in the body
  (``webservice/lib.php`` ``webservice_server::authenticate_by_token``; the same body is what Moodle
  clients in public code test against). **[unconfirmed]** the exact body Moodle gives for an unknown
  ``wsfunction`` and for missing parameters (modelled on ``invalid_parameter_exception``).
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .context import CONFIG, STATE, json_response

FUNCTION = "core_course_get_courses_by_field"
FIELDS = ("id", "ids", "shortname", "idnumber", "category")  # the function's documented ``field`` values
# The front page: course 1 on every Moodle site, listed with the courses.
SITE_COURSE: dict[str, Any] = {
    "id": 1, "fullname": "Moodle site", "displayname": "Moodle site", "shortname": "site", "categoryid": 0,
    "summary": "", "summaryformat": 1, "overviewfiles": [], "format": "site", "visible": 1,
}  # fmt: skip


def exception(errorcode: str, message: str, kind: str = "moodle_exception") -> web.Response:
    return json_response({"exception": kind, "errorcode": errorcode, "message": message})


def error(status: int, message: str) -> web.Response:
    """An injected fault: Moodle behind a web server answers an HTTP error with a plain page."""
    return web.Response(status=status, text=message, content_type="text/plain")


async def server(request: web.Request) -> web.Response:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST":
        params.update(await request.post())
    token = str(params.get("wstoken", ""))
    if not token or not hmac.compare_digest(token.encode(), request.app[CONFIG].secret.encode()):
        return exception("invalidtoken", "Invalid token - token not found")
    if params.get("moodlewsrestformat") != "json":
        # Moodle's default format is XML; the worker always asks for JSON, so anything else is a bug.
        return web.Response(status=400, text="this emulator answers moodlewsrestformat=json only")
    if params.get("wsfunction") != FUNCTION:
        return exception(
            "invalidrecord",
            "Can't find data record in database table external_functions.",
            "dml_missing_record_exception",
        )
    field, value = str(params.get("field", "")), str(params.get("value", ""))
    if field not in ("", *FIELDS) or (field and not value):
        return exception("invalidparameter", "Invalid parameter value detected", "invalid_parameter_exception")
    state = request.app[STATE]
    if field == "":
        seeded = state.courses("moodle")
        site = [] if any(c.get("id") == SITE_COURSE["id"] for c in seeded) else [SITE_COURSE]
        return json_response({"courses": site + seeded, "warnings": []})
    if field not in ("id", "ids"):
        # By shortname/idnumber/category: neither fetch-back nor the backfill asks that.
        return exception("invalidparameter", f"this emulator looks courses up by id or ids, not {field}",
                         "invalid_parameter_exception")  # fmt: skip
    courses = [c for i in value.split(",") if (c := state.course("moodle", i.strip())) is not None]
    return json_response({"courses": courses, "warnings": []})


ROUTES = [
    web.get("/moodle/webservice/rest/server.php", server),
    web.post("/moodle/webservice/rest/server.php", server),
]
