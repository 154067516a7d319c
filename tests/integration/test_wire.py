"""The data plane's wire against what review and a conformance suite found (issue 10, the
points that live in the wire): streaming of small answers, the keep-alive race, obs-text,
stalled bodies, apps that stop reading, the edge's refusals and Fender's own answers."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import pytest

from tests.support.proxy import config
from tests.support.raw import exchange, status_of
from tests.support.upstream import Step

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_upstream(serve: Serve) -> tuple[asyncio.Server, str]:
    """An upstream that speaks bytes a test writes itself (each connection closed after)."""

    async def serve_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve_and_close, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_a_slow_small_body_is_streamed_not_cut_by_per_try(upstream, proxy_factory, client):
    # httpbin's /drip: 5 bytes over 1.6 s, with a Content-Length. The head came in time;
    # per_try and first_byte end there, so the body streams on at its own pace.
    proxy = await proxy_factory(
        config(
            {"up": {"endpoints": [upstream.url]}},
            [{"name": "r", "upstream": "up", "policy": "p"}],
            policies={"p": {"timeouts": {"per_try": "1s", "first_byte": "1s"}}},
        )
    )
    upstream.push(Step(chunks=[b"*"] * 5, interval=0.4, framed=True))
    async with client.get(f"{proxy.url}/drip") as resp:
        assert resp.status == 200 and resp.headers["content-length"] == "5"
        assert await resp.read() == b"*****"
    assert len(upstream.seen) == 1


async def test_a_reused_connection_the_upstream_closed_is_replayed_once(proxy_factory, client):
    # The keep-alive race: the upstream closes an idle connection as Fender sends on it.
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                head = await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(head.split(b"\r\n", 1)[0])
            if first or len(seen) > 2:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                first = False
            else:  # as if it had closed the idle connection a moment before
                writer.transport.abort()
                return

    server, url = await raw_upstream(serve)
    breaker = {"consecutive_failures": 1, "open_for": "1m"}
    proxy = await proxy_factory(config({"up": {"endpoints": [url], "circuit_breaker": breaker}}))
    async with server:
        for _ in range(2):
            async with client.get(f"{proxy.url}/x") as resp:
                assert (resp.status, await resp.read()) == (200, b"ok")
        assert resp.headers["x-fender-attempts"] == "2"
    assert len(seen) == 3
    assert proxy.metric("fender_upstream_attempts_total", result="stale_connection") == 1
    assert proxy.fender.breaker("up").state == "closed"  # the race is not the upstream's fault


async def test_a_post_with_a_body_is_not_replayed_after_the_race(proxy_factory, client):
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        heads.append(head)
        await reader.readexactly(4)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        head = await read_head(reader)
        heads.append(head)
        writer.transport.abort()

    server, url = await raw_upstream(serve)
    proxy = await proxy_factory(config({"up": {"endpoints": [url]}}))
    async with server:
        async with client.post(f"{proxy.url}/x", data=b"body") as resp:
            assert resp.status == 200
        async with client.post(f"{proxy.url}/x", data=b"body") as resp:
            assert resp.status == 502 and resp.headers["x-fender-reason"] == "reset"
    assert len(heads) == 2  # sent once, not again: the upstream may have acted on it


async def test_latin1_header_bytes_pass_byte_for_byte(proxy_factory):
    value = b'attachment; filename="r\xe9sum\xe9.pdf"'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Disposition: " + value + b"\r\ncontent-length: 0\r\n\r\n"
        )
        await writer.drain()

    server, url = await raw_upstream(serve)
    proxy = await proxy_factory(config({"up": {"endpoints": [url]}}))
    async with server:
        answer = await exchange(
            proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert b"\r\nContent-Disposition: " + value + b"\r\n" in answer


async def test_a_stalled_request_body_is_408_within_body_timeout(proxy_factory):
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        await reader.read()  # until Fender gives the attempt up

    server, url = await raw_upstream(serve)
    proxy = await proxy_factory(
        config({"up": {"endpoints": [url]}}, listener={"limits": {"body_timeout": "300ms"}})
    )
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert status_of(answer) == 408 and b"x-fender-reason: body_timeout" in answer
    assert len(heads) == 1


async def test_a_pool_held_by_slow_requests_waits_only_the_connect_timeout(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(
        config(
            {"up": {"endpoints": [upstream.url], "pool": {"max_connections": 1}}},
            [{"name": "r", "upstream": "up", "policy": "p"}],
            policies={"p": {"timeouts": {"connect": "200ms"}}},
        )
    )
    upstream.push(Step(delay=3.0))
    slow = asyncio.ensure_future(client.get(f"{proxy.url}/slow"))
    await asyncio.wait_for(upstream.arrived.wait(), 5)
    async with client.get(f"{proxy.url}/next") as resp:
        assert resp.status == 502 and resp.headers["x-fender-reason"] == "connect_error"
    slow.cancel()


async def test_an_app_that_stops_reading_is_cut_at_total(upstream, proxy_factory):
    # A large answer the app never reads: `total` still ends it, and the bulkhead slot
    # comes back (the write to the app is under the timeout too).
    proxy = await proxy_factory(
        config(
            {"up": {"endpoints": [upstream.url], "bulkhead": {"max_concurrent": 1}}},
            [{"name": "r", "upstream": "up", "policy": "p"}],
            policies={"p": {"timeouts": {"total": "500ms", "idle": "10s"}}},
        )
    )
    upstream.push(Step(chunks=[b"x" * 65536] * 400, framed=True), Step(body=b"after"))
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with aiohttp.ClientSession() as other:
        for _ in range(100):
            async with other.get(f"{proxy.url}/after") as resp:
                if resp.status == 200:
                    assert await resp.read() == b"after"
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the slot never came back")
    writer.close()
    lines = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert lines[-1]["status"] == 200 and any(x["reason"] == "timeout" for x in lines)


async def test_an_app_gone_mid_stream_is_cancelled_client_closed(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    gate = asyncio.Event()
    upstream.push(Step(chunks=[b"first", b"never"], gates=[gate]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"first")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    for _ in range(100):
        lines = [x for x in proxy.log_lines() if x["event"] == "request"]
        if lines:
            break
        await asyncio.sleep(0.02)
    gate.set()
    assert (lines[0]["outcome"], lines[0]["reason"]) == ("cancelled", "client_closed")
    assert proxy.metric("fender_requests_total", outcome="cancelled") == 1


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n", id="host-userinfo"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.com/path\r\n\r\n", id="host-path"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", id="host-empty"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.com, b.com\r\n\r\n", id="host-list"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="host-twice"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="host-missing"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 3\r\n\r\nabc",
            id="empty-te-and-cl",
        ),
        pytest.param(b"GET /public/..%2Fadmin HTTP/1.1\r\nHost: x\r\n\r\n", id="encoded-slash"),
        pytest.param(b"GET /public/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n", id="dot-dot-params"),
        pytest.param(b"GET /public/%2e%2e%2fadmin HTTP/1.1\r\nHost: x\r\n\r\n", id="all-encoded"),
        pytest.param(b"GET /a/..%5Cb HTTP/1.1\r\nHost: x\r\n\r\n", id="encoded-backslash"),
    ],
)
async def test_the_edge_refuses_without_forwarding(upstream, proxy_factory, head):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(proxy.port, head)
    assert status_of(answer) == 400, answer[:200]
    assert b"x-fender-outcome: rejected" in answer
    assert upstream.seen == []


async def test_an_encoded_slash_elsewhere_is_forwarded_unchanged(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(
        proxy.port, b"GET /branches/feature%2Fx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 200
    assert upstream.seen[0].path_qs == "/branches/feature%2Fx"


async def test_framing_headers_reach_upstreams_only_as_fender_framed_them(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(
        proxy.port,
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\nContent_Length: 1\r\n"
        b"Transfer_Encoding: chunked\r\nConnection: close\r\n\r\nhello",
    )
    assert status_of(answer) == 200
    (seen,) = upstream.seen
    names = [name.lower() for name, _ in seen.raw_headers]
    assert (b"content-length", b"5") in [(n.lower(), v) for n, v in seen.raw_headers]
    assert b"content_length" not in names and b"transfer_encoding" not in names
    assert seen.body == b"hello"


async def test_options_star_is_answered_by_fender(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(
        proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 200 and b"\r\nallow: " in answer
    assert upstream.seen == []


async def test_http_1_2_is_read_as_1_1(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(proxy.port, b"GET /v HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and len(upstream.seen) == 1


async def test_an_http2_preface_gets_a_readable_http1_answer(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(proxy.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 ") and b"x-fender-outcome: rejected" in answer
    assert upstream.seen == []


async def test_an_unparsable_request_is_rejected_with_a_request_id(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: secret-9\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 400 and b"x-fender-outcome: rejected" in head
    assert orjson.loads(body)["request_id"]
    assert b"secret-9" not in answer


@pytest.mark.parametrize(
    ("setup", "should_retry"),
    [
        pytest.param("retried", b"false", id="after-fenders-retries"),
        pytest.param("fallback", b"false", id="fallback"),
        pytest.param("open", b"false", id="circuit-open"),
        pytest.param("local-429", None, id="local-rate-limit"),
        pytest.param("plain-503", None, id="no-retry-policy"),
    ],
)
async def test_x_should_retry_stops_sdk_retries_on_top_of_fenders(
    upstream, proxy_factory, setup, should_retry
):
    policy: dict[str, object] = {}
    upstreams: dict[str, object] = {"endpoints": [upstream.url]}
    if setup == "retried":
        policy = {"retry": {"attempts": 2, "backoff": {"base": "1ms"}}}
    elif setup == "fallback":
        policy = {"fallback": {"on": ["exhausted"], "chain": [{"static": {"status": 503}}]}}
    elif setup == "open":
        upstreams["circuit_breaker"] = {"consecutive_failures": 1}
    elif setup == "local-429":
        policy = {"rate_limit": {"rate": "1/m", "burst": 1}}
    routes = [{"name": "r", "upstream": "up", "policy": "p"}]
    proxy = await proxy_factory(config({"up": upstreams}, routes, policies={"p": policy}))
    upstream.default = Step(status=503)
    if setup == "open":
        proxy.fender.breaker("up").force("open", 60)
    if setup == "local-429":
        await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0]
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert headers.get(b"x-should-retry") == should_retry
    if setup == "local-429":
        assert status_of(answer) == 429 and b"retry-after" in headers


async def test_an_app_gone_before_the_answer_cancels_the_upstream_attempt(proxy_factory):
    upstream_saw_close = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await reader.read()  # no answer, ever: returns when Fender closes the connection
        upstream_saw_close.set()

    server, url = await raw_upstream(serve)
    proxy = await proxy_factory(config({"up": {"endpoints": [url]}}))
    async with server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        for _ in range(100):
            if proxy.fender.upstreams["up"].in_use:
                break
            await asyncio.sleep(0.02)
        writer.transport.abort()
        await asyncio.wait_for(upstream_saw_close.wait(), 5)
    assert proxy.fender.upstreams["up"].in_use == 0
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["outcome"], line["reason"]) == ("cancelled", "client_closed")


async def test_an_endpoints_path_never_shows_in_metrics_or_errors(proxy_factory, client):
    # Webhook URLs carry their credential in the path.
    secret = "/services/T0/B0/XOXB-SECRET"
    proxy = await proxy_factory(config({"hook": {"endpoints": [f"http://127.0.0.1:9{secret}"]}}))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 502
        assert "SECRET" not in await resp.text()
    assert "SECRET" not in proxy.fender.metrics.render().decode()
    assert "SECRET" not in str(proxy.log_lines())


async def test_a_malformed_request_behind_one_in_flight_never_takes_its_answer(
    upstream, proxy_factory
):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(delay=0.3, body=b"slow one"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(upstream.arrived.wait(), 5)
    writer.write(b"BR0KEN\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)  # then Fender closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"slow one")
    assert answer.count(b"HTTP/1.1 ") == 1


async def test_a_target_llhttp_takes_but_no_url_parser_can_read_is_a_400(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    answer = await exchange(proxy.port, b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 400 and upstream.seen == []
