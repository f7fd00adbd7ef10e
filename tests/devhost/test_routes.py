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
    split_path,
)


def match(template: str, path: str) -> dict[str, str] | None:
    return parse_route_template(template).match(split_path(path))


def test_literal_and_parameter_segments() -> None:
    assert match("webhooks/{source}", "webhooks/moodle") == {"source": "moodle"}
    assert match("webhooks/{source}", "webhooks") is None
    assert match("webhooks/{source}", "webhooks/a/b") is None
    assert match("webhooks/{source}", "hooks/moodle") is None


def test_literals_are_case_insensitive_and_parameters_keep_their_case() -> None:
    assert match("WebHooks/{Source}", "webhooks/Moodle") == {"Source": "Moodle"}


def test_parameters_are_url_decoded() -> None:
    assert match("items/{name}", "items/a%20b%2Fc") == {"name": "a b/c"}


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("items/{id:int}", "route constraints"),
        ("items/{id?}", "optional parameters"),
        ("items/{id:int?}", "route constraints"),
        ("items/{page=1}", "default values"),
        ("files/{*path}", "catch-all parameters"),
        ("files/{name}.{ext}", "segments mixing text and parameters"),
        ("items/{id", "segments mixing text and parameters"),
        ("items//x", "empty segment"),
        ("{a}/{A}", "repeats a parameter name"),
    ],
)
def test_unsupported_and_invalid_templates_are_refused(template: str, fragment: str) -> None:
    with pytest.raises(RouteTemplateError, match=fragment):
        parse_route_template(template)


def table(*entries: tuple[str, set[str] | None, str], prefix: str = "api") -> RouteTable[str]:
    return RouteTable(
        prefix,
        [RouteEntry(parse_route_template(t), frozenset(m) if m else None, target) for t, m, target in entries],
    )


def test_route_prefix() -> None:
    routes = table(("hooks/{source}", None, "hook"))
    assert routes.resolve("POST", "/API/hooks/m/") == RouteMatch("hook", {"source": "m"})
    assert routes.resolve("POST", "/hooks/m") is None
    assert routes.resolve("POST", "/apix/hooks/m") is None
    assert table(("hooks/{source}", None, "hook"), prefix="").resolve("GET", "/hooks/m") is not None
    assert table(("x", None, "x"), prefix="v1/api").resolve("GET", "/v1/api/x") == RouteMatch("x", {})


def test_a_literal_beats_a_parameter_whatever_the_registration_order() -> None:
    routes = table(("items/{name}", None, "plain"), ("items/latest", None, "literal"))
    assert routes.resolve("GET", "/api/items/latest") == RouteMatch("literal", {})
    assert routes.resolve("GET", "/api/items/pen") == RouteMatch("plain", {"name": "pen"})


def test_method_filtering_and_404() -> None:
    routes = table(("hooks/{source}", {"POST"}, "post"), ("hooks/{source}/status", None, "any"))
    assert routes.resolve("post", "/api/hooks/m") == RouteMatch("post", {"source": "m"})
    assert routes.resolve("GET", "/api/hooks/m") == MethodMismatch(frozenset({"POST"}))
    assert routes.resolve("DELETE", "/api/hooks/m/status") == RouteMatch("any", {"source": "m"})
    assert routes.resolve("GET", "/api/nothing") is None


def test_same_template_with_disjoint_methods_is_allowed() -> None:
    routes = table(("items/{id}", {"GET"}, "read"), ("items/{key}", {"PUT"}, "write"))
    assert routes.resolve("PUT", "/api/items/1") == RouteMatch("write", {"key": "1"})


def test_conflicting_routes_are_rejected() -> None:
    with pytest.raises(RouteTemplateError, match="overlapping methods"):
        table(("items/{id}", {"GET"}, "a"), ("Items/{other}", {"GET", "POST"}, "b"))
