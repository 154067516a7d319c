"""Malformed and hostile requests: answered 400 (or dropped), never forwarded."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.proxy import config
from tests.support.raw import exchange, status_of


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="cl-and-te",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="two-lengths",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", id="bad-te"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", id="control-char-in-target"),
        pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n", id="header-too-long"
        ),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="line-too-long"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", id="asterisk-form"),
        pytest.param(b"GET /a/../../etc HTTP/1.1\r\nHost: x\r\n\r\n", id="dot-dot-above-root"),
        pytest.param(b"GET /a/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: x\r\n\r\n", id="encoded-dot-dot"),
    ],
)
async def test_malformed_request_gets_400_and_is_never_forwarded(
    upstream, proxy_factory, request_bytes
):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    response = await exchange(proxy.port, request_bytes)
    assert status_of(response) == 400
    assert b"x-fender-reason: bad_request" in response
    assert upstream.seen == []
    assert proxy.metric("fender_requests_total", outcome="rejected", code_class="4xx") == 1
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["status"], line["reason"]) == (400, "bad_request")


async def test_malformed_credential_is_not_echoed(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    response = await exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-live-9\x01\r\n\r\n"
    )
    assert status_of(response) == 400
    assert b"sk-live-9" not in response
    assert "sk-live-9" not in str(proxy.log_lines())


async def test_dot_segments_are_resolved_before_routing(upstream, proxy_factory):
    routes = [{"name": "api", "upstream": "up", "match": {"path_prefix": "/api/"}}]
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}, routes))
    blocked = await exchange(
        proxy.port, b"GET /api/../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(blocked) == 404
    allowed = await exchange(
        proxy.port, b"GET /api/./v1/../v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(allowed) == 200
    assert [s.path_qs for s in upstream.seen] == ["/api/v2"]


async def test_absolute_form_target_does_not_change_the_upstream(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    response = await exchange(
        proxy.port,
        b"GET http://169.254.169.254/latest/meta-data?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status_of(response) == 200
    seen = upstream.seen[0]
    assert seen.path_qs == "/latest/meta-data?x=1"
    assert seen.headers["host"] == upstream.url.removeprefix("http://")


async def test_slow_headers_are_dropped_after_header_timeout(upstream, proxy_factory):
    data = config(
        {"up": {"endpoints": [upstream.url]}}, listener={"limits": {"header_timeout": "200ms"}}
    )
    proxy = await proxy_factory(data)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by Fender
    assert loop.time() - started < 2  # the 75s keep-alive timeout did not do it
    writer.close()
    assert upstream.seen == []


async def test_keep_alive_connection_serves_several_requests(upstream, proxy_factory):
    proxy = await proxy_factory(
        config(
            {"up": {"endpoints": [upstream.url]}}, listener={"limits": {"header_timeout": "200ms"}}
        )
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for _ in range(2):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(2)  # "ok"
        await asyncio.sleep(0.3)  # idle past header_timeout between requests: still open
    writer.close()
    assert len(upstream.seen) == 2
