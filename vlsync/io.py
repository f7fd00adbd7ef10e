"""Reading learning content for ``vlsync content upsert``: JSON (one object or an array) or NDJSON.

Everything is validated with the ``LearningContent`` model before anything is sent; every problem of
every item is reported, and one invalid item means nothing is sent. Read-only properties that Graph
returns (``id``, ``@odata.*``) are dropped first, so the output of ``vlsync --json content get`` or
``content list`` can be edited and fed back in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.models import LearningContent
from shared.problems import json_pointer

READ_ONLY = frozenset({"id"})


@dataclass(frozen=True)
class InputProblem:
    where: str  # "line 3", "item 2", "object"
    pointer: str  # JSON pointer of the field, "" for the whole item
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.pointer or '(item)'}: {self.message}"


class InvalidInput(ValueError):
    """The input holds invalid items; nothing was sent."""

    def __init__(self, problems: list[InputProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the input; nothing was sent")
        self.problems = problems


@dataclass(frozen=True)
class Item:
    where: str
    content: LearningContent


def writable(item: dict[str, Any]) -> dict[str, Any]:
    """An item without the read-only properties a Graph response carries (``id``, ``@odata.*``)."""
    return {k: v for k, v in item.items() if k not in READ_ONLY and not k.startswith("@odata.")}


def _syntax(exc: json.JSONDecodeError, line_offset: int = 0) -> InputProblem:
    return InputProblem(f"line {exc.lineno + line_offset}", "", f"invalid JSON: {exc.msg} (column {exc.colno})")


def parse_documents(text: str) -> list[tuple[str, Any]]:
    """Split the input into ``(where, decoded JSON)`` pairs; a syntax error is a problem, not a crash."""
    body = text.removeprefix("\ufeff")
    stripped = body.strip()
    if not stripped:
        raise InvalidInput([InputProblem("input", "", "is empty")])
    if stripped.startswith("["):
        try:
            documents = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidInput([_syntax(exc)]) from None
        return [(f"item {index}", doc) for index, doc in enumerate(documents, start=1)]
    try:
        return [("object", json.loads(body))]
    except json.JSONDecodeError as exc:
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        ndjson = exc.msg == "Extra data" or (len(lines) > 1 and all(line.startswith("{") for line in lines))
        if not ndjson:  # one broken (maybe pretty-printed) object
            raise InvalidInput([_syntax(exc)]) from None
    found: list[tuple[str, Any]] = []
    problems: list[InputProblem] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(_syntax(exc, number - 1))
    if problems:
        raise InvalidInput(problems)
    return found


def validate(documents: list[tuple[str, Any]]) -> list[Item]:
    """Every document as ``LearningContent``; all problems at once (including repeated externalIds)."""
    items: list[Item] = []
    problems: list[InputProblem] = []
    first_seen: dict[str, str] = {}
    for where, doc in documents:
        if not isinstance(doc, dict):
            problems.append(InputProblem(where, "", f"must be a JSON object, not {type(doc).__name__}"))
            continue
        external_id = doc.get("externalId")
        if isinstance(external_id, str):
            earlier = first_seen.setdefault(external_id, where)
            if earlier != where:
                problems.append(InputProblem(where, "/externalId", f"{external_id!r} repeats {earlier}"))
        try:
            content = LearningContent.model_validate(writable(doc))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(InputProblem(where, json_pointer(error["loc"]), message))
            continue
        items.append(Item(where, content))
    if problems:
        raise InvalidInput(problems)
    if not items:
        raise InvalidInput([InputProblem("input", "", "holds no items")])
    return items


def read_items(text: str) -> list[Item]:
    return validate(parse_documents(text))
