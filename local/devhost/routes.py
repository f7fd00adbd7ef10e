"""HTTP route templates and route resolution, free of any I/O.

Follows the ASP.NET Core template syntax the Functions host uses: ``{name}``, optional
``{name?}``, defaults ``{name=value}``, catch-all ``{*rest}``, inline constraints such as
``{id:int}``, ``{id:guid}``, ``{slug:alpha:maxlength(20)}``, and case-insensitive literals. When
several templates match, the most specific wins (literal > constrained > plain > catch-all per
segment), as in ASP.NET routing.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")
Check = Callable[[str], bool]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_FORBIDDEN_NAME_CHARS = set("/{}?*=:()")


class RouteTemplateError(ValueError):
    """A route template (or a set of them) that the host would refuse."""


def _integer_in(bounds: tuple[int, int]) -> Check:
    def check(value: str) -> bool:
        return re.fullmatch(r"[+-]?\d+", value) is not None and bounds[0] <= int(value) <= bounds[1]

    return check


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip() == value and value.lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _int_args(name: str, args: Sequence[str], count: int | tuple[int, int]) -> list[int]:
    allowed = (count, count) if isinstance(count, int) else count
    if not allowed[0] <= len(args) <= allowed[1]:
        raise RouteTemplateError(f"route constraint {name!r} takes {count} argument(s), got {len(args)}")
    try:
        return [int(a) for a in args]
    except ValueError as exc:
        raise RouteTemplateError(f"route constraint {name!r} needs integer arguments, got {list(args)}") from exc


def _no_args(name: str, args: Sequence[str], check: Check) -> Check:
    if args:
        raise RouteTemplateError(f"route constraint {name!r} takes no arguments")
    return check


def build_constraint(name: str, args: Sequence[str]) -> Check:
    """Return the check for one inline constraint (``int``, ``min(1)``, ``regex(^a$)``, ...)."""
    key = name.lower()
    simple: dict[str, Check] = {
        "int": _integer_in(_INT32),
        "long": _integer_in(_INT64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "guid": _is_guid,
        "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
        "decimal": _is_number,
        "double": _is_number,
        "float": _is_number,
        "datetime": _is_datetime,
    }
    if key in simple:
        return _no_args(name, args, simple[key])
    if key in ("min", "max"):
        (bound,) = _int_args(name, args, 1)
        whole = _integer_in(_INT64)
        if key == "min":
            return lambda v: whole(v) and int(v) >= bound
        return lambda v: whole(v) and int(v) <= bound
    if key == "range":
        low, high = _int_args(name, args, 2)
        return lambda v: _integer_in((low, high))(v)
    if key == "length":
        bounds = _int_args(name, args, (1, 2))
        low, high = (bounds[0], bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
        return lambda v: low <= len(v) <= high
    if key in ("minlength", "maxlength"):
        (limit,) = _int_args(name, args, 1)
        if key == "minlength":
            return lambda v: len(v) >= limit
        return lambda v: len(v) <= limit
    if key == "regex":
        if len(args) != 1:
            raise RouteTemplateError("route constraint 'regex' takes one argument")
        try:
            compiled = re.compile(args[0], re.IGNORECASE)
        except re.error as exc:
            raise RouteTemplateError(f"route constraint regex({args[0]}) is not a valid regex: {exc}") from exc
        return lambda v: compiled.search(v) is not None
    raise RouteTemplateError(f"unknown route constraint {name!r}")


@dataclass(frozen=True)
class RouteParameter:
    name: str
    group: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    constraints: tuple[tuple[str, Check], ...] = ()

    def accepts(self, value: str) -> bool:
        return all(check(value) for _, check in self.constraints)


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled template; ``match`` takes the path below the route prefix, still URL-encoded."""

    template: str
    pattern: re.Pattern[str]
    parameters: tuple[RouteParameter, ...]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        trimmed = path.strip("/")
        found = self.pattern.fullmatch("/" + trimmed if trimmed else "")
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self.parameters:
            raw = found.group(param.group)
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            value = unquote(raw)
            if not param.accepts(value):
                return None
            values[param.name] = value
        return values


