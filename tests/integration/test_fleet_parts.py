"""The fleet's parts on a real Redis, in this process: the Lua bucket against the local
one, scripts lost and reloaded, heartbeats, cool-downs heard, a slow Redis, reloads."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import orjson
import pytest
import redis.asyncio as aioredis

from proxy.config.fleet import Redis
from proxy.fleet import Fleet, Link
from proxy.fleet.buckets import GlobalBucket, decision
from proxy.observe.logs import JsonLog
from proxy.observe.metrics import Metrics
from proxy.state.clock import RealClock
from proxy.state.token_bucket import TokenBucket
from tests.support.clock import FakeClock
from tests.support.fleet import DelayProxy, sample
from tests.support.proxy import config, wait_for
from tests.support.upstream import Step

FALLBACKS = "fender_rate_limit_fallbacks_total"


@pytest.fixture
async def fleets():
    made: list[Fleet] = []

    # A timeout long enough for a busy machine, unless a test is about the timeout.
    async def make(url: str, timeout: str = "250ms", name: str = "t") -> Fleet:
        log = JsonLog(io.BytesIO())
        link = Link(Redis(url=url, timeout=timeout), RealClock(), log)
        fleet = Fleet(link, name, "test", RealClock(), log)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        await fleet.close()


@pytest.fixture
async def delayed(redis_server):
    """A TCP proxy before the session's Redis that can delay its answers, or vanish."""
    proxy = DelayProxy(redis_server.port)
    await proxy.start()
    yield proxy
    await proxy.close()


def bucket(fleet: Fleet, clock, rate: float, burst: int, keyed=False) -> GlobalBucket:
    return GlobalBucket(
        fleet, "route:r", rate, burst, keyed=keyed, max_keys=10, clock=clock, metrics=Metrics()
    )


def local_decision(local: TokenBucket, max_wait: float, left: float) -> tuple[bool, float]:
    """What RateLimit does with a local bucket (policies/rate_limit.py `_reserve`)."""
    wait = local.reserve(max_wait)
    if wait is None:
        return False, local.wait_for_token()
    if wait and wait >= left:
        local.give_back()
        return False, wait
    return True, wait


# (seconds to advance, op, max_wait, left): burst 3 at 2/s; reservations into the
# negative (queue), rejections past max_wait or the deadline, give-backs, refill to burst.
STEPS = [
    (0.0, "take", 0.0, 100), (0.0, "take", 0.0, 100), (0.0, "take", 0.0, 100),
    (0.0, "take", 0.0, 100),  # empty: rejected, Retry-After 0.5
    (0.0, "take", 1.0, 0.5),  # its token would come just at the deadline: not taken
    (0.1, "take", 1.0, 100),  # queued: waits 0.4
    (0.0, "take", 1.0, 100),  # behind it: 0.9
    (0.0, "take", 1.0, 100),  # 1.4 > max_wait: nothing taken
    (0.0, "take", 1.0, 1.2),  # 1.4 > left
    (0.0, "give", 0, 0),  # the one waiting 0.9 gave up
    (0.0, "take", 1.0, 0.9),  # 0.9 >= left: rejected
    (0.0, "take", 1.0, 100),  # 0.9 again
    (0.25, "take", 0.0, 100),
    (10.0, "take", 0.0, 100),  # refilled, but never past burst
    (0.0, "take", 0.0, 100), (0.0, "take", 0.0, 100), (0.0, "take", 0.0, 100),
    (0.3, "give", 0, 0), (0.0, "give", 0, 0), (0.0, "give", 0, 0), (0.0, "give", 0, 0),
    (0.0, "take", 0.0, 100),
]  # fmt: skip


async def test_the_lua_bucket_decides_as_the_local_bucket_on_the_same_clock(redis_url, fleets):
    fleet = await fleets(redis_url)
    await fleet.start()
    clock = FakeClock()
    shared, local = bucket(fleet, clock, 2.0, 3), TokenBucket(2.0, 3, clock)
    state = aioredis.from_url(redis_url)
    try:
        for advance, op, max_wait, left in STEPS:
            clock.advance(advance)
            if op == "give":
                local.give_back()
                reply = await shared.give_back(None, None, now=clock.now)
                assert reply is not None and decision(reply) == (True, 0.0)
            else:
                granted, wait, decided_by = await shared.reserve(None, max_wait, left, clock.now)
                assert decided_by is None  # by Redis, not the fallback
                assert (granted, wait) == pytest.approx(local_decision(local, max_wait, left))
            tokens = float(await state.hget(shared.redis_key(None), "t"))
            local.wait_for_token()  # refilled to now, as the script stores it
            assert tokens == pytest.approx(local.tokens, abs=1e-9), (advance, op)
    finally:
        await state.aclose()


