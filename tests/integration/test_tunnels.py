"""Upgrade tunnels: a real WebSocket client (`websockets`) through Fender to a real
WebSocket server (aiohttp's), and what the guards do to the handshake."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
import websockets
from aiohttp import WSMsgType, web

from proxy.config.faults import FaultSpec
from tests.support.proxy import config
from tests.support.raw import exchange, status_of


class EchoServer:
    """A WebSocket upstream: echoes text, closes on "close", drops the TCP connection on
    "reset", and says nothing on "quiet"."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)
        self.handshakes = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("upgrade", "").lower() != "websocket":
            return web.Response(status=426, text="websocket only")
        self.handshakes += 1
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if msg.data == "close":
                await ws.close(code=4000, message=b"asked to")
            elif msg.data == "reset":  # a real reset: RST, not FIN
                assert request.transport is not None
                sock = request.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                request.transport.abort()
            elif msg.data != "quiet":
                await ws.send_str(msg.data)
        return ws


@pytest.fixture
async def ws_upstream(aiohttp_server: Any) -> EchoServer:
    server = EchoServer()
    running = await aiohttp_server(server.app)
    server.url = f"http://127.0.0.1:{running.port}"
    return server


def tunnel(upstream_url: str, **top: Any) -> dict[str, Any]:
    upstream: dict[str, Any] = {"endpoints": [upstream_url]}
    upstream.update(top.pop("upstream", {}))
    routes = [
        {"name": "ws", "upstream": "up", "upgrade": ["websocket"], "policy": "p"},
        {"name": "plain", "upstream": "up", "match": {"path_prefix": "/plain"}},
    ]
    routes.reverse()
    return config(
        {"up": upstream},
        routes,
        policies={"p": {"timeouts": top.pop("timeouts", {"idle": "5s"})}},
        **top,
    )


async def test_messages_go_both_ways_and_are_counted(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    url = f"ws://127.0.0.1:{proxy.port}/chat"
    async with websockets.connect(url, compression=None) as ws:
        for text in ("hello", "x" * 100_000, "again"):
            await ws.send(text)
            assert await ws.recv() == text
        assert proxy.metric("fender_tunnels_open", route="ws") == 1
    await _until(lambda: proxy.metric("fender_tunnels_open", route="ws") == 0)
    assert proxy.metric("fender_tunnel_bytes_total", route="ws", direction="upstream") > 100_000
    assert proxy.metric("fender_tunnel_bytes_total", route="ws", direction="downstream") > 100_000
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["route"], line["status"], line["outcome"]) == ("ws", 101, "ok")


async def test_a_server_close_reaches_the_client_with_its_code(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat") as ws:
        await ws.send("close")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_an_upstream_reset_mid_tunnel_cuts_the_client(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat") as ws:
        await ws.send("reset")
        with pytest.raises(websockets.ConnectionClosedError):
            await ws.recv()
    await _until(lambda: proxy.metric("fender_tunnels_open", route="ws") == 0)
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["outcome"], line["reason"]) == ("failed", "reset")


async def test_a_silent_tunnel_is_cut_after_idle(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url, timeouts={"idle": "300ms"}))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat", ping_interval=None) as ws:
        await ws.send("quiet")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["outcome"], line["reason"]) == ("failed", "timeout")


async def test_a_drain_gives_tunnels_the_drain_timeout_then_closes_them(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url, drain={"delay": "0s", "timeout": "300ms"}))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat") as ws:
        draining = asyncio.ensure_future(proxy.fender.drain())
        await asyncio.sleep(0.1)  # within the drain timeout the tunnel still carries
        await ws.send("still here")
        assert await ws.recv() == "still here"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(draining, 5)


async def test_an_open_circuit_refuses_the_handshake_without_calling(ws_upstream, proxy_factory):
    breaker = {"circuit_breaker": {"consecutive_failures": 1, "open_for": "1m"}}
    proxy = await proxy_factory(tunnel(ws_upstream.url, upstream=breaker))
    proxy.fender.breaker("up").force("open", 60)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat"):
            pass
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["x-fender-reason"] == "circuit_open"
    assert response.headers["x-should-retry"] == "false"
    assert ws_upstream.handshakes == 0


async def test_a_client_close_ends_the_tunnel_as_ok(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat") as ws:
        await ws.send("bye")
        assert await ws.recv() == "bye"
    await _until(lambda: proxy.metric("fender_tunnels_open", route="ws") == 0)
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["status"], line["outcome"]) == (101, "ok")


async def test_a_tunnel_holds_its_bulkhead_slot_for_its_life(ws_upstream, proxy_factory):
    proxy = await proxy_factory(
        tunnel(ws_upstream.url, upstream={"bulkhead": {"max_concurrent": 1}})
    )
    url = f"ws://127.0.0.1:{proxy.port}/chat"
    async with websockets.connect(url) as first:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.headers["x-fender-reason"] == "bulkhead_full"
        await first.send("still mine")
        assert await first.recv() == "still mine"
    await _until(lambda: proxy.metric("fender_tunnels_open", route="ws") == 0)
    async with websockets.connect(url) as second:  # the slot came back with the close
        await second.send("now")
        assert await second.recv() == "now"


async def test_a_handshake_is_retried_only_after_connect_error(ws_upstream, proxy_factory):
    data = tunnel(ws_upstream.url)
    data["policies"]["p"]["retry"] = {"attempts": 3, "on": ["503", "connect_error"]}
    proxy = await proxy_factory(data)
    proxy.fender.faults.add(FaultSpec(route="ws", abort=503), 60)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/chat"):
            pass
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["x-fender-attempts"] == "1"


async def test_a_refused_handshake_is_relayed_as_an_answer(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    answer = await exchange(
        proxy.port,
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) == 426 and answer.endswith(b"websocket only")


async def test_upgrade_on_a_route_that_does_not_allow_it_is_501(ws_upstream, proxy_factory):
    proxy = await proxy_factory(tunnel(ws_upstream.url))
    answer = await exchange(
        proxy.port,
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert status_of(answer) == 501
    assert b"x-fender-reason: upgrade_unsupported" in answer
    assert ws_upstream.handshakes == 0


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")
