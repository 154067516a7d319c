"""Reading how long an upstream asks us to wait."""

from __future__ import annotations

import email.utils

import pytest

from proxy.http.headers import Headers
from proxy.state.retry_after import asked_wait

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"RateLimit-Reset": "12"}, 12.0),
        ({"X-RateLimit-Reset": "2.5"}, 2.5),
        ({"X-RateLimit-Reset": str(int(NOW + 40))}, 40.0),
        ({"Retry-After": "soon", "RateLimit-Reset": "4"}, 4.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00"}, None),
        ({"X-RateLimit-Reset": "nan"}, None),
        ({"Retry-After": "\u00b2"}, None),  # a superscript two: isdigit(), but not a number
        ({"Retry-After": "9" * 400}, None),  # would be infinite
        ({"X-RateLimit-Reset": "1e400"}, None),
        ({}, None),
    ],
)
def test_asked_wait(headers, wait):
    assert asked_wait(Headers(headers), NOW) == (pytest.approx(wait, abs=1) if wait else wait)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        # The OpenAI and Anthropic APIs send milliseconds; their SDKs read it first.
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "20.5"}, 0.0205),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
        ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "-5", "Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "1e9"}, None),
        # Go-style durations; the longer of the two when both are there.
        ({"x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "2s"}, 360.0),
        ({"x-ratelimit-reset-requests": "bogus", "x-ratelimit-reset-tokens": "3s"}, 3.0),
        ({"x-ratelimit-reset-requests": "1.5s"}, 1.5),
        ({"x-ratelimit-reset-requests": "500us"}, 0.0005),
        ({"x-ratelimit-reset-requests": "5"}, None),  # no unit: not a duration
        ({"x-ratelimit-reset-requests": "1x"}, None),
        ({"x-ratelimit-reset-requests": "s"}, None),
        ({"x-ratelimit-reset-requests": ""}, None),
        ({"x-ratelimit-reset-requests": "9" * 400 + "h"}, None),
        # An explicit ask wins over the reset times.
        ({"Retry-After": "4", "x-ratelimit-reset-tokens": "6m0s"}, 4.0),
    ],
)
def test_asked_wait_reads_the_llm_apis_headers(headers, wait):
    got = asked_wait(Headers(headers), NOW)
    assert got == (pytest.approx(wait, rel=1e-6) if wait is not None else None)
