"""The fallback chain: failover upstream, then stale, then static; never after bytes."""

from __future__ import annotations

import aiohttp

from tests.support.proxy import config
from tests.support.upstream import ScriptedUpstream, Step


async def test_fallback_chain_failover_then_stale_then_static(
    upstream, aiohttp_server, proxy_factory, client, tmp_path
):
    backup = ScriptedUpstream()
    backup.url = f"http://127.0.0.1:{(await aiohttp_server(backup.app)).port}"
    static_file = tmp_path / "sorry.json"
    static_file.write_text('{"items": [], "degraded": true}')
    data = config(
        {
            "primary": {
                "endpoints": [upstream.url],
                "headers": {"set": {"x-api-key": "primary-key"}},
            },
            "backup": {"endpoints": [backup.url], "headers": {"set": {"x-api-key": "backup-key"}}},
        },
        [{"name": "items", "upstream": "primary", "policy": "p"}],
        policies={
            "p": {
                "fallback": {
                    "on": ["exhausted", "connect_error", "timeout"],
                    "chain": [
                        {"upstream": "backup"},
                        {"stale": {"max_age": "10m"}},
                        {
                            "static": {
                                "status": 200,
                                "headers": {"content-type": "application/json"},
                                "body_file": str(static_file),
                            }
                        },
                    ],
                }
            }
        },
    )
    proxy = await proxy_factory(data)

    async def get(path: str) -> tuple[int, dict, bytes]:
        async with client.get(f"{proxy.url}{path}", headers={"x-api-key": "app-key"}) as resp:
            return resp.status, resp.headers.copy(), await resp.read()

    # Healthy: the primary answers, and the answer is kept for later.
    upstream.default = Step(body=b"fresh", headers={"content-type": "text/plain"})
    status, headers, body = await get("/items?page=1")
    assert (status, body, headers["x-fender-outcome"]) == (200, b"fresh", "ok")
    # Primary down: the backup answers, with its own credential.
    upstream.default = Step(status=503)
    backup.default = Step(body=b"from-backup")
    status, headers, body = await get("/items?page=1")
    assert (status, body) == (200, b"from-backup")
    assert (
        headers["x-fender-outcome"],
        headers["x-fender-reason"],
        headers["x-fender-fallback"],
    ) == ("fallback", "exhausted", "upstream")
    assert backup.seen[-1].headers["x-api-key"] == "backup-key"
    # Both down: the last good answer to the same path and query, with its age.
    backup.default = Step(status=503)
    status, headers, body = await get("/items?page=1")
    assert (status, body, headers["x-fender-fallback"]) == (200, b"fresh", "stale")
    assert headers["content-type"] == "text/plain" and int(headers["Age"]) >= 0
    # Nothing stale for this query: the static answer.
    status, headers, body = await get("/items?page=2")
    assert (status, body, headers["x-fender-fallback"]) == (
        200,
        b'{"items": [], "degraded": true}',
        "static",
    )
    assert proxy.metric("fender_fallbacks_total", route="items", kind="upstream") == 1
    assert proxy.metric("fender_fallbacks_total", route="items", kind="stale") == 1
    assert proxy.metric("fender_fallbacks_total", route="items", kind="static") == 1


async def test_no_fallback_once_bytes_went_to_the_app(upstream, proxy_factory, client):
    data = config(
        {"up": {"endpoints": [upstream.url]}},
        [{"name": "s", "upstream": "up", "policy": "p"}],
        policies={
            "p": {
                "fallback": {
                    "on": ["exhausted"],
                    "chain": [{"static": {"status": 200, "body": "static"}}],
                }
            }
        },
    )
    proxy = await proxy_factory(data)
    upstream.push(Step(body=b"x" * 100_000, reset="after_headers"))  # streamed, then broken
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
        try:
            body = await resp.read()
        except aiohttp.ClientPayloadError:
            body = None
    assert body is None  # truncated, not replaced by the static answer
    assert proxy.metric("fender_fallbacks_total", route="s", kind="static") == 0


