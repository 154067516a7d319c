"""TLS to upstreams: verified by default, private CAs by ca_file, SNI and Host set right."""

from __future__ import annotations

import ssl

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.proxy import config


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_upstream(ca):
    """An https upstream for `localhost`; records the SNI name and Host of each request."""
    seen: list[tuple[str | None, str]] = []
    sni: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: sni.append(name)

    async def handle(request: web.Request) -> web.Response:
        seen.append((sni[-1] if sni else None, request.headers["host"]))
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    yield f"https://localhost:{server.port}", seen
    await server.close()


async def test_private_ca_from_ca_file_is_trusted_with_sni_and_host(
    ca, tmp_path, tls_upstream, proxy_factory, client
):
    url, seen = tls_upstream
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proxy = await proxy_factory(
        config({"up": {"endpoints": [url], "tls": {"ca_file": str(ca_file)}}})
    )
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
        assert await resp.text() == "secure"
    port = url.rsplit(":", 1)[1]
    assert seen == [("localhost", f"localhost:{port}")]


async def test_unknown_ca_is_refused_by_default(tls_upstream, proxy_factory, client):
    url, seen = tls_upstream
    proxy = await proxy_factory(config({"up": {"endpoints": [url]}}))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 502
        assert resp.headers["x-fender-reason"] == "tls_error"
    assert seen == []


async def test_verification_off_is_explicit_and_logged(tls_upstream, proxy_factory, client):
    url, seen = tls_upstream
    proxy = await proxy_factory(config({"up": {"endpoints": [url], "tls": {"verify": False}}}))
    assert seen == []
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    assert len(seen) == 1
    warnings = [line for line in proxy.log_lines() if line["event"] == "tls_verification_off"]
    assert warnings == [{**warnings[0], "level": "warning", "upstream": "up"}]
