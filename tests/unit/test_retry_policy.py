"""The Retry policy's decisions, without sockets: scripted attempts on a fake clock."""

from __future__ import annotations

import random
from collections import deque

import pytest

from proxy.config.policy import Retry as RetryConfig
from proxy.http.headers import Headers
from proxy.http.message import Call, Rejected, Reply, UpstreamFailed
from proxy.observe.metrics import Metrics
from proxy.policies.retry import Retry
from tests.support.clock import FakeClock
from tests.support.streams import Collect, stream_of


def reply(status: int, **headers: str) -> Reply:
    r = Reply(status=status, headers=Headers(headers))
    r.outcome = "failed" if status >= 500 else "ok"
    return r


class Script:
    """call_next: each attempt takes the next scripted result."""

    def __init__(self, *results: Reply | Exception) -> None:
        self.results = deque(results)
        self.released = 0

    async def __call__(self, call: Call) -> Reply:
        call.attempts += 1
        result = self.results.popleft()
        if isinstance(result, Exception):
            raise result
        result.release = self._release
        return result

    def _release(self) -> None:
        self.released += 1


def make(clock=None, **config) -> tuple[Retry, FakeClock, Metrics]:
    clock = clock or FakeClock()
    metrics = Metrics()
    policy = Retry(RetryConfig.model_validate(config), "r", clock, metrics, random.Random(5))
    return policy, clock, metrics


def call(method="GET", deadline=float("inf"), body=None, **headers: str) -> Call:
    return Call(
        method=method,
        target="/",
        headers=Headers(headers),
        body=body,
        route="r",
        request_id="id",
        started=1000.0,
        deadline=deadline,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_retries_503_until_success_with_bounded_backoff():
    policy, clock, metrics = make(attempts=3, backoff={"base": "100ms", "jitter": "full"})
    script = Script(reply(503), reply(503), reply(200))
    c = call()
    result = await policy(c, script)
    assert (result.status, result.outcome, c.attempts) == (200, "retried", 3)
    assert script.released == 2
    assert 0 <= clock.sleeps[0] <= 0.1 and 0 <= clock.sleeps[1] <= 0.2
    assert sample(metrics, "fender_retries_total", route="r", reason="503") == 2


async def test_gives_the_last_answer_when_attempts_are_used_up():
    policy, _, _ = make(attempts=2)
    c = call()
    result = await policy(c, Script(reply(502), reply(503)))
    assert (result.status, result.outcome, c.attempts) == (503, "failed", 2)


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "120"}])
async def test_a_429_given_up_on_is_failed_not_ok(headers):
    policy, _, _ = make(attempts=2)
    result = await policy(call(), Script(reply(429, **headers), reply(429, **headers)))
    assert (result.status, result.outcome, result.fender_reason) == (
        429,
        "failed",
        "upstream_status",
    )


async def test_status_not_listed_is_relayed_at_once():
    policy, clock, _ = make(on=["503"])
    result = await policy(call(), Script(reply(500)))
    assert result.status == 500 and clock.sleeps == []


@pytest.mark.parametrize(
    ("method", "headers", "condition", "retried"),
    [
        ("GET", {}, "reset", True),
        ("PUT", {}, "timeout", True),
        ("POST", {}, "reset", False),
        ("PATCH", {}, "timeout", False),
        ("POST", {}, "connect_error", True),
        ("POST", {"idempotency-key": "k1"}, "reset", True),
    ],
)
async def test_non_idempotent_methods_only_when_safe(method, headers, condition, retried):
    policy, _, metrics = make(attempts=2)
    script = Script(UpstreamFailed(condition), reply(200))
    c = call(method, **headers)
    if retried:
        assert (await policy(c, script)).status == 200
    else:
        with pytest.raises(UpstreamFailed):
            await policy(c, script)
        assert (
            sample(metrics, "fender_retry_skipped_total", route="r", reason="not_idempotent") == 1
        )
    assert c.attempts == (2 if retried else 1)


async def test_local_rejections_are_never_retried():
    policy, _, _ = make()
    c = call()
    with pytest.raises(Rejected):
        await policy(c, Script(Rejected("circuit_open")))
    assert c.attempts == 1


async def test_retry_after_is_waited_instead_of_backoff():
    policy, clock, _ = make()
    result = await policy(call(), Script(reply(429, **{"Retry-After": "2"}), reply(200)))
    assert result.status == 200 and clock.sleeps == [2.0]


@pytest.mark.parametrize(
    ("headers", "waited"),
    [
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "3s"}, 3.0),
    ],
)
async def test_the_llm_apis_wait_headers_are_waited_instead_of_backoff(headers, waited):
    policy, clock, _ = make()
    result = await policy(call(), Script(reply(429, **headers), reply(200)))
    assert result.status == 200 and clock.sleeps == [pytest.approx(waited)]


async def test_retry_after_beyond_max_relays_at_once():
    policy, clock, metrics = make(retry_after={"max": "60s"})
    result = await policy(call(), Script(reply(503, **{"Retry-After": "120"})))
    assert result.status == 503 and result.headers["Retry-After"] == "120" and clock.sleeps == []
    assert (
        sample(metrics, "fender_retry_skipped_total", route="r", reason="retry_after_too_long") == 1
    )


async def test_unparsable_retry_after_falls_back_to_backoff():
    policy, clock, _ = make(backoff={"base": "100ms", "jitter": "none"})
    await policy(call(), Script(reply(429, **{"Retry-After": "later"}), reply(200)))
    assert clock.sleeps == [0.1]


async def test_a_wait_past_the_deadline_is_not_started():
    clock = FakeClock()
    policy, _, metrics = make(clock, backoff={"base": "1s", "jitter": "none"})
    result = await policy(call(deadline=clock.now + 0.5), Script(reply(503)))
    assert result.status == 503 and clock.sleeps == []
    assert sample(metrics, "fender_retry_skipped_total", route="r", reason="deadline") == 1


async def test_spent_budget_relays_the_last_answer():
    policy, _, metrics = make(budget={"ratio": "0%", "min_per_second": 0})
    result = await policy(call(), Script(reply(503)))
    assert result.status == 503
    assert sample(metrics, "fender_retry_budget_exhausted_total", route="r") == 1


async def test_body_is_buffered_for_replay():
    policy, _, _ = make()
    seen: list[bytes] = []

    async def upstream(c: Call) -> Reply:
        c.attempts += 1
        seen.append(c.body)
        return reply(503 if c.attempts == 1 else 200)

    await policy(call("PUT", body=stream_of(b"ab", b"cd")), upstream)
    assert seen == [b"abcd", b"abcd"]


async def test_body_over_buffer_limit_streams_once_and_is_not_retried():
    policy, _, metrics = make(buffer_limit="4B")

    sent = Collect()

    async def upstream(c: Call) -> Reply:
        c.attempts += 1
        c.body.pipe(sent)
        return reply(503)

    c = call("PUT", body=stream_of(b"abc", b"def", b"gh"))
    assert (await policy(c, upstream)).status == 503
    assert sent.body == b"abcdefgh" and sent.ended and c.attempts == 1
    assert sample(metrics, "fender_retry_skipped_total", route="r", reason="body_too_large") == 1


def test_presets_are_overridable_field_by_field():
    config = RetryConfig.model_validate({"preset": "aggressive", "backoff": {"max": "3s"}})
    assert (config.attempts, config.backoff.base, config.backoff.max) == (5, 0.5, 3.0)
    config = RetryConfig.model_validate({"preset": "persistent", "attempts": 4})
    assert (config.attempts, config.backoff.base) == (4, 1.0)
