"""The queue trigger's decisions (pure functions): fetch, back-off, decode, poison or retry."""

from __future__ import annotations

import base64

import pytest

from local.devhost.queue_policy import (
    FailureAction,
    PollingBackoff,
    decode_message_text,
    messages_to_fetch,
    on_failure,
    poison_queue_name,
    visibility_seconds,
)


@pytest.mark.parametrize(
    ("dequeue_count", "action"),
    [(1, FailureAction.RELEASE), (4, FailureAction.RELEASE), (5, FailureAction.POISON), (9, FailureAction.POISON)],
)
def test_poison_once_the_dequeue_count_reaches_the_maximum(dequeue_count: int, action: FailureAction) -> None:
    assert on_failure(dequeue_count, 5, has_poison_queue=True) is action


def test_max_dequeue_count_of_one_poisons_on_first_failure() -> None:
    assert on_failure(1, 1, has_poison_queue=True) is FailureAction.POISON


def test_a_message_that_cannot_succeed_is_poisoned_on_first_sight() -> None:
    assert on_failure(1, 5, has_poison_queue=True, retryable=False) is FailureAction.POISON


def test_without_poison_queue_a_failed_message_is_left_invisible() -> None:
    assert on_failure(5, 5, has_poison_queue=False) is FailureAction.LEAVE_INVISIBLE
    assert on_failure(1, 5, has_poison_queue=False, retryable=False) is FailureAction.LEAVE_INVISIBLE


def test_poison_queue_names() -> None:
    assert poison_queue_name("orders") == "orders-poison"
    assert poison_queue_name("orders-poison") is None
    assert poison_queue_name("q" * 56) == "q" * 56 + "-poison"  # 63 characters
    assert poison_queue_name("q" * 57) is None


@pytest.mark.parametrize(
    ("in_flight", "expected"),
    [(0, 16), (7, 16), (8, 16), (9, 0), (24, 0)],
)
def test_a_new_batch_is_fetched_at_or_below_the_threshold(in_flight: int, expected: int) -> None:
    assert messages_to_fetch(in_flight, batch_size=16, new_batch_threshold=8) == expected


def test_base64_bodies_are_decoded() -> None:
    raw = bytes(range(256))
    assert decode_message_text(base64.b64encode(raw).decode(), "base64") == raw
    assert decode_message_text("aGVs\nbG8=", "base64") == b"hello"  # whitespace is ignored, as in .NET
    assert decode_message_text("", "base64") == b""


@pytest.mark.parametrize("text", ['{"event": "x"}', "hello", "aGVsbG8", "not base64!"])
def test_text_that_is_not_base64_is_rejected(text: str) -> None:
    assert decode_message_text(text, "base64") is None


def test_encoding_none_passes_text_through() -> None:
    assert decode_message_text('{"event": "ü"}', "none") == '{"event": "ü"}'.encode()


def test_visibility_is_whole_seconds() -> None:
    assert [visibility_seconds(v) for v in (0.0, 0.9, 1.5, 30.0)] == [0, 0, 1, 30]


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def test_backoff_grows_exponentially_from_the_minimum_up_to_the_maximum() -> None:
    backoff = PollingBackoff(maximum=2.0, uniform=low)
    delays = [backoff.next_delay(found_messages=False) for _ in range(7)]
    # 0.1, then + 0.08 * 2**n each time, capped at 2 s
    assert delays == pytest.approx([0.1, 0.26, 0.58, 1.22, 2.0, 2.0, 2.0])


def test_backoff_jitter_stays_within_twenty_percent_of_nominal() -> None:
    def middle(a: float, b: float) -> float:
        return (a + b) / 2

    runs = {
        name: PollingBackoff(maximum=60.0, uniform=pick) for name, pick in (("lo", low), ("mid", middle), ("hi", high))
    }
    for _ in range(4):
        delays = {name: backoff.next_delay(found_messages=False) for name, backoff in runs.items()}
    assert delays["mid"] == pytest.approx(0.1 + 0.1 * (2 + 4 + 8))
    assert 0.8 * delays["mid"] <= delays["lo"] < delays["mid"] < delays["hi"] <= 1.2 * delays["mid"]


def test_messages_reset_the_backoff_and_poll_again_at_once() -> None:
    backoff = PollingBackoff(maximum=2.0, uniform=low)
    for _ in range(5):
        backoff.next_delay(found_messages=False)
    assert backoff.next_delay(found_messages=True) == 0.0
    assert backoff.next_delay(found_messages=False) == pytest.approx(0.1)


def test_maximum_equal_to_minimum_polls_at_a_fixed_rate() -> None:
    backoff = PollingBackoff(maximum=0.1, uniform=low)
    assert [backoff.next_delay(found_messages=False) for _ in range(3)] == pytest.approx([0.1, 0.1, 0.1])
