"""Moodle: the web service function ``core_course_get_courses_by_field`` over REST, with the source's token.

``GET {apiBaseUrl}/webservice/rest/server.php?wstoken=...&wsfunction=core_course_get_courses_by_field
&moodlewsrestformat=json&field=id&value={id}`` answers ``{"courses": [...], "warnings": [...]}``; a
course that does not exist (or the token's user may not see) is an empty ``courses``. The course
structure is ``core_course_external::get_course_structure(false)`` in moodle/moodle
``course/externallib.php`` (https://github.com/moodle/moodle/blob/main/course/externallib.php):
``id``, ``fullname``, ``displayname``, ``summary`` (formatted by ``summaryformat``: 1 = HTML),
``overviewfiles`` (``fileurl``, ``mimetype``), ``visible`` (1/0), ``lang`` (forced course language,
often empty), ``timecreated``, ``timemodified`` (epoch seconds). Errors come with HTTP 200 as
``{"exception", "errorcode", "message"}`` (webservice/rest/locallib.php); ``invalidtoken`` and
``accessexception`` mean the token or its service is wrong.

What maps to what: ``fullname`` -> title, ``summary`` -> description (HTML to text), ``lang`` ->
languageTag, ``courseimage`` (newer Moodle versions add it to this function's answer; unconfirmed which
version) else the first image of ``overviewfiles`` -> thumbnailWebUrl, ``timecreated`` ->
createdDateTime, ``timemodified`` -> lastModifiedDateTime, ``visible`` -> isActive. The page is
``{apiBaseUrl}/course/view.php?id={id}``. The overview file URL Moodle gives is the web-service form
(``/webservice/pluginfile.php/...``, which needs a token); the public form without ``/webservice``
is stored instead (course overview files are served without login unless the site forces login;
unconfirmed for every site configuration).

The catalog (``courses``, for ``vlsync backfill --source``): the same function without ``field``, which
Moodle documents as "can be left empty for all courses" and answers with every course row in id order
(``$DB->get_records('course', null, 'id ASC')`` in ``get_courses_by_field``), in the same course
structure, so the one mapping below serves both. That includes the site's front page course (``SITEID``,
id 1), which is not a course and is skipped. Moodle's function has no pages: its one answer holds the
whole catalog, bounded by ``MAX_LIST_BYTES`` (memory holds that one answer, then streams its courses).
Hidden courses are listed only to a token whose user may see them (``moodle/course:viewhiddencourses``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from shared.graph import Deadline
from shared.lms import (
    MAX_RESPONSE_BYTES,
    ApiClient,
    Listed,
    LmsCourse,
    LmsPermanentError,
    Paging,
    check,
    listed,
    send,
    validate,
)
from shared.sources.normalize import from_epoch

LMS = "Moodle"
FUNCTION = "core_course_get_courses_by_field"
# Errors that mean the token (or the service it belongs to) is not set up to call the function.
AUTH_ERRORS = frozenset({"invalidtoken", "accessexception", "servicenotavailable", "webservicesnotenabled"})
# Moodle's front page is course SITEID (1 on every site Moodle installs): listed, but not a course.
SITE_COURSE_ID = 1
# The whole catalog in one answer: about 3 kB a course, so some 20,000 courses.
MAX_LIST_BYTES = 64 * MAX_RESPONSE_BYTES


class MoodleFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fileurl: StrictStr
    mimetype: StrictStr | None = None


class MoodleCourse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    fullname: StrictStr
    summary: StrictStr | None = None
    summaryformat: StrictInt | None = None
    overviewfiles: list[MoodleFile] = Field(default_factory=list)
    courseimage: StrictStr | None = None
    visible: StrictInt | None = None
    lang: StrictStr | None = None
    timecreated: StrictInt | None = None
    timemodified: StrictInt | None = None


class MoodleCourses(BaseModel):
    model_config = ConfigDict(extra="ignore")

    courses: list[MoodleCourse]
    warnings: list[Any] = Field(default_factory=list)


class MoodleClient(ApiClient):
    lms = LMS

    async def _call(self, params: dict[str, str], what: str, deadline: Deadline, limit: int) -> Any:
        # POST, as Moodle's own clients do: the token stays out of URLs that proxies and logs keep.
        response = await send(
            self.http,
            LMS,
            "POST",
            f"{self.base_url}/webservice/rest/server.php",
            deadline=deadline,
            request_timeout=self.request_timeout,
            data={"wstoken": self.secret.value, "wsfunction": FUNCTION, "moodlewsrestformat": "json", **params},
            headers={"Accept": "application/json"},
        )
        check(response, LMS, what=what, secret=self.secret, limit=limit)
        try:
            body = response.json()
        except ValueError:
            raise LmsPermanentError(LMS, response.status_code, "invalid-response", "the answer is not JSON") from None
        if isinstance(body, dict) and "exception" in body:
            code = str(body.get("errorcode") or body.get("exception"))
            said = str(body.get("message", ""))[:300]
            if code in AUTH_ERRORS:
                raise LmsPermanentError(
                    LMS,
                    response.status_code,
                    code,
                    f"{LMS} refused the web-service token in app setting {self.secret.setting} (apiSecretSetting), "
                    f"or its service lacks {FUNCTION}: {said}",
                )
            raise LmsPermanentError(LMS, response.status_code, code, said or "the web service raised an exception")
        return validate(MoodleCourses, body, LMS, response.status_code, "course" if params else "course list")

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        if not course_id.isdigit():
            raise LmsPermanentError(LMS, None, "not-found", f"course {course_id!r} is not a Moodle course id (digits)")
        answer = await self._call(
            {"field": "id", "value": course_id}, f"course {course_id}", deadline, MAX_RESPONSE_BYTES
        )
        matching = [c for c in answer.courses if str(c.id) == course_id]
        if not matching:
            raise LmsPermanentError(LMS, 404, "not-found", f"course {course_id} does not exist in {LMS}")
        return to_course(matching[0], self.base_url)

    async def courses(self, paging: Paging) -> AsyncIterator[Listed]:
        answer: MoodleCourses = await paging.fetch(self._call, {}, "the course list", limit=MAX_LIST_BYTES)
        for course in answer.courses:
            if course.id != SITE_COURSE_ID:
                yield listed(str(course.id), to_course, course, self.base_url)


def _public_file_url(url: str) -> str:
    return url.replace("/webservice/pluginfile.php/", "/pluginfile.php/", 1)


def to_course(course: MoodleCourse, base_url: str) -> LmsCourse:
    fields: dict[str, Any] = {"title": course.fullname}
    if course.summary:
        fields["description"] = course.summary
    if course.lang:
        fields["languageTag"] = course.lang
    if course.visible is not None:
        fields["isActive"] = course.visible == 1
    images = [f for f in course.overviewfiles if (f.mimetype or "").startswith("image/")]
    if course.courseimage and not course.courseimage.startswith("data:"):
        fields["thumbnailWebUrl"] = course.courseimage  # already the public pluginfile URL
    elif images:
        fields["thumbnailWebUrl"] = _public_file_url(images[0].fileurl)
    for graph, seconds in (("createdDateTime", course.timecreated), ("lastModifiedDateTime", course.timemodified)):
        if seconds:  # 0: never set
            try:
                fields[graph] = from_epoch(seconds)
            except ValueError as exc:
                raise LmsPermanentError(LMS, 200, "invalid-response", f"{graph} {exc}") from None
    return LmsCourse(fields=fields, default_url=f"{base_url}/course/view.php?id={quote(str(course.id), safe='')}")
