"""OData URL pieces for Graph: alternate-key segments and query options."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def key_literal(value: str) -> str:
    """A string key as an OData literal in a URL path: quotes doubled, then percent-encoded.

    ``O'Brien/1`` becomes ``'O''Brien%2F1'``: the quote doubling is the OData literal rule, the
    percent-encoding keeps ``/``, ``?``, ``#``, ``%``, spaces and non-ASCII from changing the URL.
    """
    return "'" + quote(value.replace("'", "''"), safe="'") + "'"


def content_by_external_id(registration_id: str, external_id: str) -> str:
    return f"{provider(registration_id)}/learningContents(externalId={key_literal(external_id)})"


def content_by_id(registration_id: str, content_id: str) -> str:
    return f"{contents(registration_id)}/{quote(content_id, safe='')}"


def contents(registration_id: str) -> str:
    return f"{provider(registration_id)}/learningContents"


def providers() -> str:
    return "/employeeExperience/learningProviders"


def provider(registration_id: str) -> str:
    return f"{providers()}/{quote(registration_id, safe='')}"


def query(*, top: int | None = None, skip: int | None = None, select: list[str] | None = None) -> str:
    """OData system query options as a query string (``?$top=…``), or ``""`` when there are none."""
    options: dict[str, str] = {}
    if top is not None:
        options["$top"] = str(top)
    if skip is not None:
        options["$skip"] = str(skip)
    if select:
        options["$select"] = ",".join(select)
    return "?" + urlencode(options, safe="$,") if options else ""


def select(properties: list[str] | None) -> str:
    return query(select=properties)
