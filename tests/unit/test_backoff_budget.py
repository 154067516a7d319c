"""Backoff delays and jitter bounds, and the retry budget's arithmetic, on a fake clock."""

from __future__ import annotations

import random

import pytest

from proxy.config.policy import Backoff as BackoffConfig
from proxy.config.policy import Budget
from proxy.policies.backoff import Backoff
from proxy.state.budget import RetryBudget
from tests.support.clock import FakeClock


@pytest.mark.parametrize(
    ("kind", "delays"),
    [
        ("exponential", [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
        ("linear", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        ("constant", [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
        ("fibonacci", [0.1, 0.1, 0.2, 0.3, 0.5, 0.8]),
    ],
)
def test_backoff_delays_grow_by_type_and_stop_at_max(kind, delays):
    config = BackoffConfig(type=kind, base="100ms", max="1s", jitter="none")
    backoff = Backoff(config, random.Random(1))
    assert [backoff(n) for n in range(1, 7)] == pytest.approx(delays)


@pytest.mark.parametrize(("jitter", "low"), [("full", 0.0), ("equal", 0.5)])
def test_jitter_stays_within_its_bounds(jitter, low):
    backoff = Backoff(BackoffConfig(base="1s", max="8s", jitter=jitter), random.Random(3))
    for n in (1, 2, 3, 4, 5):
        ceiling = backoff.delay(n)
        waits = [backoff(n) for _ in range(500)]
        assert all(low * ceiling <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > 0.3 * ceiling * (1 - low)  # it does spread


def test_huge_attempt_numbers_do_not_overflow():
    assert Backoff(BackoffConfig(max="10s", jitter="none"), random.Random()).delay(10_000) == 10.0


def budget(clock, ratio="20%", min_per_second=1.0, window="10s") -> RetryBudget:
    return RetryBudget(Budget(ratio=ratio, min_per_second=min_per_second, window=window), clock)


def spend(b: RetryBudget, n: int) -> int:
    return sum(b.try_spend() for _ in range(n))


def test_budget_allows_ratio_of_requests_plus_floor():
    clock = FakeClock()
    b = budget(clock)  # 20% of requests + 1/s x 10s
    for _ in range(100):
        b.record_request()
    assert spend(b, 100) == 20 + 10


def test_budget_with_no_floor_and_no_requests_allows_nothing():
    b = budget(FakeClock(), min_per_second=0)
    assert spend(b, 5) == 0


def test_budget_recovers_as_the_window_slides():
    clock = FakeClock()
    b = budget(clock, min_per_second=0)
    for _ in range(50):
        b.record_request()
    assert spend(b, 50) == 10
    clock.advance(5)
    assert spend(b, 1) == 0  # the requests and the retries are both still in the window
    clock.advance(5.1)
    for _ in range(10):
        b.record_request()
    assert spend(b, 10) == 2  # the old ones slid out: 20% of the 10 new requests


@pytest.mark.parametrize(
    ("ratio", "requests", "allowed"), [("0%", 100, 0), ("50%", 10, 5), ("100%", 7, 7)]
)
def test_budget_ratio_table(ratio, requests, allowed):
    b = budget(FakeClock(), ratio=ratio, min_per_second=0)
    for _ in range(requests):
        b.record_request()
    assert spend(b, requests * 2) == allowed
