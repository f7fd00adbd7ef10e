"""What ``vlsync`` prints: one JSON document on stdout with ``--json`` (for scripts), readable rich
tables and lines otherwise. Progress and waits go to stderr, so stdout stays parseable.

Values are printed as plain text, never as rich markup: an externalId like ``[draft] C#`` is data.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDE = 200  # width for tables when stdout is not a terminal (pipes, CI logs): no truncated ids


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else WIDE
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


class Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @property
    def out(self) -> Console:
        return _console(stderr=False)

    @property
    def err(self) -> Console:
        return _console(stderr=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """A human line on stdout (not in JSON mode)."""
        if not self.as_json:
            self.out.print(Text(text), soft_wrap=True)

    def note(self, text: str) -> None:
        """Progress, waits and hints on stderr (in every mode)."""
        self.err.print(Text(text), soft_wrap=True)

    def fields(self, values: Mapping[str, Any], *, title: str | None = None) -> None:
        table = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for key, value in values.items():
            table.add_row(Text(key), cell(value))
        self.out.print(table)

    def rows(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        table = Table(*columns, header_style="bold")
        for column in table.columns:
            column.overflow = "fold"
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        self.out.print(table)