async def test_open_circuit_goes_to_the_fallback(upstream, proxy_factory, client):
    data = config(
        {
            "up": {
                "endpoints": [upstream.url],
                "circuit_breaker": {"consecutive_failures": 1, "open_for": "1m"},
            }
        },
        [{"name": "s", "upstream": "up", "policy": "p"}],
        policies={
            "p": {
                "fallback": {
                    "on": ["circuit_open"],
                    "chain": [{"static": {"status": 503, "body": "later"}}],
                }
            }
        },
    )
    proxy = await proxy_factory(data)
    upstream.default = Step(status=500)
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 500 and "x-fender-fallback" not in resp.headers  # 500 is not in `on`
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, await resp.text()) == (503, "later")
        assert (resp.headers["x-fender-reason"], resp.headers["x-fender-fallback"]) == (
            "circuit_open",
            "static",
        )
    assert len(upstream.seen) == 1


async def test_a_post_the_primary_may_have_acted_on_is_not_sent_to_the_backup(
    upstream, aiohttp_server, proxy_factory, client
):
    backup = ScriptedUpstream()
    backup.url = f"http://127.0.0.1:{(await aiohttp_server(backup.app)).port}"
    data = config(
        {"primary": {"endpoints": [upstream.url]}, "backup": {"endpoints": [backup.url]}},
        [{"name": "pay", "upstream": "primary", "policy": "p"}],
        policies={"p": {"fallback": {"on": ["exhausted"], "chain": [{"upstream": "backup"}]}}},
    )
    proxy = await proxy_factory(data)
    upstream.default = Step(status=503, body=b"primary says no")
    async with client.post(f"{proxy.url}/charge", data=b"5 EUR") as resp:
        assert (resp.status, await resp.read()) == (503, b"primary says no")
    assert backup.seen == []
    async with client.post(
        f"{proxy.url}/charge", data=b"5 EUR", headers={"idempotency-key": "k9"}
    ) as resp:
        assert resp.headers["x-fender-fallback"] == "upstream"
    assert [s.body for s in backup.seen] == [b"5 EUR"]


def stale_route(upstream_url: str, **policy) -> dict:
    return config(
        {"up": {"endpoints": [upstream_url]}},
        [{"name": "s", "upstream": "up", "policy": "p"}],
        policies={
            "p": {
                "fallback": {"on": ["exhausted"], "chain": [{"stale": {"max_age": "10m"}}]},
                **policy,
            }
        },
    )


async def test_the_stale_answer_to_one_api_key_never_goes_to_another(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(stale_route(upstream.url))

    async def get(**headers: str) -> tuple[int, bytes, str | None]:
        async with client.get(f"{proxy.url}/account", headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers.get("x-fender-fallback")

    upstream.default = Step(body=b"alice's balance")
    assert (await get(**{"x-api-key": "alice-key"}))[:2] == (200, b"alice's balance")
    upstream.default = Step(status=503, body=b"down")
    assert await get(**{"x-api-key": "bob-key"}) == (503, b"down", None)  # not alice's
    assert await get() == (503, b"down", None)
    assert await get(**{"x-api-key": "alice-key"}) == (200, b"alice's balance", "stale")


async def test_the_stale_answer_follows_vary_and_the_rate_limit_key(
    upstream, proxy_factory, client
):
    limit = {"rate": "100/s", "key": "header:x-tenant-id"}
    proxy = await proxy_factory(stale_route(upstream.url, rate_limit=limit))

    async def get(**headers: str) -> tuple[int, bytes]:
        async with client.get(f"{proxy.url}/page", headers=headers) as resp:
            return resp.status, await resp.read()

    upstream.default = Step(body=b"blue, en", headers={"vary": "Accept-Language"})
    blue_en = {"x-tenant-id": "blue", "accept-language": "en"}
    assert await get(**blue_en) == (200, b"blue, en")
    upstream.default = Step(status=503, body=b"down")
    assert await get(**{"x-tenant-id": "green", "accept-language": "en"}) == (503, b"down")
    assert await get(**{"x-tenant-id": "blue", "accept-language": "fr"}) == (503, b"down")
    assert await get(**blue_en) == (200, b"blue, en")
