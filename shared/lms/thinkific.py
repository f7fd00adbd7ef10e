"""Thinkific: the Admin API's course and its product, with the site's API key.

Every request carries ``X-Auth-API-Key`` (the API key) and ``X-Auth-Subdomain`` (``apiSubdomain``)
(https://developers.thinkific.com/api/api-key-auth/); a wrong key answers 401
``{"error": "Authentication Error"}``, and the documented rate limit answers 403 "Rate Limit
Exceeded" (https://help.thinkific.com/support/solutions/articles/239358-getting-started-with-the-api-),
retried here like a 429. Dates are ISO 8601 (https://developers.thinkific.com/api/response-format/).

The adapter keys an item by the course's id (a product event by its ``productable_id``), so the
lookup is ``GET /api/public/v1/courses/{id}`` (CourseResponse: ``id``, ``name``, ``slug``,
``description``, ``course_card_image_url``, ``product_id``, ...) and then
``GET /api/public/v1/products/{product_id}`` (ProductResponse: ``name``, ``description``,
``card_image_url``, ``slug``, ``status``, ``hidden``, ``created_at``, ``productable_id``, ...): the
product says whether the course is published and listed. Field lists from Thinkific's Admin API
reference (https://developers.thinkific.com/api/api-documentation/), as the generated client
https://hexdocs.pm/thinkific_admin_api/ThinkificAdminAPI.Model.ProductResponse.html spells them.

What maps to what: the course's ``name`` -> title, its ``description`` (else the product's) ->
description, ``course_card_image_url`` (else the product's ``card_image_url``) -> thumbnailWebUrl,
the product's ``created_at`` -> createdDateTime, its ``status`` (``draft`` and the like hide) and
``hidden`` -> isActive. The course's ``duration`` is a string of unstated unit and is not used; there
is no language. The page is ``https://{apiSubdomain}.thinkific.com/courses/{slug}`` (a site on a custom
domain sets ``contentWebUrlTemplate`` with ``{slug}``).

The catalog (``courses``, for ``vlsync backfill --source``): ``GET /api/public/v1/courses?page=&limit=``
(GetCoursesResponse: ``items`` of CourseResponse and ``meta.pagination`` with ``current_page``,
``next_page``, ``prev_page``, ``total_pages``, ``total_items``; ``next_page`` is null on the last page:
https://hexdocs.pm/thinkific_admin_api/ThinkificAdminAPI.Model.GetCoursesResponse.html and
``ThinkificAdminAPI.Model.Pagination``), then each course's product as for one course (the product holds
its visibility): one request per listed course more. **[unconfirmed]** the largest ``limit`` Thinkific
accepts (its default is 25); 100 is asked for by default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

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
from shared.sources.thinkific import status_hides  # the one visibility rule of a Thinkific product

LMS = "Thinkific"


class ThinkificCourse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    name: StrictStr
    product_id: StrictInt
    slug: StrictStr | None = None
    description: StrictStr | None = None
    course_card_image_url: StrictStr | None = None


class ThinkificProduct(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    name: StrictStr | None = None
    description: StrictStr | None = None
    card_image_url: StrictStr | None = None
    slug: StrictStr | None = None
    status: StrictStr | None = None
    hidden: StrictBool | None = None
    created_at: StrictStr | None = None


class Pagination(BaseModel):
    model_config = ConfigDict(extra="ignore")

    next_page: StrictInt | None = None


class Meta(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pagination: Pagination


class CoursePage(BaseModel):
    """GetCoursesResponse: one page of the course list."""

    model_config = ConfigDict(extra="ignore")

    items: list[ThinkificCourse]
    meta: Meta


class ThinkificClient(ApiClient):
    lms = LMS

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        subdomain: str,
        secret: ApiSecret,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(http, base_url, secret, request_timeout=request_timeout)
        self.subdomain = subdomain

    async def _get(
        self, path: str, what: str, deadline: Deadline, params: Any = None, limit: int = MAX_RESPONSE_BYTES
    ) -> httpx.Response:
        response = await send(
            self.http,
            LMS,
            "GET",
            f"{self.base_url}/api/public/v1/{path}",
            deadline=deadline,
            request_timeout=self.request_timeout,
            params=params,
            headers={
                "X-Auth-API-Key": self.secret.value,
                "X-Auth-Subdomain": self.subdomain,
                "Accept": "application/json",
            },
        )
        check(response, LMS, what=what, secret=self.secret, limit=limit)
        return response

    async def courses(self, paging: Paging) -> AsyncIterator[Listed]:
        page_number: int | None = 1
        while page_number is not None:
            params = {"page": str(page_number), "limit": str(paging.page_size)}
            response = await paging.fetch(self._get, "courses", "the course list", params=params, limit=MAX_PAGE_BYTES)
            page = parse(CoursePage, response, LMS, "course list")
            for course in page.items:
                try:
                    product = parse(
                        ThinkificProduct,
                        await paging.fetch(
                            self._get,
                            f"products/{course.product_id}",
                            f"product {course.product_id} of course {course.id}",
                        ),
                        LMS,
                    )
                except LmsPermanentError as error:  # one course's product (gone, refused, odd): a bad record
                    if error.status in (401, 403):
                        raise  # the secret itself is refused: every course would fail alike
                    yield Listed(str(course.id), problem=error.message)
                    continue
                yield listed(str(course.id), to_course, course, product, self.subdomain)
            following = page.meta.pagination.next_page
            if following is not None and following <= page_number:
                raise LmsPermanentError(LMS, 200, "invalid-response", f"next_page {following} after page {page_number}")
            page_number = following

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        course = parse(
            ThinkificCourse,
            await self._get(f"courses/{quote(course_id, safe='')}", f"course {course_id}", deadline),
            LMS,
        )
        product = parse(
            ThinkificProduct,
            await self._get(
                f"products/{course.product_id}", f"product {course.product_id} of course {course_id}", deadline
            ),
            LMS,
        )
        return to_course(course, product, self.subdomain)


def to_course(course: ThinkificCourse, product: ThinkificProduct, subdomain: str) -> LmsCourse:
    fields: dict[str, Any] = {"title": course.name}
    description = course.description or product.description
    if description:
        fields["description"] = description
    image = course.course_card_image_url or product.card_image_url
    if image:
        fields["thumbnailWebUrl"] = image
    if product.created_at:
        fields["createdDateTime"] = product.created_at
    if product.status is not None or product.hidden is not None:
        fields["isActive"] = not status_hides(product.status) and not product.hidden
    slug = course.slug or product.slug
    return LmsCourse(
        fields=fields,
        default_url=f"https://{subdomain}.thinkific.com/courses/{quote(slug, safe='')}" if slug else None,
        url_values={"slug": slug} if slug else {},
    )
