"""Route templates and resolution (pure: no server)."""

from __future__ import annotations

import pytest

from local.devhost.routes import (
    MethodMismatch,
    RouteEntry,
    RouteMatch,
    RouteTable,
    RouteTemplateError,
    parse_route_template,
    strip_route_prefix,
)


def match(template: str, path: str) -> dict[str, str] | None:
    return parse_route_template(template).match(path)


def test_literal_and_parameter_segments() -> None:
    assert match("webhooks/{source}", "webhooks/moodle") == {"source": "moodle"}
    assert match("webhooks/{source}", "webhooks") is None
    assert match("webhooks/{source}", "webhooks/a/b") is None
    assert match("webhooks/{source}", "hooks/moodle") is None


def test_literals_are_case_insensitive_and_trailing_slash_is_ignored() -> None:
    assert match("WebHooks/{source}", "webhooks/Moodle/") == {"source": "Moodle"}


def test_parameters_are_url_decoded() -> None:
    assert match("items/{name}", "items/a%20b%2Fc") == {"name": "a b/c"}


def test_optional_parameter() -> None:
    assert match("items/{id?}", "items") == {}
    assert match("items/{id?}", "items/7") == {"id": "7"}
    assert match("items/{id:int?}", "items/x") is None


def test_default_value() -> None:
    assert match("items/{page=1}", "items") == {"page": "1"}
    assert match("items/{page=1}", "items/3") == {"page": "3"}


def test_catch_all() -> None:
    assert match("files/{*path}", "files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert match("files/{*path}", "files") == {}


def test_complex_segment() -> None:
    assert match("files/{name}.{ext}", "files/report.pdf") == {"name": "report", "ext": "pdf"}


@pytest.mark.parametrize(
    ("template", "good", "bad"),
    [
        ("{id:int}", "42", "4x"),
        ("{id:int}", "-3", "99999999999"),
        ("{id:long}", "99999999999", "1.5"),
        ("{id:alpha}", "abcXYZ", "abc1"),
        ("{id:guid}", "0f8fad5b-d9cb-469f-a165-70867728950e", "not-a-guid"),
        ("{id:bool}", "True", "yes"),
        ("{id:double}", "1.5", "one"),
        ("{id:datetime}", "2024-01-31", "31/01/2024"),
        ("{id:min(10)}", "10", "9"),
        ("{id:max(10)}", "10", "11"),
        ("{id:range(1,3)}", "2", "4"),
        ("{id:length(3)}", "abc", "abcd"),
        ("{id:length(2,3)}", "ab", "a"),
        ("{id:minlength(2)}", "ab", "a"),
        ("{id:maxlength(2)}", "ab", "abc"),
        ("{id:regex(^\\d{{3}}$)}", "123", "1234"),
        ("{id:alpha:maxlength(3)}", "abc", "abcd"),
    ],
)
def test_constraints(template: str, good: str, bad: str) -> None:
    assert match(template, good) == {"id": good}
    assert match(template, bad) is None


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("items/{id:wat}", "unknown route constraint 'wat'"),
        ("items/{id:min(x)}", "integer arguments"),
        ("items/{id", "unclosed"),
        ("items/id}", "unmatched"),
        ("items//x", "empty segment"),
        ("{*rest}/x", "catch-all parameter must be the last"),
        ("{a?}/x", "only the trailing segments may be optional"),
        ("{a}/{A}", "repeats a parameter name"),
        ("{a}.{b?}", "whole segment"),
        ("{a=1?}", "cannot be optional and have a default"),
        ("{a?b}", "invalid parameter name"),
    ],
)
def test_invalid_templates(template: str, fragment: str) -> None:
    with pytest.raises(RouteTemplateError, match=fragment):
        parse_route_template(template)


def test_strip_route_prefix() -> None:
    assert strip_route_prefix("/api/webhooks/x", "api") == "webhooks/x"
    assert strip_route_prefix("/API/x", "api") == "x"
    assert strip_route_prefix("/api", "api") == ""
    assert strip_route_prefix("/apix/y", "api") is None
    assert strip_route_prefix("/other/x", "api") is None
    assert strip_route_prefix("/x/y", "") == "x/y"
    assert strip_route_prefix("/v1/api/x", "v1/api") == "x"


def table(*entries: tuple[str, set[str] | None, str], prefix: str = "api") -> RouteTable[str]:
    return RouteTable(
        prefix,
        [RouteEntry(parse_route_template(t), frozenset(m) if m else None, target) for t, m, target in entries],
    )


def test_resolution_prefers_the_most_specific_route() -> None:
    routes = table(
        ("items/{*rest}", None, "catch-all"),
        ("items/{name}", None, "plain"),
        ("items/{id:int}", None, "constrained"),
        ("items/latest", None, "literal"),
    )
    assert routes.resolve("GET", "/api/items/latest") == RouteMatch("literal", {})
    assert routes.resolve("GET", "/api/items/5") == RouteMatch("constrained", {"id": "5"})
    assert routes.resolve("GET", "/api/items/pen") == RouteMatch("plain", {"name": "pen"})
    assert routes.resolve("GET", "/api/items/a/b") == RouteMatch("catch-all", {"rest": "a/b"})


def test_method_filtering_and_404() -> None:
    routes = table(("hooks/{source}", {"POST"}, "post"), ("hooks/{source}/status", None, "any"))
    assert routes.resolve("post", "/api/hooks/m") == RouteMatch("post", {"source": "m"})
    assert routes.resolve("GET", "/api/hooks/m") == MethodMismatch(frozenset({"POST"}))
    assert routes.resolve("DELETE", "/api/hooks/m/status") == RouteMatch("any", {"source": "m"})
    assert routes.resolve("GET", "/api/nothing") is None
    assert routes.resolve("POST", "/hooks/m") is None  # outside the route prefix


def test_same_template_with_disjoint_methods_is_allowed() -> None:
    routes = table(("items/{id}", {"GET"}, "read"), ("items/{key}", {"PUT"}, "write"))
    assert routes.resolve("PUT", "/api/items/1") == RouteMatch("write", {"key": "1"})


def test_conflicting_routes_are_rejected() -> None:
    with pytest.raises(RouteTemplateError, match="overlapping methods"):
        table(("items/{id}", {"GET"}, "a"), ("Items/{other}", {"GET", "POST"}, "b"))
