"""How the Graph client reads Graph's answers: status classes, Retry-After, odd error bodies."""

from __future__ import annotations

import httpx
import pytest

from shared.graph import classify, retry_after_seconds


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (202, "PATCH", "ok"),
        (204, "DELETE", "ok"),
        (404, "DELETE", "absent"),
        (404, "PATCH", "permanent"),
        (400, "PATCH", "permanent"),
        (403, "PATCH", "permanent"),
        (401, "PATCH", "permanent"),  # handled by one fresh token in GraphClient.call, never five tries
        (429, "PATCH", "transient"),
        (500, "DELETE", "transient"),
        (503, "PATCH", "transient"),
    ],
)
def test_classify(status: int, method: str, expected: str) -> None:
    assert classify(status, method) == expected


def test_retry_after_sources() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"}), None) == 7
    assert retry_after_seconds(httpx.Headers({}), "Retry after 2 minutes") == 120
    assert retry_after_seconds(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None) == 0
    assert retry_after_seconds(httpx.Headers({}), "nothing here") is None


def test_odd_error_bodies_are_still_graph_errors() -> None:
    from shared.graph import _graph_error

    oauth = httpx.Response(400, json={"error": "invalid_request", "error_description": "bad"})
    assert _graph_error(oauth) == ("invalid_request", "bad")
    assert _graph_error(httpx.Response(502, text="<html>bad gateway</html>"))[1] == "<html>bad gateway</html>"
    assert len(_graph_error(httpx.Response(400, json={"error": {"code": "X", "message": "m" * 5000}}))[1]) == 1024
    assert retry_after_seconds(httpx.Headers({"Retry-After": "1.5"}), None) == 1.5
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"}), None) is None
