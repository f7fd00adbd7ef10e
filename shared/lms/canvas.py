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

The catalog (``courses``, for ``vlsync backfill --source``): ``GET /api/v1/accounts/:account_id/courses``
("List active courses in an account", https://canvas.instructure.com/doc/api/accounts.html#method.accounts.courses_api;
needs an account admin's token), ``per_page`` up to 100, the next page in the ``Link`` header's
``rel="next"`` URL (https://canvas.instructure.com/doc/api/file.pagination.html: follow it as given,
never build page numbers). Without ``state[]`` Canvas lists every state but ``deleted``. The account is
``rootAccountId`` when the source names it, else ``self``, which Canvas documents as "the root account
for the current domain" (https://canvas.instructure.com/doc/api/file.object_ids.html, "special IDs").
**[unconfirmed]** whether this list honours ``include[]=public_description`` and ``course_image`` (its
documented includes are ``syllabus_body``, ``term``, ``teachers`` and the like): they are asked for,
and a course without them simply has no description or thumbnail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, RootModel, StrictInt, StrictStr

from shared.graph import Deadline
from shared.lms import (
    DEFAULT_REQUEST_TIMEOUT,
    MAX_PAGE_BYTES,
    ApiClient,
    ApiSecret,
    Listed,
    LmsCourse,
    LmsPermanentError,
    Paging,
    check,
    listed,
    next_link,
    parse,
    send,
)
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


class CanvasPage(RootModel[list[CanvasCourse]]):
    """One page of a course list: a JSON array of Course objects."""


class CanvasClient(ApiClient):
    lms = LMS

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        secret: ApiSecret,
        *,
        account_id: str = "self",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(http, base_url, secret, request_timeout=request_timeout)
        self.account_id = account_id

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret.value}", "Accept": "application/json"}

    async def courses(self, paging: Paging) -> AsyncIterator[Listed]:
        url: str | None = f"{self.base_url}/api/v1/accounts/{quote(self.account_id, safe='')}/courses"
        params: Any = (*INCLUDES, ("per_page", str(paging.page_size)))
        while url is not None:
            response = await paging.fetch(self._page, url, params)
            items = parse(CanvasPage, response, LMS, "course list")
            for course in items.root:
                yield listed(str(course.id), to_course, course, self.base_url)
            following = next_link(response)
            url, params = (paging.follow(following, self.base_url, LMS), None) if following else (None, None)

    async def _page(self, url: str, params: Any, deadline: Deadline) -> httpx.Response:
        response = await send(
            self.http, LMS, "GET", url, deadline=deadline, request_timeout=self.request_timeout,
            params=params, headers=self._headers(),
        )  # fmt: skip
        check(response, LMS, what=f"account {self.account_id}", secret=self.secret, limit=MAX_PAGE_BYTES)
        return response

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        response = await send(
            self.http,
            LMS,
            "GET",
            f"{self.base_url}/api/v1/courses/{quote(course_id, safe='')}",
            deadline=deadline,
            request_timeout=self.request_timeout,
            params=INCLUDES,
            headers=self._headers(),
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
