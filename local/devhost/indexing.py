"""Function indexing: turn a ``func.FunctionApp`` into the functions the dev host will run.

Everything comes from the app's own decorators, through the same ``get_functions()`` call and
function.json bindings the Python worker reports to the host, so a route, method list or queue
name can never drift from what Azure will see. Bindings the dev host cannot honour stop the start
with an error that names the function and binding, instead of silently dropping the function.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from azure.functions import _abc as func_abc
from azure.functions.decorators.function_app import FunctionRegister

from . import ncrontab
from .invocation import CONTEXT_PARAMETER
from .routes import RouteTemplate, RouteTemplateError, parse_route_template
from .settings import SettingsError, resolve_binding_expression

logger = logging.getLogger(__name__)

SUPPORTED_BINDINGS = "httpTrigger with an http output, queueTrigger and timerTrigger"
RETURN_BINDING = "$return"
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")


class IndexingError(ValueError):
    """The app cannot be run as declared; the message names the function and binding."""


@dataclass(frozen=True)
class HttpFunction:
    kind: ClassVar[str] = "httpTrigger"
    name: str
    user_function: Callable[..., Any]
    trigger_parameter: str
    route: str
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    output_parameter: str  # "$return" or the name of a func.Out[func.HttpResponse] parameter
    uses_context: bool


@dataclass(frozen=True)
class QueueFunction:
    kind: ClassVar[str] = "queueTrigger"
    name: str
    user_function: Callable[..., Any]
    trigger_parameter: str
    queue_name: str
    connection: str
    argument_type: str  # "message" (azure.functions.queue.QueueMessage), "str" or "bytes"
    uses_context: bool


@dataclass(frozen=True)
class TimerFunction:
    kind: ClassVar[str] = "timerTrigger"
    name: str
    user_function: Callable[..., Any]
    trigger_parameter: str
    schedule: ncrontab.Schedule
    run_on_startup: bool
    uses_context: bool


IndexedFunction = HttpFunction | QueueFunction | TimerFunction


def load_app(spec: str) -> FunctionRegister:
    """Import ``module:attribute`` (attribute defaults to ``app``) and return the FunctionApp."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, FunctionRegister):
        raise IndexingError(f"{spec!r} is not a func.FunctionApp (found {type(app).__name__})")
    return app


def validate_queue_name(name: str, *, function: str) -> str:
    """Lower-case and check a queue name as the extension does (3-63 chars, a-z 0-9 and '-')."""
    normalized = name.lower()
    if not 3 <= len(normalized) <= 63 or not _QUEUE_NAME.match(normalized):
        raise IndexingError(
            f"function {function!r}: queue name {name!r} is invalid; use 3-63 characters of "
            "a-z, 0-9 and single hyphens, starting and ending with a letter or digit"
        )
    return normalized


def is_disabled(name: str, settings: Mapping[str, str]) -> bool:
    """``AzureWebJobs.<name>.Disabled`` turns a function off, as on the host."""
    for key in (f"AzureWebJobs.{name}.Disabled", f"AzureWebJobs__{name}__Disabled"):
        if settings.get(key, "").strip().lower() in ("true", "1"):
            return True
    return False


