"""Backoff rules: how long to wait before the next attempt.

`exponential` (base, 2x, 4x, ...) suits most upstreams; `linear` (base, 2x, 3x) and
`fibonacci` (base, base, 2x, 3x, 5x) grow more gently; `constant` suits upstreams with a
known recovery time. Jitter spreads retries of many clients apart: `full` (a random wait up
to the delay) spreads best; `equal` (half plus a random half) keeps a floor.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..config.policy import Backoff as BackoffConfig

Growth = Callable[[int], float]  # failures so far (1, 2, ...) -> multiple of base


def _fibonacci(n: int) -> float:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return float(a)


GROWTH: dict[str, Growth] = {
    "exponential": lambda n: float(2 ** (n - 1)),
    "linear": float,
    "constant": lambda n: 1.0,
    "fibonacci": _fibonacci,
}


class Backoff:
    """`backoff(n)`: the wait after the n-th failed attempt, jitter applied."""

    def __init__(self, config: BackoffConfig, rng: random.Random) -> None:
        self.base = config.base
        self.max = config.max
        self.growth = GROWTH[config.type]
        self.jitter = config.jitter
        self.rng = rng

    def delay(self, n: int) -> float:
        """The wait before jitter."""
        return min(self.max, self.base * self.growth(min(n, 64)))

    def __call__(self, n: int) -> float:
        d = self.delay(n)
        if self.jitter == "full":
            return self.rng.uniform(0, d)
        if self.jitter == "equal":
            return d / 2 + self.rng.uniform(0, d / 2)
        return d
