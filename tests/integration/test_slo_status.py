"""SLOs through real requests, and what the control port shows of them: the counts a
route's objectives export, /status (pretty when asked), the status page's headers, the
last events, the sections other parts add, and `fender status`."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson

from proxy.__main__ import main
from tests.support.proxy import config
from tests.support.upstream import Step

SLO = {"availability": "99%", "latency": {"threshold": "200ms", "target": "90%"}}


def slo_config(upstream_url: str) -> dict:
    return config(
        {
            "up": {
                "endpoints": [upstream_url],
                "circuit_breaker": {"consecutive_failures": 3, "open_for": "1m"},
            }
        },
        routes=[
            {"name": "chat", "upstream": "up", "policy": "p", "slo": SLO},
            {"name": "plain", "upstream": "up", "match": {"path_prefix": "/plain"}},
        ],
        policies={
            "p": {
                "rate_limit": {"rate": "1000/s", "burst": 1000, "key": "header:x-tenant"},
                "fallback": {"on": ["circuit_open"], "chain": [{"static": {"status": 503}}]},
            }
        },
    )


async def test_objectives_count_what_the_app_got(upstream, proxy_factory, client):
    data = slo_config(upstream.url)
    data["listeners"][0]["routes"].insert(
        0,
        {
            "name": "limited",
            "upstream": "up",
            "policy": "tight",
            "match": {"path_prefix": "/limited"},
            "slo": {"availability": "99%"},
        },
    )
    data["policies"]["tight"] = {"rate_limit": {"rate": "1/m", "burst": 1}}
    proxy = await proxy_factory(data)
    upstream.push(
        Step(),  # good, fast
        Step(delay=0.3),  # good, slow: headers after 300ms
        Step(status=502),  # bad: a relayed 5xx
        Step(chunks=[b"a", b"b"], reset="after_headers"),  # bad: a stream cut short
    )
    for _ in range(4):
        async with client.get(f"{proxy.url}/x") as resp:
            with contextlib.suppress(aiohttp.ClientPayloadError):  # the cut one
                await resp.read()
    async with client.get(f"{proxy.url}/limited") as resp:
        assert resp.status == 200
    async with client.get(f"{proxy.url}/limited") as resp:
        assert resp.status == 429  # local: not counted
    answers = proxy.metric("fender_slo_answers_total", route="chat", slo="availability")
    bad = proxy.metric("fender_slo_bad_answers_total", route="chat", slo="availability")
    assert (answers, bad) == (4, 2)
    slow = proxy.metric("fender_slo_bad_answers_total", route="chat", slo="latency")
    assert (proxy.metric("fender_slo_answers_total", route="chat", slo="latency"), slow) == (4, 1)
    assert proxy.metric("fender_slo_answers_total", route="limited", slo="availability") == 1
    assert proxy.metric("fender_slo_objective", route="chat", slo="latency") == 0.9
    assert proxy.metric("fender_response_headers_seconds_bucket", route="chat", le="0.2") == 3
    assert proxy.metric("fender_slo_answers_total", route="plain", slo="availability") == 0


async def test_fallback_answers_are_good_and_status_shows_the_burn(upstream, proxy_factory, client):
    proxy = await proxy_factory(slo_config(upstream.url))
    upstream.default = Step(status=503)
    for _ in range(3):  # the upstream fails: 3 bad answers, and the circuit opens
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 503
    for _ in range(7):  # the fallback answers: good
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.headers["x-fender-outcome"] == "fallback"
    async with client.get(f"{proxy.control_url}/status") as resp:
        status = await resp.json()
    chat = status["routes"]["chat"]
    availability = chat["slo"]["availability"]["last_5m"]
    assert (availability["answers"], availability["bad"]) == (10, 3)
    assert availability["good_ratio"] == 0.7 and availability["burn_rate"] == 30.0
    assert chat["slo"]["window"] == "30d" and "Prometheus" in chat["slo"]["budget"]
    assert chat["good_ratio"] == 0.7 and chat["last_minute"] == {"failed": 3, "fallback": 7}
    assert chat["latency_ms"]["p99"] is not None and chat["rate_per_s"] > 0
    assert status["routes"]["plain"]["slo"] is None  # configured, quiet, no objective
    events = [e["text"] for e in status["events"]]
    assert events[0].startswith("degradation: full -> degraded")
    assert "circuit of up: closed -> open (3 consecutive failures)" in events
    assert events[-1].startswith("started")


async def test_status_is_pretty_when_asked_and_the_page_is_locked_down(
    upstream, proxy_factory, client, tmp_path
):
    data = slo_config(upstream.url)
    (tmp_path / "token").write_text("t0ken\n")
    data["control"]["token_file"] = str(tmp_path / "token")
    proxy = await proxy_factory(data)
    async with client.get(f"{proxy.control_url}/status?pretty") as resp:
        assert resp.status == 401  # the same rule as ever
    auth = {"authorization": "Bearer t0ken"}
    async with client.get(f"{proxy.control_url}/status?pretty", headers=auth) as resp:
        text = await resp.text()
    assert text.startswith('{\n  "ready": true') and orjson.loads(text)["ready"] is True
    async with client.get(f"{proxy.control_url}/", headers={"origin": "http://evil"}) as resp:
        page = await resp.text()
        headers = resp.headers
    assert resp.status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert 'data-token="required"' in page and "t0ken" not in page
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert not [h for h in headers if h.lower().startswith("access-control-")]
    assert "http://" not in page.split("<script>")[1].replace("http://www.w3.org/2000/svg", "")


async def test_a_section_added_by_another_part_is_shown(upstream, proxy_factory, client):
    proxy = await proxy_factory(slo_config(upstream.url))
    proxy.fender.board.add_section("queues", lambda: {"mail": {"depth": 3, "dead": 0}})
    async with client.get(f"{proxy.control_url}/status") as resp:
        status = await resp.json()
    assert status["sections"] == ["queues"] and status["queues"] == {
        "mail": {"depth": 3, "dead": 0}
    }


async def test_a_reload_is_an_event_and_a_stricter_threshold_goes_on_counting(
    upstream, proxy_factory, client, tmp_path
):
    proxy = await proxy_factory(slo_config(upstream.url))
    upstream.push(Step(delay=0.1))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    answers = ("fender_slo_answers_total", {"route": "chat", "slo": "latency"})
    assert proxy.metric(answers[0], **answers[1]) == 1
    stricter = slo_config(upstream.url)
    stricter["listeners"][0]["routes"][0]["slo"] = {
        **SLO,
        "latency": {"threshold": "50ms", "target": "90%"},
    }
    from proxy.config.model import Config

    await proxy.fender.reload(Config.model_validate(stricter))
    assert proxy.metric(answers[0], **answers[1]) == 1  # nothing lost, nothing doubled
    assert proxy.metric("fender_slo_bad_answers_total", route="chat", slo="latency") == 0
    assert 0.05 in proxy.fender.metrics.hot.buckets
    upstream.push(Step(delay=0.1))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
    assert proxy.metric("fender_slo_bad_answers_total", route="chat", slo="latency") == 1
    async with client.get(f"{proxy.control_url}/status") as resp:
        events = (await resp.json())["events"]
    assert events[0]["text"].startswith("policy reloaded (hash ")


async def test_fender_status_prints_tables_and_says_what_keeps_it(
    upstream, proxy_factory, client, tmp_path, capsys
):
    data = slo_config(upstream.url)
    (tmp_path / "token").write_text("t0ken\n")
    data["control"]["token_file"] = str(tmp_path / "token")
    proxy = await proxy_factory(data)
    upstream.default = Step(status=503)
    for _ in range(4):
        async with client.get(f"{proxy.url}/x") as resp:
            await resp.read()

    async def status(*args: str) -> int:
        return await asyncio.to_thread(main, ["status", "--control", proxy.control_url, *args])

    assert await status() == 1
    assert "wants the control token: give --token-file" in capsys.readouterr().err
    assert await status("--token-file", str(tmp_path / "token")) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: plain text
    lines = out.splitlines()
    assert lines[0].startswith("Fender  policy ") and "degradation DEGRADED" in lines[0]
    routes = lines.index("ROUTES")
    assert lines[routes + 1].split()[:5] == ["route", "req/s", "good", "p50", "p99"]
    chat = lines[routes + 2].split()
    assert chat[0] == "chat" and chat[2] == "25.00%"  # 3 failed, then a fallback
    assert "up        OPEN" in out and "circuit of up: closed -> open" in out
    assert await status("--control", "http://127.0.0.1:9") == 1  # the last --control wins
    assert "cannot reach http://127.0.0.1:9/status" in capsys.readouterr().err


def test_fender_status_watch_redraws_until_interrupted(monkeypatch, capsys):
    """--watch: one block per look off a terminal, until Ctrl-C (exit 0)."""
    from proxy.control import terminal

    looks = iter([{"x": 1}, {"x": 2}])
    slept: list[float] = []
    monkeypatch.setattr(terminal, "fetch", lambda control, token: next(looks))
    monkeypatch.setattr(terminal, "render", lambda data, width, colour: f"look {data['x']}\n")

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second wait

    monkeypatch.setattr(terminal.time, "sleep", sleep)
    assert terminal.run_status("http://x", None, watch=True, interval=2.0) == 0
    assert capsys.readouterr().out == "look 1\n\nlook 2\n\n" and slept == [2.0, 2.0]
