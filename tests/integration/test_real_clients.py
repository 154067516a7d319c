"""Fender between real third-party clients and servers, all on 127.0.0.1.

Our own test client and our own upstream can agree with each other on a mistake; these
peers were written by other people: the official `openai` SDK, `requests`, `httpx`, the
`curl` binary, the `websockets` package, and httpbin under gunicorn. The last part speaks
raw HTTP/1.1 at the edge (pipelining, framing, slow and stubborn clients, upstreams that
close), reading answers byte for byte (tests/support/wire.py).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests
import websockets
from aiohttp import web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from tests.support.fake_openai import WORDS, FakeOpenAI
from tests.support.gunicorn import Gunicorn
from tests.support.proxy import config
from tests.support.tools import _apt, run
from tests.support.wire import at_eof, read_answer
from tests.support.wsgi_upstream import pattern

MiB = 1 << 20
pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def httpbin() -> Iterator[Gunicorn]:
    server = Gunicorn()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def curl() -> str:
    """The curl binary (Debian's package, installed when missing)."""
    if shutil.which("curl") is None:
        _apt("install", "-y", "-qq", "--no-install-recommends", "curl")
    path = shutil.which("curl")
    assert path is not None
    return path


async def aiohttp_upstream(aiohttp_server: Any, routes: dict[str, Any]) -> str:
    app = web.Application(client_max_size=64 * MiB)
    for path, handler in routes.items():
        method, _, path = path.partition(" ")
        app.router.add_route(method, path, handler)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


def fender_config(url: str, *, policy: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    """One route to one upstream at `url`, with `policy` when given."""
    routes = [{"name": "all", "upstream": "up", **route}]
    top: dict[str, Any] = {}
    if policy is not None:
        routes[0]["policy"] = "p"
        top["policies"] = {"p": policy}
    listener = route.pop("listener", None)
    if listener is not None:
        routes[0].pop("listener", None)
        top["listener"] = listener
    return config({"up": {"endpoints": [url]}}, routes, **top)


async def sh(*args: str, stdin: bytes | None = None, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def raw_get(port: int, target: str, extra: bytes = b"") -> bytes:
    """The whole answer to one request on a fresh connection that asks to close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET %s HTTP/1.1\r\nHost: app.local\r\n%sConnection: close\r\n\r\n" % (target.encode(), extra)
        )
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


# httpbin under gunicorn: a real upstream.


async def test_httpbin_drip_slow_body_with_content_length_is_not_a_timeout(httpbin, proxy_factory, client):
    """/drip sends its head at once (with a Content-Length) and its body over 2 s: `per_try`
    ends at the response head, so a slow healthy body is relayed, not turned into 504."""
    policy = {"timeouts": {"per_try": "1s"}, "retry": {"attempts": 3, "backoff": {"base": "10ms"}}}
    proxy = await proxy_factory(fender_config(httpbin.url, policy=policy))
    async with client.get(f"{proxy.url}/drip?duration=2&numbytes=4&delay=0&code=200") as resp:
        body = await resp.read()
        assert resp.status == 200, body
        assert resp.headers["content-length"] == "4"
        assert resp.headers["x-fender-attempts"] == "1"
    assert body == b"****"


async def test_httpbin_stream_bytes_chunked_arrives_byte_for_byte(httpbin, proxy_factory, client):
    proxy = await proxy_factory(fender_config(httpbin.url))
    target = "/stream-bytes/100000?chunk_size=777&seed=42"
    async with client.get(httpbin.url + target) as direct:
        expected = await direct.read()
        assert direct.headers.get("transfer-encoding") == "chunked"
    async with client.get(proxy.url + target) as resp:
        assert resp.status == 200
        assert await resp.read() == expected
    assert len(expected) == 100_000


async def test_httpbin_gzip_is_relayed_compressed(httpbin, proxy_factory, client):
    proxy = await proxy_factory(fender_config(httpbin.url))
    headers = {"accept-encoding": "gzip"}
    async with client.get(f"{httpbin.url}/gzip", headers=headers) as direct:
        direct_length = direct.headers["content-length"]
    async with client.get(f"{proxy.url}/gzip", headers=headers) as resp:
        raw = await resp.read()
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.headers["content-length"] == direct_length == str(len(raw))
    assert json.loads(gzip.decompress(raw))["gzipped"] is True


async def test_httpbin_obs_text_header_passes_byte_for_byte(httpbin, proxy_factory):
    """httpbin sets the header from the query; gunicorn writes `é` as the Latin-1 byte
    0xE9 (obs-text, RFC 9110 section 5.5): Fender relays that byte, not a re-encoding."""
    proxy = await proxy_factory(fender_config(httpbin.url))
    direct = await raw_get(httpbin.port, "/response-headers?X-Latin=caf%C3%A9+%C3%BF")
    assert b"\r\nX-Latin: caf\xe9 \xff\r\n" in direct
    answer = await raw_get(proxy.port, "/response-headers?X-Latin=caf%C3%A9+%C3%BF")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nX-Latin: caf\xe9 \xff\r\n" in answer


async def test_httpbin_redirect_is_relayed_not_followed(httpbin, proxy_factory, client):
    proxy = await proxy_factory(fender_config(httpbin.url))
    async with client.get(f"{proxy.url}/redirect/3", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["location"] == "/relative-redirect/2"
        assert resp.headers["x-fender-attempts"] == "1"


async def test_httpbin_503_is_retried_then_relayed_as_failed(httpbin, proxy_factory, client):
    policy = {"retry": {"attempts": 3, "backoff": {"base": "10ms", "jitter": "none"}}}
    proxy = await proxy_factory(fender_config(httpbin.url, policy=policy))
    async with client.get(f"{proxy.url}/status/503") as resp:
        assert resp.status == 503
        assert resp.headers["x-fender-attempts"] == "3"
        assert resp.headers["x-fender-outcome"] == "failed"
        assert resp.headers["x-should-retry"] == "false"
    assert proxy.metric("fender_upstream_attempts_total", upstream="up", result="response") == 3


async def test_httpbin_delay_past_per_try_is_504_and_within_is_200(httpbin, proxy_factory, client):
    policy = {"timeouts": {"per_try": "500ms"}}
    proxy = await proxy_factory(fender_config(httpbin.url, policy=policy))
    async with client.get(f"{proxy.url}/delay/3") as resp:
        assert resp.status == 504
        assert resp.headers["x-fender-reason"] == "timeout"
    async with client.get(f"{proxy.url}/delay/0.1") as resp:
        assert resp.status == 200
        assert (await resp.json())["url"].endswith("/delay/0.1")


async def test_httpbin_headers_sees_no_hop_by_hop_and_the_endpoint_host(httpbin, proxy_factory):
    proxy = await proxy_factory(fender_config(httpbin.url))
    extra = (
        b"X-Keep: yes\r\nX-Dropped: listed\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTrailer: X-T\r\n"
        b"Connection: X-Dropped, keep-alive\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /headers HTTP/1.1\r\nHost: app.local\r\n" + extra + b"\r\n")
        answer = await read_answer(reader)
    finally:
        writer.close()
    assert answer.status == 200
    seen = {k.lower(): v for k, v in json.loads(answer.body)["headers"].items()}
    assert seen["host"] == f"127.0.0.1:{httpbin.port}"
    assert seen["x-keep"] == "yes"
    for name in ("x-dropped", "te", "keep-alive", "proxy-authorization", "trailer", "connection"):
        assert name not in seen, name


async def test_requests_downloads_several_mib_from_gunicorn(httpbin, proxy_factory):
    proxy = await proxy_factory(fender_config(httpbin.url))
    size = 12 * MiB + 123

    def download() -> tuple[int, str, str, int]:
        with requests.Session() as session:
            resp = session.get(f"{proxy.url}/big/{size}", stream=True, timeout=10)
            digest, total = hashlib.sha256(), 0
            for block in resp.iter_content(256 * 1024):
                digest.update(block)
                total += len(block)
            return resp.status_code, resp.headers["content-length"], digest.hexdigest(), total

    status, length, digest, total = await asyncio.to_thread(download)
    assert (status, length, total) == (200, str(size), size)
    assert digest == hashlib.sha256(pattern(size)).hexdigest()
