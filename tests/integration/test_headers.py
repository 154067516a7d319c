"""Header hygiene in both directions, credentials, request ids and X-Forwarded-*."""

from __future__ import annotations

from tests.support.proxy import config
from tests.support.raw import exchange
from tests.support.upstream import Step


async def test_hop_by_hop_and_connection_listed_headers_are_not_forwarded(upstream, proxy_factory):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    await exchange(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close, x-secret-hop, x-request-id\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eA==\r\n"
        b"X-Secret-Hop: 1\r\nX-Request-Id: rid-123\r\nX-Kept: yes\r\n\r\n",
    )
    names = {k.lower() for k in upstream.seen[0].headers}
    assert not names & {"keep-alive", "te", "upgrade", "proxy-authorization", "x-secret-hop"}
    assert upstream.seen[0].headers["x-kept"] == "yes"
    # Listed in Connection, but Fender's own header survives with the app's value.
    assert upstream.seen[0].headers["x-request-id"] == "rid-123"


async def test_response_hop_by_hop_headers_are_not_relayed(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(
        Step(
            headers={
                "connection": "x-up-hop",
                "x-up-hop": "1",
                "keep-alive": "timeout=1",
                "x-ok": "1",
            }
        )
    )
    async with client.get(f"{proxy.url}/") as resp:
        assert "x-up-hop" not in resp.headers
        assert "keep-alive" not in resp.headers
        assert resp.headers["x-ok"] == "1"


async def test_configured_credential_replaces_what_the_app_sent(upstream, proxy_factory, client):
    ups = {
        "up": {
            "endpoints": [upstream.url],
            "headers": {"set": {"Authorization": "Bearer real"}, "remove": ["cookie", "x-debug"]},
        }
    }
    proxy = await proxy_factory(config(ups))
    await (
        await client.get(
            f"{proxy.url}/",
            headers={"authorization": "Bearer app-guess", "cookie": "a=b", "x-debug": "1"},
        )
    ).release()
    seen = upstream.seen[0]
    assert seen.headers.getall("authorization") == ["Bearer real"]
    assert "cookie" not in seen.headers and "x-debug" not in seen.headers


async def test_host_is_the_upstream_authority(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    await (await client.get(f"{proxy.url}/", headers={"host": "evil.example"})).release()
    assert upstream.seen[0].headers["host"] == upstream.url.removeprefix("http://")


async def test_request_id_is_generated_when_missing(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    await (await client.get(f"{proxy.url}/")).release()
    rid = upstream.seen[0].headers["x-request-id"]
    assert len(rid) == 32
    assert proxy.log_lines()[-1]["request_id"] == rid


async def test_forwarded_headers_only_when_enabled(upstream, proxy_factory, client):
    ups = {
        "plain": {"endpoints": [upstream.url]},
        "fwd": {"endpoints": [upstream.url], "forwarded_headers": True},
    }
    routes = [
        {"name": "fwd", "upstream": "fwd", "match": {"path_prefix": "/fwd"}},
        {"name": "plain", "upstream": "plain"},
    ]
    proxy = await proxy_factory(config(ups, routes))
    await (await client.get(f"{proxy.url}/x", headers={"x-forwarded-for": "10.9.9.9"})).release()
    await (await client.get(f"{proxy.url}/fwd", headers={"x-forwarded-for": "10.9.9.9"})).release()
    plain, fwd = upstream.seen
    assert "x-forwarded-for" not in plain.headers and "x-forwarded-proto" not in plain.headers
    assert fwd.headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert fwd.headers["x-forwarded-proto"] == "http"


async def test_secrets_never_reach_the_log_or_config_endpoint(upstream, proxy_factory, client):
    ups = {"up": {"endpoints": [upstream.url], "headers": {"set": {"x-api-key": "sk-live-123"}}}}
    proxy = await proxy_factory(config(ups))
    await (
        await client.get(
            f"{proxy.url}/", headers={"authorization": "Bearer app-token", "cookie": "s=1"}
        )
    ).release()
    async with client.get(f"{proxy.control_url}/config") as resp:
        shown = await resp.text()
    logged = str(proxy.log_lines())
    for secret in ("sk-live-123", "app-token", "s=1"):
        assert secret not in shown and secret not in logged
    assert "<redacted>" in shown
