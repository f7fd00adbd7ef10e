"""HTTP route templates and route resolution, free of any I/O.

The dev host serves the part of the host's (ASP.NET) template syntax that the app's routes use:
literal segments, matched case-insensitively, and whole-segment ``{name}`` parameters, whose values
are percent-decoded. Anything else (constraints, optional, default and catch-all parameters, text
beside a parameter) is refused at indexing, as serving it differently from Azure would misroute.
Where a literal and a parameter could both take a segment, the literal wins, as in ASP.NET.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAMETER = re.compile(r"\{([^{}*?=:()]+)\}")
# Checked in this order, so "{*rest}" is named a catch-all rather than something else.
_UNSUPPORTED = {
    "{*": "catch-all parameters",
    ":": "route constraints",
    "?": "optional parameters",
    "=": "default values",
}


class RouteTemplateError(ValueError):
    """A route template the dev host cannot serve the way the host would."""


def split_path(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[str | None, ...]  # a lower-cased literal, or None for a parameter
    names: tuple[str | None, ...]  # the parameter's name, or None for a literal

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """Route values for the path segments below the route prefix (still URL-encoded), or None."""
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for literal, name, part in zip(self.segments, self.names, parts, strict=True):
            if name is not None and part:
                values[name] = unquote(part)
            elif part.lower() != literal:
                return None
        return values


def parse_route_template(template: str) -> RouteTemplate:
    """Parse a Functions route; raises ``RouteTemplateError`` naming what is not supported."""
    segments: list[str | None] = []
    names: list[str | None] = []
    for segment in split_path(template.strip()):
        parameter = _PARAMETER.fullmatch(segment)
        if parameter:
            segments.append(None)
            names.append(parameter.group(1))
        elif not segment:
            raise RouteTemplateError(f"route {template!r} has an empty segment")
        elif "{" in segment or "}" in segment:
            what = next((v for k, v in _UNSUPPORTED.items() if k in segment), "segments mixing text and parameters")
            raise RouteTemplateError(
                f"route {template!r}: {what} ({segment!r}) are not supported by the dev host, "
                "which serves literal segments and {name} parameters only"
            )
        else:
            segments.append(segment.lower())
            names.append(None)
    lowered = [n.lower() for n in names if n is not None]
    if len(lowered) != len(set(lowered)):
        raise RouteTemplateError(f"route {template!r} repeats a parameter name")
    return RouteTemplate(template, tuple(segments), tuple(names))


@dataclass(frozen=True)
class RouteEntry(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: T


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    target: T
    route_params: dict[str, str]


@dataclass(frozen=True)
class MethodMismatch:
    """The path matched a route, but not for this method."""

    allowed: frozenset[str]


class RouteTable(Generic[T]):
    """All HTTP routes of an app, below the host.json route prefix."""

    def __init__(self, prefix: str, entries: Iterable[RouteEntry[T]]) -> None:
        self.prefix = [s.lower() for s in split_path(prefix)]
        # sorted() is stable: registration order decides only between routes of the same shape.
        self.entries = sorted(entries, key=lambda e: [s is None for s in e.template.segments])
        for index, first in enumerate(self.entries):
            for second in self.entries[index + 1 :]:
                overlap = first.methods is None or second.methods is None or first.methods & second.methods
                if first.template.segments == second.template.segments and overlap:
                    raise RouteTemplateError(
                        f"routes {first.template.template!r} and {second.template.template!r} "
                        "serve the same paths with overlapping methods"
                    )

    def resolve(self, method: str, path: str) -> RouteMatch[T] | MethodMismatch | None:
        """Find the function for a request path (as sent, URL-encoded) and method."""
        parts = split_path(path)
        if [p.lower() for p in parts[: len(self.prefix)]] != self.prefix:
            return None
        allowed: set[str] = set()
        for entry in self.entries:
            params = entry.template.match(parts[len(self.prefix) :])
            if params is None:
                continue
            if entry.methods is None or method.upper() in entry.methods:
                return RouteMatch(entry.target, params)
            allowed |= entry.methods
        return MethodMismatch(frozenset(allowed)) if allowed else None
