"""A configured LMS source's whole catalog as backfill records (``vlsync backfill --source NAME``).

The source's LMS client (``shared.fetchback.client_for``: the fetch-back client, same settings, same
secret) lists every course one page at a time (``courses`` in ``shared.lms.<kind>``), and each course
becomes a ``LearningContent`` by fetch-back's own rules (``shared.sources.pipeline.complete``: the same
normalisation, hidden rule, URL template, default language and required fields). No second mapping.

What a course becomes:

- content: a :class:`shared.catalog.Record` with the item (``line`` is the course's position in the
  list, 1-based, which is also its place in the checkpoint);
- a course the rules refuse (a value, or a required field nothing fills) or the client's mapping refuses
  (an undocumented Canvas state): a Record with its problem, like a bad line of a file;
- hidden or unpublished: the source's ``hiddenAs`` decides, as for a webhook event. ``inactive`` (the
  default) pushes it with ``isActive: false``; ``delete`` skips it (a backfill never deletes) and counts
  it in ``Listing.skipped_hidden``;
- deleted in the LMS (only Canvas says so, and its list leaves deleted courses out by default): skipped,
  counted in ``Listing.skipped_deleted``.

A resumed run counts on the LMS listing the same courses in the same order (the checkpoint holds
positions): true of Moodle (id order) and of a catalog nobody edited in between; after changes,
``--restart``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from shared.catalog import CatalogProblem, Record
from shared.fetchback import client_for
from shared.lms import ApiSecret, LmsLister, Paging
from shared.lms.canvas import CanvasClient
from shared.models import FetchRef
from shared.settings import CanvasSource, LmsSource, SourceConfig, api_secret, fetch_back
from shared.sources.pipeline import CompletionError, complete

# The Canvas account listed when the source names none: Canvas's "root account for the current domain".
CANVAS_DEFAULT_ACCOUNT = "self"


class SourceUnusable(ValueError):
    """The source cannot be listed: not an LMS kind with a list API, no ``apiBaseUrl``, or no secret."""


@dataclass
class Listing:
    """What the listing skipped (the records say the rest), and the pages it read."""

    paging: Paging
    listed: int = 0
    skipped_hidden: int = 0
    skipped_deleted: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "pages": self.paging.pages,
            "skippedHidden": self.skipped_hidden,
            "skippedDeleted": self.skipped_deleted,
        }


def canvas_account(source: CanvasSource) -> str:
    """The account whose courses are listed: ``apiAccountId`` (a sub-account, if the settings have it),
    else ``rootAccountId``, else ``self`` (both mean the root account)."""
    return getattr(source, "api_account_id", None) or source.root_account_id or CANVAS_DEFAULT_ACCOUNT


def lister_for(
    http: httpx.AsyncClient, name: str, source: SourceConfig, request_timeout: float, *, secret: str | None = None
) -> LmsLister:
    """The source's LMS client, as fetch-back builds it; its secret from ``apiSecretSetting`` (the app's rule)."""
    if not fetch_back(source) or not isinstance(source, LmsSource):
        raise SourceUnusable(
            f"source {name!r} is a {source.kind} source without apiBaseUrl: only canvas, moodle, openedx and "
            "thinkific sources with apiBaseUrl (and apiSecretSetting) can be listed"
        )
    setting = getattr(source, "api_secret_setting", None) or "?"
    value = secret if secret is not None else api_secret(source)
    if not value:
        raise SourceUnusable(
            f"app setting {setting} (apiSecretSetting of source {name!r}) is empty, missing or an unresolved "
            "Key Vault reference: set it in this shell's environment"
        )
    if isinstance(source, CanvasSource) and source.api_base_url:
        return CanvasClient(
            http, source.api_base_url, ApiSecret(value, setting), account_id=canvas_account(source),
            request_timeout=request_timeout,
        )  # fmt: skip
    client = client_for(http, source, ApiSecret(value, setting), request_timeout)
    if not hasattr(client, "courses"):
        raise SourceUnusable(f"the {client.lms} client of source {name!r} has no course list")
    return client  # type: ignore[return-value]  # every fetch-back client lists (shared.lms.<kind>.courses)


async def records(lister: LmsLister, source: LmsSource, listing: Listing) -> AsyncIterator[Record]:
    """The catalog's records in the LMS's order (see the module for what each course becomes)."""
    line = 0
    async for item in lister.courses(listing.paging):
        line += 1
        listing.listed += 1
        where = f"{lister.lms} course {item.course_id}"
        if item.course is None:
            yield _problem(line, f"{where}: {item.problem}")
            continue
        if item.course.deleted:
            listing.skipped_deleted += 1
            continue
        try:
            fetch = FetchRef(
                kind=source.kind,  # type: ignore[arg-type]  # lister_for admits only the four LMS kinds
                courseId=item.course_id,
                urlValues=dict(item.course.url_values),
            )
            content = complete(
                source,
                source.external_id_prefix + item.course_id,
                fetch,
                item.course.fields,
                default_url=item.course.default_url,
            )
        except CompletionError as exc:
            yield _problem(line, f"{where}: {exc.code}: {exc}")
            continue
        except ValueError as exc:  # the course id is not an externalId (pydantic's ValidationError)
            yield _problem(line, f"{where}: the course id cannot be an externalId: {exc}")
            continue
        if content is None:
            listing.skipped_hidden += 1  # hidden, and the source's hiddenAs is delete
            continue
        yield Record(line, content)


def _problem(line: int, message: str) -> Record:
    return Record(line, problems=(CatalogProblem(line, "", message),))
