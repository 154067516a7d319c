"""Fault injection: faults act where real ones would, so the policies meet them."""

from __future__ import annotations

import asyncio

from tests.support.proxy import config


def faulty(upstream_url: str, **top) -> dict:
    return config(
        {"up": {"endpoints": [upstream_url], "circuit_breaker": {"consecutive_failures": 3}}},
        [{"name": "r", "upstream": "up", "policy": "p"}],
        policies={
            "p": {
                "timeouts": {"per_try": "150ms"},
                "retry": {"attempts": 3, "backoff": {"base": "10ms"}},
            }
        },
        **top,
    )


async def test_an_injected_abort_is_retried_and_trips_the_breaker_then_expires(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(faulty(upstream.url))
    async with client.post(
        f"{proxy.control_url}/faults", json={"route": "r", "abort": 503}
    ) as resp:
        assert resp.status == 400  # a fault without a ttl is refused
    async with client.post(
        f"{proxy.control_url}/faults", json={"route": "r", "abort": 503, "ttl": "400ms"}
    ) as resp:
        assert resp.status == 201
        fault_id = (await resp.json())["id"]
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 503 and resp.headers["x-fender-attempts"] == "3"  # retried
    assert upstream.seen == []  # the upstream was never bothered
    assert proxy.metric("fender_circuit_state", upstream="up") == 2  # three failures: open
    async with client.get(f"{proxy.control_url}/status") as resp:
        assert [f["id"] for f in (await resp.json())["faults"]] == [fault_id]
    await asyncio.sleep(0.45)  # the fault's ttl passes
    async with client.get(f"{proxy.control_url}/status") as resp:
        assert (await resp.json())["faults"] == []


async def test_faults_declared_in_the_file_and_removed_through_the_api(
    upstream, proxy_factory, client
):
    data = faulty(upstream.url, faults=[{"upstream": "up", "delay": "400ms"}])
    del data["upstreams"]["up"]["circuit_breaker"]  # three timeouts would open it
    proxy = await proxy_factory(data)
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, resp.headers["x-fender-reason"]) == (504, "timeout")  # per_try cut it
    async with client.get(f"{proxy.control_url}/status") as resp:
        (declared,) = (await resp.json())["faults"]
    assert declared["expires_in_s"] is None
    async with client.delete(f"{proxy.control_url}/faults/{declared['id']}") as resp:
        assert resp.status == 200
    async with client.delete(f"{proxy.control_url}/faults/{declared['id']}") as resp:
        assert resp.status == 404
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200


async def test_an_injected_reset_and_a_partial_percentage(upstream, proxy_factory, client):
    data = faulty(upstream.url)
    del data["upstreams"]["up"]["circuit_breaker"]
    del data["policies"]["p"]["retry"]
    proxy = await proxy_factory(data)
    proxy.fender.faults.rng.seed(3)
    async with client.post(
        f"{proxy.control_url}/faults",
        json={"upstream": "up", "reset": True, "percentage": "50%", "ttl": "1m"},
    ) as resp:
        assert resp.status == 201
    reasons = []
    for _ in range(40):
        async with client.get(f"{proxy.url}/x") as resp:
            reasons.append(resp.headers.get("x-fender-reason", "ok"))
    assert set(reasons) == {"ok", "reset"}
    assert 10 <= reasons.count("reset") <= 30
    assert len(upstream.seen) == reasons.count("ok")


async def test_bad_faults_are_refused_with_the_reason(upstream, proxy_factory, client):
    proxy = await proxy_factory(faulty(upstream.url))
    for body, word in (
        ({"route": "r", "ttl": "1m"}, "delay"),
        ({"abort": 503, "ttl": "1m"}, "route"),
    ):
        async with client.post(f"{proxy.control_url}/faults", json=body) as resp:
            assert resp.status == 400
            assert word in (await resp.json())["detail"]
