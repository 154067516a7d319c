"""The control API's actions: token, POST only, breaker overrides that expire, the audit
chain, /status and /drain."""

from __future__ import annotations

import asyncio

import orjson

from proxy.__main__ import main
from tests.support.proxy import config
from tests.support.upstream import Step


def guarded(upstream_url: str, tmp_path, token: bool = True) -> dict:
    data = config(
        {"up": {"endpoints": [upstream_url], "circuit_breaker": {"consecutive_failures": 3}}}
    )
    if token:
        (tmp_path / "token").write_text("t0ken\n")
        data["control"]["token_file"] = str(tmp_path / "token")
    data["control"]["audit_log"] = str(tmp_path / "audit.log")
    return data


AUTH = {"authorization": "Bearer t0ken"}


async def test_actions_need_the_token_and_post(upstream, proxy_factory, client, tmp_path):
    proxy = await proxy_factory(guarded(upstream.url, tmp_path))
    url = f"{proxy.control_url}/breakers/up/open"
    async with client.post(url, json={"ttl": "1m"}) as resp:
        assert resp.status == 401
    async with client.get(url, headers=AUTH) as resp:
        assert resp.status == 405
    async with client.post(url, headers=AUTH, json={"ttl": "2d"}) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "bad_ttl")
    async with client.post(url, headers=AUTH) as resp:
        assert resp.status == 400  # an override without a ttl is refused
    async with client.post(
        f"{proxy.control_url}/breakers/nope/open", headers=AUTH, json={"ttl": "1m"}
    ) as resp:
        assert resp.status == 404
    assert not (tmp_path / "audit.log").exists()  # nothing was changed, nothing audited


async def test_forced_open_breaker_expires_by_itself(upstream, proxy_factory, client, tmp_path):
    proxy = await proxy_factory(guarded(upstream.url, tmp_path))
    async with client.post(
        f"{proxy.control_url}/breakers/up/open", headers=AUTH, json={"ttl": "300ms"}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["breaker"]["override"]["state"] == "open"
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.headers["x-fender-reason"] == "circuit_open"
    assert upstream.seen == []
    await asyncio.sleep(0.35)  # the override's ttl passes
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200  # a probe went through and closed it
    async with client.get(f"{proxy.control_url}/status", headers=AUTH) as resp:
        breaker = (await resp.json())["upstreams"]["up"]["breaker"]
    assert (breaker["state"], breaker["override"]) == ("closed", None)


async def test_forced_closed_breaker_ignores_failures_then_reset(
    upstream, proxy_factory, client, tmp_path
):
    proxy = await proxy_factory(guarded(upstream.url, tmp_path))
    async with client.post(f"{proxy.control_url}/breakers/up/close?ttl=1m", headers=AUTH) as resp:
        assert resp.status == 200
    upstream.default = Step(status=503)
    for _ in range(5):
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 503 and "x-fender-reason" in resp.headers
            assert resp.headers["x-fender-reason"] == "upstream_status"
    assert len(upstream.seen) == 5  # held closed: every call went through
    async with client.post(f"{proxy.control_url}/breakers/up/reset", headers=AUTH) as resp:
        assert (await resp.json())["breaker"]["override"] is None


async def test_status_shows_guards_and_route_outcomes(upstream, proxy_factory, client, tmp_path):
    data = guarded(upstream.url, tmp_path, token=False)
    data["upstreams"]["up"]["bulkhead"] = {"max_concurrent": 4}
    proxy = await proxy_factory(data)
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    async with client.get(f"{proxy.control_url}/status") as resp:
        status = await resp.json()
    up = status["upstreams"]["up"]
    assert up["endpoints"] == [{"endpoint": upstream.url, "usable": True}]
    assert up["breaker"]["state"] == "closed"
    assert up["bulkhead"] == {"in_flight": 0, "queued": 0, "max_concurrent": 4, "max_queued": 0}
    route = status["routes"]["all"]
    assert (route["total"], route["last_minute"]) == ({"ok": 1}, {"ok": 1})
    assert route["good_ratio"] == 1.0 and route["slo"] is None
    assert status["ready"] is True and status["config_hash"] == proxy.fender.config.hash


async def test_audit_chain_verifies_and_names_an_edited_line(
    upstream, proxy_factory, client, tmp_path, capsys
):
    proxy = await proxy_factory(guarded(upstream.url, tmp_path))
    for action in ("open", "close", "reset"):
        async with client.post(
            f"{proxy.control_url}/breakers/up/{action}", headers=AUTH, json={"ttl": "1m"}
        ) as resp:
            assert resp.status == 200
    log = tmp_path / "audit.log"
    lines = log.read_bytes().splitlines()
    assert [orjson.loads(line)["action"] for line in lines] == [
        "breaker.open",
        "breaker.close",
        "breaker.reset",
    ]
    assert main(["audit", "verify", str(log)]) == 0
    assert "3 audit lines, chain intact" in capsys.readouterr().out
    lines[1] = lines[1].replace(b'"ttl_s":60.0', b'"ttl_s":6000.0')  # someone edits the record
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["audit", "verify", str(log)]) == 1
    assert f"{log}:3: the chain is broken: line 3 does not follow line 2" in capsys.readouterr().err
    # A new Fender on the same file continues the chain from its last line.
    log.write_bytes(b"\n".join(lines[:1]) + b"\n")
    proxy2 = await proxy_factory(guarded(upstream.url, tmp_path))
    async with client.post(f"{proxy2.control_url}/breakers/up/reset", headers=AUTH) as resp:
        assert resp.status == 200
    assert main(["audit", "verify", str(log)]) == 0


async def test_log_level_is_read_and_changed_through_the_api(
    upstream, proxy_factory, client, tmp_path
):
    proxy = await proxy_factory(guarded(upstream.url, tmp_path, token=False))
    async with client.get(f"{proxy.control_url}/log-level") as resp:
        assert await resp.json() == {"level": "info"}
    async with client.post(f"{proxy.control_url}/log-level", json={"level": "loud"}) as resp:
        assert resp.status == 400
    async with client.post(f"{proxy.control_url}/log-level", json={"level": "warning"}) as resp:
        assert await resp.json() == {"level": "warning"}
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    assert [x for x in proxy.log_lines() if x["event"] == "request"] == []  # info: dropped
    async with client.post(f"{proxy.control_url}/log-level", json={"level": "info"}) as resp:
        assert resp.status == 200
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    assert len([x for x in proxy.log_lines() if x["event"] == "request"]) == 1
    actions = [
        x["action"] for x in map(orjson.loads, (tmp_path / "audit.log").read_bytes().splitlines())
    ]
    assert actions == ["log_level", "log_level"]
