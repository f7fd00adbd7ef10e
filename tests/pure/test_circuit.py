"""The Graph circuit breaker's state machine (issue 9 point 8), on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.circuit import (
    FAILURES_TO_OPEN,
    FIRST_COOLDOWN,
    MAX_COOLDOWN,
    PROBE_RECHECK,
    PROBE_SECONDS,
    Circuit,
    Policy,
    admit,
    probe_lease,
    transition,
)
from shared.ledger import push_timing

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_it_opens_after_five_failures_in_a_row_only() -> None:
    circuit = Circuit()
    for n in range(FAILURES_TO_OPEN - 1):
        circuit = transition(circuit, "failure", T0)
        assert (circuit.state, circuit.failures) == ("closed", n + 1)
    assert transition(transition(circuit, "success", T0), "failure", T0).failures == 1  # a success resets
    opened = transition(circuit, "failure", T0)
    assert (opened.state, opened.until) == ("open", T0 + FIRST_COOLDOWN)


def test_an_open_circuit_holds_commands_then_lets_one_probe() -> None:
    opened = Circuit("open", 0, FIRST_COOLDOWN, T0 + FIRST_COOLDOWN)
    assert admit(opened, T0) is None
    assert opened.waits(T0) == FIRST_COOLDOWN.total_seconds()
    probe = admit(opened, T0 + FIRST_COOLDOWN)
    assert probe is not None
    assert (probe.state, probe.until) == ("half-open", T0 + FIRST_COOLDOWN + PROBE_SECONDS)
    assert admit(probe, T0 + FIRST_COOLDOWN + timedelta(seconds=1)) is None  # one probe at a time
    assert admit(probe, T0 + FIRST_COOLDOWN + PROBE_SECONDS) is not None  # a lost probe expires
    assert transition(probe, "success", T0) == Circuit()
    again = transition(probe, "failure", T0)
    assert (again.state, again.cooldown, again.until) == ("open", 2 * FIRST_COOLDOWN, T0 + 2 * FIRST_COOLDOWN)


def test_while_a_probe_is_out_the_others_look_again_soon_not_after_the_probe_lease() -> None:
    probe = admit(Circuit("open", 0, FIRST_COOLDOWN, T0), T0)
    assert probe is not None
    assert probe.waits(T0) == PROBE_RECHECK.total_seconds() < PROBE_SECONDS.total_seconds()
    # A probe still out is hanging (Graph timing out): the others back off with its age, so a long hang
    # sends each of them back a few times, not once every PROBE_RECHECK.
    assert probe.waits(T0 + timedelta(seconds=3)) == PROBE_RECHECK.total_seconds()
    assert probe.waits(T0 + timedelta(seconds=20)) == 20.0
    near_expiry = T0 + PROBE_SECONDS - timedelta(seconds=2)
    assert probe.waits(near_expiry) == 2.0  # never past the probe's own expiry
    assert probe.waits(T0, Policy(probe_recheck=timedelta(seconds=1))) == 1.0


def test_a_probe_owns_the_half_open_state_at_least_as_long_as_a_push_holds_its_item() -> None:
    assert probe_lease(push_timing(10, 10).lease_seconds) == PROBE_SECONDS  # a 50-s lease: the probe keeps 120 s
    long = push_timing(30, 10).lease_seconds  # the default GRAPH_TIMEOUT_SECONDS=30: a 130-s lease
    assert probe_lease(long) == timedelta(seconds=long) > PROBE_SECONDS


def test_a_late_answer_does_not_move_an_open_circuit() -> None:
    opened = Circuit("open", 0, FIRST_COOLDOWN, T0 + FIRST_COOLDOWN)
    assert transition(opened, "failure", T0) == opened


def test_a_probe_that_never_called_graph_hands_the_probe_back_at_once() -> None:
    opened = Circuit("open", 0, 2 * FIRST_COOLDOWN, T0)
    probe = admit(opened, T0)
    assert probe is not None
    later = T0 + timedelta(seconds=3)
    handed_back = transition(probe, "unused", later)  # e.g. the ledger skipped the probe's command
    assert (handed_back.state, handed_back.cooldown, handed_back.until) == ("open", 2 * FIRST_COOLDOWN, later)
    assert admit(handed_back, later) is not None  # the next command probes now, not after PROBE_SECONDS
    assert transition(Circuit(), "unused", later) == Circuit()
    assert transition(opened, "unused", later) == opened


@given(
    st.lists(st.tuples(st.sampled_from(["success", "failure", "unused", "admit"]), st.integers(0, 2000)), max_size=60)
)
def test_invariants_hold_for_any_history(steps: list[tuple[str, int]]) -> None:
    circuit, now, failed_probes = Circuit(), T0, 0
    for kind, seconds in steps:
        now += timedelta(seconds=seconds)
        if kind == "admit":
            admitted = admit(circuit, now)
            if admitted is None:
                assert circuit.state != "closed"
                assert circuit.waits(now) > 0
                if circuit.state == "half-open":  # the others look again soon while a probe is out
                    assert circuit.until is not None
                    age = (now - (circuit.until - PROBE_SECONDS)).total_seconds()
                    assert circuit.waits(now) <= max(PROBE_RECHECK.total_seconds(), age)
            else:
                circuit = admitted
            continue
        before = circuit
        circuit = transition(circuit, kind, now)  # type: ignore[arg-type]
        if kind == "success":
            assert circuit == Circuit()
            failed_probes = 0
        elif kind == "unused":  # says nothing about Graph: only a probe is handed back
            assert circuit.cooldown == before.cooldown
            assert circuit.state == ("open" if before.state == "half-open" else before.state)
        elif before.state == "half-open":
            failed_probes += 1
            assert circuit.cooldown == min(FIRST_COOLDOWN * 2**failed_probes, MAX_COOLDOWN)
        assert FIRST_COOLDOWN <= circuit.cooldown <= MAX_COOLDOWN
        assert (circuit.state == "closed") == (circuit.until is None)
        assert 0 <= circuit.failures < FAILURES_TO_OPEN
