"""OData URL pieces for Graph: key segments and query options.

Keys are encoded by ``key_literal`` and nothing else (``local/graph_emulator/README.md`` has the
character table with the evidence for each wire form).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def key_literal(value: str, *, quoted: bool = True) -> str:
    """A key as it goes into a URL path: ``'…'`` with quotes doubled (``quoted``), or a bare segment.

    Every percent-escape is encoded twice, so ``O'Brien/1`` becomes ``'O''Brien%252F1'``. Graph's front
    door decodes the path once before it splits it into segments, and the workload's OData parser
    decodes the key again: a single ``%2F`` reaches the front door as a literal ``/`` and splits the
    key (400 ``RequestBroker--ParseUri``, microsoft-graph-docs issue 10167, where ``%252F`` works), and a
    single ``%25`` would be decoded a second time. ``concepts/query-parameters.md``: "In some cases,
    you need to double-encode the values." The quotes stay raw: the literal's delimiters must survive
    the front door as quotes, and ``''`` is the OData rule for a quote inside a string literal.
    """
    text = value.replace("'", "''") if quoted else value
    once = quote(text, safe="'" if quoted else "")
    twice = once.replace("%", "%25")
    return f"'{twice}'" if quoted else twice


def content_by_external_id(registration_id: str, external_id: str) -> str:
    return f"{provider(registration_id)}/learningContents(externalId={key_literal(external_id)})"


def content_by_id(registration_id: str, content_id: str) -> str:
    return f"{contents(registration_id)}/{key_literal(content_id, quoted=False)}"


def ref(path: str) -> str:
    """The documented delete form of a content path (learningprovider-delete-learningcontents.md)."""
    return f"{path}/$ref"


def contents(registration_id: str) -> str:
    return f"{provider(registration_id)}/learningContents"


def providers() -> str:
    return "/employeeExperience/learningProviders"


def provider(registration_id: str) -> str:
    return f"{providers()}/{key_literal(registration_id, quoted=False)}"


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
