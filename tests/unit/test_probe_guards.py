"""A half-open probe holds the circuit's only permit: it never waits for a bulkhead slot,
a cool-down or a token while holding it. Fake clock, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from proxy.config.upstream import Bulkhead as BulkheadConfig
from proxy.config.upstream import CircuitBreaker as BreakerConfig
from proxy.config.upstream import UpstreamRateLimit
from proxy.http.headers import Headers
from proxy.http.message import Call, Rejected, Reply, compose
from proxy.observe.metrics import Metrics
from proxy.policies.bulkhead import Bulkhead
from proxy.policies.circuit import BreakerPolicy
from proxy.policies.rate_limit import Quota
from proxy.state.breaker import HALF_OPEN, CircuitBreaker
from tests.support.clock import FakeClock


def call(clock: FakeClock, *, probe: bool = False) -> Call:
    made = Call(
        method="GET",
        target="/",
        headers=Headers(),
        body=None,
        route="r",
        request_id="id",
        started=clock.now,
        deadline=clock.now + 100,
    )
    made.probe = probe
    return made


async def ok(c: Call) -> Reply:
    return Reply(status=200, headers=Headers())


def answering(status: int, **headers: str):
    async def upstream(c: Call) -> Reply:
        return Reply(status=status, headers=Headers(headers))

    return upstream


async def hold_the_slot(bulkhead: Bulkhead, clock: FakeClock) -> tuple[asyncio.Task, asyncio.Event]:
    gate = asyncio.Event()

    async def slow(c: Call) -> Reply:
        await gate.wait()
        return Reply(status=200, headers=Headers())

    holder = asyncio.create_task(bulkhead(call(clock), slow))
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 1
    return holder, gate


async def test_a_probe_finding_the_bulkhead_full_is_rejected_without_queueing():
    clock = FakeClock()
    config = BulkheadConfig(max_concurrent=1, max_queued=5, queue_timeout="1s")
    bulkhead = Bulkhead(config, "up", clock, Metrics())
    holder, gate = await hold_the_slot(bulkhead, clock)
    with pytest.raises(Rejected) as info:
        await bulkhead(call(clock, probe=True), ok)
    assert info.value.reason == "bulkhead_full" and bulkhead.queued == 0
    gate.set()
    (await holder).release()


async def test_a_probe_in_a_cool_down_is_rejected_at_once():
    clock = FakeClock()
    quota = Quota(UpstreamRateLimit(), "up", clock, Metrics())
    await quota(call(clock), answering(429, **{"Retry-After": "5"}))
    with pytest.raises(Rejected) as info:
        await quota(call(clock, probe=True), ok)
    assert (info.value.reason, clock.sleeps) == ("rate_limited", [])
    await quota(call(clock), ok)  # an ordinary call waits the pause out
    assert clock.sleeps == [pytest.approx(5)]


async def test_a_probe_does_not_queue_for_a_token():
    clock = FakeClock()
    limit = UpstreamRateLimit(rate="1/s", burst=1, on_limit="queue", max_wait="5s")
    quota = Quota(limit, "up", clock, Metrics())
    await quota(call(clock), ok)  # the one token
    with pytest.raises(Rejected):
        await quota(call(clock, probe=True), ok)
    assert clock.sleeps == []
    await quota(call(clock), ok)  # an ordinary call queues for the next one
    assert clock.sleeps == [pytest.approx(1)]


async def test_a_probe_rejected_further_in_gives_back_its_permit_without_a_verdict():
    clock = FakeClock()
    breaker = CircuitBreaker(
        BreakerConfig(consecutive_failures=1, open_for="1s"), clock, lambda *_: None
    )
    breaker.record(breaker.admit(), failure=True)
    clock.advance(1)
    bulkhead = Bulkhead(BulkheadConfig(max_concurrent=1, max_queued=5), "up", clock, Metrics())
    holder, gate = await hold_the_slot(bulkhead, clock)
    stack = compose([BreakerPolicy(breaker, "up", clock, Metrics()), bulkhead], ok)
    with pytest.raises(Rejected) as info:
        await stack(call(clock))
    assert info.value.reason == "bulkhead_full"
    assert breaker.state == HALF_OPEN and breaker.ready_to_probe()  # no verdict, permit back
    gate.set()
    (await holder).release()
    assert (await stack(call(clock))).status == 200  # the next probe closes it
    assert breaker.current() == "closed"