def _resolved(binding: Mapping[str, Any], settings: Mapping[str, str], function: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in binding.items():
        if isinstance(value, str):
            try:
                value = resolve_binding_expression(value, settings)
            except SettingsError as exc:
                raise IndexingError(f"function {function!r}, binding {binding.get('name')!r}: {exc}") from exc
        out[key] = value
    return out


def _unsupported(function: str, binding: Mapping[str, Any]) -> IndexingError:
    return IndexingError(
        f"function {function!r}: binding {binding.get('name')!r} of type {binding.get('type')!r} "
        f"(direction {binding.get('direction')}) is not supported by the dev host; "
        f"supported: {SUPPORTED_BINDINGS}"
    )


def _check_parameters(function: str, user_function: Callable[..., Any], bindings: Sequence[Mapping[str, Any]]) -> None:
    """Parameters and bindings must correspond one to one, as the worker checks at load time."""
    signature = inspect.signature(user_function)
    declared = {
        name
        for name, p in signature.parameters.items()
        if name != CONTEXT_PARAMETER and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    bound = {str(b.get("name")) for b in bindings if b.get("name") != RETURN_BINDING}
    if bound - declared:
        raise IndexingError(f"function {function!r}: bindings {sorted(bound - declared)} have no Python parameter")
    if declared - bound:
        raise IndexingError(
            f"function {function!r}: parameters {sorted(declared - bound)} are declared in Python but not bound"
        )


def _queue_argument_type(function: str, user_function: Callable[..., Any], parameter: str) -> str:
    try:
        hints = typing.get_type_hints(user_function)
    except Exception:  # unresolvable forward references: fall back to no check
        hints = {}
    annotation = hints.get(parameter)
    if annotation is None:
        return "message"
    if annotation is str:
        return "str"
    if annotation is bytes:
        return "bytes"
    if isinstance(annotation, type) and issubclass(annotation, func_abc.QueueMessage):
        return "message"
    raise IndexingError(
        f"function {function!r}: queue trigger parameter {parameter!r} is annotated {annotation!r}; "
        "use func.QueueMessage, str or bytes"
    )


def _http_function(
    name: str, user_function: Callable[..., Any], trigger: Mapping[str, Any], others: Sequence[Mapping[str, Any]]
) -> HttpFunction:
    outputs = [b for b in others if str(b.get("type", "")).lower() == "http" and b.get("direction") == "OUT"]
    rest = [b for b in others if b not in outputs]
    if rest:
        raise _unsupported(name, rest[0])
    if len(outputs) != 1:
        raise IndexingError(f"function {name!r}: an httpTrigger needs exactly one http output binding")
    route = str(trigger.get("route") or name).strip("/")
    if route.lower().startswith("admin"):
        # The host keeps /admin for its own API and puts such a function in error ("The specified route
        # conflicts with one or more built in routes"), whatever the route prefix.
        raise IndexingError(f"function {name!r}: route {route!r} starts with 'admin', which the host reserves")
    try:
        template = parse_route_template(route)
    except RouteTemplateError as exc:
        raise IndexingError(f"function {name!r}, binding {trigger.get('name')!r}: {exc}") from exc
    methods = trigger.get("methods") or None
    return HttpFunction(
        name=name,
        user_function=user_function,
        trigger_parameter=str(trigger["name"]),
        route=route,
        template=template,
        methods=frozenset(str(m).upper() for m in methods) if methods else None,
        auth_level=str(trigger.get("authLevel") or "function").lower(),
        output_parameter=str(outputs[0]["name"]),
        uses_context=CONTEXT_PARAMETER in inspect.signature(user_function).parameters,
    )


def _queue_function(
    name: str, user_function: Callable[..., Any], trigger: Mapping[str, Any], others: Sequence[Mapping[str, Any]]
) -> QueueFunction:
    if others:
        raise _unsupported(name, others[0])
    if "queueName" not in trigger:
        raise IndexingError(f"function {name!r}: queueTrigger binding {trigger.get('name')!r} has no queueName")
    parameter = str(trigger["name"])
    return QueueFunction(
        name=name,
        user_function=user_function,
        trigger_parameter=parameter,
        queue_name=validate_queue_name(str(trigger["queueName"]), function=name),
        connection=str(trigger.get("connection") or ""),
        argument_type=_queue_argument_type(name, user_function, parameter),
        uses_context=CONTEXT_PARAMETER in inspect.signature(user_function).parameters,
    )


def _timer_function(
    name: str, user_function: Callable[..., Any], trigger: Mapping[str, Any], others: Sequence[Mapping[str, Any]]
) -> TimerFunction:
    if others:
        raise _unsupported(name, others[0])
    try:
        schedule = ncrontab.parse(str(trigger.get("schedule") or ""))
    except ncrontab.ScheduleError as exc:
        raise IndexingError(f"function {name!r}, binding {trigger.get('name')!r}: {exc}") from exc
    return TimerFunction(
        name=name,
        user_function=user_function,
        trigger_parameter=str(trigger["name"]),
        schedule=schedule,
        run_on_startup=bool(trigger.get("runOnStartup")),
        uses_context=CONTEXT_PARAMETER in inspect.signature(user_function).parameters,
    )


def index_function(
    name: str,
    user_function: Callable[..., Any],
    bindings: Sequence[Mapping[str, Any]],
    settings: Mapping[str, str],
) -> IndexedFunction:
    """Describe one function from its function.json bindings, with ``%SETTING%`` resolved."""
    resolved = [_resolved(b, settings, name) for b in bindings]
    triggers = [b for b in resolved if str(b.get("type", "")).lower().endswith("trigger")]
    if len(triggers) != 1:
        raise IndexingError(f"function {name!r} must have exactly one trigger, found {len(triggers)}")
    trigger = triggers[0]
    others = [b for b in resolved if b is not trigger]
    _check_parameters(name, user_function, resolved)
    kind = str(trigger.get("type", "")).lower()
    if kind == "httptrigger":
        return _http_function(name, user_function, trigger, others)
    if kind == "queuetrigger":
        return _queue_function(name, user_function, trigger, others)
    if kind == "timertrigger":
        return _timer_function(name, user_function, trigger, others)
    raise _unsupported(name, trigger)


def index_app(app: FunctionRegister, settings: Mapping[str, str]) -> list[IndexedFunction]:
    """Index every function of the app, calling ``get_functions()`` exactly once.

    ``get_functions()`` records names on the app and raises on a second call in the same process,
    so an app indexed before (say, by a contract test) has that record cleared first: a fresh
    worker process would start from an empty one too.
    """
    if getattr(app, "functions_bindings", None):
        logger.debug("app was indexed before in this process; clearing its name registry")
        app.functions_bindings = {}
    indexed: list[IndexedFunction] = []
    for function in app.get_functions():
        name = function.get_function_name() or function.get_user_function().__name__
        if is_disabled(name, settings):
            logger.info("function %s is disabled by AzureWebJobs.%s.Disabled; not loading it", name, name)
            continue
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        indexed.append(index_function(name, function.get_user_function(), bindings, settings))
    return indexed


def describe(function: IndexedFunction, route_prefix: str) -> str:
    """The start-up line for a function, e.g. ``hook: httpTrigger POST /api/webhooks/{source}``."""
    if isinstance(function, HttpFunction):
        methods = ",".join(sorted(function.methods)) if function.methods else "*"
        path = "/".join(part for part in (route_prefix.strip("/"), function.route) if part)
        return f"{function.name}: httpTrigger {methods} /{path}"
    if isinstance(function, TimerFunction):
        return f"{function.name}: timerTrigger schedule={function.schedule.expression!r}"
    return f"{function.name}: queueTrigger queue={function.queue_name}"
