"""The `routes[].slo` section: a route's availability and latency objectives.

Fender counts, per route, the answers each objective judges and those that missed it
(observe/slo.py); `fender slo rules` turns the objectives into Prometheus rules. The
window is the period the error budget is spent over; the in-process /status only looks
at the last 5 minutes and hour (a month of data is Prometheus's to keep).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema, model_validator

from .types import Section, unit
from .units import Duration, Ratio

_WINDOW_RE = re.compile(r"^(\d+)(d|h)$")
MIN_WINDOW_H, MAX_WINDOW_H = 72, 90 * 24  # the longest alert window (3d); a quarter


def parse_window(value: Any) -> int:
    """`30d`, `28d`, `720h` -> hours (a whole number)."""
    m = _WINDOW_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError("not a window: use whole days or hours, like '30d' or '672h'")
    hours = int(m.group(1)) * (24 if m.group(2) == "d" else 1)
    if not MIN_WINDOW_H <= hours <= MAX_WINDOW_H:
        raise ValueError("an SLO window is between 3d (the longest alert window) and 90d")
    return hours


def format_window(hours: int) -> str:
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


Window = Annotated[
    int,
    BeforeValidator(parse_window),
    PlainSerializer(format_window, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _WINDOW_RE.pattern, "examples": ["30d"]}),
]


def _objective(target: float, what: str) -> None:
    if not 0 < target < 1:
        raise ValueError(f"{what} is between 0% and 100%, both excluded: 100% leaves no budget")


class LatencyObjective(Section):
    threshold: Duration
    """An answer is fast enough when its response headers went to the app within this,
    counted from the request's arrival (retries and waits included). It is made a bucket
    of the latency histograms, so the count is exact."""
    target: Ratio
    """The share of answers that must be fast enough, like `95%`."""

    @model_validator(mode="after")
    def _sane(self) -> LatencyObjective:
        if not 0 < self.threshold <= 3600:
            raise ValueError("latency.threshold is more than 0s and at most 1h")
        _objective(self.target, "latency.target")
        return self


class Slo(Section):
    """Objectives of one route. Good: an answer that is not a 5xx (relayed or Fender's
    own), not a stream cut short, and not `x-fender-outcome: failed`; a fallback answer
    is good. A local 429 (the app was told to wait) and a request the app gave up on
    before its answer are not counted."""

    availability: Ratio | None = None
    """The share of answers that must be good, like `99.9%`."""
    latency: LatencyObjective | None = None
    window: Window = unit("30d")
    """The period the error budget is spent over (whole days or hours, 3d to 90d).
    Prometheus must keep at least this much data for the budget panels."""

    @model_validator(mode="after")
    def _something(self) -> Slo:
        if self.availability is None and self.latency is None:
            raise ValueError("give availability, latency or both")
        if self.availability is not None:
            _objective(self.availability, "availability")
        return self