def _split_outside(text: str, sep: str, *, track_braces: bool) -> list[str]:
    """Split on ``sep`` where it is not inside parentheses (or braces, when asked)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "({" and (char == "(" or track_braces):
            depth += 1
        elif char in ")}" and (char == ")" or track_braces):
            depth -= 1
        if char == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _find_parameter_end(segment: str, start: int, template: str) -> int:
    depth = 0
    for index in range(start + 1, len(segment)):
        char = segment[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "}" and depth == 0:
            return index
    raise RouteTemplateError(f"route {template!r}: unclosed '{{' in segment {segment!r}")


def _parse_parameter(spec: str, group: str, template: str) -> RouteParameter:
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    optional = spec.endswith("?")
    spec = spec.removesuffix("?")
    default: str | None = None
    head = _split_outside(spec, "=", track_braces=False)
    if len(head) > 1:
        spec, default = head[0], "=".join(head[1:])
    name, *constraint_specs = _split_outside(spec, ":", track_braces=False)
    if not name or _FORBIDDEN_NAME_CHARS & set(name):
        raise RouteTemplateError(f"route {template!r}: invalid parameter name {name!r}")
    if optional and default is not None:
        raise RouteTemplateError(f"route {template!r}: {name!r} cannot be optional and have a default")
    constraints = []
    for constraint in constraint_specs:
        found = re.fullmatch(r"(\w+)(?:\((.*)\))?", constraint, re.DOTALL)
        if not found:
            raise RouteTemplateError(f"route {template!r}: malformed constraint {constraint!r}")
        cname, raw_args = found.group(1), found.group(2)
        if raw_args is None:
            args: list[str] = []
        elif cname.lower() == "regex":
            args = [raw_args.replace("{{", "{").replace("}}", "}")]
        else:
            args = [a.strip() for a in raw_args.split(",")]
        try:
            constraints.append((constraint, build_constraint(cname, args)))
        except RouteTemplateError as exc:
            raise RouteTemplateError(f"route {template!r}: {exc}") from exc
    return RouteParameter(name, group, optional, catch_all, default, tuple(constraints))


def _parse_segment(segment: str, template: str, first_group: int) -> list[str | RouteParameter]:
    parts: list[str | RouteParameter] = []
    literal: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if segment.startswith("{{", index) or segment.startswith("}}", index):
            literal.append(char)
            index += 2
        elif char == "{":
            end = _find_parameter_end(segment, index, template)
            if literal:
                parts.append("".join(literal))
                literal = []
            group = f"p{first_group + sum(isinstance(p, RouteParameter) for p in parts)}"
            parts.append(_parse_parameter(segment[index + 1 : end], group, template))
            index = end + 1
        elif char == "}":
            raise RouteTemplateError(f"route {template!r}: unmatched '}}' in segment {segment!r}")
        else:
            literal.append(char)
            index += 1
    if literal:
        parts.append("".join(literal))
    return parts


def parse_route_template(template: str) -> RouteTemplate:
    """Compile a Functions route template; raises ``RouteTemplateError`` when the host would."""
    text = template.strip().strip("/")
    segments = _split_outside(text, "/", track_braces=True) if text else []
    regex: list[str] = []
    params: list[RouteParameter] = []
    precedence: list[int] = []
    optional_seen = False
    for position, segment in enumerate(segments):
        if not segment:
            raise RouteTemplateError(f"route {template!r} has an empty segment")
        parts = _parse_segment(segment, template, len(params))
        seg_params = [p for p in parts if isinstance(p, RouteParameter)]
        if len(parts) == 1 and seg_params:
            param = seg_params[0]
            if param.catch_all and position != len(segments) - 1:
                raise RouteTemplateError(f"route {template!r}: a catch-all parameter must be the last segment")
            if param.catch_all:
                regex.append(f"(?:/(?P<{param.group}>.*))?")
                precedence.append(5)
            elif param.optional or param.default is not None:
                regex.append(f"(?:/(?P<{param.group}>[^/]+))?")
                precedence.append(3 if param.constraints else 4)
            else:
                regex.append(f"/(?P<{param.group}>[^/]+)")
                precedence.append(3 if param.constraints else 4)
            optional_is_here = param.catch_all or param.optional or param.default is not None
        else:
            if any(p.optional or p.catch_all for p in seg_params):
                raise RouteTemplateError(
                    f"route {template!r}: optional and catch-all parameters must fill a whole segment"
                )
            pieces = [f"(?P<{p.group}>[^/]+?)" if isinstance(p, RouteParameter) else re.escape(p) for p in parts]
            regex.append("/" + "".join(pieces))
            precedence.append(2 if seg_params else 1)
            optional_is_here = False
        if optional_seen and not optional_is_here:
            raise RouteTemplateError(f"route {template!r}: only the trailing segments may be optional")
        optional_seen = optional_seen or optional_is_here
        params.extend(seg_params)
    names = [p.name.lower() for p in params]
    if len(names) != len(set(names)):
        raise RouteTemplateError(f"route {template!r} repeats a parameter name")
    pattern = re.compile("".join(regex), re.IGNORECASE | re.DOTALL)
    return RouteTemplate(template, pattern, tuple(params), tuple(precedence))


def strip_route_prefix(path: str, prefix: str) -> str | None:
    """Return the part of a URL path below the route prefix, or None when it is outside it."""
    prefix = prefix.strip("/")
    if not prefix:
        return path.lstrip("/")
    head = "/" + prefix
    lowered = path.lower()
    if lowered == head.lower() or lowered == head.lower() + "/":
        return ""
    if lowered.startswith(head.lower() + "/"):
        return path[len(head) + 1 :]
    return None


@dataclass(frozen=True)
class RouteEntry(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: T

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    target: T
    route_params: dict[str, str]


@dataclass(frozen=True)
class MethodMismatch:
    """The path matched a route, but not for this method (the host answers 404 here)."""

    allowed: frozenset[str]


def _template_key(template: RouteTemplate) -> tuple[object, ...]:
    """Identify templates that match exactly the same paths (names of parameters aside)."""
    shape = template.pattern.pattern.lower()
    checks = tuple((tuple(spec.lower() for spec, _ in p.constraints), p.default) for p in template.parameters)
    return shape, checks


class RouteTable(Generic[T]):
    """All HTTP routes of an app, ordered by ASP.NET precedence."""

    def __init__(self, prefix: str, entries: Iterable[RouteEntry[T]]) -> None:
        self.prefix = prefix.strip("/")
        ordered = list(entries)
        self._check_conflicts(ordered)
        # sorted() is stable, so equal precedence keeps registration order.
        self.entries = sorted(ordered, key=lambda e: e.template.precedence)

    @staticmethod
    def _check_conflicts(entries: Sequence[RouteEntry[T]]) -> None:
        for index, first in enumerate(entries):
            for second in entries[index + 1 :]:
                if _template_key(first.template) != _template_key(second.template):
                    continue
                if first.methods is None or second.methods is None or first.methods & second.methods:
                    raise RouteTemplateError(
                        f"routes {first.template.template!r} and {second.template.template!r} "
                        "serve the same paths with overlapping methods"
                    )

    def resolve(self, method: str, path: str) -> RouteMatch[T] | MethodMismatch | None:
        """Find the function for a request path (as sent, URL-encoded) and method."""
        below = strip_route_prefix(path, self.prefix)
        if below is None:
            return None
        allowed: set[str] = set()
        for entry in self.entries:
            params = entry.template.match(below)
            if params is None:
                continue
            if entry.allows(method):
                return RouteMatch(entry.target, params)
            allowed |= entry.methods or set()
        return MethodMismatch(frozenset(allowed)) if allowed else None
