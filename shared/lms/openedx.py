"""Open edX: the Courses API course detail, with an OAuth2 client-credentials token.

Token: ``POST {apiTokenUrl}`` (default ``{apiBaseUrl}/oauth2/access_token``) with the form
``grant_type=client_credentials``, ``client_id``, ``client_secret``, ``token_type=jwt``; the answer is
``{"access_token", "token_type": "JWT", "expires_in", "scope"}``
(https://docs.openedx.org/projects/edx-platform/en/latest/how-tos/use_the_api.html, "Getting an
access token"). The token is cached until shortly before it expires and fetched again once when the
API answers 401 (revoked, or the LMS's signing key rotated).

Course: ``GET {apiBaseUrl}/api/courses/v1/courses/{course_key}/`` with ``Authorization: JWT <token>``
(https://docs.openedx.org/projects/edx-platform/en/latest/references/docs/lms/djangoapps/course_api/views.html;
the serializer is openedx/edx-platform ``lms/djangoapps/course_api/serializers.py``,
``CourseDetailSerializer``): ``id``, ``name`` (HTML-escaped display name), ``short_description``,
``overview`` (the about page's HTML), ``media.image.{raw,small,large}`` (absolute URLs),
``media.course_image.uri`` (relative), ``start``, ``end``, ``effort`` (free text, often ``HH:MM``),
``hidden`` (catalog visibility "about" or "none"). Errors come in DRF's form ``{"detail": ...}``.

What maps to what: ``name`` -> title, ``short_description`` (else ``overview``) -> description,
``media.image.large`` (else ``raw``, else ``course_image.uri`` on the LMS's address) ->
thumbnailWebUrl, ``effort`` in ``HH:MM`` form -> duration, ``hidden`` -> isActive. The API has no
language, creation or modification time: the event's and ``defaultLanguageTag`` stay. The page is the
about page, ``{apiBaseUrl}/courses/{course_key}/about``.

The catalog (``courses``, for ``vlsync backfill --source``): ``GET {apiBaseUrl}/api/courses/v1/courses/``
("Get a List of Courses", https://docs.huihoo.com/edx/open-edx-platform-api/courses/overview.html; the
view is ``CourseListView`` in ``lms/djangoapps/course_api/views.py``) with ``page_size`` (at most 100),
answering ``{"results": [...], "pagination": {"next", "previous", "count", "num_pages"}}`` (edx-platform's
``NamespacedPageNumberPagination``); ``pagination.next`` is the next page's absolute URL, or null on the
last. Its items are ``CourseSerializer``'s: the detail's fields without ``overview``, so the same mapping
applies (a listed course's description is its ``short_description`` only). The list shows what the
client's user may see: a staff service user sees every course, catalog-hidden ones included.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urljoin

import httpx
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from shared.graph import Deadline
from shared.lms import (
    DEFAULT_REQUEST_TIMEOUT,
    MAX_PAGE_BYTES,
    MAX_RESPONSE_BYTES,
    ApiClient,
    ApiSecret,
    Listed,
    LmsCourse,
    LmsPermanentError,
    Paging,
    check,
    listed,
    parse,
    send,
)
from shared.sources.normalize import clock_duration

LMS = "Open edX"
# Refresh this long before the token's own expiry, so a token never expires mid-request.
EXPIRY_MARGIN_SECONDS = 60.0
# Course keys carry ':' and '+' (course-v1:Org+Num+Run) and legacy keys '/' (Org/Num/Run); the LMS's
# URL patterns take them as they are in the path.
_KEY_SAFE = ":+/@"


class TokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: StrictStr = Field(min_length=1)
    token_type: StrictStr = "JWT"  # noqa: S105 - the token scheme's name, not a secret
    expires_in: StrictInt | float = Field(gt=0)


class Image(BaseModel):
    model_config = ConfigDict(extra="ignore")

    raw: StrictStr | None = None
    small: StrictStr | None = None
    large: StrictStr | None = None


class Uri(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uri: StrictStr | None = None


class Media(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: Image | None = None
    course_image: Uri | None = None


class OpenEdxCourse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictStr
    name: StrictStr
    short_description: StrictStr | None = None
    overview: StrictStr | None = None
    media: Media | None = None
    effort: StrictStr | None = None
    hidden: StrictBool | None = None


class Pagination(BaseModel):
    model_config = ConfigDict(extra="ignore")

    next: StrictStr | None = None


class CoursePage(BaseModel):
    """One page of the course list (``NamespacedPageNumberPagination``)."""

    model_config = ConfigDict(extra="ignore")

    results: list[OpenEdxCourse]
    pagination: Pagination


class OpenEdxClient(ApiClient):
    lms = LMS

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str,
        secret: ApiSecret,
        token_url: str | None = None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(http, base_url, secret, request_timeout=request_timeout)
        self.client_id = client_id
        self.token_url = token_url or f"{self.base_url}/oauth2/access_token"
        self.clock = clock
        self._token: tuple[str, str, float] | None = None  # (type, token, refresh at)
        self.token_requests = 0

    async def _get(
        self, url: str, deadline: Deadline, *, what: str, params: Any = None, limit: int = MAX_RESPONSE_BYTES
    ) -> httpx.Response:
        for attempt in range(2):
            kind, token = await self._bearer(deadline)
            response = await send(
                self.http,
                LMS,
                "GET",
                url,
                deadline=deadline,
                request_timeout=self.request_timeout,
                params=params,
                headers={"Authorization": f"{kind} {token}", "Accept": "application/json"},
            )
            if response.status_code == 401 and attempt == 0:
                self._token = None  # revoked or re-keyed: one fresh token, then the answer stands
                continue
            break
        check(response, LMS, what=what, secret=self.secret, limit=limit)
        return response

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        url = f"{self.base_url}/api/courses/v1/courses/{quote(course_id, safe=_KEY_SAFE)}/"
        response = await self._get(url, deadline, what=f"course {course_id}")
        return to_course(parse(OpenEdxCourse, response, LMS), self.base_url)

    async def courses(self, paging: Paging) -> AsyncIterator[Listed]:
        url: str | None = f"{self.base_url}/api/courses/v1/courses/"
        params: Any = {"page_size": str(paging.page_size)}
        while url is not None:
            response = await paging.fetch(self._get, url, what="the course list", params=params, limit=MAX_PAGE_BYTES)
            page = parse(CoursePage, response, LMS, "course list")
            for course in page.results:
                yield listed(course.id, to_course, course, self.base_url)
            # The next URL carries page and page_size itself.
            url = paging.follow(page.pagination.next, self.base_url, LMS) if page.pagination.next else None
            params = None

    async def _bearer(self, deadline: Deadline) -> tuple[str, str]:
        if self._token is not None and self.clock() < self._token[2]:
            return self._token[0], self._token[1]
        self.token_requests += 1
        response = await send(
            self.http,
            LMS,
            "POST",
            self.token_url,
            deadline=deadline,
            request_timeout=self.request_timeout,
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.secret.value,
                "token_type": "jwt",
            },
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401):
            # RFC 6749 5.2: invalid_client (401, or 400) is a wrong id or secret: not worth retrying.
            raise LmsPermanentError(
                LMS,
                response.status_code,
                "token-refused",
                f"{LMS} refused the client credentials (apiClientId {self.client_id!r}, secret in app setting "
                f"{self.secret.setting} (apiSecretSetting)) at {self.token_url}: {_oauth_error(response)}",
            )
        check(response, LMS, what=f"the token endpoint {self.token_url}", secret=self.secret)
        answer = parse(TokenAnswer, response, LMS)
        kind = "JWT" if answer.token_type.lower() == "jwt" else "Bearer"
        lifetime = float(answer.expires_in)
        refresh_at = self.clock() + max(lifetime - EXPIRY_MARGIN_SECONDS, lifetime / 2)
        self._token = (kind, answer.access_token, refresh_at)
        return kind, answer.access_token


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("error", "error_description") if isinstance(body.get(k), str)]
        if parts:
            return ": ".join(parts)[:300]
    return response.reason_phrase


def to_course(course: OpenEdxCourse, base_url: str) -> LmsCourse:
    fields: dict[str, Any] = {"title": course.name}
    description = course.short_description or course.overview
    if description:
        fields["description"] = description
    media = course.media or Media()
    image = media.image or Image()
    thumbnail = image.large or image.raw
    if not thumbnail and media.course_image and media.course_image.uri:
        thumbnail = urljoin(base_url + "/", media.course_image.uri)
    if thumbnail:
        fields["thumbnailWebUrl"] = thumbnail
    duration = clock_duration(course.effort)  # the effort rule is normalize's
    if duration is not None:
        fields["duration"] = duration
    if course.hidden is not None:
        fields["isActive"] = not course.hidden
    return LmsCourse(fields=fields, default_url=f"{base_url}/courses/{quote(course.id, safe=_KEY_SAFE)}/about")
