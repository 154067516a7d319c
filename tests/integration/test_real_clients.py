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
from tests.support.proxy import config, wait_for
from tests.support.raw import RawUpstream
from tests.support.tools import _apt
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


def fender_config(
    url: str,
    *,
    policy: dict[str, Any] | None = None,
    listener: dict[str, Any] | None = None,
    **route: Any,
) -> dict[str, Any]:
    """One route to one upstream at `url`, with `policy` and listener settings when given."""
    routes = [{"name": "all", "upstream": "up", **route}]
    top: dict[str, Any] = {}
    if policy is not None:
        routes[0]["policy"] = "p"
        top["policies"] = {"p": policy}
    if listener is not None:
        top["listener"] = listener
    return config({"up": {"endpoints": [url]}}, routes, **top)


async def sh(
    *args: str, stdin: bytes | None = None, timeout: float = 20.0
) -> tuple[int, bytes, bytes]:
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
            b"GET %s HTTP/1.1\r\nHost: app.local\r\n%sConnection: close\r\n\r\n"
            % (target.encode(), extra)
        )
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


# httpbin under gunicorn: a real upstream.


async def test_httpbin_drip_slow_body_with_content_length_is_not_a_timeout(
    httpbin, proxy_factory, client
):
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


async def test_httpbin_set_cookie_lines_range_and_etag_304(httpbin, proxy_factory):
    """Two Set-Cookie fields stay two lines (RFC 9110 section 5.3 forbids joining them);
    a Range request gets gunicorn's 206; a matching If-None-Match gets a bodyless 304 and
    the connection serves the next request."""
    proxy = await proxy_factory(fender_config(httpbin.url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(b"GET /cookies/set?a=1&b=2 HTTP/1.1\r\nHost: a\r\n\r\n")
        cookies = await read_answer(reader)
        writer.write(b"GET /range/1000 HTTP/1.1\r\nHost: a\r\nRange: bytes=10-19\r\n\r\n")
        ranged = await read_answer(reader)
        writer.write(b'GET /etag/v1 HTTP/1.1\r\nHost: a\r\nIf-None-Match: "v1"\r\n\r\n')
        not_modified = await read_answer(reader)
        writer.write(b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n")
        after = await read_answer(reader)
    finally:
        writer.close()
    assert cookies.status == 302
    assert sorted(v.split(b";")[0] for v in cookies.getall("set-cookie")) == [b"a=1", b"b=2"]
    assert (ranged.status, ranged.get("content-range"), ranged.body) == (
        206,
        b"bytes 10-19/1000",
        b"klmnopqrst",
    )
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert not_modified.get("etag") == b"v1"  # httpbin sends it unquoted
    assert after.status == 200 and json.loads(after.body)["url"].endswith("/get")


async def test_requests_chunked_upload_to_gunicorn(httpbin, proxy_factory):
    proxy = await proxy_factory(fender_config(httpbin.url))

    def upload() -> dict[str, Any]:
        with requests.Session() as session:
            parts = (b"part %d;" % i for i in range(500))
            resp = session.post(f"{proxy.url}/anything", data=parts, timeout=10)
            resp.raise_for_status()
            return resp.json()  # type: ignore[no-any-return]

    got = await asyncio.to_thread(upload)
    assert got["data"] == "".join(f"part {i};" for i in range(500))
    assert got["headers"].get("Transfer-Encoding") == "chunked"


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


# The official openai SDK against an OpenAI-compatible upstream.


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> FakeOpenAI:
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app)
    fake.url = f"http://127.0.0.1:{server.port}"
    return fake


def sdk(proxy: Any, *, max_retries: int = 2) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"{proxy.url}/v1", max_retries=max_retries, timeout=10
    )


MESSAGES = [{"role": "user", "content": "say hello"}]
LLM_RETRY = {
    "retry": {
        "attempts": 3,
        "backoff": {"base": "10ms"},
        "idempotency_header": "x-stainless-retry-count",
    }
}


async def test_openai_sdk_streams_a_chat_completion_chunk_by_chunk(fake_openai, proxy_factory):
    """Each SSE event reaches the SDK while the upstream still holds the next one back."""
    proxy = await proxy_factory(fender_config(fake_openai.url))
    async with sdk(proxy) as api:
        stream = await api.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        words = []
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                words.append(event.choices[0].delta.content)
                fake_openai.release()  # the next chunk leaves only once this one arrived
            finish = event.choices[0].finish_reason if event.choices else None
    assert words == WORDS
    assert finish == "stop"
    assert fake_openai.calls[0]["json"]["stream"] is True


async def test_openai_sdk_plain_completion_and_its_headers(fake_openai, proxy_factory):
    proxy = await proxy_factory(fender_config(fake_openai.url))
    async with sdk(proxy) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        completion = raw.parse()
    assert completion.choices[0].message.content == "".join(WORDS)
    assert completion.usage is not None and completion.usage.total_tokens == 8
    assert raw.headers["x-fender-outcome"] == "ok"
    assert fake_openai.calls[0]["headers"]["Authorization"] == "Bearer sk-test"


async def test_openai_429_retried_by_fender_as_retry_after_ms_asks(fake_openai, proxy_factory):
    fake_openai.plan = [("429", {"retry-after-ms": "30"}), "ok"]
    proxy = await proxy_factory(fender_config(fake_openai.url, policy=LLM_RETRY))
    async with sdk(proxy, max_retries=0) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert raw.parse().choices[0].message.content == "".join(WORDS)
    assert raw.headers["x-fender-attempts"] == "2"
    assert raw.headers["x-fender-outcome"] == "retried"
    assert len(fake_openai.calls) == 2


@pytest.mark.parametrize(
    "limit_headers",
    [{"retry-after-ms": "20"}, {"retry-after-ms": "20", "retry-after": "1"}],
    ids=["retry-after-ms", "retry-after-ms+retry-after"],
)
async def test_openai_sdk_does_not_multiply_fender_retries_of_a_429(
    fake_openai, proxy_factory, limit_headers
):
    """Fender made its 3 attempts: the answer says `x-should-retry: false`, which the SDK
    obeys before anything else, so its own max_retries=2 adds no call (not 3 x 3 = 9)."""
    fake_openai.plan = [("429", limit_headers)]
    proxy = await proxy_factory(fender_config(fake_openai.url, policy=LLM_RETRY))
    async with sdk(proxy, max_retries=2) as api:
        with pytest.raises(openai.RateLimitError) as caught:
            await api.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    response = caught.value.response
    assert response.headers["x-fender-attempts"] == "3"
    assert response.headers["x-fender-outcome"] == "failed"
    assert response.headers.get("x-should-retry") == "false"
    assert len(fake_openai.calls) == 3


async def test_openai_sdk_retries_fenders_local_429_after_its_retry_after(
    fake_openai, proxy_factory
):
    """A local rate limit answers 429 with Retry-After and no `x-should-retry: false`: the
    SDK waits as told and tries again, and then gets through."""
    policy = {"rate_limit": {"rate": "1/s", "burst": 1}}
    proxy = await proxy_factory(fender_config(fake_openai.url, policy=policy))
    async with sdk(proxy, max_retries=1) as api:
        await api.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        raw = await api.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert raw.retries_taken == 1
    assert raw.headers["x-fender-outcome"] == "ok"
    assert len(fake_openai.calls) == 2
    assert proxy.metric("fender_rejections_total", route="all", reason="rate_limited") == 1


# requests, httpx and curl against an aiohttp upstream that reports what it got.


class Echo:
    """An upstream that says what it received, streams gated SSE, and large bodies."""

    def __init__(self) -> None:
        self.gate: asyncio.Queue[None] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []

    async def echo(self, request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for block in request.content.iter_any():
            digest.update(block)
            size += len(block)
        got = {
            "method": request.method,
            "size": size,
            "sha256": digest.hexdigest(),
            "content_length": request.headers.get("content-length"),
            "transfer_encoding": request.headers.get("transfer-encoding"),
            "expect": request.headers.get("expect"),
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        self.seen.append(got)
        return web.json_response(got)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(4):
            if i:
                await asyncio.wait_for(self.gate.get(), 10)
            await response.write(b"data: event %d\n\n" % i)
        await response.write_eof()
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        if request.query.get("length") != "no":
            response.content_length = size
        await response.prepare(request)
        block = pattern(256 * 1024)
        for at in range(0, size, len(block)):
            await response.write(block[: min(len(block), size - at)])
        await response.write_eof()
        return response

    async def hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello", headers={"x-path": request.path})


@pytest.fixture
async def echo(aiohttp_server: Any) -> tuple[Echo, str]:
    echo = Echo()
    app = web.Application(client_max_size=64 * MiB)
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/echo", echo.echo)
    app.router.add_get("/sse", echo.sse)
    app.router.add_get("/big/{size}", echo.big)
    app.router.add_route("*", "/hello", echo.hello)
    server = await aiohttp_server(app)
    return echo, f"http://127.0.0.1:{server.port}"


def blocks(count: int, size: int = 64 * 1024) -> Iterator[bytes]:
    block = pattern(size)
    for _ in range(count):
        yield block


def connections_made(session: requests.Session) -> int:
    """How many connections urllib3 opened for this session, all hosts together."""
    pools = session.get_adapter("http://").poolmanager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 (it refuses iteration)


async def test_requests_session_keeps_one_connection_alive_through_fender(echo, proxy_factory):
    _, url = echo
    proxy = await proxy_factory(fender_config(url))

    def five_gets() -> tuple[list[str], int]:
        with requests.Session() as session:
            texts = [session.get(f"{proxy.url}/hello", timeout=5).text for _ in range(5)]
            return texts, connections_made(session)

    texts, connections = await asyncio.to_thread(five_gets)
    assert texts == ["hello"] * 5
    assert connections == 1


async def test_requests_chunked_upload_from_a_generator_then_reuse(echo, proxy_factory):
    _seen, url = echo
    proxy = await proxy_factory(fender_config(url))

    def upload() -> tuple[dict[str, Any], str, int]:
        with requests.Session() as session:
            got = session.post(f"{proxy.url}/echo", data=blocks(40), timeout=10).json()
            after = session.get(f"{proxy.url}/hello", timeout=5).text
            return got, after, connections_made(session)

    got, after, connections = await asyncio.to_thread(upload)
    assert got["size"] == 40 * 64 * 1024
    assert got["sha256"] == hashlib.sha256(b"".join(blocks(40))).hexdigest()
    assert (after, connections) == ("hello", 1)


async def test_httpx_sync_streams_a_download_and_a_generator_upload(echo, proxy_factory):
    _, url = echo
    proxy = await proxy_factory(fender_config(url))
    size = 6 * MiB + 1

    def run_client() -> tuple[int, str, dict[str, Any]]:
        with httpx.Client(http1=True, http2=False, timeout=10) as http:
            digest, total = hashlib.sha256(), 0
            with http.stream("GET", f"{proxy.url}/big/{size}?length=no") as resp:
                for block in resp.iter_bytes():
                    digest.update(block)
                    total += len(block)
                assert resp.headers["transfer-encoding"] == "chunked"
            got = http.post(f"{proxy.url}/echo", content=blocks(16)).json()
            return total, digest.hexdigest(), got

    total, digest, got = await asyncio.to_thread(run_client)
    assert total == size
    assert digest == hashlib.sha256(pattern(size)).hexdigest()
    assert got["size"] == 16 * 64 * 1024
    assert got["transfer_encoding"] == "chunked"  # no length known: Fender streamed it on


async def test_httpx_async_reads_sse_events_as_they_are_sent(echo, proxy_factory):
    gate, url = echo[0].gate, echo[1]
    proxy = await proxy_factory(fender_config(url))
    events = []
    async with (
        httpx.AsyncClient(http1=True, http2=False, timeout=10) as http,
        http.stream("GET", f"{proxy.url}/sse") as resp,
    ):
        assert resp.headers["content-type"] == "text/event-stream"
        async for line in resp.aiter_lines():
            if line:
                events.append(line)
                gate.put_nowait(None)  # the upstream sends the next event only now
    assert events == [f"data: event {i}" for i in range(4)]


async def test_curl_put_with_expect_100_continue_gets_100_before_the_body(
    echo, proxy_factory, curl, tmp_path
):
    """curl waits for `100 Continue` before it sends the body (up to --expect100-timeout,
    set far past the test's own timeout): Fender must say it, once, before the answer."""
    _seen, url = echo
    proxy = await proxy_factory(fender_config(url))
    data = tmp_path / "upload.bin"
    data.write_bytes(b"".join(blocks(32)))
    code, out, err = await sh(
        curl,
        "--http1.1",
        "-sS",
        "-v",
        "-T",
        str(data),
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "60",
        f"{proxy.url}/echo",
    )
    assert code == 0, err
    assert err.count(b"< HTTP/1.1 100 Continue") == 1
    got = json.loads(out)
    assert got["method"] == "PUT"
    assert got["size"] == data.stat().st_size
    assert got["content_length"] == str(data.stat().st_size)
    assert got["expect"] is None  # Fender answered the expectation itself


async def test_curl_upload_from_stdin_goes_chunked(echo, proxy_factory, curl):
    _, url = echo
    proxy = await proxy_factory(fender_config(url))
    body = b"".join(blocks(8, 10_000))
    code, out, err = await sh(curl, "--http1.1", "-sS", "-T", "-", f"{proxy.url}/echo", stdin=body)
    assert code == 0, err
    got = json.loads(out)
    assert got["size"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


async def test_curl_raw_sees_valid_chunked_framing_of_an_unsized_answer(echo, proxy_factory, curl):
    _, url = echo
    proxy = await proxy_factory(fender_config(url))
    size = 300_000
    code, out, err = await sh(
        curl, "--http1.1", "-sS", "--raw", f"{proxy.url}/big/{size}?length=no"
    )
    assert code == 0, err
    decoded, at = b"", 0
    while True:  # decode by hand: what curl printed is the wire's chunked encoding
        end = out.index(b"\r\n", at)
        length = int(out[at:end].split(b";")[0], 16)
        if length == 0:
            assert out[end:] == b"\r\n\r\n"
            break
        decoded += out[end + 2 : end + 2 + length]
        assert out[end + 2 + length : end + 4 + length] == b"\r\n"
        at = end + 4 + length
    assert decoded == pattern(size)


async def test_curl_reuses_its_connection_and_head_has_no_body(echo, proxy_factory, curl):
    _, url = echo
    proxy = await proxy_factory(fender_config(url))
    code, out, err = await sh(
        curl, "--http1.1", "-sS", "-v", f"{proxy.url}/hello", f"{proxy.url}/hello"
    )
    assert code == 0, err
    assert out == b"hellohello"
    assert b"Re-using existing connection" in err
    code, out, err = await sh(
        curl, "--http1.1", "-sS", "-v", "-I", f"{proxy.url}/big/1000", f"{proxy.url}/big/1000"
    )
    assert code == 0, err
    assert out.lower().count(b"content-length: 1000\r\n") == 2
    assert b"Re-using existing connection" in err
    assert b"Excess found" not in err


# WebSocket through a route with `upgrade: [websocket]`.


class WsServer:
    """A `websockets` server: /echo echoes, /close closes with 4000, /wait records how
    the client closed."""

    def __init__(self) -> None:
        self.closed_with: asyncio.Future[tuple[int | None, str | None]] | None = None

    async def handler(self, ws: Any) -> None:
        path = ws.request.path
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/close":
            await ws.send("going")
            await ws.close(4000, "bye")
        elif path == "/wait":
            await ws.wait_closed()
            assert self.closed_with is not None
            self.closed_with.set_result((ws.close_code, ws.close_reason))


@pytest.fixture
async def ws_upstream() -> AsyncIterator[tuple[WsServer, str]]:
    server = WsServer()
    server.closed_with = asyncio.get_running_loop().create_future()
    async with ws_serve(server.handler, "127.0.0.1", 0, max_size=None) as running:
        port = running.sockets[0].getsockname()[1]
        yield server, f"http://127.0.0.1:{port}"


def ws_config(url: str) -> dict[str, Any]:
    return fender_config(url, upgrade=["websocket"])


async def test_websocket_echo_of_text_and_large_binary_frames(ws_upstream, proxy_factory):
    proxy = await proxy_factory(ws_config(ws_upstream[1]))
    big = pattern(8 * MiB)
    # Uncompressed, so that the tunnel carries the 8 MiB (permessage-deflate would shrink it).
    uri = f"ws://127.0.0.1:{proxy.port}/echo"
    async with ws_connect(uri, max_size=None, open_timeout=5, compression=None) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 10) == big
        for i in range(50):
            await ws.send(f"m{i}")
        assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(50)] == [
            f"m{i}" for i in range(50)
        ]

    async def counted() -> bool:  # when the tunnel ends
        sent = proxy.metric("fender_tunnel_bytes_total", route="all", direction="upstream")
        received = proxy.metric("fender_tunnel_bytes_total", route="all", direction="downstream")
        return sent > len(big) and received > len(big)

    await wait_for(counted, 5)


async def test_websocket_server_close_reaches_the_client_with_its_code(ws_upstream, proxy_factory):
    proxy = await proxy_factory(ws_config(ws_upstream[1]))
    async with ws_connect(f"ws://127.0.0.1:{proxy.port}/close", open_timeout=5) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "going"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")


async def test_websocket_client_close_reaches_the_server_and_ends_the_tunnel(
    ws_upstream, proxy_factory
):
    server, url = ws_upstream
    proxy = await proxy_factory(ws_config(url))
    async with ws_connect(
        f"ws://127.0.0.1:{proxy.port}/wait", open_timeout=5, close_timeout=5
    ) as ws:
        await ws.close(1000, "done")
    assert ws.close_code == 1000
    assert server.closed_with is not None
    assert await asyncio.wait_for(server.closed_with, 5) == (1000, "done")

    async def closed() -> bool:
        return proxy.metric("fender_tunnels_open", route="all") == 0

    await wait_for(closed, 5)
    assert proxy.metric("fender_requests_total", route="all", outcome="ok") == 1


async def test_websocket_101_says_upgrade_and_has_no_body_framing(ws_upstream, proxy_factory):
    """RFC 9110 section 8.6: no Content-Length in a 1xx; section 7.8 and RFC 6455 section
    4.2.2: the 101 says `Connection: Upgrade`, and the connection is not about to close."""
    proxy = await proxy_factory(ws_config(ws_upstream[1]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"GET /echo HTTP/1.1\r\nHost: app.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = await read_answer(reader)
    finally:
        writer.close()
    assert answer.status == 101
    assert answer.get("sec-websocket-accept") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    tokens = [t.strip().lower() for v in answer.getall("connection") for t in v.split(b",")]
    assert b"upgrade" in tokens
    assert b"close" not in tokens
    assert answer.get("content-length") is None


async def test_websocket_client_library_handshake_through_fender(ws_upstream, proxy_factory):
    """websocket-client keeps one value per header name (the last one): its handshake
    sees what the 101's last Connection line says."""
    import websocket  # websocket-client

    proxy = await proxy_factory(ws_config(ws_upstream[1]))

    def talk() -> str:
        ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/echo", timeout=5)
        try:
            ws.send("ping")
            return str(ws.recv())
        finally:
            ws.close()

    assert await asyncio.to_thread(talk) == "ping"


async def test_aiohttp_websocket_client_and_server_through_fender(
    aiohttp_server, proxy_factory, client
):
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type == web.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
            else:
                await ws.send_str(message.data.upper())
        return ws

    url = await aiohttp_upstream(aiohttp_server, {"GET /ws": handler})
    proxy = await proxy_factory(ws_config(url))
    async with client.ws_connect(f"{proxy.url}/ws", max_msg_size=0) as ws:
        await ws.send_str("abc")
        assert (await ws.receive(timeout=5)).data == "ABC"
        data = pattern(3 * MiB)
        await ws.send_bytes(data)
        assert (await ws.receive(timeout=10)).data == data[::-1]


# HTTP/1.1 at the edge, with raw sockets.


class Conformance:
    """An aiohttp upstream for the framing tests; counts what it was asked."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.written = 0  # bytes of /endless written so far
        self.hold: asyncio.Event = asyncio.Event()

    async def any(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "body": body,
                "headers": dict(request.headers),
            }
        )
        path = request.path
        if path == "/slow":
            await asyncio.wait_for(self.hold.wait(), 5)  # the answer after it must wait
        if path == "/204":
            return web.Response(status=204)
        if path == "/304":
            return web.Response(status=304, headers={"etag": '"v1"'})
        if path == "/length":
            response = web.Response(body=b"x" * 1000)
            if request.method == "HEAD":
                response = web.Response(headers={"content-length": "1000"})
            return response
        if path == "/close":
            response = web.Response(text="closing")
            response.force_close()
            return response
        if path == "/unsized":
            stream = web.StreamResponse()
            await stream.prepare(request)
            await stream.write(b"no length ")
            await asyncio.sleep(0.05)  # so that the answer streams (no length known up front)
            await stream.write(b"here")
            await stream.write_eof()
            return stream
        return web.Response(body=b"%s %s %s" % (request.method.encode(), path.encode(), body))

    async def endless(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(48 * MiB)))
        stream = web.StreamResponse()
        stream.content_length = size
        await stream.prepare(request)
        block = pattern(64 * 1024)
        while self.written < size:
            await stream.write(block)
            self.written += len(block)
        return stream


@pytest.fixture
async def conformance(aiohttp_server: Any) -> tuple[Conformance, str]:
    upstream = Conformance()
    app = web.Application()
    app.router.add_get("/endless", upstream.endless)
    app.router.add_route("*", "/{tail:.*}", upstream.any)
    server = await aiohttp_server(app)
    return upstream, f"http://127.0.0.1:{server.port}"


async def opened(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_pipelined_requests_in_one_write_are_answered_in_order(conformance, proxy_factory):
    """RFC 9112 section 9.3.2: answers in the order of the requests, even when the first
    one is the slowest."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /c?q=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"HEAD /length HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    asyncio.get_running_loop().call_later(0.2, upstream.hold.set)
    try:
        answers = [
            await read_answer(reader, method) for method in ("GET", "POST", "GET", "HEAD", "GET")
        ]
        assert await at_eof(reader)
    finally:
        writer.close()
    assert [a.body for a in answers] == [
        b"GET /slow ",
        b"POST /b hello",
        b"GET /c ",
        b"",
        b"GET /d ",
    ]
    assert answers[3].get("content-length") == b"1000"
    assert answers[4].get("connection") == b"close"


async def test_head_204_and_304_keep_the_framing_of_a_keep_alive_connection(
    conformance, proxy_factory
):
    """RFC 9112 section 6.3: no body after HEAD, 204 or 304, and none announced for 204
    (RFC 9110 section 8.6); what follows on the connection is the next answer."""
    _, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        for method, path in (
            ("HEAD", "/length"),
            ("GET", "/204"),
            ("GET", "/304"),
            ("GET", "/length"),
        ):
            writer.write(b"%s %s HTTP/1.1\r\nHost: a\r\n\r\n" % (method.encode(), path.encode()))
        head = await read_answer(reader, "HEAD")
        no_content = await read_answer(reader)
        not_modified = await read_answer(reader)
        last = await read_answer(reader)
    finally:
        writer.close()
    assert (head.status, head.get("content-length"), head.body) == (200, b"1000", b"")
    assert no_content.status == 204
    assert no_content.get("content-length") is None and no_content.get("transfer-encoding") is None
    assert (not_modified.status, not_modified.get("etag")) == (304, b'"v1"')
    assert (last.status, last.body) == (200, b"x" * 1000)


async def test_chunked_request_body_with_extensions_and_trailers(conformance, proxy_factory):
    """Chunk extensions are ignored and the trailer section ends the body (RFC 9112
    section 7.1). A trailer field is not merged into the header section (RFC 9110
    section 6.5.1: MUST NOT unless its definition allows it): the upstream never sees it as
    a header. The next request on the connection is served."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
            b'6;quoted="a b";flag\r\n world\r\n'
            b"0\r\nX-Checksum: abc123\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first = await read_answer(reader, "POST")
        second = await read_answer(reader)
    finally:
        writer.close()
    assert (first.status, first.body) == (200, b"POST /upload hello world")
    assert (second.status, second.body) == (200, b"GET /next ")
    headers = {k.lower() for k in upstream.seen[0]["headers"]}
    assert "x-checksum" not in headers
    assert upstream.seen[0]["headers"].get("X-Forwarded-For") is None


async def test_chunked_trailers_sent_after_the_request_started(conformance, proxy_factory):
    """The same request with its last chunk and trailers in a later write."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.1)  # the request is on its way upstream, body unfinished
        writer.write(b"0\r\nX-Checksum: abc123\r\n\r\n")
        answer = await read_answer(reader, "POST")
    finally:
        writer.close()
    assert (answer.status, answer.body) == (200, b"POST /upload hello")
    assert "x-checksum" not in {k.lower() for k in upstream.seen[0]["headers"]}


async def test_connection_close_from_the_app_ends_after_one_answer(conformance, proxy_factory):
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(
            b"GET /one HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        answer = await read_answer(reader)
        assert await at_eof(reader)
    finally:
        writer.close()
    assert (answer.status, answer.get("connection")) == (200, b"close")
    assert [s["path"] for s in upstream.seen] == ["/one"]  # the request after close is not served


async def test_connection_close_from_the_upstream_stays_on_its_own_hop(conformance, proxy_factory):
    """The upstream closes its connection after answering; the app's connection is another
    hop: it is not told to close, and its next request goes on a fresh upstream connection."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        for path in (b"/close", b"/after", b"/unsized", b"/last"):
            writer.write(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            answer = await read_answer(reader)
            assert answer.status == 200
            assert answer.get("connection") is None, path
    finally:
        writer.close()
    assert [s["path"] for s in upstream.seen] == ["/close", "/after", "/unsized", "/last"]


async def test_http10_keep_alive_is_kept_and_plain_http10_is_closed(conformance, proxy_factory):
    """RFC 9112 section 9.3 and appendix C.2.2: an HTTP/1.0 client that asks for keep-alive
    gets a length and `Connection: keep-alive`; an answer of unknown length is framed by
    closing; a plain HTTP/1.0 request closes after its answer."""
    _, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        first = await read_answer(reader)
        writer.write(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # no Host: fine in 1.0
        second = await read_answer(reader)
        writer.write(b"GET /unsized HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        third = await read_answer(reader)  # read to the end: framed by the close
    finally:
        writer.close()
    assert (first.body, first.get("connection"), first.get("content-length")) == (
        b"GET /a ",
        b"keep-alive",
        b"7",
    )
    assert (second.body, second.get("connection")) == (b"GET /b ", b"keep-alive")
    assert third.get("transfer-encoding") is None  # no chunked coding for a 1.0 client
    assert (third.body, third.get("connection")) == (b"no length here", b"close")
    reader, writer = await opened(proxy.port)
    try:
        writer.write(b"GET /plain HTTP/1.0\r\n\r\n")
        plain = await read_answer(reader)
        assert await at_eof(reader)
    finally:
        writer.close()
    assert plain.body == b"GET /plain "


async def test_http10_expect_100_continue_is_ignored(conformance, proxy_factory):
    """RFC 9110 section 10.1.1: a server that receives a 100-continue expectation in an
    HTTP/1.0 request MUST ignore it (no 1xx to a 1.0 client: RFC 9110 section 15.2)."""
    _, url = conformance
    proxy = await proxy_factory(fender_config(url))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(
            b"POST /e HTTP/1.0\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"body")
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:40]
    assert b"100 Continue" not in data
    assert data.endswith(b"POST /e body")


SLOW = {"limits": {"header_timeout": "1s", "body_timeout": "1s"}}


async def test_slowloris_head_is_cut_at_header_timeout(conformance, proxy_factory):
    """A head trickling in a byte at a time is dropped `header_timeout` after its first
    byte, though bytes keep coming; nothing reaches the upstream."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url, listener=SLOW))
    reader, writer = await opened(proxy.port)
    head = b"GET /slowloris HTTP/1.1\r\nHost: a\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n"
    sent = 0
    try:
        for byte in head:  # 0.1 s a byte: 7 s for the whole head
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            if reader.at_eof():
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    break
            except TimeoutError:
                continue
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert sent < len(head) // 2  # cut after about 10 bytes (1 s), not after the head
    assert upstream.seen == []


async def test_slow_request_body_gets_408_at_body_timeout(conformance, proxy_factory):
    _upstream, url = conformance
    proxy = await proxy_factory(fender_config(url, listener=SLOW))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(b"POST /stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = await read_answer(reader, "POST", timeout=5)
        assert await at_eof(reader)
    finally:
        writer.close()
    assert answer.status == 408
    assert answer.get("x-fender-reason") == b"body_timeout"
    assert answer.get("connection") == b"close"


async def test_steady_slow_request_body_is_not_cut(conformance, proxy_factory):
    """Pauses shorter than body_timeout, however many: the body is slow, not stalled."""
    _upstream, url = conformance
    proxy = await proxy_factory(fender_config(url, listener=SLOW))
    reader, writer = await opened(proxy.port)
    try:
        writer.write(b"POST /steady HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        for piece in (b"01", b"23", b"45", b"67", b"89"):
            await asyncio.sleep(0.4)  # 2 s in all, 0.4 s at a time: past body_timeout in sum only
            writer.write(piece)
        answer = await read_answer(reader, "POST")
    finally:
        writer.close()
    assert (answer.status, answer.body) == (200, b"POST /steady 0123456789")


async def stalled(upstream: Conformance) -> int:
    """What the upstream managed to write once it stopped making progress."""
    last = -1
    for _ in range(100):
        await asyncio.sleep(0.1)
        if upstream.written == last:
            return last
        last = upstream.written
    raise AssertionError("the upstream never stopped writing")


async def test_client_that_stops_reading_holds_bounded_memory_and_others_are_served(
    conformance, proxy_factory, client
):
    """The app reads the head of a 48 MiB answer and stops: Fender stops reading the
    upstream (backpressure), so only socket buffers' worth is in flight; other requests
    are served meanwhile; when the app reads again it gets every byte."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", proxy.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
    try:
        writer.write(b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        held = await stalled(upstream)
        assert held < 16 * MiB
        async with client.get(f"{proxy.url}/other") as resp:
            assert await resp.read() == b"GET /other "
        left, received = 48 * MiB, 0
        digest = hashlib.sha256()
        while received < left:
            block = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert block, "cut short"
            digest.update(block)
            received += len(block)
    finally:
        writer.close()
    assert received == left
    assert (
        digest.hexdigest() == hashlib.sha256(pattern(64 * 1024) * (left // (64 * 1024))).hexdigest()
    )


async def test_client_paused_longer_than_idle_still_gets_the_whole_answer(
    conformance, proxy_factory
):
    """`idle` is the longest silence of the upstream. While the app itself does not read,
    Fender holds the upstream back: that pause is the app's, the upstream is not idle, and
    the answer must not be cut as an upstream timeout."""
    upstream, url = conformance
    proxy = await proxy_factory(fender_config(url, policy={"timeouts": {"idle": "1s"}}))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", proxy.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
    size = 16 * MiB
    try:
        writer.write(b"GET /endless?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await stalled(upstream)
        await asyncio.sleep(1.5)  # the app does not read for longer than idle
        received = 0
        while received < size:
            block = await asyncio.wait_for(reader.read(1 << 20), 5)
            if not block:
                break
            received += len(block)
    finally:
        writer.close()
    assert received == size
    assert proxy.metric("fender_requests_total", route="all", outcome="ok") == 1


class CloseAfterAnswer(RawUpstream):
    """A raw upstream that answers with keep-alive framing (a length, no `close`) and then
    closes: at once (`when="answered"`), or when the next request comes (`when="next"`,
    the keep-alive race: its idle timeout crossed that request)."""

    def __init__(self, when: str) -> None:
        super().__init__(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
        )
        self.when = when
        self.requests = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(self.answer)
            await writer.drain()
            if self.when == "next":
                await reader.readuntil(b"\r\n\r\n")  # read, never answered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("when", ["answered", "next"])
async def test_upstream_closing_a_keep_alive_connection_never_fails_the_next_request(
    proxy_factory, when
):
    async with CloseAfterAnswer(when) as upstream:
        proxy = await proxy_factory(fender_config(upstream.url))
        reader, writer = await opened(proxy.port)
        try:
            for i in range(10):
                writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
                answer = await read_answer(reader)
                assert (answer.status, answer.body) == (200, b"ok"), (i, answer.head)
        finally:
            writer.close()
    assert upstream.requests >= 10
    assert proxy.metric("fender_requests_total", route="all", outcome="ok") == 10


async def test_curl_http2_offer_on_plain_http_falls_back_to_http11(echo, proxy_factory, curl):
    """`curl --http2 http://...` offers `Upgrade: h2c` on an otherwise complete HTTP/1.1
    request. A server MAY ignore an Upgrade it does not want (RFC 9110 section 7.8), and
    curl then carries on in HTTP/1.1: a route without `upgrade` should answer the request,
    not refuse it (501 is for a protocol the app needs, like WebSocket)."""
    _, url = echo
    proxy = await proxy_factory(fender_config(url))
    code, out, err = await sh(curl, "-sS", "--http2", f"{proxy.url}/hello")
    assert code == 0, err
    assert out == b"hello"


async def test_interim_answers_from_the_upstream_are_not_the_answer(proxy_factory):
    """103 Early Hints and an unasked 100 Continue come before the real answer (RFC 9110
    section 15.2): the app gets the 200, with its own headers only, and the upstream
    connection is reused after it."""
    from tests.support.raw import RawUpstream

    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal"
    )
    async with RawUpstream(answer) as upstream:
        proxy = await proxy_factory(fender_config(upstream.url))
        reader, writer = await opened(proxy.port)
        try:
            writer.write(b"GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = await asyncio.wait_for(reader.readexactly(5), 5)
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Final: yes" in head and b"Link:" not in head
    assert body == b"final"


async def test_http10_upstream_of_the_standard_library(proxy_factory, tmp_path):
    """http.server speaks HTTP/1.0 and closes after each answer; one of its answers has no
    length at all (framed by the close). An HTTP/1.1 app gets both whole, chunked where
    no length was given, on one kept-alive connection."""
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kw)

        def do_GET(self) -> None:
            if self.path == "/unsized":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"until the close")
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    (tmp_path / "file.txt").write_bytes(b"a file\n" * 1000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = await proxy_factory(fender_config(f"http://127.0.0.1:{server.server_address[1]}"))
        reader, writer = await opened(proxy.port)
        try:
            writer.write(b"GET /file.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            sized = await read_answer(reader)
            writer.write(b"GET /unsized HTTP/1.1\r\nHost: a\r\n\r\n")
            unsized = await read_answer(reader)
        finally:
            writer.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (sized.status, sized.body) == (200, b"a file\n" * 1000)
    assert sized.get("content-length") == b"7000"
    assert (unsized.status, unsized.body) == (200, b"until the close")
    assert unsized.get("transfer-encoding") == b"chunked"
