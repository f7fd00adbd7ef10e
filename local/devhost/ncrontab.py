"""NCRONTAB schedules, as the Functions host reads a timer trigger's ``schedule``.

Six fields: ``{second} {minute} {hour} {day} {month} {day-of-week}``, each a value, ``*``, a range
(``a-b``), a list (``a,b``) or a step (``*/n``, ``a-b/n``); month and day names in English,
abbreviated or not, any case (day 0 is Sunday). Source:
https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions

Left out on purpose: the TimeSpan form (``hh:mm:ss``), which the docs allow only on App Service
plans (this app runs on Flex Consumption), and a schedule that restricts both the day of the month
and the day of the week: classic cron matches either, and NCrontab's choice is not documented, so
the dev host refuses it instead of guessing when it would fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
# (name, lowest, highest, names for lowest..)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
# A schedule matches at least once in any 4 years + 1 day (29 February, any weekday) or never
# (31 February): search no further than that.
_HORIZON = timedelta(days=4 * 366 + 1)


class ScheduleError(ValueError):
    """The schedule is not an NCRONTAB expression the host accepts; the message says why."""


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    lowered = text.lower()
    if lowered.isdigit():
        number = int(lowered)
    else:
        matches = [i for i, full in enumerate(names) if len(lowered) >= 3 and full.startswith(lowered)]
        if len(matches) != 1:
            raise ScheduleError(f"{name} {text!r} is not a number{' or a name' if names else ''}")
        number = matches[0] + low
    if not low <= number <= high:
        raise ScheduleError(f"{name} {number} is outside {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, name, low, high, names), _value(end, name, low, high, names)
            if first > last:
                raise ScheduleError(f"{name} range {span!r} runs backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def matches(self, at: datetime) -> bool:
        return (
            at.second in self.seconds
            and at.minute in self.minutes
            and at.hour in self.hours
            and at.day in self.days
            and at.month in self.months
            and (at.isoweekday() % 7) in self.weekdays
        )

    def next_after(self, after: datetime) -> datetime | None:
        """The first whole second strictly after ``after`` that the schedule names (``None``: never)."""
        at = after.replace(microsecond=0) + timedelta(seconds=1)
        end = at + _HORIZON
        while at < end:
            if at.month not in self.months:
                at = (at.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0)
            elif at.day not in self.days or (at.isoweekday() % 7) not in self.weekdays:
                at = at.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif at.hour not in self.hours:
                at = at.replace(minute=0, second=0) + timedelta(hours=1)
            elif at.minute not in self.minutes:
                at = at.replace(second=0) + timedelta(minutes=1)
            elif at.second not in self.seconds:
                at += timedelta(seconds=1)
            else:
                return at
        return None


def parse(expression: str) -> Schedule:
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        hint = " (the TimeSpan form is for App Service plans only)" if ":" in expression else ""
        raise ScheduleError(
            f"schedule {expression!r} has {len(fields)} fields; NCRONTAB has six: "
            f"second minute hour day month day-of-week{hint}"
        )
    parsed = [_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    if fields[3] != "*" and fields[5] != "*":
        raise ScheduleError(
            f"schedule {expression!r} restricts both the day of the month and the day of the week; "
            "hosts differ on whether either or both must match, so use one of them"
        )
    schedule = Schedule(expression, *parsed)
    if schedule.next_after(datetime(2000, 1, 1)) is None:
        raise ScheduleError(f"schedule {expression!r} never fires")
    return schedule
