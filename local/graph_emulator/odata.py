"""OData URL parsing: path segments, key predicates and system query options.

Two decodes, as Graph does them (README "Keys on the wire"): the front door percent-decodes the
path once and then splits it, so a single ``%2F`` splits a key like a literal ``/``
(microsoft-graph-docs issue 10167); the OData layer parses key predicates on that text (a quote
inside a string literal is written twice) and percent-decodes each key value a second time, so
``%252F`` arrives as ``/``. ``+`` is literal in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode

from .errors import bad_request

# A '%' that does not start an escape, in a key value after the front door's decode.
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# System query options the emulator implements, per kind of request.
LIST_OPTIONS = frozenset({"$top", "$skip", "$select"})
ENTITY_OPTIONS = frozenset({"$select"})


@dataclass(frozen=True)
class KeyPredicate:
    """``name`` is None for a positional key such as ``('abc')``."""

    name: str | None
    value: str


@dataclass(frozen=True)
class Segment:
    raw: str
    name: str
    key: KeyPredicate | None = None


def split_target(raw_target: str) -> tuple[list[str], str]:
    """The front door: decode the raw path once, then split it into segments (without the leading
    '/'); also return the raw query. A decoded ``\\`` splits too (IIS and http.sys canonicalise it to
    ``/``; unverified for Graph), and a decoded ``?`` or ``#`` is refused (once decoded it would end
    the path; what Graph does is unverified, so the emulator stays on the safe side)."""
    raw_path, _, query = raw_target.partition("?")
    path = front_door_decode(raw_path)
    for char in "?#":
        if char in path:
            raise bad_request(
                f"The request path holds '{char}' once percent-decoded, which would end the path; "
                f"a key that contains it must be percent-encoded twice ('%25{ord(char):02X}')."
            )
    segments = path.replace("\\", "/").split("/")
    if segments and segments[0] == "":
        segments = segments[1:]
    if len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]  # tolerate one trailing slash
    return segments, query


def front_door_decode(raw: str) -> str:
    try:
        return unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise bad_request(f"The request path '{raw}' is not valid percent-encoded UTF-8.") from exc


def decode_key(value: str) -> str:
    """The OData layer's second decode of a key value (already decoded once by the front door)."""
    if _STRAY_PERCENT.search(value):
        raise bad_request(
            f"The key value '{value}' holds a '%' that is not a percent-escape after the front door decoded "
            "the path once; key values are decoded twice, so a '%' is sent as '%2525'."
        )
    try:
        return unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise bad_request(f"The key value '{value}' is not valid percent-encoded UTF-8.") from exc


def parse_segment(text: str) -> Segment:
    """Parse ``name`` or ``name(<key predicate>)`` from one segment of the front-door-decoded path."""
    if text == "":
        raise bad_request("The request URL contains an empty path segment.")
    open_at = text.find("(")
    if open_at < 0:
        return Segment(text, text)
    name = text[:open_at]
    if not name:
        raise bad_request(f"Invalid path segment '{text}': a key predicate must follow a name.")
    return Segment(text, name, parse_key_predicate(text, open_at))


def parse_key_predicate(text: str, open_at: int) -> KeyPredicate:
    """Parse ``(alias='literal')`` or ``('literal')`` starting at the '(' in ``text``."""
    pos = open_at + 1
    key_name: str | None = None
    ident = _IDENTIFIER_RE.match(text, pos)
    if ident:
        pos = ident.end()
        if pos >= len(text) or text[pos] != "=":
            raise bad_request(
                f"Invalid key predicate in '{text}': string key values must be enclosed in single quotes, "
                f"e.g. (externalId='value')."
            )
        key_name = ident.group(0)
        pos += 1
    if pos >= len(text) or text[pos] != "'":
        what = f"the value of key '{key_name}'" if key_name else "the key value"
        raise bad_request(
            f"Invalid key predicate in '{text}': {what} must be a string literal in single quotes, "
            f"e.g. (externalId='value')."
        )
    value, pos = _read_string_literal(text, pos)
    if pos >= len(text):
        raise bad_request(f"Invalid key predicate in '{text}': missing ')' after the key value.")
    if text[pos] != ")":
        if text[pos] == ",":
            raise bad_request(f"Invalid key predicate in '{text}': composite keys are not supported.")
        raise bad_request(
            f"Invalid key predicate in '{text}': unexpected character at position {pos} after the closing quote. "
            "A single quote inside a key value must be written as two single quotes ('')."
        )
    if pos + 1 != len(text):
        raise bad_request(f"Invalid key predicate in '{text}': unexpected text after ')'.")
    if value == "":
        raise bad_request(f"Invalid key predicate in '{text}': the key value is empty.")
    return KeyPredicate(key_name, decode_key(value))


def _read_string_literal(text: str, quote_at: int) -> tuple[str, int]:
    """Read an OData string literal; return its value and the position after the closing quote."""
    chars: list[str] = []
    pos = quote_at + 1
    while pos < len(text):
        char = text[pos]
        if char == "'":
            if pos + 1 < len(text) and text[pos + 1] == "'":
                chars.append("'")
                pos += 2
                continue
            return "".join(chars), pos + 1
        chars.append(char)
        pos += 1
    raise bad_request(f"Invalid key predicate in '{text}': the string literal is not terminated by a single quote.")


def quote_literal(value: str) -> str:
    """Format a string as an OData key literal (quotes doubled), for @odata.context and Location."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class QueryOptions:
    top: int | None = None
    skip: int = 0
    select: list[str] | None = None
    # The other (non-system) parameters, kept so nextLink preserves them.
    passthrough: tuple[tuple[str, str], ...] = ()


def parse_query(raw_query: str, allowed: frozenset[str]) -> QueryOptions:
    """Parse system query options; reject unknown, duplicate or unsupported ``$`` options."""
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError as exc:
        raise bad_request("The query string is not valid percent-encoded UTF-8.") from exc
    seen: dict[str, str] = {}
    passthrough: list[tuple[str, str]] = []
    for name, value in pairs:
        if not name.startswith("$"):
            passthrough.append((name, value))
            continue
        if name in seen:
            raise bad_request(f"Query option '{name}' was specified more than once; it may appear at most once.")
        if name not in allowed:
            raise bad_request(f"Query option '{name}' is not supported on this request.")
        seen[name] = value
    top = _non_negative_int("$top", seen["$top"]) if "$top" in seen else None
    skip = _non_negative_int("$skip", seen["$skip"]) if "$skip" in seen else 0
    select = _select_list(seen["$select"]) if "$select" in seen else None
    return QueryOptions(top, skip, select, tuple(passthrough))


def _non_negative_int(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise bad_request(f"Invalid value '{value}' for query option '{name}': expected a non-negative integer.")
    return int(value)


def _select_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise bad_request(f"Invalid $select '{value}': expected a comma-separated list of property names.")
    return list(dict.fromkeys(items))


def next_link(base_url: str, raw_path: str, options: QueryOptions, next_skip: int) -> str:
    """Absolute nextLink: same path and options with ``$skip`` advanced."""
    params: list[tuple[str, str]] = list(options.passthrough)
    if options.top is not None:
        params.append(("$top", str(options.top)))
    params.append(("$skip", str(next_skip)))
    if options.select is not None:
        params.append(("$select", ",".join(options.select)))
    return f"{base_url}{raw_path}?{urlencode(params, safe='$,')}"
