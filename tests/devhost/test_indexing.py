"""Indexing reads everything from the app's own decorators, through a single get_functions() call."""

from __future__ import annotations

import re
from typing import Any

import azure.functions as func
import pytest

from local.devhost.indexing import (
    HttpFunction,
    IndexingError,
    QueueFunction,
    describe,
    index_app,
    index_function,
    load_app,
)


def sample_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    bp = func.Blueprint()  # type: ignore[no-untyped-call]

    @bp.route(route="webhooks/{source}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
    def receive(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.function_name("health")
    @app.route(route="%ROUTE_ROOT%/health")
    async def health_check(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.route()
    def bare(req: func.HttpRequest) -> str:
        return "ok"

    @app.queue_trigger(arg_name="msg", queue_name="%CONTENT_QUEUE_NAME%", connection="LearningSyncStorage")
    async def apply(msg: func.QueueMessage) -> None:
        return None

    @app.queue_trigger(arg_name="text", queue_name="Plain-Queue", connection="")
    def plain(text: str) -> None:
        return None

    app.register_functions(bp)
    return app


SETTINGS = {"CONTENT_QUEUE_NAME": "content-commands", "ROUTE_ROOT": "ops"}


def by_name(functions: list[Any]) -> dict[str, Any]:
    return {f.name: f for f in functions}


def test_routes_methods_queues_and_connections_come_from_the_decorators() -> None:
    functions = by_name(index_app(sample_app(), SETTINGS))
    assert set(functions) == {"receive", "health", "bare", "apply", "plain"}

    receive = functions["receive"]
    assert isinstance(receive, HttpFunction)
    assert receive.route == "webhooks/{source}"
    assert (receive.methods, receive.auth_level) == (frozenset({"POST"}), "anonymous")
    assert (receive.trigger_parameter, receive.output_parameter, receive.uses_context) == ("req", "$return", False)

    health = functions["health"]
    assert isinstance(health, HttpFunction)
    assert (health.route, health.methods, health.auth_level) == ("ops/health", None, "function")
    assert health.uses_context

    assert functions["bare"].route == "bare"  # no route: the function name, as on the host

    apply = functions["apply"]
    assert isinstance(apply, QueueFunction)
    assert (apply.queue_name, apply.connection, apply.argument_type) == (
        "content-commands",
        "LearningSyncStorage",
        "message",
    )
    plain = functions["plain"]
    assert (plain.queue_name, plain.connection, plain.argument_type) == ("plain-queue", "", "str")


def test_describe_lines() -> None:
    functions = by_name(index_app(sample_app(), SETTINGS))
    assert describe(functions["receive"], "api") == "receive: httpTrigger POST /api/webhooks/{source}"
    assert describe(functions["health"], "") == "health: httpTrigger * /ops/health"
    assert describe(functions["apply"], "api") == "apply: queueTrigger queue=content-commands"


def test_an_app_indexed_before_can_be_indexed_again() -> None:
    app = sample_app()
    app.get_functions()  # e.g. a contract test in the same process
    assert len(index_app(app, SETTINGS)) == 5


def test_missing_setting_in_a_binding_expression_names_function_and_setting() -> None:
    with pytest.raises(IndexingError, match=r"function 'apply'.*'CONTENT_QUEUE_NAME'"):
        index_app(sample_app(), {"ROUTE_ROOT": "ops"})


def test_disabled_functions_are_not_loaded() -> None:
    functions = index_app(sample_app(), {**SETTINGS, "AzureWebJobs.plain.Disabled": "true"})
    assert "plain" not in by_name(functions)


def test_unsupported_trigger_fails_with_function_and_binding_named() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="uploads/{name}", connection="LearningSyncStorage")
    def uploaded(blob: func.InputStream) -> None:
        return None

    with pytest.raises(IndexingError, match=r"function 'uploaded': binding 'blob' of type 'blobTrigger'.*supported"):
        index_app(app, {})


def test_unsupported_output_binding_fails_instead_of_being_skipped() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in-queue", connection="")
    @app.queue_output(arg_name="out", queue_name="out-queue", connection="")
    def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
        return None

    with pytest.raises(IndexingError, match=r"function 'relay': binding 'out' of type 'queue'"):
        index_app(app, {})


def test_unsupported_input_binding_on_http_function() -> None:
    app = func.FunctionApp()

    @app.route(route="blob")
    @app.blob_input(arg_name="doc", path="c/b.txt", connection="")
    def read(req: func.HttpRequest, doc: func.InputStream) -> str:
        return "x"

    with pytest.raises(IndexingError, match=r"function 'read': binding 'doc' of type 'blob'"):
        index_app(app, {})


def test_invalid_queue_name_is_rejected() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="")
    def work(msg: func.QueueMessage) -> None:
        return None

    with pytest.raises(IndexingError, match=r"function 'work': queue name 'bad_name'"):
        index_app(app, {"Q": "bad_name"})


@pytest.mark.parametrize(("route", "unsupported"), [("items/{id:int}", "route constraints"), ("{*path}", "catch-all")])
def test_unsupported_route_is_refused_at_indexing(route: str, unsupported: str) -> None:
    app = func.FunctionApp()

    @app.route(route=route)
    def item(req: func.HttpRequest) -> str:
        return "x"

    with pytest.raises(
        IndexingError, match=rf"function 'item'.*{re.escape(unsupported)}.*not supported by the dev host"
    ):
        index_app(app, {})


def test_unsupported_queue_parameter_annotation() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="work-queue", connection="")
    def work(msg: dict[str, Any]) -> None:
        return None

    with pytest.raises(IndexingError, match="annotated"):
        index_app(app, {})


def test_parameters_must_match_bindings() -> None:
    def handler(req: func.HttpRequest, extra: str) -> str:
        return "x"

    bindings: list[dict[str, Any]] = [
        {"type": "httpTrigger", "direction": "IN", "name": "req", "route": "x"},
        {"type": "http", "direction": "OUT", "name": "$return"},
    ]
    with pytest.raises(IndexingError, match=r"parameters \['extra'\] are declared in Python but not bound"):
        index_function("f", handler, bindings, {})

    def no_trigger_param() -> str:
        return "x"

    with pytest.raises(IndexingError, match=r"bindings \['req'\] have no Python parameter"):
        index_function("f", no_trigger_param, bindings, {})


def test_named_http_output_is_supported() -> None:
    def handler(req: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
        return None

    bindings: list[dict[str, Any]] = [
        {"type": "httpTrigger", "direction": "IN", "name": "req", "route": "x", "methods": ["get", "post"]},
        {"type": "http", "direction": "OUT", "name": "res"},
    ]
    found = index_function("f", handler, bindings, {})
    assert isinstance(found, HttpFunction)
    assert (found.output_parameter, found.methods) == ("res", frozenset({"GET", "POST"}))


def test_load_app_rejects_non_apps() -> None:
    with pytest.raises(IndexingError, match=r"not a func\.FunctionApp"):
        load_app("json:dumps")
    assert isinstance(load_app("tests.devhost.test_indexing:MODULE_APP"), func.FunctionApp)


MODULE_APP = func.FunctionApp()
