"""Reading a source catalog (``vlsync backfill``, ``vlsync reconcile`` and the reconcile timer) one
record at a time, so memory stays flat whatever the catalog's size.

Two formats, both with Graph's property names (``shared.models.LearningContent``):

- NDJSON: one JSON object per line; blank lines are skipped. Read-only ``id`` and ``@odata.*`` are
  dropped, so ``vlsync --json content list`` output (one object per line) can be fed back.
- CSV (RFC 4180, UTF-8, a BOM allowed): a header row naming the properties, one row per item. An
  empty cell is an absent property. List properties (``contributors``, ``additionalTags``,
  ``skillTags``) are ``;``-separated (a value holding ``;`` cannot be written in CSV: use NDJSON);
  booleans are ``true``/``false`` (any case); ``numberOfPages`` is an integer. An unknown column is
  an error of the whole file (``CatalogUnreadable``), not of each row.

Each record comes with its line number (the first line of a CSV record), which is also its position
in the checkpoint (``shared.checkpoint``). A record that is not a valid learningContent carries a
``CatalogProblem`` instead of content; what to do with it is the caller's decision.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from shared.models import LearningContent
from shared.problems import json_pointer

CatalogFormat = Literal["ndjson", "csv"]
READ_ONLY = frozenset({"id"})
LIST_SEPARATOR = ";"
_FIELDS = {field.alias or name: field for name, field in LearningContent.model_fields.items()}
_LISTS = frozenset(name for name, field in _FIELDS.items() if "list[" in str(field.annotation))
_BOOLS = frozenset(name for name, field in _FIELDS.items() if str(field.annotation).startswith("bool"))
_INTS = frozenset({"numberOfPages"})


class CatalogUnreadable(ValueError):
    """The catalog as a whole cannot be read (unknown format, a CSV header naming no known property)."""


@dataclass(frozen=True)
class CatalogProblem:
    line: int
    pointer: str  # JSON pointer of the property, "" for the whole record
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.pointer or '(item)'}: {self.message}"

    def view(self) -> dict[str, Any]:
        return {"line": self.line, "pointer": self.pointer, "message": self.message}


@dataclass(frozen=True)
class Record:
    """One catalog record: valid ``content``, or the ``problems`` that make it invalid."""

    line: int
    content: LearningContent | None = None
    problems: tuple[CatalogProblem, ...] = ()

    @property
    def external_id(self) -> str | None:
        return self.content.external_id if self.content is not None else None


def format_of(path: str | Path, declared: CatalogFormat | None = None) -> CatalogFormat:
    """``declared``, else from the file name: ``.csv`` is CSV, ``.ndjson``/``.jsonl``/``.json`` NDJSON."""
    if declared is not None:
        return declared
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    raise CatalogUnreadable(f"cannot tell the format of {Path(path).name!r}: name it .ndjson or .csv, or give --format")


def validate(line: int, document: Any) -> Record:
    """One decoded record as ``LearningContent`` (the worker's model), or its problems."""
    if not isinstance(document, dict):
        return Record(
            line, problems=(CatalogProblem(line, "", f"must be a JSON object, not {type(document).__name__}"),)
        )
    writable = {k: v for k, v in document.items() if k not in READ_ONLY and not str(k).startswith("@odata.")}
    try:
        return Record(line, LearningContent.model_validate(writable))
    except ValidationError as exc:
        problems = tuple(
            CatalogProblem(line, json_pointer(error["loc"]), str(error["msg"]).removeprefix("Value error, "))
            for error in exc.errors(include_url=False)
        )
        return Record(line, problems=problems)


def ndjson_records(lines: Iterable[str]) -> Iterator[Record]:
    for number, text in enumerate(lines, start=1):
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Record(
                number, problems=(CatalogProblem(number, "", f"invalid JSON: {exc.msg} (column {exc.colno})"),)
            )
            continue
        yield validate(number, document)


def _cell(name: str, raw: str, line: int) -> tuple[Any, CatalogProblem | None]:
    if name in _LISTS:
        return [part.strip() for part in raw.split(LIST_SEPARATOR) if part.strip()], None
    if name in _BOOLS:
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            return None, CatalogProblem(line, "/" + name, "must be true or false")
        return lowered == "true", None
    if name in _INTS:
        try:
            return int(raw.strip()), None
        except ValueError:
            return None, CatalogProblem(line, "/" + name, "must be an integer")
    return raw, None


def csv_records(lines: Iterable[str]) -> Iterator[Record]:
    reader = csv.reader(line.removeprefix("\ufeff") if i == 0 else line for i, line in enumerate(lines))
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [name.strip() for name in header]
    unknown = sorted({n for n in names if n and n not in _FIELDS and n not in READ_ONLY})
    if unknown:
        raise CatalogUnreadable(
            f"CSV header names unknown properties: {', '.join(unknown)} (columns are learningContent property names)"
        )
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            yield Record(line, problems=(CatalogProblem(line, "", f"has {len(row)} cells, the header {len(names)}"),))
            continue
        document: dict[str, Any] = {}
        problems: list[CatalogProblem] = []
        for name, raw in zip(names, row, strict=False):
            if not name or name in READ_ONLY or raw == "":
                continue
            value, problem = _cell(name, raw, line)
            if problem is not None:
                problems.append(problem)
            else:
                document[name] = value
        yield Record(line, problems=tuple(problems)) if problems else validate(line, document)


def records(lines: Iterable[str], fmt: CatalogFormat) -> Iterator[Record]:
    """The catalog's records in file order; ``lines`` is read lazily (an open file, a blob's lines)."""
    return csv_records(lines) if fmt == "csv" else ndjson_records(lines)


def read_file(path: str | Path, fmt: CatalogFormat) -> Iterator[Record]:
    """The records of a catalog file, streamed (the file is never read whole)."""
    with open(path, encoding="utf-8", newline="") as handle:
        yield from records(handle, fmt)
