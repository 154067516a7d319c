"""Forwarding: what the app sends reaches the upstream, and what comes back reaches the app."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.proxy import config
from tests.support.upstream import Step


async def test_get_is_forwarded_with_path_query_and_body_intact(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(status=201, body=b"created", headers={"x-up": "1"}))
    async with client.post(f"{proxy.url}/a/b?x=1&y=%20", data=b"payload") as resp:
        assert resp.status == 201
        assert await resp.read() == b"created"
        assert resp.headers["x-up"] == "1"
    seen = upstream.seen[0]
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/a/b?x=1&y=%20", b"payload")
    assert proxy.metric("fender_requests_total", route="all", outcome="ok", code_class="2xx") == 1
    assert proxy.metric("fender_upstream_attempts_total", upstream="up", result="response") == 1


async def test_no_route_answers_404_json_without_calling_any_upstream(
    upstream, proxy_factory, client
):
    routes = [{"name": "api", "upstream": "up", "match": {"path_prefix": "/api/"}}]
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}, routes))
    async with client.get(f"{proxy.url}/other") as resp:
        assert resp.status == 404
        assert resp.headers["x-fender-reason"] == "no_route"
        assert (await resp.json())["error"] == "no_route"
    assert upstream.seen == []


async def test_rewrite_strips_and_adds_prefix(upstream, proxy_factory, client):
    routes = [
        {
            "name": "api",
            "upstream": "up",
            "match": {"path_prefix": "/openai/"},
            "rewrite": {"strip_prefix": "/openai", "prefix": "/v1"},
        }
    ]
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}, routes))
    async with client.get(f"{proxy.url}/openai/models?limit=2") as resp:
        assert resp.status == 200
    assert upstream.seen[0].path_qs == "/v1/models?limit=2"


async def test_first_matching_route_wins_by_method_host_and_header(
    upstream, aiohttp_server, proxy_factory, client
):
    from tests.support.upstream import ScriptedUpstream

    other = ScriptedUpstream()
    other.url = f"http://127.0.0.1:{(await aiohttp_server(other.app)).port}"
    routes = [
        {"name": "posts", "upstream": "b", "match": {"methods": ["POST"]}},
        {"name": "tenant", "upstream": "b", "match": {"headers": {"x-tenant": "blue"}}},
        {"name": "host", "upstream": "b", "match": {"host": "*.internal"}},
        {"name": "rest", "upstream": "a"},
    ]
    proxy = await proxy_factory(
        config({"a": {"endpoints": [upstream.url]}, "b": {"endpoints": [other.url]}}, routes)
    )
    await (await client.post(f"{proxy.url}/x")).release()
    await (await client.get(f"{proxy.url}/x", headers={"x-tenant": "blue"})).release()
    await (await client.get(f"{proxy.url}/x", headers={"host": "svc.internal"})).release()
    await (await client.get(f"{proxy.url}/x", headers={"x-tenant": "red"})).release()
    assert len(other.seen) == 3 and len(upstream.seen) == 1
    assert proxy.metric("fender_requests_total", route="tenant") == 1
    assert proxy.metric("fender_requests_total", route="host") == 1


async def test_endpoints_are_used_round_robin(aiohttp_server, proxy_factory, client):
    from tests.support.upstream import ScriptedUpstream

    ups = []
    for _ in range(2):
        u = ScriptedUpstream()
        u.url = f"http://127.0.0.1:{(await aiohttp_server(u.app)).port}"
        ups.append(u)
    proxy = await proxy_factory(config({"up": {"endpoints": [u.url for u in ups]}}))
    for _ in range(4):
        await (await client.get(f"{proxy.url}/")).release()
    assert [len(u.seen) for u in ups] == [2, 2]


async def test_redirect_is_relayed_not_followed(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(status=302, headers={"location": "http://example.invalid/elsewhere"}))
    async with client.get(f"{proxy.url}/r", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["location"] == "http://example.invalid/elsewhere"
    assert len(upstream.seen) == 1


async def test_cookies_are_not_kept_between_requests(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(headers={"set-cookie": "session=abc; Path=/"}))
    async with client.get(f"{proxy.url}/login") as resp:
        assert resp.headers["set-cookie"].startswith("session=abc")
    await (await client.get(f"{proxy.url}/next")).release()
    assert "cookie" not in upstream.seen[1].headers


async def test_compressed_body_is_relayed_untouched_and_no_client_headers_added(
    upstream, proxy_factory
):
    import gzip

    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    packed = gzip.compress(b"hello " * 100)
    upstream.push(Step(body=packed, headers={"content-encoding": "gzip"}))
    # A bare client: no User-Agent, Accept or Accept-Encoding of its own either.
    async with (
        aiohttp.ClientSession(
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
        ) as bare,
        bare.get(f"{proxy.url}/z") as resp,
    ):
        assert resp.headers["content-encoding"] == "gzip"
        assert await resp.read() == packed
    names = {k.lower() for k in upstream.seen[0].headers}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_head_204_and_304_stay_bodyless(upstream, proxy_factory, client):
    from tests.support.raw import exchange

    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(body=b"0123456789"), Step(status=204, body=b""), Step(status=304, body=b""))
    raw = await exchange(
        proxy.port,
        b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /n HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, no_content, not_modified = raw.split(b"HTTP/1.1 ")[1:]
    assert head.startswith(b"200") and head.endswith(b"\r\n\r\n")
    assert b"content-length: 10" in head.lower()
    assert no_content.startswith(b"204") and no_content.endswith(b"\r\n\r\n")
    assert not_modified.startswith(b"304") and not_modified.endswith(b"\r\n\r\n")


async def test_sse_events_reach_the_app_as_the_upstream_sends_them(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    gates = [asyncio.Event(), asyncio.Event()]
    upstream.push(
        Step(
            headers={"content-type": "text/event-stream"},
            chunks=[b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"],
            gates=gates,
        )
    )
    async with client.get(f"{proxy.url}/stream") as resp:
        # The upstream holds each next event until the app saw the previous one: the test
        # can only finish if every event is flushed on its own.
        for i, expected in enumerate([b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]):
            got = b""
            while len(got) < len(expected):
                got += await asyncio.wait_for(resp.content.readany(), 5)
            assert got == expected
            if i < len(gates):
                gates[i].set()


async def test_connect_refused_is_502_connect_error(proxy_factory, client, unused_tcp_port):
    proxy = await proxy_factory(
        config({"up": {"endpoints": [f"http://127.0.0.1:{unused_tcp_port}"]}})
    )
    async with client.get(f"{proxy.url}/") as resp:
        assert resp.status == 502
        assert resp.headers["x-fender-reason"] == "connect_error"
        assert resp.headers["content-type"] == "application/json"
        assert (await resp.json())["error"] == "connect_error"
    assert (
        proxy.metric("fender_upstream_attempts_total", upstream="up", result="connect_error") == 1
    )


async def test_reset_before_headers_is_502_reset(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(reset="before_headers"))
    async with client.post(f"{proxy.url}/", data=b"x") as resp:
        assert resp.status == 502
        assert resp.headers["x-fender-reason"] == "reset"


async def test_reset_after_headers_truncates_the_app_response(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    # Larger than what Fender reads whole before answering: it streams, then breaks.
    upstream.push(Step(body=b"x" * 100_000, reset="after_headers"))
    async with client.get(f"{proxy.url}/") as resp:
        assert resp.status == 200
        try:
            await resp.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a cut upstream body must not look complete to the app")
    lines = [line for line in proxy.log_lines() if line["event"] == "request"]
    assert (lines[-1]["outcome"], lines[-1]["reason"]) == ("failed", "reset")


async def test_several_listeners_each_with_their_own_routes(upstream, proxy_factory, client):
    data = config({"up": {"endpoints": [upstream.url]}})
    data["listeners"].append(
        {
            "name": "second",
            "address": "127.0.0.1:0",
            "routes": [{"name": "only-v2", "upstream": "up", "match": {"path_prefix": "/v2/"}}],
        }
    )
    proxy = await proxy_factory(data)
    second = f"http://127.0.0.1:{proxy.fender.ports['second']}"
    async with client.get(f"{second}/v1/x") as resp:
        assert resp.status == 404
    async with client.get(f"{second}/v2/x") as resp:
        assert resp.status == 200
    async with client.get(f"{proxy.url}/v1/x") as resp:
        assert resp.status == 200
    assert proxy.metric("fender_requests_total", route="only-v2") == 1
    assert proxy.metric("fender_requests_total", route="all") == 1


async def test_small_body_cut_after_the_head_is_a_truncation_never_a_clean_end(
    upstream, proxy_factory, client
):
    # The head is relayed as soon as it arrives (a body is never waited for inside the
    # attempt), so a body cut afterwards reaches the app as a cut: it cannot look whole.
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(body=b"x" * 1000, reset="after_headers"))
    async with client.get(f"{proxy.url}/") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["outcome"], line["reason"]) == ("failed", "reset")
