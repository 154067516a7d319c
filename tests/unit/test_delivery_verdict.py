"""What a delivery's result means for its message (verdict.py)."""

from __future__ import annotations

import pytest

from proxy.config.queue import Queue
from proxy.delivery.verdict import (
    AGAIN,
    DELIVERED,
    FINAL,
    PAUSE,
    Result,
    Verdict,
    judge,
    next_step,
)
from proxy.http.headers import Headers
from proxy.state.classify import Conditions

DEFAULT_ON = Conditions(("connect_error", "reset", "timeout", "429", "502", "503", "504"))
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (Result(200), DELIVERED),
        (Result(204), DELIVERED),
        (Result(500, "upstream_status"), AGAIN),  # 5xx: the server's trouble passes
        (Result(503, "upstream_status"), AGAIN),
        (Result(429), AGAIN),  # named by retry.on
        (Result(400), FINAL),
        (Result(401), FINAL),
        (Result(404), FINAL),
        (Result(422), FINAL),
        (Result(409), FINAL),
        (Result(302), FINAL),  # never followed: retrying changes nothing
        (Result(reason="connect_error"), AGAIN),
        (Result(reason="tls_error"), AGAIN),  # no answer at all: again
        (Result(reason="timeout", rejected=True), AGAIN),  # the deadline went by locally
        (Result(reason="circuit_open", rejected=True, retry_after=7.0), PAUSE),
        (Result(reason="rate_limited", rejected=True, retry_after=2.0), PAUSE),
        (Result(reason="bulkhead_full", rejected=True, retry_after=1.0), PAUSE),
        (Result(200, "exhausted", outcome="fallback"), AGAIN),  # a fallback never delivers
        (Result(503, "circuit_open", outcome="fallback"), PAUSE),
    ],
)
def test_each_answer_means_one_thing(result: Result, kind: str) -> None:
    assert judge(result, DEFAULT_ON, NOW).kind == kind


def test_a_4xx_that_retry_on_names_goes_again() -> None:
    assert judge(Result(409), Conditions(("409",)), NOW).kind == AGAIN


def test_a_pause_lasts_what_the_rejection_says_and_at_least_a_moment() -> None:
    assert judge(
        Result(reason="circuit_open", rejected=True, retry_after=7.0), DEFAULT_ON, NOW
    ) == (Verdict(PAUSE, 7.0, "circuit_open"))
    assert judge(Result(reason="shed", rejected=True), DEFAULT_ON, NOW).wait == 0.1


def test_the_upstreams_retry_after_is_read() -> None:
    headers = Headers({"retry-after": "120"})
    assert judge(Result(503, headers=headers), DEFAULT_ON, NOW).wait == 120.0


QUEUE = Queue(schedule=["1s", "10s", "1m"], max_attempts=5, max_age="1h")


def test_the_schedule_is_followed_and_its_last_wait_repeats() -> None:
    again = Verdict(AGAIN)
    dues = [next_step(again, QUEUE, n, NOW, NOW).due - NOW for n in (1, 2, 3, 4)]
    assert dues == [1.0, 10.0, 60.0, 60.0]


def test_an_asked_wait_longer_than_the_schedule_wins() -> None:
    assert next_step(Verdict(AGAIN, 300.0), QUEUE, 1, NOW, NOW).due == NOW + 300


def test_out_of_attempts_or_of_time_is_a_dead_letter() -> None:
    again = Verdict(AGAIN)
    assert next_step(again, QUEUE, 5, NOW, NOW).dead == "max_attempts"
    assert next_step(again, QUEUE, 1, NOW - 3599.5, NOW).dead == "expired"
    assert next_step(Verdict(FINAL, reason="rejected"), QUEUE, 1, NOW, NOW).dead == "rejected"
