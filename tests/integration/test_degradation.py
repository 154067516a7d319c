"""Degradation levels: derived from what is down by priority, set by hand, and shedding."""

from __future__ import annotations

import asyncio

from tests.support.proxy import config
from tests.support.upstream import Step


def tiered(upstream_url: str) -> dict:
    breaker = {"consecutive_failures": 5}
    return config(
        {
            "core": {
                "endpoints": [upstream_url],
                "priority": "critical",
                "circuit_breaker": breaker,
            },
            "extras": {"endpoints": [upstream_url], "priority": "low", "circuit_breaker": breaker},
        },
        [
            {
                "name": "recs",
                "upstream": "extras",
                "match": {"path_prefix": "/recs/"},
                "shed_at": "limited",
                "policy": "soft",
            },
            {
                "name": "ads",
                "upstream": "extras",
                "match": {"path_prefix": "/ads/"},
                "shed_at": "degraded",
            },
            {"name": "core", "upstream": "core"},
        ],
        policies={
            "soft": {
                "fallback": {
                    "on": ["circuit_open"],
                    "chain": [{"static": {"status": 200, "body": "[]"}}],
                }
            }
        },
    )


async def status(client, proxy) -> dict:
    async with client.get(f"{proxy.control_url}/status") as resp:
        return (await resp.json())["degradation"]


async def test_the_level_follows_what_is_down_by_priority(upstream, proxy_factory, client):
    proxy = await proxy_factory(tiered(upstream.url))
    assert (await status(client, proxy))["level"] == "full"
    proxy.fender.breaker("extras").force("open", 60)
    assert (await status(client, proxy))["level"] == "degraded"
    proxy.fender.breaker("core").force("open", 60)
    assert (await status(client, proxy))["level"] == "emergency"
    assert proxy.metric("fender_degradation_level") == 3
    proxy.fender.breaker("core").reset()
    proxy.fender.breaker("extras").reset()
    assert (await status(client, proxy))["level"] == "full"
    moves = [(x["was"], x["to"]) for x in proxy.log_lines() if x["event"] == "degradation"]
    assert moves == [("full", "degraded"), ("degraded", "emergency"), ("emergency", "full")]
    async with client.get(f"{proxy.control_url}/readyz") as resp:
        assert resp.status == 200  # Fender itself stays ready


async def test_shed_routes_go_to_their_fallback_at_their_level(upstream, proxy_factory, client):
    proxy = await proxy_factory(tiered(upstream.url))
    async with client.post(
        f"{proxy.control_url}/degradation", json={"level": "limited", "ttl": "400ms"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["level"] == "limited"
    async with client.get(f"{proxy.url}/recs/1") as resp:
        assert (resp.status, await resp.text()) == (200, "[]")
        assert (resp.headers["x-fender-reason"], resp.headers["x-fender-fallback"]) == (
            "shed",
            "static",
        )
    async with client.get(f"{proxy.url}/ads/1") as resp:
        assert (resp.status, resp.headers["x-fender-reason"]) == (503, "shed")  # no fallback
    async with client.get(f"{proxy.url}/checkout") as resp:
        assert resp.status == 200  # what matters more is still served
    assert [s.path_qs for s in upstream.seen] == ["/checkout"]
    await asyncio.sleep(0.45)  # the hand-set level expires
    async with client.get(f"{proxy.url}/recs/2") as resp:
        assert resp.status == 200 and "x-fender-reason" not in resp.headers
    assert upstream.seen[-1].path_qs == "/recs/2"


async def test_setting_the_level_by_hand_is_checked(upstream, proxy_factory, client):
    proxy = await proxy_factory(tiered(upstream.url))
    url = f"{proxy.control_url}/degradation"
    for body in ({"level": "broken", "ttl": "1m"}, {"level": "limited"}):
        async with client.post(url, json=body) as resp:
            assert resp.status == 400
    async with client.post(url, json={"level": "emergency", "ttl": "1h"}) as resp:
        assert (await resp.json())["override"]["level"] == "emergency"
    async with client.post(url, json={"level": "auto"}) as resp:
        assert (await resp.json()) == {"level": "full", "derived": "full", "override": None}


async def test_a_shed_route_whose_own_upstream_tripped_probes_it_and_recovers(
    upstream, proxy_factory, client
):
    data = tiered(upstream.url)
    data["upstreams"]["extras"]["circuit_breaker"] = {
        "consecutive_failures": 1,
        "open_for": "300ms",
    }
    proxy = await proxy_factory(data)
    upstream.default = Step(status=500)
    async with client.get(f"{proxy.url}/ads/1") as resp:
        assert resp.status == 500  # the breaker of `extras` trips
    assert (await status(client, proxy))["level"] == "degraded"
    async with client.get(f"{proxy.url}/ads/2") as resp:
        assert (resp.status, resp.headers["x-fender-reason"]) == (503, "shed")
    assert proxy.metric("fender_circuit_state", upstream="extras") == 2
    await asyncio.sleep(0.35)  # open_for passes, and no request comes
    assert proxy.metric("fender_circuit_state", upstream="extras") == 1  # ready to probe
    upstream.default = Step(body=b"back")
    async with client.get(f"{proxy.url}/ads/3") as resp:  # the probe: it reaches the upstream
        assert (resp.status, await resp.read()) == (200, b"back")
    assert proxy.metric("fender_circuit_state", upstream="extras") == 0
    assert (await status(client, proxy))["level"] == "full"
    async with client.get(f"{proxy.url}/ads/4") as resp:
        assert resp.status == 200 and "x-fender-reason" not in resp.headers
    assert [s.path_qs for s in upstream.seen] == ["/ads/1", "/ads/3", "/ads/4"]
