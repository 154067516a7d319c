"""Endpoint health against real sockets: no traffic to an unhealthy endpoint, and back."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.support.proxy import config
from tests.support.upstream import ScriptedUpstream


async def endpoint(aiohttp_server, name: str):
    """An upstream endpoint with a switchable /health and a log of what it served."""
    state = {"healthy": True, "served": 0}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if state["healthy"] else 503)

    async def serve(request: web.Request) -> web.Response:
        state["served"] += 1
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/{tail:.*}", serve)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}", state


async def test_an_endpoint_failing_its_check_gets_no_traffic_and_comes_back(
    aiohttp_server, proxy_factory, client
):
    url_a, a = await endpoint(aiohttp_server, "a")
    url_b, b = await endpoint(aiohttp_server, "b")
    check = {"path": "/health", "interval": "50ms", "timeout": "1s", "unhealthy": 2, "healthy": 2}
    proxy = await proxy_factory(
        config({"up": {"endpoints": [url_a, url_b], "health_check": check}})
    )

    async def spread(n: int = 10) -> list[str]:
        out = []
        for _ in range(n):
            async with client.get(f"{proxy.url}/x") as resp:
                out.append(await resp.text())
        return out

    assert sorted(set(await spread())) == ["a", "b"]
    a["healthy"] = False
    for _ in range(100):  # a few check intervals
        if proxy.metric("fender_upstream_healthy", upstream="up", endpoint=url_a) == 0:
            break
        await asyncio.sleep(0.05)
    served_before, b_before = a["served"], b["served"]
    assert await spread() == ["b"] * 10
    assert a["served"] == served_before  # no traffic at all to the unhealthy endpoint
    assert b["served"] == b_before + 10
    a["healthy"] = True
    for _ in range(100):
        if proxy.metric("fender_upstream_healthy", upstream="up", endpoint=url_a) == 1:
            break
        await asyncio.sleep(0.05)
    assert sorted(set(await spread())) == ["a", "b"]
    async with client.get(f"{proxy.control_url}/readyz") as resp:
        assert resp.status == 200  # Fender's readiness never depended on it
    async with client.get(f"{proxy.control_url}/status") as resp:
        shown = (await resp.json())["upstreams"]["up"]["endpoints"]
    assert [e["healthy"] for e in shown] == [True, True]


async def test_all_endpoints_unhealthy_still_get_tried(aiohttp_server, proxy_factory, client):
    url_a, a = await endpoint(aiohttp_server, "a")
    a["healthy"] = False
    check = {"path": "/health", "interval": "50ms", "unhealthy": 1}
    proxy = await proxy_factory(config({"up": {"endpoints": [url_a], "health_check": check}}))
    for _ in range(100):
        if proxy.metric("fender_upstream_healthy", upstream="up", endpoint=url_a) == 0:
            break
        await asyncio.sleep(0.05)
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, await resp.text()) == (200, "a")  # never a self-inflicted outage


async def test_passive_ejection_moves_traffic_off_a_failing_endpoint(
    aiohttp_server, proxy_factory, client
):
    bad = ScriptedUpstream()
    bad.default.status = 503
    bad.url = f"http://127.0.0.1:{(await aiohttp_server(bad.app)).port}"
    url_b, b = await endpoint(aiohttp_server, "b")
    outlier = {"consecutive_failures": 2, "ejection": "1m"}
    proxy = await proxy_factory(config({"up": {"endpoints": [bad.url, url_b], "outlier": outlier}}))
    statuses = []
    for _ in range(12):
        async with client.get(f"{proxy.url}/x") as resp:
            statuses.append(resp.status)
    assert len(bad.seen) == 2  # ejected after its second failure
    assert statuses.count(200) == 10 and b["served"] == 10
