"""What a scenario is and what it gets: the size, a scratch folder, and earlier scenarios' numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .report import Table

Size = Literal["full", "small"]


@dataclass(frozen=True)
class Sizes:
    """The knobs a size sets. ``small`` keeps ``make bench BENCH_SIZE=small`` well under 3 minutes."""

    stored_items: int  # items the emulator holds while the floor is measured
    floor_patches: int  # PATCHes timed for the floor
    baseline_items: int  # items each naive baseline writes (a sample: see its table)
    catalog_items: int  # the catalog the backfill scenario loads (issue 11: 100,000)
    throttled_items: int  # the catalog of the throttled backfill, split between its processes
    throttled_rate: int  # R: the emulator's limit and the app's budget in that scenario, requests/s

    @classmethod
    def of(cls, size: Size) -> Sizes:
        if size == "full":
            return cls(
                stored_items=100_000,
                floor_patches=20_000,
                baseline_items=500,
                catalog_items=100_000,
                throttled_items=4_000,  # 80 s at 50/s when the budget holds the rate
                throttled_rate=50,
            )
        return cls(
            stored_items=5_000,
            floor_patches=2_000,
            baseline_items=60,
            catalog_items=3_000,
            throttled_items=400,  # 8 s at 50/s when the budget holds the rate
            throttled_rate=50,
        )


@dataclass
class Context:
    size: Size
    sizes: Sizes
    workdir: Path
    # Numbers a scenario publishes for later ones, by scenario name (e.g. a baseline's items/s).
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Scenario:
    name: str  # --only takes these
    section: str  # the report heading it goes under
    run: Callable[[Context], list[Table]]
