"""Timer triggers: NCRONTAB schedules as the host reads them, and the runner that fires them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.devhost import ncrontab
from local.devhost.indexing import IndexingError, TimerFunction, describe, index_app
from local.devhost.timer_runner import TimerRunner


def brute_next(schedule: ncrontab.Schedule, after: datetime, limit: timedelta) -> datetime | None:
    at = after.replace(microsecond=0) + timedelta(seconds=1)
    end = at + limit
    while at < end:
        if schedule.matches(at):
            return at
        at += timedelta(seconds=1)
    return None


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", datetime(2026, 12, 2, 10, 3, 7), datetime(2026, 12, 2, 10, 5)),
        ("0 30 9 * * *", datetime(2026, 12, 2, 10, 0), datetime(2026, 12, 3, 9, 30)),
        ("0 30 9 * * 1-5", datetime(2026, 12, 4, 10, 0), datetime(2026, 12, 7, 9, 30)),  # Fri -> Mon
        ("0 30 9 * * Mon", datetime(2026, 12, 2, 10, 0), datetime(2026, 12, 7, 9, 30)),
        ("0 0 0 29 Feb *", datetime(2026, 3, 1), datetime(2028, 2, 29)),
        ("5,10 0 12 1 jan,July *", datetime(2026, 1, 1, 12, 0, 5), datetime(2026, 1, 1, 12, 0, 10)),
        ("0 0 */6 * * *", datetime(2026, 12, 31, 23, 0), datetime(2027, 1, 1, 0, 0)),
    ],
)
def test_next_occurrence(expression: str, after: datetime, expected: datetime) -> None:
    assert ncrontab.parse(expression).next_after(after) == expected


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("0 */5 * * *", "six"),
        ("00:05:00", "TimeSpan"),
        ("60 * * * * *", "outside 0-59"),
        ("0 0 0 31 Feb *", "never fires"),
        ("0 0 0 13 * Fri", "both the day of the month and the day of the week"),
        ("0 */0 * * * *", "step"),
        ("0 5-1 * * * *", "backwards"),
        ("0 0 0 * Ju *", "name"),  # June or July: too short to say
    ],
)
def test_refused_schedules_say_why(expression: str, says: str) -> None:
    with pytest.raises(ncrontab.ScheduleError, match=says):
        ncrontab.parse(expression)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    single = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda p: f"{min(p)}-{max(p)}")
    step = st.tuples(st.sampled_from(["*", f"{low}"]), st.integers(1, high - low + 1)).map(lambda p: f"{p[0]}/{p[1]}")
    part = st.one_of(single, span, step)
    return st.one_of(st.just("*"), st.lists(part, min_size=1, max_size=3).map(",".join))


@settings(max_examples=150, deadline=None)
@given(
    seconds=_field(0, 59),
    minutes=_field(0, 59),
    hours=_field(0, 23),
    after=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_next_occurrence_is_the_first_matching_second(seconds: str, minutes: str, hours: str, after: datetime) -> None:
    """Against a search second by second (within a day, which any schedule with days at '*' fires in)."""
    schedule = ncrontab.parse(f"{seconds} {minutes} {hours} * * *")
    assert schedule.next_after(after) == brute_next(schedule, after, timedelta(days=1, seconds=1))


def timer_app(schedule: str) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.timer_trigger(schedule=schedule, arg_name="timer", run_on_startup=False, use_monitor=False)
    def tick(timer: func.TimerRequest) -> None:
        return None

    return app


def test_indexing_resolves_the_schedule_setting() -> None:
    (function,) = index_app(timer_app("%PURGE_SCHEDULE%"), {"PURGE_SCHEDULE": "0 17 * * * *"})
    assert isinstance(function, TimerFunction)
    assert function.schedule.expression == "0 17 * * * *"
    assert describe(function, "api") == "tick: timerTrigger schedule='0 17 * * * *'"


def test_indexing_names_a_bad_schedule() -> None:
    with pytest.raises(IndexingError, match="function 'tick', binding 'timer': schedule '0 0 \\* \\* \\*' has 5"):
        index_app(timer_app("0 0 * * *"), {})


class FakeTime:
    """A clock that moves only when the runner sleeps."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


async def test_runner_fires_on_schedule_and_reports_past_due() -> None:
    calls: list[tuple[datetime, bool]] = []
    time = FakeTime(datetime(2026, 12, 2, 10, 0, 0, 500000, tzinfo=UTC))

    def tick(timer: func.TimerRequest) -> None:
        calls.append((time.now, timer.past_due))
        if len(calls) == 2:  # this run lasts past the next occurrence
            time.now += timedelta(seconds=90)
        if len(calls) == 3:
            raise RuntimeError("a failing run does not stop the schedule")

    function = TimerFunction(
        name="tick",
        user_function=tick,
        trigger_parameter="timer",
        schedule=ncrontab.parse("0 * * * * *"),
        run_on_startup=False,
        uses_context=False,
    )
    with ThreadPoolExecutor(1) as executor:
        runner = TimerRunner(function, executor, clock=time.clock, sleep=time.sleep)
        runner.start()
        for _ in range(200):
            if runner.invocations >= 4:
                break
            await asyncio.sleep(0.01)
        await runner.stop(1.0)
    assert [at for at, _ in calls[:2]] == [
        datetime(2026, 12, 2, 10, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 10, 2, tzinfo=UTC),
    ]
    # The second run ended at 10:03:30: 10:03 was skipped, and the 10:04 run is told it is past due.
    assert calls[2] == (datetime(2026, 12, 2, 10, 4, tzinfo=UTC), True)
    assert calls[3] == (datetime(2026, 12, 2, 10, 5, tzinfo=UTC), False)
