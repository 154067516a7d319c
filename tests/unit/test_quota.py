"""The upstream quota's cool-down on a fake clock: honoured, but never without bound."""

from __future__ import annotations

import pytest

from proxy.config.upstream import UpstreamRateLimit
from proxy.http.headers import Headers
from proxy.http.message import Call, Rejected, Reply
from proxy.observe.metrics import Metrics
from proxy.policies.rate_limit import Quota
from tests.support.clock import FakeClock


def call(clock: FakeClock, deadline: float) -> Call:
    return Call(
        method="GET",
        target="/",
        headers=Headers(),
        body=None,
        route="r",
        request_id="id",
        started=clock.now,
        deadline=clock.now + deadline,
    )


def answering(status: int, **headers: str):
    async def upstream(c: Call) -> Reply:
        return Reply(status=status, headers=Headers(headers))

    return upstream


@pytest.mark.parametrize(("asked", "paused"), [("2", 2.0), ("99999999999", 30.0)])
async def test_a_429_pauses_the_quota_for_what_it_asks_up_to_max_cooldown(asked, paused):
    clock = FakeClock()
    quota = Quota(UpstreamRateLimit(max_cooldown="30s"), "up", clock, Metrics())
    await quota(call(clock, 100), answering(429, **{"Retry-After": asked}))
    assert quota.pause_left() == pytest.approx(paused)
    await quota(call(clock, 100), answering(200))  # waits the pause out: its deadline allows
    assert clock.sleeps == [pytest.approx(paused)]


@pytest.mark.parametrize(
    ("headers", "paused"),
    [
        ({"retry-after-ms": "2500"}, 2.5),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}, 30.0),
    ],
)
async def test_the_llm_apis_wait_headers_pause_the_quota(headers, paused):
    clock = FakeClock()
    quota = Quota(UpstreamRateLimit(max_cooldown="30s"), "up", clock, Metrics())
    await quota(call(clock, 100), answering(429, **headers))
    assert quota.pause_left() == pytest.approx(paused)


async def test_a_request_that_cannot_wait_out_the_pause_is_answered_at_once():
    clock = FakeClock()
    quota = Quota(UpstreamRateLimit(), "up", clock, Metrics())
    await quota(call(clock, 100), answering(503, **{"Retry-After": "5"}))
    with pytest.raises(Rejected) as info:
        await quota(call(clock, 1), answering(200))
    assert (info.value.reason, info.value.status, info.value.retry_after) == (
        "rate_limited",
        429,
        5.0,
    )
    assert clock.sleeps == []
