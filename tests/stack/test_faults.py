"""`make faults` at CI size (issue 9 point 12): every fault, 60 events each, through the whole stack.

The harness (local/faults) starts Azurite, the Graph emulator, the identity endpoint and the dev host
as processes of their own, because two faults kill or restart them. The faults run once per module,
on four stacks side by side (Graph's faults are global to one emulator, so each stack plays one fault
at a time), and each test then judges its own fault: nothing lost, nothing resurrected, nothing stale
that won, nothing parked, and the queue drained. Durations and clocks are the harness's `ci` profile
(`python -m local.faults --profile ci` runs the same plans).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.faults.runner import HEADER, Profile, Result, catalogue, line, run_all

PROFILE = Profile.ci()
FAULTS = {fault.name: fault for fault in catalogue(PROFILE)}
STACKS = 4


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Runs the faults this session selected (all of them, unless -k narrowed it) once."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.path == Path(__file__) and hasattr(item, "callspec")
    ]
    faults = [FAULTS[name] for name in FAULTS if name in selected]
    run_dir = tmp_path_factory.mktemp("faults")
    done = run_all(run_dir, PROFILE, faults, stacks=STACKS)
    print("\n" + HEADER + "\n" + "\n".join(line(r) for r in done))
    (run_dir / "report.json").write_text(json.dumps([r.to_json() for r in done], indent=2, default=str))
    return {r.fault: r for r in done}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_leaves_graph_at_the_newest_events(results: dict[str, Result], name: str) -> None:
    result = results[name]
    shown = line(result) + "".join(f"\n  {json.dumps(d, default=str)}" for d in result.details[:10])
    assert not result.error, shown
    assert result.rejected == 0, shown  # every event reached the intake
    assert result.undelivered == 0, shown
    assert (result.lost, result.resurrected, result.stale_won) == (0, 0, 0), shown
    assert result.parked == 0, shown  # every fault here is transient
    assert result.drain_seconds is not None, shown
    assert result.accepted == result.events, shown
