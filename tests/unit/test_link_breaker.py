"""The Redis link's breaker on a fake clock: down after failures in a row, probed with a
doubling backoff, up at the first success."""

from __future__ import annotations

import pytest

from proxy.state.link_breaker import DOWN, UP, LinkBreaker
from tests.support.clock import FakeClock


def breaker(clock: FakeClock, changes: list) -> LinkBreaker:
    return LinkBreaker(
        clock, lambda to, why: changes.append((to, why)), failures_to_open=3, base=0.05
    )


def test_it_starts_down_and_comes_up_at_the_first_success():
    clock, changes = FakeClock(), []
    link = breaker(clock, changes)
    assert not link.up and link.probe_in() == 0  # probed at once
    link.succeeded()
    assert link.up and link.ups == 1 and changes == [(UP, "Redis answered")]


def test_failures_in_a_row_take_it_down_a_success_between_them_does_not():
    clock, changes = FakeClock(), []
    link = breaker(clock, changes)
    link.succeeded()
    link.failed("timeout")
    link.failed("timeout")
    link.succeeded()
    link.failed("timeout")
    link.failed("timeout")
    assert link.up
    link.failed("ConnectionError")
    assert not link.up and changes[-1] == (DOWN, "ConnectionError")
    link.failed("timeout")  # already down: no second line
    assert [to for to, _ in changes] == [UP, DOWN]


def test_a_down_link_is_probed_with_a_doubling_backoff_up_to_its_max():
    clock, changes = FakeClock(), []
    link = breaker(clock, changes)
    link.succeeded()
    for _ in range(3):
        link.failed("timeout")
    assert link.probe_in() == pytest.approx(0.05)
    waits = []
    for _ in range(8):
        link.probe_failed()
        waits.append(round(link.probe_in(), 3))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    clock.advance(2.0)
    assert link.probe_in() == 0
    link.succeeded()
    assert link.up and link.ups == 2 and link.backoff == 0


def test_a_link_that_goes_down_again_soon_starts_from_twice_its_last_backoff():
    clock, changes = FakeClock(), []
    link = breaker(clock, changes)
    link.succeeded()
    for round_ in range(5):  # up at each probe, down again at once: a flapping Redis
        for _ in range(3):
            link.failed("timeout")
        assert link.probe_in() == pytest.approx(min(2.0, 0.05 * 2**round_))
        clock.advance(link.probe_in())
        link.succeeded()
    clock.advance(10.0)  # up and steady for a while: a new failure starts afresh
    for _ in range(3):
        link.failed("timeout")
    assert link.probe_in() == pytest.approx(0.05)
