"""Canvas LMS: ``GET /api/v1/courses/:id`` with the source's access token (``Authorization: Bearer``).

Documented at https://canvas.instructure.com/doc/api/courses.html#method.courses.show (the Course
object: https://canvas.instructure.com/doc/api/courses.html#Course). ``include[]=public_description``
adds the course's public description and ``include[]=course_image`` its ``image_download_url``.
``workflow_state`` is one of ``unpublished``, ``available``, ``completed`` or ``deleted``; the Live
Events also name ``created`` and ``claimed`` (unpublished), accepted here too. Throttling answers
``403 Forbidden (Rate Limit Exceeded)`` (https://canvas.instructure.com/doc/api/file.throttling.html),
which ``shared.lms.check`` treats as transient. Errors come as ``{"errors": [{"message": ...}]}``.

What maps to what: ``name`` -> title, ``public_description`` -> description, ``locale`` ->
languageTag, ``image_download_url`` -> thumbnailWebUrl, ``created_at`` -> createdDateTime,
``workflow_state`` -> isActive (``available`` only) or a delete (``deleted``), by the intake's rule
(``shared.sources.canvas.state_action``). Canvas gives no
course URL in the object: the page is ``{apiBaseUrl}/courses/{id}`` (the API root is the Canvas
site's own address).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from shared.graph import Deadline
from shared.lms import ApiClient, LmsCourse, LmsPermanentError, check, parse, send
from shared.sources.canvas import state_action

LMS = "Canvas"
INCLUDES = (("include[]", "public_description"), ("include[]", "course_image"))


class CanvasCourse(BaseModel):
    """The Course object's fields fetch-back uses (the others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: StrictInt | StrictStr  # an integer; string ids when the caller asks for them (Accept: ...+json+string_ids)
    name: StrictStr
    workflow_state: StrictStr
    public_description: StrictStr | None = None
    locale: StrictStr | None = None
    image_download_url: StrictStr | None = None
    created_at: StrictStr | None = None
    course_code: StrictStr | None = None


class CanvasClient(ApiClient):
    lms = LMS

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        response = await send(
            self.http,
            LMS,
            "GET",
            f"{self.base_url}/api/v1/courses/{quote(course_id, safe='')}",
            deadline=deadline,
            request_timeout=self.request_timeout,
            params=INCLUDES,
            headers={"Authorization": f"Bearer {self.secret.value}", "Accept": "application/json"},
        )
        check(response, LMS, what=f"course {course_id}", secret=self.secret)
        return to_course(parse(CanvasCourse, response, LMS), self.base_url)


def to_course(course: CanvasCourse, base_url: str) -> LmsCourse:
    try:
        action = state_action(course.workflow_state)  # the intake's own rule
    except ValueError as exc:
        raise LmsPermanentError(LMS, 200, "invalid-response", str(exc)) from None
    if action == "delete":
        return LmsCourse(deleted=True)
    fields: dict[str, Any] = {"title": course.name, "isActive": action == "upsert"}
    for graph, value in (
        ("description", course.public_description),
        ("languageTag", course.locale),
        ("thumbnailWebUrl", course.image_download_url),
        ("createdDateTime", course.created_at),
    ):
        if value:
            fields[graph] = value
    return LmsCourse(fields=fields, default_url=f"{base_url}/courses/{quote(str(course.id), safe='')}")
