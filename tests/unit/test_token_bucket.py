"""Token buckets on a fake clock: burst, rate, FIFO reservations, keyed LRU."""

from __future__ import annotations

import pytest

from proxy.state.token_bucket import KeyedBuckets, TokenBucket, default_burst
from tests.support.clock import FakeClock


def test_burst_then_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.reserve(0) for _ in range(6)] == [0, 0, 0, 0, 0, None]
    clock.advance(0.1)
    assert bucket.reserve(0) == 0
    assert bucket.reserve(0) is None


@pytest.mark.parametrize(
    ("rate", "burst", "seconds"), [(10, 5, 3.0), (100, 20, 2.0), (0.5, 1, 10.0)]
)
def test_admitted_over_time_is_rate_times_t_plus_burst(rate, burst, seconds):
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, burst=burst, clock=clock)
    admitted = 0
    steps = int(seconds * 1000)
    for _ in range(steps):  # offered far above the rate, every millisecond
        for _ in range(3):
            admitted += bucket.reserve(0) is not None
        clock.advance(0.001)
    assert admitted == pytest.approx(rate * seconds + burst, abs=1)


def test_reservations_queue_in_order_and_respect_max_wait():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    assert bucket.reserve(1) == 0
    assert bucket.reserve(1) == pytest.approx(0.1)
    assert bucket.reserve(1) == pytest.approx(0.2)
    assert bucket.reserve(0.25) is None  # would be 0.3: not taken
    bucket.give_back()  # a waiter gave up
    assert bucket.reserve(1) == pytest.approx(0.2)


def test_keyed_buckets_are_separate_and_bounded():
    clock = FakeClock()
    keyed = KeyedBuckets(rate=1, burst=1, max_keys=2, clock=clock)
    assert keyed.get("a").reserve(0) == 0
    assert keyed.get("b").reserve(0) == 0
    assert keyed.get("a").reserve(0) is None  # a's own bucket is empty
    keyed.get("c")  # evicts b, the least recently used
    assert len(keyed) == 2
    assert keyed.get("b").reserve(0) == 0  # b came back fresh


@pytest.mark.parametrize(
    ("rate", "burst", "expected"), [(50, None, 50), (0.5, None, 1), (10, 3, 3)]
)
def test_default_burst(rate, burst, expected):
    assert default_burst(rate, burst) == expected
