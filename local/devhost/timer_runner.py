"""Run a timer-triggered function on its NCRONTAB schedule, as the host does on one instance.

Times are UTC (the host's default without ``WEBSITE_TIME_ZONE``). An invocation that is still
running when the next occurrence comes is not overlapped: the host runs a timer function as a
singleton, so the occurrence is skipped and the next call is marked ``past_due``. A failing
invocation is logged and the schedule goes on, as on the host (a timer has no retry queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from azure.functions.timer import TimerRequest

from .indexing import TimerFunction
from .invocation import CONTEXT_PARAMETER, call_user_function, make_context, new_invocation_id

logger = logging.getLogger(__name__)


class TimerRunner:
    def __init__(
        self,
        function: TimerFunction,
        executor: ThreadPoolExecutor,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.function = function
        self._executor = executor
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.invocations = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        """An invocation is in progress."""
        return not self._idle.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"timer-{self.function.name}")

    async def stop(self, drain_timeout: float) -> None:
        """Stop scheduling; an invocation in progress gets ``drain_timeout`` to finish."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        past_due = False
        if self.function.run_on_startup:
            await self._invoke(past_due=False)
        while True:
            now = self._clock()
            due = self.function.schedule.next_after(now)
            if due is None:  # pragma: no cover - parse() refuses schedules that never fire
                return
            await self._sleep(max(0.0, (due - now).total_seconds()))
            await self._invoke(past_due=past_due)
            # The invocation ran past the next occurrence: the host skips it and says so in the next call.
            following = self.function.schedule.next_after(due)
            past_due = following is not None and self._clock() > following

    async def _invoke(self, *, past_due: bool) -> None:
        invocation_id = new_invocation_id()
        arguments: dict[str, object] = {self.function.trigger_parameter: TimerRequest(past_due=past_due)}
        if self.function.uses_context:
            arguments[CONTEXT_PARAMETER] = make_context(self.function.name, invocation_id)
        self._idle.clear()
        try:
            logger.info("timer %s fired invocation=%s past_due=%s", self.function.name, invocation_id, past_due)
            await call_user_function(self.function.user_function, arguments, self._executor)
        except Exception:
            logger.exception("timer %s invocation=%s failed; the schedule goes on", self.function.name, invocation_id)
        finally:
            self.invocations += 1
            self._idle.set()
