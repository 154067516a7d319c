"""Retries against a real scripted upstream: what the app and the upstream each observed."""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import pytest

from tests.support.proxy import config
from tests.support.upstream import ScriptedUpstream, Step


def retrying(upstream_url: str, **retry) -> dict:
    retry.setdefault("backoff", {"base": "10ms", "jitter": "none"})
    return config(
        {"up": {"endpoints": [upstream_url]}},
        [{"name": "r", "upstream": "up", "policy": "p"}],
        policies={"p": {"timeouts": {"total": "5s"}, "retry": retry}},
    )


async def test_connect_refused_is_retried_for_get_and_post_then_502(
    proxy_factory, client, unused_tcp_port
):
    proxy = await proxy_factory(retrying(f"http://127.0.0.1:{unused_tcp_port}", attempts=3))
    loop = asyncio.get_running_loop()
    for method in ("GET", "POST"):
        started = loop.time()
        async with client.request(
            method, f"{proxy.url}/x", data=b"b" if method == "POST" else None
        ) as resp:
            assert resp.status == 502
            assert resp.headers["x-fender-reason"] == "connect_error"
            assert resp.headers["x-fender-attempts"] == "3"
            assert resp.headers["x-fender-outcome"] == "failed"
        assert loop.time() - started < 5
    assert (
        proxy.metric("fender_upstream_attempts_total", upstream="up", result="connect_error") == 6
    )
    assert proxy.metric("fender_retries_total", route="r", reason="connect_error") == 4


async def test_reset_before_headers_retries_get_but_not_plain_post(upstream, proxy_factory, client):
    proxy = await proxy_factory(retrying(upstream.url, attempts=3))
    upstream.push(Step(reset="before_headers"), Step(body=b"second"))
    async with client.get(f"{proxy.url}/g") as resp:
        assert (resp.status, await resp.read()) == (200, b"second")
        assert resp.headers["x-fender-attempts"] == "2"
        assert resp.headers["x-fender-outcome"] == "retried"
    upstream.seen.clear()
    upstream.push(Step(reset="before_headers"), Step(body=b"never"))
    async with client.post(f"{proxy.url}/p", data=b"charge") as resp:
        assert resp.status == 502 and resp.headers["x-fender-reason"] == "reset"
        assert resp.headers["x-fender-attempts"] == "1"
    assert len(upstream.seen) == 1  # never re-sent
    upstream.script.clear()
    upstream.seen.clear()
    upstream.push(Step(reset="before_headers"), Step(body=b"charged"))
    async with client.post(
        f"{proxy.url}/p", data=b"charge", headers={"Idempotency-Key": "k-77"}
    ) as resp:
        assert (resp.status, await resp.read()) == (200, b"charged")
    assert [s.headers["idempotency-key"] for s in upstream.seen] == ["k-77", "k-77"]
    assert [s.body for s in upstream.seen] == [b"charge", b"charge"]


async def test_503_twice_then_200_with_backoff_inside_its_bounds(upstream, proxy_factory, client):
    proxy = await proxy_factory(
        retrying(upstream.url, attempts=3, backoff={"base": "200ms", "jitter": "equal"})
    )
    upstream.push(Step(status=503), Step(status=503), Step(body=b"fine"))
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, await resp.read()) == (200, b"fine")
        assert resp.headers["x-fender-attempts"] == "3"
    first, second, third = (s.at for s in upstream.seen)
    # equal jitter: between half the delay and the delay (200ms, then 400ms); 60ms of slack
    assert 0.1 <= second - first <= 0.26
    assert 0.2 <= third - second <= 0.46
    assert proxy.metric("fender_retries_total", route="r", reason="503") == 2


