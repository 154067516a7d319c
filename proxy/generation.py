"""Everything built from one Config, and what a new Config keeps of the one before it.

A reload builds a new Generation and swaps it in whole. State carries over by section:
- an upstream whose section is unchanged keeps its Upstream (connection pool) and its
  guards (breaker state, bulkhead, quota and cool-down); a changed one starts fresh, and
  so does one with a quota when the fleet (redis:) is not the same one;
- a route whose own section, policy section and referenced upstreams' guards are all
  unchanged keeps its pipeline (retry budget, rate-limit buckets, stale cache); else it
  starts fresh.
Requests in flight hold the objects of the generation they started with.

Building has no effect outside the new generation (a reload that fails must leave the
running one whole): what points at it from outside, the scrape-time gauges, is set by
`observe()` when it is swapped in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config.model import Config, Route
from .delivery.accept import Acceptor, QueueLookup
from .delivery.route import DeliveryRoute
from .fleet import Fleet
from .http.routing import CompiledRoute, Router, RouteTarget, Routing
from .http.upstream import AttemptRecorder, Upstream
from .observe.logs import JsonLog
from .observe.metrics import Metrics
from .observe.slo import objectives
from .policies import Guards, build_guards, build_pipeline
from .policies.bulkhead import Bulkhead
from .state.breaker import STATE_VALUE, CircuitBreaker
from .state.clock import Clock
from .state.faults import Faults
from .state.health import Health

Signature = tuple[str, str, tuple[int, ...]]  # route json, policy json, ids of guards (+ fleet)


@dataclass
class Generation:
    config: Config
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    guards: dict[str, Guards] = field(default_factory=dict)
    routings: dict[str, Routing] = field(default_factory=dict)  # by listener name
    zeros: list[tuple[Any, tuple[str, ...]]] = field(default_factory=list)  # see observe()
    fleet: Fleet | None = None  # redis: the fleet its global limits and cool-downs use
    deliveries: dict[str, DeliveryRoute] = field(default_factory=dict)  # routes with delivery:
    queues: QueueLookup | None = None  # what acceptors of delivery routes keep requests in
    _routes: dict[str, tuple[Signature, RouteTarget]] = field(default_factory=dict)


def build(
    config: Config,
    previous: Generation | None,
    *,
    clock: Clock,
    metrics: Metrics,
    log: JsonLog,
    rng: random.Random,
    recorder: Callable[[str], AttemptRecorder],
    faults: Faults,
    level: Callable[[], int] = lambda: 0,
    fleet: Fleet | None = None,
    queues: QueueLookup | None = None,
) -> tuple[Generation, list[Upstream]]:
    """The new generation, and the upstreams it made afresh (they need start())."""
    with metrics.deferred() as zeros:
        gen = Generation(config, zeros=zeros, fleet=fleet, queues=queues)
        return _build(gen, previous, clock, metrics, log, rng, recorder, faults, level)


def _build(
    gen: Generation,
    previous: Generation | None,
    clock: Clock,
    metrics: Metrics,
    log: JsonLog,
    rng: random.Random,
    recorder: Callable[[str], AttemptRecorder],
    faults: Faults,
    level: Callable[[], int],
) -> tuple[Generation, list[Upstream]]:
    config, fresh = gen.config, []
    for name, section in config.upstreams.items():
        kept = previous is not None and previous.config.upstreams.get(name) == section
        if previous is not None and kept and section.rate_limit is not None:
            kept = previous.fleet is gen.fleet  # a quota is bound to its fleet's Redis
        if previous is not None and kept:
            gen.upstreams[name] = previous.upstreams[name]
            gen.guards[name] = previous.guards[name]
            continue
        upstream = Upstream(name, section, recorder(name), clock, log, faults)
        gen.upstreams[name] = upstream
        gen.guards[name] = build_guards(
            upstream, clock=clock, metrics=metrics, log=log, fleet=gen.fleet
        )
        fresh.append(upstream)
    for listener in config.listeners:
        targets = {
            r.name: _target(gen, previous, r, clock, metrics, rng, level) for r in listener.routes
        }
        router = Router([CompiledRoute.compile(r) for r in listener.routes])
        gen.routings[listener.name] = Routing(router, targets)
    return gen, fresh


def observe(gen: Generation, metrics: Metrics) -> None:
    """Point the gauges read at scrape time at this generation's state (breakers,
    bulkheads, endpoint health), and export its series that start at 0. Called when it
    is swapped in, never before."""
    metrics.zero_all(gen.zeros)
    metrics.slo.configure(objectives(gen.config))  # routes' SLOs; thresholds as buckets
    for name, guards in gen.guards.items():
        breaker, bulkhead, health = guards.breaker, guards.bulkhead, gen.upstreams[name].health
        if breaker is not None:
            _watch_breaker(metrics, name, breaker)
        if bulkhead is not None:
            _watch_bulkhead(metrics, name, bulkhead)
        if health is not None:
            for endpoint in health.states:
                _watch_endpoint(metrics, name, health, endpoint)


def _watch_breaker(metrics: Metrics, name: str, breaker: CircuitBreaker) -> None:
    # The effective state: an open circuit past open_for shows half_open, though no call
    # came to move it.
    metrics.circuit_state.labels(name).set_function(lambda: STATE_VALUE[breaker.current()])


def _watch_bulkhead(metrics: Metrics, name: str, bulkhead: Bulkhead) -> None:
    metrics.bulkhead_in_flight.labels(name).set_function(lambda: bulkhead.in_flight)
    metrics.bulkhead_queued.labels(name).set_function(lambda: bulkhead.queued)


def _watch_endpoint(metrics: Metrics, name: str, health: Health, endpoint: str) -> None:
    metrics.upstream_healthy.labels(name, endpoint).set_function(
        lambda: float(health.usable(endpoint))
    )


def _target(
    gen: Generation,
    previous: Generation | None,
    route: Route,
    clock: Clock,
    metrics: Metrics,
    rng: random.Random,
    level: Callable[[], int],
) -> RouteTarget:
    policy = gen.config.policy_of(route)
    used = [route.upstream]
    if policy.fallback is not None:
        used += [step.upstream for step in policy.fallback.chain if step.upstream]
    in_fleet = policy.rate_limit is not None and policy.rate_limit.scope == "global"
    signature = (
        route.model_dump_json(),
        policy.model_dump_json(),
        tuple(id(gen.guards[name]) for name in used) + ((id(gen.fleet),) if in_fleet else ()),
    )
    if previous is not None and route.name in previous._routes:
        old_signature, old_target = previous._routes[route.name]
        if old_signature == signature:
            gen._routes[route.name] = (signature, old_target)
            if route.name in previous.deliveries:
                gen.deliveries[route.name] = previous.deliveries[route.name]
            return old_target
    handler = build_pipeline(
        route.name,
        # A delivery's pipeline has no fallback: a fallback's answer is never a delivery.
        policy if route.delivery is None else policy.model_copy(update={"fallback": None}),
        route.upstream,
        guards={name: gen.guards[name] for name in used},
        headers={name: gen.upstreams[name].request_headers for name in used},
        clock=clock,
        metrics=metrics,
        rng=rng,
        shed_at=route.shed_at,
        level=level,
        fleet=gen.fleet,
    )
    if route.delivery is not None and gen.queues is not None:
        # The route answers from its queue's acceptor; its pipeline is the deliverer's.
        upstream = gen.config.upstreams[route.upstream]
        delivery = gen.deliveries[route.name] = DeliveryRoute.of(route, policy, upstream, handler)
        handler = Acceptor(delivery, gen.queues, clock, metrics)
    target = RouteTarget(route.upstream, gen.upstreams[route.upstream].request_headers, handler)
    gen._routes[route.name] = (signature, target)
    return target