async def test_keyed_buckets_are_one_per_key_and_keep_no_raw_key(redis_url, fleets):
    fleet = await fleets(redis_url)
    await fleet.start()
    clock = FakeClock()
    shared = bucket(fleet, clock, 1.0, 2, keyed=True)
    decided = [(await shared.reserve(k, 0.0, 100, clock.now))[0] for k in "aaabb"]
    assert decided == [True, True, False, True, True]
    state = aioredis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in state.scan_iter("test:t:bucket:*")]
        ttl = await state.pttl(shared.redis_key("a"))
    finally:
        await state.aclose()
    assert len(keys) == 2 and not any(k.endswith((":a", ":b")) for k in keys)
    assert 0 < ttl <= 3000  # gone once it would be full again: idle keys cost nothing


async def test_scripts_flushed_from_redis_are_loaded_again_not_decided_locally(redis_url, fleets):
    fleet = await fleets(redis_url)
    await fleet.start()
    shared = bucket(fleet, RealClock(), 10.0, 5)
    state = aioredis.from_url(redis_url)
    try:
        await state.script_flush()
    finally:
        await state.aclose()
    granted, _, decided_by = await shared.reserve(None, 0.0, 100)
    assert granted and decided_by is None
    fallbacks = sample(shared.metrics.render().decode(), FALLBACKS, scope="route:r")
    assert fallbacks == 0  # decided by Redis once the scripts were loaded again


async def test_heartbeats_count_live_replicas_and_keep_the_last_count_while_redis_is_away(
    redis_url, delayed, fleets
):
    proxy = delayed
    first, second, third = [await fleets(url) for url in (proxy.url, redis_url, redis_url)]
    for fleet in (first, second, third):
        await fleet.start()
    await first.heartbeat.beat()
    assert first.replicas == 3
    await third.close()  # leaves at once
    await first.heartbeat.beat()
    assert first.replicas == 2
    await proxy.close()  # this replica's Redis is gone
    await wait_for(_true(lambda: not first.link.up), 5)
    await first.heartbeat.beat()
    assert first.replicas == 2  # the last count, kept: no Redis to tell it otherwise
    await wait_for(_counts(second, 1), 5)  # while the others see its entry expire


def _counts(fleet: Fleet, n: int):
    async def check() -> bool:
        await fleet.heartbeat.beat()
        return fleet.replicas == n

    return check


def _true(predicate):
    async def check() -> bool:
        return bool(predicate())

    return check


