"""Auth levels: not enforced by default (as with Core Tools), enforced as Azure does when the dev host
is given keys; and routes the host reserves (``admin…``) are refused at indexing."""

from __future__ import annotations

from collections.abc import Iterator

import azure.functions as func
import httpx
import pytest

from local.devhost import DevHost, HostKeys, IndexingError, index_app

KEYS = HostKeys(master="master-key", host=("host-key",), functions={"hook": ("hook-key",)})


def keyed_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def open_(req: func.HttpRequest) -> str:
        return "open"

    @app.route(route="hook", methods=["POST"])
    def hook(req: func.HttpRequest) -> str:
        return "hook"

    @app.route(route="details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    def details(req: func.HttpRequest) -> str:
        return "details"

    @app.route(route="ops/run", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
    def run(req: func.HttpRequest) -> str:
        return "run"

    return app


@pytest.mark.parametrize(
    ("function", "level", "key", "allowed"),
    [
        ("open_", "anonymous", None, True),
        ("details", "function", None, False),
        ("details", "function", "", False),
        ("details", "function", "wrong", False),
        ("details", "function", "host-key", True),
        ("details", "function", "master-key", True),
        ("details", "function", "hook-key", False),  # another function's own key
        ("hook", "function", "hook-key", True),
        ("run", "admin", "host-key", False),
        ("run", "admin", "hook-key", False),
        ("run", "admin", "master-key", True),
    ],
)
def test_the_hosts_key_rule(function: str, level: str, key: str | None, allowed: bool) -> None:
    assert KEYS.allows(function, level, key) is allowed


def test_empty_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        HostKeys(master="")
    with pytest.raises(ValueError, match="empty"):
        HostKeys(master="m", host=("",))


@pytest.fixture(scope="module")
def enforced() -> Iterator[httpx.Client]:
    with (
        DevHost.start(keyed_app(), port=0, keys=KEYS) as host,
        httpx.Client(base_url=host.base_url + "/", timeout=10) as http,
    ):
        yield http


def test_keys_come_in_the_header_or_the_code_parameter(enforced: httpx.Client) -> None:
    assert enforced.get("open").text == "open"
    assert enforced.get("details").status_code == 401
    assert enforced.get("details", headers={"x-functions-key": "wrong"}).status_code == 401
    assert enforced.get("details", headers={"x-functions-key": "host-key"}).text == "details"
    assert enforced.get("details", params={"code": "host-key"}).text == "details"
    assert enforced.post("hook", params={"code": "hook-key"}).text == "hook"


def test_admin_needs_the_master_key(enforced: httpx.Client) -> None:
    assert enforced.post("ops/run", headers={"x-functions-key": "host-key"}).status_code == 401
    assert enforced.post("ops/run", headers={"x-functions-key": "master-key"}).text == "run"


def test_without_keys_nothing_is_enforced() -> None:
    with DevHost.start(keyed_app(), port=0) as host:
        assert httpx.post(host.base_url + "/ops/run", timeout=10).text == "run"


@pytest.mark.parametrize("route", ["admin/replay", "Admin", "administration/x"])
def test_a_route_the_host_reserves_is_refused(route: str) -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ADMIN)

    @app.route(route=route, methods=["POST"])
    def reserved(req: func.HttpRequest) -> str:
        return "never served"

    with pytest.raises(IndexingError, match="reserves"):
        index_app(app, {})
