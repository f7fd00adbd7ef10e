"""Queue-trigger listener: polls one Storage queue for one function, as the extension does.

Poll loop: wait until in-flight work is at or below ``newBatchThreshold``, fetch up to
``batchSize`` messages under a 10-minute lease, start one invocation per message, then poll again
at once if anything came back or back off (randomized, exponential, capped by
``maxPollingInterval``) if not. Each invocation settles its message: delete on success; on
failure release it for ``visibilityTimeout`` or, at ``maxDequeueCount``, move it to the poison
queue. The decisions themselves live in :mod:`queue_policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

from .host_config import QueueOptions
from .indexing import QueueFunction
from .invocation import CONTEXT_PARAMETER, call_user_function, make_context, new_invocation_id
from .queue_policy import (
    FailureAction,
    PollingBackoff,
    decode_message_text,
    messages_to_fetch,
    on_failure,
    visibility_seconds,
)

logger = logging.getLogger(__name__)

LEASE_SECONDS = 600  # visibility while a function runs, like the extension's 10-minute lease


def to_function_message(message: StorageQueueMessage, body: bytes) -> FunctionQueueMessage:
    """The metadata-rich message the Python worker passes (not the bare ``func.QueueMessage``)."""
    return FunctionQueueMessage(  # type: ignore[no-untyped-call]
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        insertion_time=message.inserted_on,
        expiration_time=message.expires_on,
        time_next_visible=message.next_visible_on,
        pop_receipt=message.pop_receipt,
    )


class QueueListener:
    """Feeds one queue's messages to one function; start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self,
        function: QueueFunction,
        queue: QueueClient,
        poison_queue: QueueClient | None,
        options: QueueOptions,
        executor: ThreadPoolExecutor,
        *,
        backoff: PollingBackoff | None = None,
    ) -> None:
        self.function = function
        self.options = options
        self._queue = queue
        self._poison = poison_queue
        self._executor = executor
        self._backoff = backoff or PollingBackoff(maximum=options.max_polling_interval)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._receiving = False
        self._stopping = asyncio.Event()
        self._poll_task: asyncio.Task[None] | None = None
        self.peak_in_flight = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def ensure_queues(self) -> None:
        """Create the queue and its poison queue when missing, as the host does at start."""
        for client in (self._queue, self._poison):
            if client is None:
                continue
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()

    def start(self) -> None:
        self._poll_task = asyncio.create_task(self._poll_loop(), name=f"poll:{self.function.name}")

    async def stop(self, drain_timeout: float) -> None:
        """Stop polling, let in-flight invocations finish (up to ``drain_timeout``), then cancel."""
        self._stopping.set()
        pending: set[asyncio.Task[Any]] = set(self._in_flight)
        if self._poll_task is not None:
            pending.add(self._poll_task)
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=drain_timeout)
        for task in still_running:
            logger.warning("function %s: cancelling unfinished work after %.0fs", self.function.name, drain_timeout)
            task.cancel()
        if still_running:
            await asyncio.wait(still_running, timeout=5)

    async def is_idle(self) -> bool:
        """No message left in the queue (visible or not) and none being received or processed."""
        properties = await self._queue.get_queue_properties()
        # Local state is read after the round trip, so a receive that finished meanwhile counts.
        return properties.approximate_message_count == 0 and not self._in_flight and not self._receiving

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            count = messages_to_fetch(self.in_flight, self.options.batch_size, self.options.new_batch_threshold)
            if not count:  # too much in flight: wait for an invocation to settle, then decide again
                await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
                continue
            messages = await self._receive(count)
            for message in messages:  # no await in between: in-flight counts them at once
                task = asyncio.create_task(self._process(message), name=f"invoke:{self.function.name}")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            delay = self._backoff.next_delay(found_messages=bool(messages))
            if delay:
                with contextlib.suppress(TimeoutError):  # woken early by stop()
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _receive(self, count: int) -> list[StorageQueueMessage]:
        self._receiving = True
        try:
            pages = self._queue.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=LEASE_SECONDS
            )
            return [message async for message in pages]
        except Exception as exc:  # keep polling through transient storage errors
            logger.warning("queue %s: receive failed: %s", self.function.queue_name, exc)
            return []
        finally:
            self._receiving = False

    async def _process(self, message: StorageQueueMessage) -> None:
        name, queue = self.function.name, self.function.queue_name
        body = decode_message_text(message.content or "", self.options.message_encoding)
        if body is None:
            logger.error(
                "queue %s: message %s is not valid base64 (messageEncoding=base64); "
                "not running %s, moving it to the poison queue",
                queue,
                message.id,
                name,
            )
            await self._settle_failure(message, retryable=False)
            return
        invocation_id = new_invocation_id()
        arguments: dict[str, Any] = {self.function.trigger_parameter: self._argument(message, body)}
        if self.function.uses_context:
            arguments[CONTEXT_PARAMETER] = make_context(name, invocation_id)
        logger.info(
            "Executing 'Functions.%s' (Reason='New queue message detected on '%s'.', Id=%s) "
            "message_id=%s dequeue_count=%s",
            name,
            queue,
            invocation_id,
            message.id,
            message.dequeue_count,
        )
        started = time.monotonic()
        try:
            await call_user_function(self.function.user_function, arguments, self._executor)
        except Exception:
            logger.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) message_id=%s dequeue_count=%s",
                name,
                invocation_id,
                (time.monotonic() - started) * 1000,
                message.id,
                message.dequeue_count,
            )
            await self._settle_failure(message)
            return
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            name,
            invocation_id,
            (time.monotonic() - started) * 1000,
        )
        try:
            await self._queue.delete_message(message, pop_receipt=message.pop_receipt)
        except Exception as exc:  # it will reappear after its lease: at-least-once
            logger.warning("queue %s: could not delete message %s: %s", queue, message.id, exc)

    def _argument(self, message: StorageQueueMessage, body: bytes) -> Any:
        if self.function.argument_type == "str":
            return body.decode("utf-8")
        if self.function.argument_type == "bytes":
            return body
        return to_function_message(message, body)

    async def _settle_failure(self, message: StorageQueueMessage, *, retryable: bool = True) -> None:
        queue = self.function.queue_name
        action = on_failure(
            message.dequeue_count or 0,
            self.options.max_dequeue_count,
            has_poison_queue=self._poison is not None,
            retryable=retryable,
        )
        try:
            if action is FailureAction.POISON and self._poison is not None:
                logger.warning(
                    "Message %s has reached MaxDequeueCount of %d (dequeue_count=%s). Moving message to queue '%s'.",
                    message.id,
                    self.options.max_dequeue_count,
                    message.dequeue_count,
                    self._poison.queue_name,
                )
                # The text is copied as stored, so the poison copy keeps the original encoding.
                await self._poison.send_message(message.content)
                await self._queue.delete_message(message, pop_receipt=message.pop_receipt)
            elif action is FailureAction.RELEASE:
                await self._queue.update_message(
                    message,
                    pop_receipt=message.pop_receipt,
                    visibility_timeout=visibility_seconds(self.options.visibility_timeout),
                )
            else:
                logger.warning(
                    "queue %s has no poison queue; message %s stays invisible until its lease ends",
                    queue,
                    message.id,
                )
        except Exception as exc:  # the lease will run out and Storage will redeliver it
            logger.warning("queue %s: could not settle message %s (%s): %s", queue, message.id, action.value, exc)