class Stalls:
    """How long the event loop itself did not run (a busy machine), so that a decision
    late for that reason is told apart from one that waited on Redis."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while True:
            self.ticks.append(time.perf_counter())
            await asyncio.sleep(0.0005)

    def worst(self, start: float, end: float) -> float:
        inside = [start, *(t for t in self.ticks if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(inside))


async def test_a_slow_redis_never_holds_a_decision_past_the_timeout(redis_url, delayed, fleets):
    fleet = await fleets(delayed.url, timeout="25ms")
    await fleet.start()
    shared = bucket(fleet, RealClock(), 1000.0, 1000)
    stalls = Stalls()
    slow: list[float] = []
    try:
        for _ in range(3):  # three times: Redis slow, the link down, Redis fast again
            delayed.delay = 0.0
            await wait_for(_true(lambda: fleet.link.up), 5)  # up (again) within 5 s
            assert (await shared.reserve(None, 0.0, 100))[2] is None  # Redis decides
            delayed.delay = 0.3
            for _ in range(10):
                started = time.perf_counter()
                granted, _, decided_by = await shared.reserve(None, 0.0, 100)
                ended = time.perf_counter()
                assert granted and decided_by is not None  # locally, rate / N
                if stalls.worst(started, ended) < 0.003 and ended - started > 0.01:
                    slow.append(ended - started)  # waited for Redis, on a running loop
            assert not fleet.link.up  # its breaker opened: the rest were decided at once
    finally:
        stalls.task.cancel()
    assert len(slow) >= 3 and max(slow) <= 0.025 + 0.001, slow


def fleet_config(upstream_url: str, redis_url: str, **redis) -> dict:
    return config(
        {"up": {"endpoints": [upstream_url], "rate_limit": {"cooldown": True}}},
        [
            {"name": "short", "upstream": "up", "policy": "short",
             "match": {"path_prefix": "/short"}},
            {"name": "all", "upstream": "up", "policy": "global"},
        ],
        policies={
            "short": {"timeouts": {"total": "1s"}},
            "global": {"rate_limit": {"rate": "1000/s", "scope": "global"}},
        },
        redis={"url": redis_url, **redis},
    )  # fmt: skip


async def test_a_cool_down_is_heard_by_the_others_within_100ms(
    upstream, redis_url, proxy_factory, client
):
    a = await proxy_factory(fleet_config(upstream.url, redis_url))
    b = await proxy_factory(fleet_config(upstream.url, redis_url))
    assert a.fender.fleet.name == b.fender.fleet.name  # the same file: the same fleet
    await wait_for(_true(lambda: b.fender.fleet.cooldowns.subscribed), 5)
    quota = b.fender.guards["up"].quota
    upstream.push(Step(status=429, headers={"Retry-After": "3"}))
    loop = asyncio.get_running_loop()
    async with client.get(f"{a.url}/x") as resp:
        assert resp.status == 429
    answered = loop.time()
    for _ in range(500):  # looked at every 2 ms, for a second at most
        if quota.pause_left() > 0:
            break
        await asyncio.sleep(0.002)
    assert loop.time() - answered <= 0.1
    assert quota.pause_left() == pytest.approx(3.0, abs=0.15)
    async with client.get(f"{b.url}/short/x") as resp:
        assert resp.status == 429 and resp.headers["x-fender-reason"] == "rate_limited"
        assert resp.headers["Retry-After"] == "3"
    assert len(upstream.seen) == 1  # b sent the upstream nothing

    c = await proxy_factory(fleet_config(upstream.url, redis_url))  # starts later
    later = c.fender.guards["up"].quota
    await wait_for(_true(lambda: later.pause_left() > 0), 2)  # read from the stored key
    assert later.pause_left() == pytest.approx(3.0 - (loop.time() - answered), abs=0.15)


async def test_a_reload_keeps_the_link_and_the_fleet_unless_their_section_changed(
    upstream, redis_url, proxy_factory
):
    data = fleet_config(upstream.url, redis_url, fleet="shop")
    proxy = await proxy_factory(data)
    fender = proxy.fender
    fleet, link = fender.fleet, fender.fleet.link
    data["policies"]["short"]["timeouts"]["total"] = "2s"
    await fender.reload(type(fender.config).model_validate(data))
    assert fender.fleet is fleet  # an unchanged redis section keeps it all
    data["redis"]["fleet"] = "other"
    await fender.reload(type(fender.config).model_validate(data))
    assert fender.fleet is not fleet and fender.fleet.link is link  # same link
    assert fender.fleet.namespace == "fender:other"
    await wait_for(_true(lambda: not fleet._tasks), 5)  # the old one stopped
    del data["redis"]
    data["policies"]["global"]["rate_limit"]["scope"] = "local"
    await fender.reload(type(fender.config).model_validate(data))
    assert fender.fleet is None
    await wait_for(_true(lambda: link._loop is None), 5)  # closed once unused
    assert proxy.metric("fender_redis_up") == 0


async def test_the_password_is_never_shown_and_a_refusing_redis_fails_nothing(
    upstream, redis_server, proxy_factory, client
):
    url = f"redis://fender:hunter2@127.0.0.1:{redis_server.port}/0"  # no such user
    proxy = await proxy_factory(fleet_config(upstream.url, url))
    for _ in range(5):
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 200  # decided locally
    async with client.get(f"{proxy.control_url}/config") as resp:
        shown = await resp.text()
    async with client.get(f"{proxy.control_url}/status") as resp:
        fleet = (await resp.json())["fleet"]
    assert fleet["redis"] == "down" and fleet["replicas"] == 1
    assert orjson.loads(shown)["redis"]["url"].startswith("redis://fender:<redacted>@")
    logged = [line for line in proxy.log_lines() if line.get("event") == "redis"]
    assert logged and logged[0]["state"] == "down"
    everything = shown + str(fleet) + str(proxy.log_lines())
    assert "hunter2" not in everything
    assert proxy.metric("fender_rate_limit_fallbacks_total", scope="route:all") == 5
