"""A fleet of real Fender processes on one real Redis: one limit for all of them, one
cool-down for all of them, and Redis failing without failing a request."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tests.support.fleet import counted, hammer, policy_file, sample, start_replicas

RATE, BURST, SECONDS = 20, 10, 3.0
FALLBACKS = "fender_rate_limit_fallbacks_total"


def fleet_policy(upstream_url: str, redis_url: str, **rate_limit) -> dict:
    return {
        # Long enough for a busy machine: these tests are about accuracy, not timeouts.
        "redis": {"url": redis_url, "timeout": "250ms"},
        "listeners": [
            {
                "name": "egress",
                "routes": [
                    {"name": "warm", "upstream": "up", "match": {"path_prefix": "/warm"}},
                    {"name": "rl", "upstream": "up", "policy": "limited"},
                ],
            }
        ],
        "upstreams": {"up": {"endpoints": [upstream_url]}},
        "policies": {
            "limited": {
                "rate_limit": {
                    "rate": f"{RATE}/s",
                    "burst": BURST,
                    "scope": "global",
                    **rate_limit,
                }
            }
        },
    }


@pytest.fixture
async def replicas(tmp_path, client):
    started = []

    async def start(data: dict, count: int = 3):
        started.extend(await start_replicas(policy_file(tmp_path, data), count, client))
        return started

    yield start
    await asyncio.gather(*(replica.stop() for replica in started))


async def hammer_all(client, replicas, per_second, seconds, headers=None):
    """Every replica offered `per_second` requests a second, all at once (after the
    client's connections to each are open: no connect delays the first ones)."""
    await asyncio.gather(*(hammer(client, f"{r.url}/warm/x", 200, 0.1) for r in replicas))
    gc.collect()
    gc.disable()  # a collector pause in the middle would stretch the window
    try:
        # Each replica's schedule a fraction of a period after the one before: together
        # they offer evenly spaced requests (none in step with the refill's ticks).
        step = 1 / (per_second * len(replicas))
        runs = await asyncio.gather(
            *(
                hammer(client, f"{r.url}/x", per_second, seconds, headers, offset=k * step)
                for k, r in enumerate(replicas)
            )
        )
    finally:
        gc.enable()
    return runs


JITTER = 0.01  # how much later than its send a request may reach Redis


def offered_bound(answers) -> float:
    """rate x T + burst over the span the requests were sent in: 20 x 3 + 10, unless this
    process, sending them all, fell behind its schedule (then T is a little longer)."""
    sent = [answer.sent for answer in answers]
    return RATE * (max(max(sent) - min(sent), SECONDS) + JITTER) + BURST


async def test_three_replicas_admit_rate_times_t_plus_burst_in_total(
    upstream, redis_url, replicas, client
):
    fleet = await replicas(fleet_policy(upstream.url, redis_url))
    await counted(fleet, client, 3)
    runs = await hammer_all(client, fleet, 40, SECONDS)
    answers = [answer for run in runs for answer in run]
    statuses = [answer.status for answer in answers]
    admitted = statuses.count(200)
    assert statuses.count(429) == len(statuses) - admitted  # nothing else, never a 5xx
    seen = [s for s in upstream.seen if s.path_qs == "/x"]  # not the warm-up's
    assert len(seen) == admitted
    assert admitted <= offered_bound(answers)  # never more
    expected = RATE * (seen[-1].at - seen[0].at) + BURST  # 20 x 3 + 10 over the T it took
    assert abs(admitted - expected) <= 0.02 * (RATE * SECONDS + BURST), (admitted, expected)
    assert all([a.status for a in run].count(200) < admitted for run in runs)  # all took part
    for replica in fleet:  # every decision was Redis's, none a local fallback's
        assert sample(await replica.metrics(client), FALLBACKS, scope="route:rl") == 0


async def test_with_a_key_each_key_gets_the_fleet_limit(upstream, redis_url, replicas, client):
    fleet = await replicas(fleet_policy(upstream.url, redis_url, key="header:x-tenant"))
    await counted(fleet, client, 3)
    tenants = ("a", "b")
    runs = await asyncio.gather(
        *(
            hammer_all(client, fleet, 30, SECONDS, headers={"x-tenant": tenant})
            for tenant in tenants
        )
    )
    for tenant, by_replica in zip(tenants, runs, strict=True):
        answers = [answer for run in by_replica for answer in run]
        statuses = [answer.status for answer in answers]
        seen = [s for s in upstream.seen if s.headers.get("x-tenant") == tenant]
        admitted = statuses.count(200)
        assert len(seen) == admitted and statuses.count(429) == len(statuses) - admitted
        assert admitted <= offered_bound(answers)
        expected = RATE * (seen[-1].at - seen[0].at) + BURST
        assert abs(admitted - expected) <= 0.02 * (RATE * SECONDS + BURST), (tenant, admitted)
    for replica in fleet:
        assert sample(await replica.metrics(client), FALLBACKS, scope="route:rl") == 0


def cooldown_policy(upstream_url: str, redis_url: str) -> dict:
    """Two routes to one upstream whose quota has only the cool-down: `held` may wait
    it out (the default deadline), `short` may not (total 1s)."""
    return {
        "redis": {"url": redis_url},
        "listeners": [
            {
                "name": "egress",
                "routes": [
                    {"name": "short", "upstream": "up", "policy": "short",
                     "match": {"path_prefix": "/short"}},
                    {"name": "held", "upstream": "up"},
                ],
            }
        ],
        "upstreams": {"up": {"endpoints": [upstream_url], "rate_limit": {"cooldown": True}}},
        "policies": {"short": {"timeouts": {"total": "1s"}}},
    }  # fmt: skip


async def test_a_429_to_one_replica_holds_every_replica_for_its_retry_after(
    upstream, redis_url, replicas, client
):
    from tests.support.upstream import Step

    fleet = await replicas(cooldown_policy(upstream.url, redis_url))
    await counted(fleet, client, 3)
    upstream.push(Step(status=429, headers={"Retry-After": "2"}))
    loop = asyncio.get_running_loop()
    async with client.get(f"{fleet[0].url}/held/first") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"  # relayed
    taught = upstream.seen[0].at
    await asyncio.sleep(0.1)  # what the others may take to learn it
    short = [
        hammer(client, f"{replica.url}/short/x", 20, 0.8) for replica in fleet[1:]
    ]  # answered at once: their deadline (1s) is before the cool-down's end
    held = [
        hammer(client, f"{replica.url}/held/x", 10, 1.5) for replica in fleet[1:]
    ]  # held until the cool-down ends, then sent
    short_runs, held_runs = await asyncio.gather(asyncio.gather(*short), asyncio.gather(*held))
    rejected = [(a.status, a.headers) for run in short_runs for a in run]
    assert rejected and all(status == 429 for status, _ in rejected)
    assert all(h["x-fender-reason"] == "rate_limited" for _, h in rejected)
    assert all(1 <= int(h["Retry-After"]) <= 2 for _, h in rejected)
    assert all(a.status == 200 for run in held_runs for a in run)
    later = [seen.at - taught for seen in upstream.seen[1:]]
    assert later and min(later) >= 2.0 - 0.02, min(later)  # nothing for 2 s
    assert loop.time() - taught < 5


async def test_redis_stopped_mid_load_goes_local_at_rate_over_n_and_back(
    upstream, redis_server, redis_url, replicas, client
):
    rate, burst = 30, 9
    data = fleet_policy(upstream.url, redis_url)
    data["redis"]["timeout"] = "25ms"  # the default
    data["policies"]["limited"]["rate_limit"].update(rate=f"{rate}/s", burst=burst)
    fleet = await replicas(data)
    await counted(fleet, client, 3)
    runs = await hammer_all(client, fleet, 20, 1.0)  # global, as Redis is there
    assert {a.status for run in runs for a in run} <= {200, 429}

    redis_server.stop()
    offered = await hammer(client, f"{fleet[0].url}/x", 60, 2.0)  # only one replica now
    statuses = [a.status for a in offered]
    assert set(statuses) <= {200, 429}  # nothing failed because Redis did
    local = rate / 3 * 2.0 + burst // 3  # this replica's share, not the fleet's 69
    assert abs(statuses.count(200) - local) <= 2.5, (statuses.count(200), local)
    sent = len(runs[0]) + len(offered)  # what replica 0 was sent on the limited route

    def logged():
        return [line for line in fleet[0].lines if line.get("route") == "rl"]

    for _ in range(100):  # request lines are written a few times a second
        if len(logged()) >= sent:
            break
        await asyncio.sleep(0.05)
    lines = logged()[-len(offered) :]
    decided_alone = [line["duration_ms"] for line in lines if line["status"] == 429]
    assert decided_alone and max(decided_alone) <= 25 + 10  # timeout + a margin
    text = await fleet[0].metrics(client)
    assert "fender_redis_up 0.0" in text
    assert sample(text, FALLBACKS, scope="route:rl") >= len(offered)  # each one decided alone
    assert any(line.get("event") == "redis" and line["state"] == "down" for line in fleet[0].lines)

    loop = asyncio.get_running_loop()
    redis_server.start()
    back = loop.time()
    for _ in range(100):
        views = [(await replica.status(client))["fleet"] for replica in fleet]
        if all(view["redis"] == "up" for view in views):
            break
        await asyncio.sleep(0.05)
    assert loop.time() - back <= 5.0, views
    await counted(fleet, client, 3)
    offered = await hammer(client, f"{fleet[0].url}/x", 80, 1.5)
    admitted = [a.status for a in offered].count(200)
    expected = rate * 1.5 + burst  # the fleet's whole limit, from one replica: global
    assert abs(admitted - expected) <= 0.05 * expected, (admitted, expected)
