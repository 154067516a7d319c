"""Fault injection: delays, aborts and resets on purpose, for a route or an upstream.

A fault acts where a real one would, in the upstream's send, so the policies meet it as
they would meet the real thing: a delay counts against the attempt timeout and the
breaker's slow calls, an abort is an upstream status (retried, a breaker sample), a reset
is a `reset`. Faults come from the policy file (`faults:`, for test environments) or from
`POST /faults` with a mandatory ttl; each acts on `percentage` of the matching attempts.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from ..config.faults import FaultSpec
from .clock import Clock


@dataclass
class Fault:
    id: str
    spec: FaultSpec
    expires: float | None  # monotonic; None: lives as long as the policy file

    def view(self, now: float) -> dict[str, Any]:
        left = None if self.expires is None else round(self.expires - now, 3)
        return {"id": self.id, **self.spec.model_dump(mode="json"), "expires_in_s": left}


@dataclass
class Faults:
    """The faults in force; `pick()` runs per attempt, and costs nothing when empty."""

    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
    active: dict[str, Fault] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, spec: FaultSpec, ttl: float | None) -> Fault:
        expires = None if ttl is None else self.clock.monotonic() + ttl
        fault = Fault(f"f{next(self._ids)}", spec, expires)
        self.active[fault.id] = fault
        return fault

    def remove(self, fault_id: str) -> bool:
        return self.active.pop(fault_id, None) is not None

    def declared(self, specs: tuple[FaultSpec, ...]) -> None:
        """The policy file's faults, replacing the ones an earlier file declared."""
        for fault_id in [k for k, f in self.active.items() if f.expires is None]:
            del self.active[fault_id]
        for spec in specs:
            self.add(spec, None)

    def pick(self, route: str, upstream: str) -> FaultSpec | None:
        now = self.clock.monotonic()
        for fault in list(self.active.values()):
            if fault.expires is not None and now >= fault.expires:
                del self.active[fault.id]
                continue
            spec = fault.spec
            hits = spec.route in (None, route) and spec.upstream in (None, upstream)
            if hits and self.rng.random() < spec.percentage:
                return spec
        return None

    def view(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        return [f.view(now) for f in self.active.values() if f.expires is None or f.expires > now]
