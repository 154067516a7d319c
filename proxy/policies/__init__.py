"""THE order of the policies: decided here, and only here.

DESIGN.md's request path, outermost first:

    Fallback -> Shed -> Deadline (total) -> RateLimit (route)
      -> Retry -> [per attempt, the upstream's guards]
                  CircuitBreaker -> Bulkhead -> Quota -> attempt timeout -> send

Why this order:
- Fallback is outermost: it must see every failure below it, rejections included.
- Shed (a route's `shed_at`) is right inside it: a shed request goes to the fallback
  before it waits for anything or spends any token. (A call its own upstream's breaker
  would take as a probe goes on: without probes, a tripped upstream never recovers.)
- Deadline is next: it sets the limits that every wait below must fit in.
- The route's RateLimit is spent once per request, before any attempt.
- Retry wraps the upstream's guards, so each attempt is one breaker sample, holds one
  bulkhead slot and spends one quota token; an open circuit ends the loop at once.
- The breaker is outside the bulkhead and quota: their rejections are not the upstream's
  failures, and an open circuit should not take a slot or a token.
- The attempt timeout (`min(per_try, deadline)`) is applied by `upstream.send` itself,
  which knows the endpoint and so can count the attempt's result right.

The guards of an upstream are built once per upstream and shared by every route that
sends to it, and by fallbacks that fail over to it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config.policy import Policy as PolicyConfig
from ..config.upstream import UpstreamRateLimit
from ..fleet import Fleet
from ..http.hygiene import RequestHeaders
from ..http.message import Handler, Policy, compose
from ..http.upstream import Upstream
from ..observe.logs import JsonLog
from ..observe.metrics import Metrics
from ..state.breaker import CircuitBreaker
from ..state.clock import Clock
from .bulkhead import Bulkhead
from .circuit import BreakerPolicy
from .deadline import Deadline
from .fallback import Fallback
from .global_limits import GlobalQuota, GlobalRateLimit
from .rate_limit import Quota, RateLimit
from .retry import Retry
from .shed import Shed


@dataclass
class Guards:
    """An upstream's per-attempt stack and the stateful pieces in it (for status)."""

    handler: Handler
    breaker: CircuitBreaker | None
    bulkhead: Bulkhead | None
    quota: Quota | None


def build_guards(
    upstream: Upstream,
    *,
    clock: Clock,
    metrics: Metrics,
    log: JsonLog,
    fleet: Fleet | None = None,
) -> Guards:
    """CircuitBreaker -> Bulkhead -> Quota around one upstream's send(). In a fleet, the
    quota's cool-downs are the fleet's, and a `scope: global` one its bucket too; the
    breaker stays this replica's own."""
    config, name = upstream.config, upstream.name
    breaker = bulkhead = quota = None
    policies: list[Policy] = []
    if config.circuit_breaker is not None:

        def on_transition(was: str, to: str, why: str) -> None:
            metrics.count_transition(name, was, to)
            level = "warning" if to == "open" else "info"
            log.event("circuit", level, upstream=name, was=was, to=to, why=why)

        breaker = CircuitBreaker(config.circuit_breaker, clock, on_transition)
        policies.append(BreakerPolicy(breaker, name, clock, metrics))
    if config.bulkhead is not None:
        bulkhead = Bulkhead(config.bulkhead, name, clock, metrics)
        policies.append(bulkhead)
    if config.rate_limit is not None:
        quota = _quota(config.rate_limit, name, fleet, clock, metrics)
        policies.append(quota)
    return Guards(compose(policies, upstream.send), breaker, bulkhead, quota)


def _quota(
    config: UpstreamRateLimit, name: str, fleet: Fleet | None, clock: Clock, metrics: Metrics
) -> Quota:
    if fleet is None:
        return Quota(config, name, clock, metrics)
    if config.scope == "global" and config.rate is not None:
        quota: Quota = GlobalQuota(config, name, fleet, clock, metrics)
    else:
        quota = Quota(config, name, clock, metrics)
    if config.cooldown:
        quota.share = fleet.cooldowns.share
    return quota


def build_pipeline(
    route: str,
    config: PolicyConfig,
    upstream: str,
    *,
    guards: Mapping[str, Guards],
    headers: Mapping[str, RequestHeaders],
    clock: Clock,
    metrics: Metrics,
    rng: random.Random,
    shed_at: str | None = None,
    level: Callable[[], int] = lambda: 0,
    fleet: Fleet | None = None,
) -> Handler:
    """The handler a route calls: its policies, in THE order, around its upstream's guards."""
    policies: list[Policy] = []
    if config.fallback is not None:
        stacks = {name: g.handler for name, g in guards.items()}
        retry, limit = config.retry, config.rate_limit
        policies.append(
            Fallback(
                config.fallback,
                route,
                stacks=stacks,
                headers=headers,
                buffer_limit=retry.buffer_limit if retry else None,
                idempotency_header=retry.idempotency_header if retry else "idempotency-key",
                clock=clock,
                metrics=metrics,
                credential_header=limit.header if limit is not None else None,
            )
        )
    if shed_at is not None:
        breaker = guards[upstream].breaker
        policies.append(Shed(shed_at, level, breaker.ready_to_probe if breaker else None))
    policies.append(Deadline(config.timeouts))
    limit = config.rate_limit
    if limit is not None and limit.scope == "global" and fleet is not None:
        policies.append(GlobalRateLimit(limit, route, fleet, clock, metrics))
    elif limit is not None:
        policies.append(RateLimit(limit, route, clock, metrics))
    if config.retry is not None and config.retry.attempts > 1:
        policies.append(Retry(config.retry, route, clock, metrics, rng))
    return compose(policies, guards[upstream].handler)
