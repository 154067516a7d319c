"""The control port: metrics, probes, the effective config, and its token."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy import config
from tests.support.raw import exchange, status_of


async def test_metrics_are_prometheus_text_with_config_names_as_labels(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    await (await client.get(f"{proxy.url}/some/raw/path?q=1")).release()
    async with client.get(f"{proxy.control_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "fender_requests",
        "fender_request_duration_seconds",
        "fender_upstream_attempts",
        "fender_config_info",
    } <= set(families)
    assert "/some/raw/path" not in text
    (info,) = families["fender_config_info"].samples
    assert info.labels["hash"] == proxy.fender.config.hash


async def test_probes_and_readiness_during_drain(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    async with client.get(f"{proxy.control_url}/livez") as resp:
        assert resp.status == 200
    async with client.get(f"{proxy.control_url}/readyz") as resp:
        assert resp.status == 200
    proxy.fender.draining = True
    async with client.get(f"{proxy.control_url}/readyz") as resp:
        assert resp.status == 503
    async with client.get(f"{proxy.control_url}/livez") as resp:
        assert resp.status == 200


def with_token(upstream_url: str, path, token: str) -> dict:
    """A policy whose control API takes `token`, written to `path`."""
    path.write_text(f"{token}\n")
    data = config({"up": {"endpoints": [upstream_url]}})
    data["control"]["token_file"] = str(path)
    return data


async def test_token_guards_config_but_not_probes_and_no_cors(
    upstream, proxy_factory, client, tmp_path
):
    proxy = await proxy_factory(with_token(upstream.url, tmp_path / "token", "s3cret-token"))
    async with client.get(f"{proxy.control_url}/config", headers={"origin": "http://evil"}) as resp:
        assert resp.status == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "access-control-allow-origin" not in resp.headers
    async with client.get(
        f"{proxy.control_url}/config", headers={"authorization": "Bearer wrong"}
    ) as resp:
        assert resp.status == 401
    async with client.get(
        f"{proxy.control_url}/config", headers={"authorization": "Bearer s3cret-token"}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["version"] == 1
    for path in ("/metrics", "/livez", "/readyz"):
        async with client.get(f"{proxy.control_url}{path}") as resp:
            assert resp.status == 200


async def test_a_rotated_token_file_takes_effect_and_a_missing_one_keeps_the_old(
    upstream, proxy_factory, client, tmp_path
):
    token = tmp_path / "token"
    proxy = await proxy_factory(with_token(upstream.url, token, "first"))

    async def status_with(value: str) -> int:
        headers = {"authorization": f"Bearer {value}"}
        async with client.get(f"{proxy.control_url}/status", headers=headers) as resp:
            return resp.status

    assert await status_with("first") == 200
    rotated = tmp_path / "token.new"
    rotated.write_text("second\n")
    rotated.replace(token)  # an atomic swap, as the kubelet updates a Secret
    assert await status_with("first") == 401
    assert await status_with("second") == 200
    token.unlink()  # gone for a moment: the control API must not open up
    assert await status_with("") == 401
    assert await status_with("second") == 200
    token.write_text("")
    assert await status_with("") == 401
    assert await status_with("second") == 200


async def test_unknown_control_path_is_json_404(upstream, proxy_factory, client):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    async with client.get(f"{proxy.control_url}/nope") as resp:
        assert resp.status == 404
        assert (await resp.json()) == {"error": "not_found"}
    async with client.post(f"{proxy.control_url}/config") as resp:
        assert resp.status == 405


async def test_get_config_echoes_no_header_value(upstream, proxy_factory, client):
    data = config(
        {"up": {"endpoints": [upstream.url], "headers": {"set": {"x-api-key": "set-secret-1"}}}},
        [
            {
                "name": "r",
                "upstream": "up",
                "match": {"headers": {"x-tenant": "match-secret-2"}},
                "policy": "p",
            }
        ],
        policies={
            "p": {
                "fallback": {
                    "chain": [{"static": {"headers": {"x-hint": "static-secret-3"}, "body": "x"}}]
                }
            }
        },
    )
    proxy = await proxy_factory(data)
    async with client.get(f"{proxy.control_url}/config") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "x-tenant" in text and "x-hint" in text  # the names are shown
    for secret in ("set-secret-1", "match-secret-2", "static-secret-3"):
        assert secret not in text


def hardened(upstream_url: str, **limits) -> dict:
    data = config({"up": {"endpoints": [upstream_url]}})
    data["control"]["limits"] = limits
    return data


async def test_a_slowloris_connection_to_the_control_port_is_closed_within_the_header_timeout(
    upstream, proxy_factory
):
    proxy = await proxy_factory(hardened(upstream.url, header_timeout="200ms"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.fender.ports["control"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by Fender
    assert loop.time() - started < 2
    writer.close()


async def test_an_idle_keep_alive_connection_to_the_control_port_is_closed(upstream, proxy_factory):
    proxy = await proxy_factory(hardened(upstream.url, idle_timeout="300ms"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.fender.ports["control"])
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(reader.read(), 5)  # the body, then the close
    assert 0.2 < loop.time() - started < 2
    writer.close()


@pytest.mark.parametrize(
    ("limits", "request_bytes"),
    [
        (
            {"max_header_size": "1KiB"},
            b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
        ),
        ({"max_request_line": "1KiB"}, b"GET /livez?" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n"),
        (
            {"max_headers": 10},
            b"GET /livez HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(20)) + b"\r\n",
        ),
    ],
    ids=["header-size", "request-line", "header-count"],
)
async def test_the_control_port_refuses_requests_over_its_limits(
    upstream, proxy_factory, limits, request_bytes
):
    proxy = await proxy_factory(hardened(upstream.url, **limits))
    response = await exchange(proxy.fender.ports["control"], request_bytes)
    assert status_of(response) in (400, 431)


def test_the_control_port_has_the_listeners_limits_by_default():
    from proxy.config.model import Control, Limits

    assert Control().limits == Limits()
    assert (Limits().header_timeout, Limits().idle_timeout) == (10.0, 75.0)


async def test_with_the_defaults_a_slowloris_control_connection_is_closed_after_ten_seconds(
    upstream, proxy_factory
):
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.fender.ports["control"])
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(reader.read(), 15) == b""  # aiohttp alone: an hour
    assert 9.5 < loop.time() - started < 12
    writer.close()
