"""Bodies stream both ways with backpressure: memory stays bounded for a 1 GiB body."""

from __future__ import annotations

import resource

from aiohttp import web

from tests.support.proxy import config

GiB = 1 << 30
CHUNK = b"x" * (256 * 1024)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def test_one_gib_upload_and_download_stream_in_bounded_memory(
    aiohttp_server, proxy_factory, client
):
    received = 0

    async def sink(request: web.Request) -> web.StreamResponse:
        nonlocal received
        async for chunk in request.content.iter_any():
            received += len(chunk)
        return web.Response(text=str(received))

    async def source(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = GiB
        await response.prepare(request)
        for _ in range(GiB // len(CHUNK)):
            await response.write(CHUNK)
        return response

    app = web.Application()
    app.router.add_post("/sink", sink)
    app.router.add_get("/source", source)
    server = await aiohttp_server(app)
    proxy = await proxy_factory(config({"up": {"endpoints": [f"http://127.0.0.1:{server.port}"]}}))
    before = peak_rss_bytes()

    async def upload():
        for _ in range(GiB // len(CHUNK)):
            yield CHUNK

    async with client.post(f"{proxy.url}/sink", data=upload()) as resp:
        assert await resp.text() == str(GiB)
    downloaded = 0
    async with client.get(f"{proxy.url}/source") as resp:
        async for chunk in resp.content.iter_any():
            downloaded += len(chunk)
    assert downloaded == GiB
    # Client, proxy and upstream share this process: all of them together stayed small.
    assert peak_rss_bytes() - before < 128 * 1024 * 1024
