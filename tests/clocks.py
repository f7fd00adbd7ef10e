"""A virtual clock for code that takes ``clock`` and ``sleep`` (``shared.ratebudget``): time moves only
when the code sleeps or the test says so, so assertions hold on a loaded machine."""

from __future__ import annotations

import asyncio
import time


class VirtualClock:
    """Epoch seconds, starting at the real time (rows written with it look ordinary), frozen between
    sleeps."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still a suspension point, as the real sleep is
