"""The control port: metrics, probes, the effective config, and its token."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy import config


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
