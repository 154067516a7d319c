"""The breaker's state machine on a fake clock: tripping rules, open, half_open, closing."""

from __future__ import annotations

import pytest

from proxy.config.upstream import CircuitBreaker as BreakerConfig
from proxy.state.breaker import CALL, CLOSED, HALF_OPEN, OPEN, PROBE, REJECT, CircuitBreaker
from tests.support.clock import FakeClock


def breaker(**config) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    moves: list[tuple[str, str]] = []
    b = CircuitBreaker(
        BreakerConfig.model_validate(config), clock, lambda a, b, why: moves.append((a, b))
    )
    return b, clock, moves


def calls(b: CircuitBreaker, *failures: bool, slow: bool = False) -> None:
    for failure in failures:
        permit = b.admit()
        assert permit == CALL
        b.record(permit, failure=failure, slow=slow)


@pytest.mark.parametrize(
    ("threshold", "failures", "state"), [(3, 2, CLOSED), (3, 3, OPEN), (1, 1, OPEN)]
)
def test_consecutive_failures_table(threshold, failures, state):
    b, _, _ = breaker(consecutive_failures=threshold)
    calls(b, *[True] * failures)
    assert b.state == state


def test_a_success_resets_the_consecutive_count():
    b, _, _ = breaker(consecutive_failures=3)
    calls(b, True, True, False, True, True)
    assert b.state == CLOSED


@pytest.mark.parametrize(
    ("min_calls", "pattern", "state"),
    [
        (10, [True, False] * 4, CLOSED),  # 50% but only 8 calls: min_calls holds it closed
        (10, [False, True] * 5, OPEN),  # 50% over 10 calls, the 10th a failure
        (10, [True, False] * 5 + [True], OPEN),  # it trips when a failure arrives
        (10, [True, False, False] * 4, CLOSED),  # 33% stays under the 50% threshold
    ],
)
def test_failure_rate_respects_min_calls(min_calls, pattern, state):
    b, _, _ = breaker(
        consecutive_failures=None,
        failure_rate={"threshold": "50%", "min_calls": min_calls, "window": "10s"},
    )
    calls(b, *pattern)
    assert b.state == state


def test_failure_rate_forgets_failures_that_left_the_window():
    b, clock, _ = breaker(
        consecutive_failures=None,
        failure_rate={"threshold": "50%", "min_calls": 4, "window": "10s"},
    )
    calls(b, True, True, True)
    clock.advance(11)
    calls(b, False, False, False, True)
    assert b.state == CLOSED


@pytest.mark.parametrize(("slow_share", "state"), [(7, CLOSED), (8, OPEN)])
def test_slow_calls_trip_at_their_threshold(slow_share, state):
    b, _, _ = breaker(
        consecutive_failures=None,
        slow_calls={"duration": "1s", "threshold": "80%", "min_calls": 10, "window": "30s"},
    )
    for i in range(10):
        permit = b.admit()
        b.record(permit, failure=False, slow=i >= 10 - slow_share)
    assert b.state == state


def test_slow_calls_respect_min_calls():
    b, _, _ = breaker(
        consecutive_failures=None,
        slow_calls={"duration": "1s", "threshold": "50%", "min_calls": 5},
    )
    calls(b, False, False, False, False, slow=True)
    assert b.state == CLOSED
    calls(b, False, slow=True)
    assert b.state == OPEN


def test_open_rejects_until_open_for_then_lets_exactly_probes_through():
    b, clock, moves = breaker(
        consecutive_failures=1, open_for="30s", half_open={"probes": 2, "successes": 2}
    )
    calls(b, True)
    assert b.admit() == REJECT
    assert b.retry_after() == pytest.approx(30)
    clock.advance(29.9)
    assert b.admit() == REJECT
    clock.advance(0.2)
    first, second, third = (b.admit() for _ in range(3))
    assert first >= PROBE and second >= PROBE and first != second and third == REJECT
    assert b.state == HALF_OPEN
    b.record(first, failure=False)
    assert b.state == HALF_OPEN  # one of two successes
    again = b.admit()
    assert again >= PROBE  # the slot freed up
    b.record(again, failure=False)
    assert b.state == CLOSED
    assert moves == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_reopens_for_longer_each_time_up_to_max():
    b, clock, _ = breaker(consecutive_failures=1, open_for="10s", max_open_for="25s")
    calls(b, True)
    for expected in (20, 25, 25):
        clock.advance(b.retry_after())
        permit = b.admit()
        assert permit >= PROBE
        b.record(permit, failure=True)
        assert b.state == OPEN
        assert b.retry_after() == pytest.approx(expected)