async def test_per_try_timeout_twice_then_504_at_the_total_deadline(
    upstream, proxy_factory, client
):
    data = retrying(upstream.url, attempts=3)
    data["policies"]["p"]["timeouts"] = {"per_try": "400ms", "total": "800ms"}
    proxy = await proxy_factory(data)
    upstream.default = Step(delay=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(f"{proxy.url}/slow") as resp:
        assert resp.status == 504
        assert resp.headers["x-fender-reason"] == "timeout"
        assert resp.headers["x-fender-attempts"] == "2"
    assert 0.75 <= loop.time() - started <= 1.0
    assert len(upstream.seen) == 2
    assert proxy.metric("fender_upstream_attempts_total", upstream="up", result="timeout") == 2


async def test_retry_after_seconds_and_http_date_are_waited(upstream, proxy_factory, client):
    proxy = await proxy_factory(retrying(upstream.url, attempts=2))
    for form in ("seconds", "date"):
        # An HTTP date has whole seconds: +3s leaves at least 2s to wait.
        asked = "1" if form == "seconds" else email.utils.formatdate(time.time() + 3, usegmt=True)
        least = 1.0 if form == "seconds" else 1.9
        upstream.seen.clear()
        upstream.push(Step(status=429, headers={"Retry-After": asked}), Step(body=b"ok"))
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 200
        assert upstream.seen[1].at - upstream.seen[0].at >= least


async def test_retry_after_beyond_the_deadline_relays_the_429_at_once(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(retrying(upstream.url, attempts=3, retry_after={"max": "5m"}))
    upstream.push(Step(status=429, headers={"Retry-After": "120"}, body=b"slow down"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, await resp.read()) == (429, b"slow down")
        assert resp.headers["Retry-After"] == "120"
        assert resp.headers["x-fender-attempts"] == "1"
    assert loop.time() - started < 0.5
    assert proxy.metric("fender_retry_skipped_total", route="r", reason="deadline") == 1


async def test_budget_bounds_upstream_attempts_under_steady_failure(
    upstream, proxy_factory, client
):
    budget = {"ratio": "20%", "min_per_second": 1, "window": "10s"}
    proxy = await proxy_factory(retrying(upstream.url, attempts=3, budget=budget))
    upstream.choose = lambda n: Step(status=503 if n % 2 else 200)  # half of them fail
    requests = 200
    sem = asyncio.Semaphore(10)

    async def one():
        async with sem, client.get(f"{proxy.url}/x") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(requests)))
    attempts = proxy.metric("fender_upstream_attempts_total", upstream="up", result="response")
    # Without a budget every failure would be retried: about 1.5 attempts per request.
    assert attempts / requests <= 1 + 0.2 + 10 / requests
    assert proxy.metric("fender_retry_budget_exhausted_total", route="r") > 0


async def test_post_body_over_buffer_limit_is_sent_once_and_the_503_relayed(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(retrying(upstream.url, attempts=3, buffer_limit="1KiB"))
    upstream.push(Step(status=503, body=b"busy"), Step(body=b"never"))
    body = b"z" * 2048
    async with client.post(
        f"{proxy.url}/upload", data=body, headers={"idempotency-key": "u1"}
    ) as resp:
        assert (resp.status, await resp.read()) == (503, b"busy")
        assert resp.headers["x-fender-attempts"] == "1"
    assert [s.body for s in upstream.seen] == [body]
    assert proxy.metric("fender_retry_skipped_total", route="r", reason="body_too_large") == 1


async def test_reported_attempts_equal_what_the_upstream_saw(upstream, proxy_factory, client):
    # aiohttp's client would replay this GET once by itself after the reset: the upstream
    # would see two requests while Fender reports one.
    proxy = await proxy_factory(config({"up": {"endpoints": [upstream.url]}}))
    upstream.push(Step(reset="before_headers"), Step(body=b"replayed"))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 502
        assert resp.headers["x-fender-attempts"] == "1"
    assert len(upstream.seen) == 1


async def test_a_retry_goes_to_another_endpoint(aiohttp_server, proxy_factory, client):
    ups = []
    for status in (503, 200):
        u = ScriptedUpstream()
        u.default = Step(status=status)
        u.url = f"http://127.0.0.1:{(await aiohttp_server(u.app)).port}"
        ups.append(u)
    data = retrying(ups[0].url, attempts=2)
    data["upstreams"]["up"]["endpoints"] = [u.url for u in ups]
    proxy = await proxy_factory(data)
    for _ in range(3):
        async with client.get(f"{proxy.url}/x") as resp:
            assert resp.status == 200
    assert len(ups[0].seen) <= 3 and len(ups[1].seen) == 3


async def test_a_body_cut_after_the_head_is_not_retried(upstream, proxy_factory, client):
    # The head went to the app at once (a slow body must not hold it back): from then on
    # a retry would send the app two answers. The app sees the cut instead.
    proxy = await proxy_factory(retrying(upstream.url, attempts=2))
    upstream.push(Step(body=b"partial" * 100, reset="after_headers"), Step(body=b"whole"))
    async with client.get(f"{proxy.url}/x") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert len(upstream.seen) == 1
    assert proxy.metric("fender_retries_total", route="r", reason="reset") == 0


async def test_a_429_relayed_once_retries_are_used_up_is_failed_everywhere(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(retrying(upstream.url, attempts=2))
    upstream.default = Step(status=429, body=b"slow down")
    async with client.get(f"{proxy.url}/x") as resp:
        assert (resp.status, await resp.read()) == (429, b"slow down")
        assert resp.headers["x-fender-attempts"] == "2"
        assert resp.headers["x-fender-outcome"] == "failed"
        assert resp.headers["x-fender-reason"] == "upstream_status"
    (line,) = [x for x in proxy.log_lines() if x["event"] == "request"]
    assert (line["status"], line["outcome"]) == (429, "failed")
    assert proxy.metric("fender_requests_total", route="r", outcome="failed", code_class="4xx") == 1
    assert proxy.metric("fender_requests_total", route="r", outcome="ok", code_class="4xx") == 0
