"""HTTP triggers through a real socket: routing, the HttpRequest the function sees, responses."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator

import azure.functions as func
import httpx
import pytest

from local.devhost import DevHost


def echo_payload(req: func.HttpRequest) -> dict[str, object]:
    return {
        "method": req.method,
        "url": req.url,
        "headers": dict(req.headers),
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "body_hex": req.get_body().hex(),
        "thread": threading.current_thread().name,
    }


def http_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="echo/{source}/{id}", methods=["POST", "PUT"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(echo_payload(req)), mimetype="application/json")

    @app.route(route="async/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def async_echo(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(0)
        return func.HttpResponse(json.dumps(echo_payload(req)), mimetype="application/json")

    @app.route(route="items/{id}")
    def by_id(req: func.HttpRequest) -> str:
        return "item " + str(req.route_params["id"])

    @app.route(route="items/latest")
    def latest(req: func.HttpRequest) -> str:
        return "latest"

    @app.route(route="boom")
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("kaboom in a sync function")

    @app.route(route="async-boom")
    async def async_boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("kaboom in a coroutine")

    @app.route(route="custom")
    def custom(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            "<p>créé</p>",
            status_code=201,
            headers={"X-Request-Id": "abc", "Set-Cookie": "a=1"},
            mimetype="text/html",
            charset="iso-8859-1",
        )

    @app.route(route="binary")
    def binary(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(bytes(range(256)), mimetype="application/octet-stream")

    @app.route(route="nothing")
    def nothing(req: func.HttpRequest) -> None:
        return None

    @app.route(route="wrong-type")
    def wrong_type(req: func.HttpRequest) -> dict[str, str]:
        return {"not": "allowed"}

    @app.route(route="ctx", binding_arg_name="res")
    def with_context(req: func.HttpRequest, res: func.Out[func.HttpResponse], context: func.Context) -> None:
        res.set(func.HttpResponse(f"{context.function_name} {bool(context.invocation_id)}", status_code=202))

    return app


@pytest.fixture(scope="module")
def host() -> Iterator[DevHost]:
    with DevHost.start(http_app(), port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(host: DevHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url + "/", timeout=10) as http:
        yield http


def test_base_url_has_the_route_prefix_and_a_real_port(host: DevHost) -> None:
    assert host.port > 0
    assert host.base_url == f"http://127.0.0.1:{host.port}/api"


def test_request_fields_reach_a_sync_function_exactly(client: httpx.Client) -> None:
    body = bytes(range(256)) + b"\r\n\x00"
    response = client.post(
        "echo/moodle%20lms/42?a=1&b=two&a=3",
        content=body,
        headers=[("X-Signature", "sig"), ("X-Multi", "1"), ("X-Multi", "2")],
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["url"].endswith("/api/echo/moodle%20lms/42?a=1&b=two&a=3")
    assert seen["route_params"] == {"source": "moodle lms", "id": "42"}
    assert seen["params"] == {"a": "1,3", "b": "two"}
    assert seen["headers"]["x-signature"] == "sig"
    assert seen["headers"]["x-multi"] == "1, 2"
    assert bytes.fromhex(seen["body_hex"]) == body
    assert seen["thread"].startswith("devhost-fn")  # sync functions run in the thread pool


def test_async_function_runs_on_the_event_loop(client: httpx.Client) -> None:
    response = client.get("async/Moodle")
    assert response.status_code == 200
    assert response.json()["route_params"] == {"name": "Moodle"}
    assert response.json()["thread"] == "devhost-loop"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("items/latest", "latest"),  # the literal wins over items/{id}, registered first
        ("ITEMS/Latest/", "latest"),
        ("items/pen%20one", "item pen one"),
    ],
)
def test_route_resolution(client: httpx.Client, path: str, text: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.text) == (200, text)


@pytest.mark.parametrize("path", ["echo/a", "echo/a/1/2", "items", "nowhere", "../echo/x/1"])
def test_unknown_routes_are_404(client: httpx.Client, path: str) -> None:
    assert client.post(path).status_code == 404


def test_outside_the_route_prefix_is_404(host: DevHost) -> None:
    assert httpx.get(f"http://127.0.0.1:{host.port}/latest").status_code == 404


def test_wrong_method_is_404_like_the_host(client: httpx.Client) -> None:
    response = client.get("echo/moodle/1")
    assert response.status_code == 404
    assert "POST,PUT" in response.text


@pytest.mark.parametrize("path", ["boom", "async-boom"])
def test_exception_is_a_500_with_a_logged_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.INFO, logger="local.devhost"):
        response = client.get(path)
    assert response.status_code == 500
    failed = [r for r in caplog.records if "Failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert "kaboom" in str(failed[0].exc_info[1])


def test_http_response_status_headers_and_charset(client: httpx.Client) -> None:
    response = client.get("custom")
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "abc"
    assert response.headers["set-cookie"] == "a=1"
    assert response.headers["content-type"] == "text/html; charset=iso-8859-1"
    assert response.content == "<p>créé</p>".encode("iso-8859-1")


def test_binary_response_is_exact(client: httpx.Client) -> None:
    response = client.get("binary")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == bytes(range(256))


def test_str_return_is_a_text_response(client: httpx.Client) -> None:
    response = client.get("items/latest")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_no_output_is_204_and_an_unsupported_return_type_is_500(client: httpx.Client) -> None:
    assert client.get("nothing").status_code == 204
    assert client.get("wrong-type").status_code == 500


def test_named_http_output_and_context(client: httpx.Client) -> None:
    response = client.get("ctx")
    assert (response.status_code, response.text) == (202, "with_context True")


def test_auth_levels_are_logged_not_enforced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="local.devhost"), DevHost.start(http_app(), port=0) as running:
        assert httpx.get(running.base_url + "/boom").status_code == 500  # no key needed
    notes = [r.getMessage() for r in caplog.records if "not enforced" in r.getMessage()]
    assert len(notes) == 1
    assert "echo=function" in notes[0]
    assert "async_echo" not in notes[0]  # anonymous


def test_route_prefix_from_host_json() -> None:
    with DevHost.start(http_app(), host_json={"extensions": {"http": {"routePrefix": ""}}}, port=0) as running:
        assert running.base_url == f"http://127.0.0.1:{running.port}"
        assert httpx.get(running.base_url + "/items/latest").text == "latest"
        assert httpx.get(running.base_url + "/api/items/latest").status_code == 404
