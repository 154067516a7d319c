"""Per-upstream guards against real sockets: circuit breaker, bulkhead, quota."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.proxy import config
from tests.support.raw import RawUpstream
from tests.support.upstream import Step


def guarded(upstream_url: str, policy: dict | None = None, **guards) -> dict:
    return config(
        {"up": {"endpoints": [upstream_url], **guards}},
        [{"name": "g", "upstream": "up", "policy": "p"}],
        policies={"p": policy or {}},
    )


async def get(client, url: str) -> tuple[int, dict]:
    async with client.get(url) as resp:
        await resp.read()
        return resp.status, resp.headers.copy()


async def test_consecutive_503s_open_the_circuit_then_probes_close_it(
    upstream, proxy_factory, client
):
    breaker = {
        "consecutive_failures": 3,
        "open_for": "300ms",
        "half_open": {"probes": 2, "successes": 2},
    }
    proxy = await proxy_factory(guarded(upstream.url, circuit_breaker=breaker))
    upstream.default = Step(status=503)
    for _ in range(3):
        assert (await get(client, f"{proxy.url}/x"))[0] == 503
    assert proxy.metric("fender_circuit_state", upstream="up") == 2
    # Open: answered at once, the upstream sees nothing.
    for _ in range(5):
        status, headers = await get(client, f"{proxy.url}/x")
        assert (status, headers["x-fender-reason"]) == (503, "circuit_open")
        assert headers["x-fender-outcome"] == "rejected" and int(headers["Retry-After"]) >= 1
    assert len(upstream.seen) == 3
    await asyncio.sleep(0.35)  # open_for passes
    # Half open: of four concurrent calls, exactly the two probes reach the upstream.
    upstream.default = Step(body=b"ok", delay=0.3)
    results = await asyncio.gather(*(get(client, f"{proxy.url}/x") for _ in range(4)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 503, 503]
    assert len(upstream.seen) == 3 + 2
    assert proxy.metric("fender_circuit_state", upstream="up") == 0  # two successes closed it
    assert (await get(client, f"{proxy.url}/x"))[0] == 200
    transitions = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    for was, to in transitions:
        assert (
            proxy.metric(
                "fender_circuit_transitions_total", upstream="up", **{"from": was, "to": to}
            )
            == 1
        )
    logged = [(x["was"], x["to"]) for x in proxy.log_lines() if x["event"] == "circuit"]
    assert logged == transitions


async def test_a_failed_probe_reopens_the_circuit(upstream, proxy_factory, client):
    breaker = {"consecutive_failures": 1, "open_for": "200ms"}
    proxy = await proxy_factory(guarded(upstream.url, circuit_breaker=breaker))
    upstream.default = Step(status=502)
    assert (await get(client, f"{proxy.url}/x"))[0] == 502
    await asyncio.sleep(0.25)
    assert (await get(client, f"{proxy.url}/x"))[0] == 502  # the probe failed
    status, headers = await get(client, f"{proxy.url}/x")
    assert (status, headers["x-fender-reason"]) == (503, "circuit_open")
    assert len(upstream.seen) == 2
    assert (
        proxy.metric(
            "fender_circuit_transitions_total", upstream="up", **{"from": "half_open", "to": "open"}
        )
        == 1
    )


async def test_an_open_circuit_stops_the_retry_loop(upstream, proxy_factory, client):
    policy = {"retry": {"attempts": 5, "backoff": {"base": "10ms"}}}
    proxy = await proxy_factory(
        guarded(
            upstream.url, policy, circuit_breaker={"consecutive_failures": 2, "open_for": "10s"}
        )
    )
    upstream.default = Step(status=503)
    status, headers = await get(client, f"{proxy.url}/x")
    # Two attempts reached the upstream; the third met the open circuit and ended the loop.
    assert (status, headers["x-fender-reason"], headers["x-fender-attempts"]) == (
        503,
        "circuit_open",
        "2",
    )
    assert len(upstream.seen) == 2


async def test_bulkhead_and_rate_limit_rejections_never_open_the_circuit(
    upstream, proxy_factory, client
):
    proxy = await proxy_factory(
        guarded(
            upstream.url,
            circuit_breaker={"consecutive_failures": 1},
            bulkhead={"max_concurrent": 1, "max_queued": 0},
            rate_limit={"rate": "3/s", "burst": 3, "on_limit": "reject"},
        )
    )
    upstream.default = Step(delay=0.3)
    results = await asyncio.gather(*(get(client, f"{proxy.url}/x") for _ in range(5)))
    reasons = sorted(h.get("x-fender-reason", "") for _, h in results)
    assert reasons == ["", "bulkhead_full", "bulkhead_full", "bulkhead_full", "bulkhead_full"]
    upstream.default = Step()
    quick = [await get(client, f"{proxy.url}/x") for _ in range(4)]
    assert [h.get("x-fender-reason", "") for _, h in quick].count("rate_limited") >= 2
    assert proxy.metric("fender_rejections_total", route="g", reason="rate_limited") >= 2
    assert proxy.metric("fender_circuit_state", upstream="up") == 0
    assert (await get(client, f"{proxy.url}/x"))[1].get("x-fender-reason") != "circuit_open"


async def test_bulkhead_bounds_concurrency_and_queues_or_rejects_the_excess(
    upstream, proxy_factory, client
):
    n = 2
    proxy = await proxy_factory(
        guarded(
            upstream.url, bulkhead={"max_concurrent": n, "max_queued": n, "queue_timeout": "5s"}
        )
    )
    upstream.default = Step(delay=1.0)
    results = await asyncio.gather(*(get(client, f"{proxy.url}/x") for _ in range(3 * n)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (2 * n) + [503] * n  # n in flight, n waited, n rejected
    assert upstream.max_in_flight == n
    assert proxy.metric("fender_rejections_total", route="g", reason="bulkhead_full") == n
    assert proxy.metric("fender_bulkhead_in_flight", upstream="up") == 0


async def test_bulkhead_queue_timeout_rejects_waiters(upstream, proxy_factory, client):
    proxy = await proxy_factory(
        guarded(
            upstream.url, bulkhead={"max_concurrent": 1, "max_queued": 5, "queue_timeout": "200ms"}
        )
    )
    upstream.default = Step(delay=0.6)
    done: list[int] = []

    async def call() -> None:
        status, _ = await get(client, f"{proxy.url}/x")
        done.append(status)

    await asyncio.gather(*(call() for _ in range(3)))
    # The waiters gave up at their queue timeout, before the slot came free.
    assert done == [503, 503, 200]
    assert upstream.max_in_flight == 1 and len(upstream.seen) == 1


async def test_a_stream_holds_its_bulkhead_slot_until_it_ends(upstream, proxy_factory, client):
    proxy = await proxy_factory(guarded(upstream.url, bulkhead={"max_concurrent": 1}))
    gate = asyncio.Event()
    upstream.push(Step(chunks=[b"a", b"b"], gates=[gate]))
    async with client.get(f"{proxy.url}/stream") as resp:
        assert await resp.content.readany() == b"a"
        status, headers = await get(client, f"{proxy.url}/other")
        assert (status, headers["x-fender-reason"]) == (503, "bulkhead_full")
        gate.set()
        assert await resp.content.read() == b"b"
    assert (await get(client, f"{proxy.url}/after"))[0] == 200


async def test_upstream_429_with_retry_after_pauses_the_quota(upstream, proxy_factory, client):
    data = config(
        {"up": {"endpoints": [upstream.url], "rate_limit": {"cooldown": True}}},
        [
            {
                "name": "short",
                "upstream": "up",
                "policy": "short",
                "match": {"path_prefix": "/short"},
            },
            {"name": "long", "upstream": "up", "policy": "long"},
        ],
        policies={"short": {"timeouts": {"total": "1s"}}, "long": {"timeouts": {"total": "10s"}}},
    )
    proxy = await proxy_factory(data)
    upstream.push(Step(status=429, headers={"Retry-After": "2"}))
    loop = asyncio.get_running_loop()
    assert (await get(client, f"{proxy.url}/x"))[0] == 429
    paused_at = loop.time()
    # A request whose deadline ends before the pause: answered at once, upstream untouched.
    status, headers = await get(client, f"{proxy.url}/short")
    assert (status, headers["x-fender-reason"]) == (429, "rate_limited")
    assert int(headers["Retry-After"]) == 2
    assert loop.time() - paused_at < 0.5
    # One that can wait: held until the pause ends, then sent.
    assert (await get(client, f"{proxy.url}/y"))[0] == 200
    assert 1.8 <= upstream.seen[-1].at - upstream.seen[0].at <= 2.6
    assert len(upstream.seen) == 2


async def test_a_deadline_spent_before_the_attempt_is_not_the_upstreams_failure(
    upstream, proxy_factory, client
):
    policy = {"timeouts": {"first_byte": "300ms"}, "retry": {"attempts": 2}}
    proxy = await proxy_factory(
        guarded(upstream.url, policy, circuit_breaker={"consecutive_failures": 1})
    )

    async def slow_upload():
        yield b"a"
        await asyncio.sleep(0.5)  # the app uploads slower than the deadline allows
        yield b"b"

    async with client.put(f"{proxy.url}/x", data=slow_upload()) as resp:
        assert (resp.status, resp.headers["x-fender-reason"]) == (504, "timeout")
        assert resp.headers["x-fender-attempts"] == "0"
    assert upstream.seen == []
    assert proxy.metric("fender_circuit_state", upstream="up") == 0


async def test_a_non_http_banner_is_bad_response_and_trips_the_breaker(proxy_factory, client):
    async with RawUpstream(b"SSH-2.0-OpenSSH_9.6\r\n") as banner:
        breaker = {"consecutive_failures": 2, "open_for": "10s"}  # the default failure_on
        proxy = await proxy_factory(guarded(banner.url, circuit_breaker=breaker))
        for _ in range(2):
            status, headers = await get(client, f"{proxy.url}/x")
            assert (status, headers["x-fender-reason"]) == (502, "bad_response")
        status, headers = await get(client, f"{proxy.url}/x")
        assert (status, headers["x-fender-reason"]) == (503, "circuit_open")
        assert banner.connections == 2
        assert proxy.metric("fender_circuit_state", upstream="up") == 2
        assert (
            proxy.metric("fender_upstream_attempts_total", upstream="up", result="bad_response")
            == 2
        )


async def test_bad_response_is_a_retry_condition(proxy_factory, client):
    async with RawUpstream(b"220 smtp.example.com ESMTP\r\n") as banner:
        policy = {"retry": {"attempts": 3, "on": ["bad_response"], "backoff": {"base": "1ms"}}}
        proxy = await proxy_factory(guarded(banner.url, policy))
        status, headers = await get(client, f"{proxy.url}/x")
        assert (status, headers["x-fender-reason"], headers["x-fender-attempts"]) == (
            502,
            "bad_response",
            "3",
        )
        assert proxy.metric("fender_retries_total", route="g", reason="bad_response") == 2


@pytest.mark.parametrize(
    ("limits", "answer"),
    [
        ({"max_headers": 10}, b"".join(b"X-%d: 1\r\n" % i for i in range(20))),
        ({"max_header_size": "1KiB"}, b"X-Big: " + b"a" * 2000 + b"\r\n"),
    ],
    ids=["max_headers", "max_header_size"],
)
async def test_upstream_header_limits_make_an_oversized_answer_bad_response(
    proxy_factory, client, limits, answer
):
    head = b"HTTP/1.1 200 OK\r\n" + answer + b"Content-Length: 2\r\n\r\nok"
    async with RawUpstream(head) as oversized:
        proxy = await proxy_factory(guarded(oversized.url, limits=limits))
        status, headers = await get(client, f"{proxy.url}/x")
        assert (status, headers["x-fender-reason"]) == (502, "bad_response")
    async with RawUpstream(head) as oversized:  # within the defaults, it goes through
        proxy = await proxy_factory(guarded(oversized.url))
        assert (await get(client, f"{proxy.url}/x"))[0] == 200


async def test_a_hung_probe_stops_holding_the_circuit_after_max_wait(
    upstream, proxy_factory, client
):
    breaker = {"consecutive_failures": 1, "open_for": "200ms", "half_open": {"max_wait": "300ms"}}
    proxy = await proxy_factory(guarded(upstream.url, circuit_breaker=breaker))
    upstream.push(Step(status=500), Step(hang=True))
    assert (await get(client, f"{proxy.url}/x"))[0] == 500  # open
    await asyncio.sleep(0.25)
    hung = asyncio.create_task(get(client, f"{proxy.url}/x"))  # the probe, and it hangs
    while len(upstream.seen) < 2:
        await asyncio.wait_for(upstream.arrived.wait(), 5)
        upstream.arrived.clear()
    status, headers = await get(client, f"{proxy.url}/x")
    assert (status, headers["x-fender-reason"]) == (503, "circuit_open")  # the probe is out
    await asyncio.sleep(0.35)  # past max_wait: the probe counts as failed, open for 400ms
    assert proxy.metric("fender_circuit_state", upstream="up") == 2
    assert (await get(client, f"{proxy.url}/x"))[1]["x-fender-reason"] == "circuit_open"
    await asyncio.sleep(0.45)
    status, headers = await get(client, f"{proxy.url}/x")  # a new probe, and it answers
    assert (status, headers.get("x-fender-reason")) == (200, None)
    assert proxy.metric("fender_circuit_state", upstream="up") == 0
    assert len(upstream.seen) == 3
    hung.cancel()