def test_closing_resets_the_growth_of_open_for():
    b, clock, _ = breaker(consecutive_failures=1, open_for="10s")
    calls(b, True)
    clock.advance(10)
    b.record(b.admit(), failure=True)  # reopened for 20s
    clock.advance(20)
    b.record(b.admit(), failure=False)
    assert b.state == CLOSED
    calls(b, True)
    assert b.retry_after() == pytest.approx(10)


def test_a_probe_without_verdict_frees_its_slot():
    b, clock, _ = breaker(consecutive_failures=1, open_for="1s")
    calls(b, True)
    clock.advance(1)
    permit = b.admit()
    assert b.admit() == REJECT
    b.release(permit)
    assert b.admit() >= PROBE


def test_verdicts_of_calls_admitted_before_a_trip_are_ignored():
    b, _, _ = breaker(consecutive_failures=2)
    early = b.admit()
    calls(b, True, True)
    b.record(early, failure=False)
    assert b.state == OPEN


def test_config_needs_a_way_to_trip():
    with pytest.raises(ValueError):
        BreakerConfig.model_validate({"consecutive_failures": None})


def test_the_effective_state_is_ready_to_probe_once_open_for_passed_without_a_call():
    b, clock, _ = breaker(consecutive_failures=1, open_for="10s")
    calls(b, True)
    assert (b.current(), b.ready_to_probe()) == (OPEN, False)
    clock.advance(10)
    assert (b.current(), b.ready_to_probe()) == (HALF_OPEN, True)  # nobody asked: still
    assert b.state == OPEN  # the machine moves when a call comes
    permit = b.admit()
    assert permit >= PROBE and b.state == HALF_OPEN
    assert (b.current(), b.ready_to_probe()) == (HALF_OPEN, False)  # its one probe is out


def test_an_override_is_the_effective_state_while_it_lasts():
    b, clock, _ = breaker(consecutive_failures=1)
    b.force(OPEN, 5)
    assert (b.current(), b.ready_to_probe()) == (OPEN, False)
    clock.advance(5)
    assert b.current() == HALF_OPEN  # the hold ended: ready to probe
    b.force(CLOSED, 5)
    assert b.current() == CLOSED


def test_a_probe_unanswered_after_max_wait_is_a_failure_and_frees_its_permit():
    b, clock, moves = breaker(
        consecutive_failures=1, open_for="10s", max_open_for="1m", half_open={"max_wait": "5s"}
    )
    calls(b, True)
    clock.advance(10)
    hung = b.admit()
    assert hung >= PROBE
    clock.advance(4.9)
    assert b.admit() == REJECT  # its one probe is out, not yet late
    clock.advance(0.1)
    assert b.current() == OPEN  # the late probe counts as a failed one
    assert b.admit() == REJECT
    assert b.state == OPEN and b.retry_after() == pytest.approx(20)  # reopened, for longer
    clock.advance(20)
    fresh = b.admit()
    assert fresh >= PROBE  # the permit is free again
    b.record(hung, failure=False)  # the hung probe answers at last: its verdict is stale
    assert b.state == HALF_OPEN
    b.record(fresh, failure=False)
    assert b.state == CLOSED
    assert moves == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_max_wait_defaults_to_ten_seconds():
    assert BreakerConfig().half_open.max_wait == 10.0


def test_a_probe_answering_after_max_wait_counts_as_failed_even_if_nobody_asked_meanwhile():
    b, clock, moves = breaker(consecutive_failures=1, open_for="10s", half_open={"max_wait": "5s"})
    calls(b, True)
    clock.advance(10)
    slow = b.admit()
    clock.advance(6)
    b.record(slow, failure=False)  # too late: it is the failure it was at max_wait
    assert b.state == OPEN
    assert moves[-1] == (HALF_OPEN, OPEN)
