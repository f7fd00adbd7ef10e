"""The queue trigger's decisions, as pure functions: no Storage calls, no clocks, no sleeping.

Each mirrors the Storage queues extension (5.x): how many messages to fetch, how long to wait
before the next poll, how to read a message body, and what to do with a message whose function
failed.
"""

from __future__ import annotations

import base64
import binascii
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

POISON_SUFFIX = "-poison"
MAX_QUEUE_NAME_LENGTH = 63
MIN_POLLING_INTERVAL = 0.1  # seconds; QueuePollingIntervals.Minimum in the extension
_BASE64_WHITESPACE = str.maketrans("", "", " \t\r\n")


class FailureAction(enum.Enum):
    RELEASE = "release"  # make it visible again after visibilityTimeout, for another attempt
    POISON = "poison"  # copy to <queue>-poison, then delete from the queue
    LEAVE_INVISIBLE = "leave-invisible"  # no poison queue: let the lease run out, avoiding a hot loop


def poison_queue_name(queue_name: str) -> str | None:
    """``<queue>-poison``, or None for a poison queue itself or when the name would be too long."""
    if queue_name.endswith(POISON_SUFFIX):
        return None
    name = queue_name + POISON_SUFFIX
    return name if len(name) <= MAX_QUEUE_NAME_LENGTH else None


def on_failure(
    dequeue_count: int, max_dequeue_count: int, *, has_poison_queue: bool, retryable: bool = True
) -> FailureAction:
    """Poison or retry? The dequeue count includes the attempt that just failed.

    A message that can never succeed (``retryable=False``: a body that is not valid base64) is
    poisoned at once, whatever its dequeue count.
    """
    if not has_poison_queue:
        return FailureAction.LEAVE_INVISIBLE
    if not retryable or dequeue_count >= max_dequeue_count:
        return FailureAction.POISON
    return FailureAction.RELEASE


def messages_to_fetch(in_flight: int, batch_size: int, new_batch_threshold: int) -> int:
    """A whole batch once in-flight work is at or below the threshold, else nothing yet.

    So at most ``batch_size + new_batch_threshold`` messages are in flight per function.
    """
    return batch_size if in_flight <= new_batch_threshold else 0


def decode_message_text(text: str, encoding: str) -> bytes | None:
    """The body the function sees, or None when a base64 queue holds a message that is not base64.

    Extension 5.x sends such a message straight to the poison queue: retrying cannot fix it.
    Like .NET's ``Convert.FromBase64String``, whitespace is ignored and padding is required.
    """
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text.translate(_BASE64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        return None


def visibility_seconds(timeout: float) -> int:
    """Storage takes whole seconds; the extension truncates its TimeSpan the same way."""
    return max(0, int(timeout))


@dataclass
class PollingBackoff:
    """How long to wait before the next poll: randomized exponential back-off while idle.

    Mirrors the extension's ``RandomizedExponentialBackoffStrategy``: each empty poll adds
    ``uniform(0.8, 1.2) * minimum * 2**(n-1)`` up to ``maximum``; a poll that finds messages resets
    it, and the next poll then happens straight away.
    """

    maximum: float
    minimum: float = MIN_POLLING_INTERVAL
    uniform: Callable[[float, float], float] = random.uniform
    current: float = 0.0
    exponent: int = 1

    def next_delay(self, *, found_messages: bool) -> float:
        if found_messages:
            self.current, self.exponent = 0.0, 1
            return 0.0
        if self.current >= self.maximum:
            return self.maximum
        step = self.uniform(0.8 * self.minimum, 1.2 * self.minimum) * 2 ** (self.exponent - 1)
        candidate = max(self.current, self.minimum) + step if self.current else self.minimum
        if candidate < self.maximum:
            self.current = candidate
            self.exponent += 1
        else:
            self.current = self.maximum
        return self.current
