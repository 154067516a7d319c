"""Timeouts and streams: only `idle` and `total` ever cut a healthy stream."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.proxy import config
from tests.support.upstream import Step


def timed(upstream_url: str, **timeouts) -> dict:
    return config(
        {"up": {"endpoints": [upstream_url]}},
        [{"name": "s", "upstream": "up", "policy": "p"}],
        policies={
            "p": {"timeouts": timeouts, "retry": {"attempts": 3, "backoff": {"base": "10ms"}}}
        },
    )


async def read_events(resp: aiohttp.ClientResponse) -> list[bytes]:
    data = b""
    async for chunk in resp.content.iter_any():
        data += chunk
    return [e for e in data.split(b"\n\n") if e]


async def test_silence_past_idle_aborts_the_app_connection_without_retry(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(timed(upstream.url, idle="300ms"))
    never = asyncio.Event()
    upstream.push(
        Step(
            headers={"content-type": "text/event-stream"},
            chunks=[b"data: 1\n\n", b"data: 2\n\n"],
            gates=[never],
        )
    )
    loop = asyncio.get_running_loop()
    async with client.get(f"{proxy.url}/stream") as resp:
        assert resp.status == 200
        assert await resp.content.readany() == b"data: 1\n\n"
        started = loop.time()
        try:
            await asyncio.wait_for(resp.content.read(), 5)
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a stalled stream must be cut, not ended cleanly")
        assert 0.2 <= loop.time() - started <= 1.0
    assert len(upstream.seen) == 1
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["outcome"], line["reason"]) == ("failed", "timeout")


async def test_a_ten_second_stream_is_never_cut_by_per_try_or_first_byte(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(
        timed(upstream.url, per_try="1s", first_byte="1s", idle="2s", total="30s")
    )
    events = [b"data: %d\n\n" % i for i in range(20)]
    upstream.push(Step(headers={"content-type": "text/event-stream"}, chunks=events, interval=0.5))
    async with client.get(f"{proxy.url}/stream") as resp:
        assert resp.status == 200
        assert await read_events(resp) == [e.rstrip(b"\n") for e in events]
    assert proxy.metric("fender_requests_total", route="s", outcome="ok", code_class="2xx") == 1


async def test_total_cuts_a_stream_that_runs_too_long(upstream, proxy_factory, client):
    proxy = await proxy_factory(timed(upstream.url, total="600ms", idle="1s"))
    events = [b"data: %d\n\n" % i for i in range(20)]
    upstream.push(Step(headers={"content-type": "text/event-stream"}, chunks=events, interval=0.1))
    async with client.get(f"{proxy.url}/stream") as resp:
        got = b""
        try:
            async for chunk in resp.content.iter_any():
                got += chunk
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("the stream must be cut at the total deadline")
    assert 2 <= got.count(b"\n\n") <= 8


async def test_first_byte_bounds_attempts_and_backoffs_together(upstream, proxy_factory, client):
    proxy = await proxy_factory(timed(upstream.url, first_byte="500ms", total="10s"))
    upstream.default = Step(delay=0.3, status=503)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(f"{proxy.url}/x") as resp:
        # two 503s fit in 500ms, the third attempt would not: its start is cut at 500ms
        assert resp.status in (503, 504)
    assert loop.time() - started <= 0.8
    assert len(upstream.seen) == 2


async def test_connect_timeout_counts_as_connect_error(proxy_factory, client):
    # A listening socket that never accepts: its backlog fills, then connects hang.
    import contextlib
    import socket

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        proxy = await proxy_factory(
            config(
                {"up": {"endpoints": [f"http://127.0.0.1:{port}"]}},
                [{"name": "c", "upstream": "up", "policy": "p"}],
                policies={"p": {"timeouts": {"connect": "200ms", "total": "3s"}}},
            )
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 502
            assert resp.headers["x-fender-reason"] == "connect_error"
        assert loop.time() - started < 1.5  # the 200ms connect limit, not the 3s total
    finally:
        for s in fillers:
            s.close()
        blackhole.close()
