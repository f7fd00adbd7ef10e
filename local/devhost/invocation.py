"""Calling a user function the way the Python worker does.

Coroutine functions run on the host's event loop; plain functions run in a thread pool so a slow
or blocking function does not stall HTTP serving or queue polling. A parameter named ``context``
receives a ``func.Context``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as func_abc

T = TypeVar("T")
CONTEXT_PARAMETER = "context"


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RpcException(func_abc.RpcException):
    @property
    def source(self) -> str:
        return ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return ""


class _RetryContext(func_abc.RetryContext):
    """No function-level retry policy applies to HTTP and queue triggers."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> func_abc.RpcException:
        return _RpcException()


class InvocationContext(func.Context):
    """What a function's ``context`` parameter receives."""

    def __init__(self, function_name: str, invocation_id: str, function_directory: str) -> None:
        self._function_name = function_name
        self._invocation_id = invocation_id
        self._function_directory = function_directory
        self._trace = _TraceContext()
        # The worker hands out a threading.local instance carrying the invocation id.
        self._local = threading.local()
        self._local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._local  # type: ignore[return-value]  # the ABC's annotation says type, the worker passes an instance

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return _RetryContext()


class OutValue(func.Out[T], Generic[T]):
    """A ``func.Out`` for output bindings passed as parameters."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


def new_invocation_id() -> str:
    return str(uuid.uuid4())


def make_context(function_name: str, invocation_id: str) -> InvocationContext:
    return InvocationContext(function_name, invocation_id, os.getcwd())


def wants_context(user_function: Callable[..., Any]) -> bool:
    return CONTEXT_PARAMETER in inspect.signature(user_function).parameters


async def call_user_function(
    user_function: Callable[..., Any], arguments: Mapping[str, Any], executor: ThreadPoolExecutor
) -> Any:
    """Run the function with keyword arguments; await coroutines, thread-pool everything else."""
    if inspect.iscoroutinefunction(user_function):
        return await user_function(**arguments)
    loop = asyncio.get_running_loop()
    # Copy contextvars so logging/tracing context flows into the worker thread, as in the worker.
    call = functools.partial(contextvars.copy_context().run, user_function, **arguments)
    result = await loop.run_in_executor(executor, call)
    if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
        return await result
    return result
