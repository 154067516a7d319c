"""Endpoint health rules on a fake clock: check streaks, ejection, its bounds."""

from __future__ import annotations

import io

import pytest

from proxy.config.upstream import HealthCheck, Outlier
from proxy.observe.logs import JsonLog
from proxy.state.health import Health
from tests.support.clock import FakeClock


def health(endpoints=("a", "b"), check=None, outlier=None) -> tuple[Health, FakeClock]:
    clock = FakeClock()
    return Health("up", list(endpoints), check, outlier, clock, JsonLog(io.BytesIO())), clock


def test_failed_checks_in_a_row_take_an_endpoint_out_and_passed_ones_bring_it_back():
    h, _ = health(check=HealthCheck(path="/h", unhealthy=3, healthy=2))
    for status in (503, None):
        h.checked("a", status)
    assert h.usable("a")  # two failures: not yet
    h.checked("a", 500)
    assert not h.usable("a")
    h.checked("a", 200)
    assert not h.usable("a")  # one pass: not yet
    h.checked("a", 204)
    assert h.usable("a") and h.usable("b")


@pytest.mark.parametrize(("failures", "out"), [(2, False), (3, True)])
def test_consecutive_real_failures_eject(failures, out):
    h, _ = health(outlier=Outlier(consecutive_failures=3))
    for _ in range(failures):
        h.record("a", failure=True)
    assert h.usable("a") is not out


def test_ejection_ends_and_grows_when_repeated():
    h, clock = health(outlier=Outlier(consecutive_failures=1, ejection="10s", max_ejection="15s"))
    h.record("a", failure=True)
    clock.advance(9.9)
    assert not h.usable("a")
    clock.advance(0.2)
    assert h.usable("a")
    h.record("a", failure=True)  # second ejection: 20s, capped at 15s
    clock.advance(14.9)
    assert not h.usable("a")
    clock.advance(0.2)
    assert h.usable("a")


def test_never_more_than_max_ejected_and_always_one_left():
    h, _ = health(endpoints=("a", "b"), outlier=Outlier(consecutive_failures=1, max_ejected="100%"))
    h.record("a", failure=True)
    h.record("b", failure=True)
    assert [h.usable("a"), h.usable("b")] == [False, True]  # the last one stays in


def test_a_success_resets_the_failure_count():
    h, _ = health(outlier=Outlier(consecutive_failures=2))
    h.record("a", failure=True)
    h.record("a", failure=False)
    h.record("a", failure=True)
    assert h.usable("a")
