"""The pure parts of the backfill scenarios: the catalog split between processes, the computed times
(``shared.ratebudget.Policy``), and reading ``vlsync --json``'s summary on success and on exit 1."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.bench.cli_stack import _summary
from local.bench.scenarios.throttled import computed_seconds, split
from shared.ratebudget import Policy


@settings(max_examples=30, deadline=None)
@given(lines=st.integers(min_value=4, max_value=200), parts=st.integers(min_value=1, max_value=4))
def test_split_keeps_every_line_once_in_order(lines: int, parts: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        catalog = Path(folder) / "catalog.ndjson"
        catalog.write_text("".join(f'{{"externalId": "x{i}"}}\n' for i in range(lines)), encoding="utf-8")
        paths = split(catalog, parts)
        chunks = [p.read_text(encoding="utf-8").splitlines() for p in paths]
    assert len(paths) == parts
    assert [line for chunk in chunks for line in chunk] == catalog_lines(lines)
    assert max(map(len, chunks)) - min(map(len, chunks)) <= parts  # quarters, give or take the remainder


def catalog_lines(lines: int) -> list[str]:
    return [f'{{"externalId": "x{i}"}}' for i in range(lines)]


def test_computed_times_follow_the_policy() -> None:
    default = Policy.from_figures(1.0, 20, 500, 600.0)  # the draft's figures: min(1, 480/600) = 0.8/s
    assert default.ceiling == pytest.approx(0.8)
    assert computed_seconds(default, 100_000) == pytest.approx((100_000 - 20) / 0.8)
    larger = Policy.from_figures(100.0, 20, 50_000, 600.0)  # x100: min(100, 49,980/600) = 83.3/s
    assert computed_seconds(larger, 100_000) == pytest.approx((100_000 - 20) * 600 / 49_980)
    assert computed_seconds(default, 10) == 0  # within the burst: at once


def test_summary_is_read_from_stdout_or_from_the_error_line() -> None:
    done = {"pushed": 3, "failed": 0}
    assert _summary(json.dumps(done, indent=2), "target: Graph …\n") == done
    error = {"error": {"message": "1 failed", "pushed": 2, "failed": 1}}
    assert _summary("", "target: Graph …\n" + json.dumps(error) + "\n") == error["error"]
    assert _summary("", "Traceback (most recent call last):\n  boom\n") == {}
